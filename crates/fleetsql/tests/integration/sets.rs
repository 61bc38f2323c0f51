//! Aggregator sets (issue 19) with real processes: two sets over three
//! clusters, each collecting only its span and saying so in every answer;
//! a set's limits and domain refusing where they apply and the query never
//! re-run elsewhere; clients that reach a set by a list of its nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use fleetsql_tiers::{AgentEntry, ProxyEntry, SetEntry, SqlNodeEntry, SubsetEntry, TlaEntry};
use serde_json::Value;

use crate::cluster::BINARY;
use crate::tiers::{FleetSpec, TestCluster, eventually};

/// The fixture's clusters c1 and c2, plus cluster c3 (one machine, `m9`),
/// TLAs `ta` (set `a`: c1, c2) and `tb`, `tc` (set `b`: every cluster),
/// SQL nodes `sa` (set `a`, 8 MiB for queries) and `sb1`, `sb2` (set
/// `b`); `edit` changes the sets.
async fn two_sets(edit: impl FnOnce(&mut BTreeMap<String, SetEntry>)) -> TestCluster {
    let dir = tempfile::tempdir().unwrap();
    let spec = FleetSpec {
        proxies: 1,
        tlas: 0,
        table_expiry: Duration::from_secs(600),
        extra_agent: false,
        sqlnodes: BTreeMap::new(),
        tla_sql: BTreeSet::new(),
    };
    TestCluster::start_fleet_edited(dir, spec, |topology, dir| {
        let drop_dir = dir.join("c3-m1");
        std::fs::create_dir_all(&drop_dir).unwrap();
        std::fs::write(
            drop_dir.join("filesystem.csv"),
            "machineip,mountp,fstype,bsize,blocks,bfree,bavail,files,ffree\n\
             10.0.3.1,/,ext4,4096,1000000,20000,10000,65536,30000\n",
        )
        .unwrap();
        std::fs::write(
            drop_dir.join("sys.csv"),
            "ip,hostname,memtotal,memfree,cpu_pct\n10.0.3.1,m9,1000000,100000,1.0\n",
        )
        .unwrap();
        topology.agents.insert(
            "c3-m1".into(),
            AgentEntry {
                cluster: "c3".into(),
                host: Some("m9".into()),
                ip: Some("10.0.3.1".into()),
                drop_dir: Some(drop_dir),
                host_collectors: Some(false),
                ..AgentEntry::default()
            },
        );
        topology.proxies.insert(
            "c3-p1".into(),
            ProxyEntry {
                cluster: "c3".into(),
                ..ProxyEntry::default()
            },
        );
        for tla in ["ta", "tb", "tc"] {
            topology.tlas.insert(tla.into(), TlaEntry::default());
        }
        for node in ["sa", "sb1", "sb2"] {
            topology
                .sqlnodes
                .insert(node.into(), SqlNodeEntry::default());
        }
        let mut sets = BTreeMap::from([
            (
                "a".to_string(),
                SetEntry {
                    clusters: Some(BTreeSet::from(["c1".into(), "c2".into()])),
                    tlas: BTreeSet::from(["ta".into()]),
                    sqlnodes: BTreeSet::from(["sa".into()]),
                    query_memory_mib: Some(8),
                    ..SetEntry::default()
                },
            ),
            (
                "b".to_string(),
                SetEntry {
                    tlas: BTreeSet::from(["tb".into(), "tc".into()]),
                    sqlnodes: BTreeSet::from(["sb1".into(), "sb2".into()]),
                    ..SetEntry::default()
                },
            ),
        ]);
        edit(&mut sets);
        topology.clusters.insert(
            "c3".into(),
            fleetsql_tiers::ClusterEntry {
                labels: BTreeMap::from([("role".into(), "alerts".into())]),
                ..Default::default()
            },
        );
        topology.sets = sets;
    })
    .await
}

fn clusters_of(body: &Value) -> BTreeSet<String> {
    body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {body}"))
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
}

fn psql(conninfo: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([conninfo, "-X", "-A", "-t", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .expect("run psql (scripts/apt: postgresql-client)")
}

fn sql_cli(args: &[&str]) -> std::process::Output {
    Command::new(BINARY)
        .arg("sql")
        .args(args)
        .env("FLEETSQL_LOG", "warn")
        .output()
        .expect("run fleetsql sql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_set_collects_its_span_and_every_answer_names_it() {
    // sb2 and tc make set `c`: cluster c3 only, labelled, answering no
    // ad-hoc queries (an alerts set).
    let fleet = two_sets(|sets| {
        let b = sets.get_mut("b").unwrap();
        b.tlas.remove("tc");
        b.sqlnodes.remove("sb2");
        sets.insert(
            "c".into(),
            SetEntry {
                select: BTreeMap::from([("role".into(), "alerts".into())]),
                tlas: BTreeSet::from(["tc".into()]),
                sqlnodes: BTreeSet::from(["sb2".into()]),
                domain: Some(BTreeSet::new()),
                ..SetEntry::default()
            },
        );
    })
    .await;
    let all = "SELECT _cluster, mountp FROM filesystem";

    // Set a spans c1 and c2: all of its span, none of c3's rows.
    let (status, body) = fleet.query_on("sa", all).await;
    assert!(status.is_success(), "{body}");
    assert_eq!(
        clusters_of(&body),
        BTreeSet::from(["c1".into(), "c2".into()])
    );
    let g = &body["generation"];
    assert_eq!(
        (g["clusters_seen"].as_u64(), g["clusters_expected"].as_u64()),
        (Some(2), Some(2)),
        "{g}"
    );
    assert_eq!(g["span"], "a");
    // Set b spans the whole fleet.
    let (_, body) = fleet.query_on("sb1", all).await;
    assert_eq!(clusters_of(&body).len(), 3, "{body}");
    assert_eq!(body["generation"]["clusters_expected"], 3);
    assert_eq!(body["generation"]["span"], "b");

    let (_, body) = fleet
        .query_on("sa", "SELECT span, clusters_seen FROM fleet_generation")
        .await;
    assert_eq!(body["rows"][0][0], "a", "{body}");

    // The pg NOTICE and the CLI footer say which span they cover.
    let pg = fleet.addr("sa", "pg");
    let out = psql(
        &format!(
            "host={} port={} user=fleet dbname=fleet",
            pg.ip(),
            pg.port()
        ),
        "SELECT count(*) FROM filesystem",
    );
    let notice = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{notice}");
    assert!(notice.contains("2/2 clusters of span a"), "{notice}");
    let out = sql_cli(&["--host", &fleet.addr("sa", "http").to_string(), all]);
    let footer = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{footer}");
    assert!(footer.contains("2/2 clusters of span a"), "{footer}");

    // fleet_sets: both sets, their spans and nodes, each node probed.
    let sets = "SELECT set, span, node, role, state FROM fleet_sets ORDER BY set, node";
    let rows = eventually(Duration::from_secs(20), "every node probed up", || async {
        let (_, body) = fleet.query_on("sa", sets).await;
        let rows = body["rows"].as_array()?.clone();
        rows.iter()
            .all(|r| r[4].as_str().is_some_and(|s| s.starts_with("up")))
            .then_some(rows)
    })
    .await;
    let names: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            let s = |k: usize| r[k].as_str().unwrap().to_string();
            (s(0), s(1), s(2))
        })
        .collect();
    assert_eq!(
        names,
        [
            ("a", "c1,c2", "sa"),
            ("a", "c1,c2", "ta"),
            ("b", "*", "sb1"),
            ("b", "*", "tb"),
            ("c", "c3", "sb2"),
            ("c", "c3", "tc"),
        ]
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    );

    // Set c's domain has no role: every ad-hoc query is refused, naming
    // the set, on HTTP and pg alike.
    let (status, body) = fleet.query_on("sb2", "SELECT 1").await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("set `c`") && error.contains("no ad-hoc"),
        "{body}"
    );
    let pg = fleet.addr("sb2", "pg");
    let out = psql(
        &format!(
            "host={} port={} user=fleet dbname=fleet",
            pg.ip(),
            pg.port()
        ),
        "SELECT count(*) FROM filesystem",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set `c`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_reached_by_a_host_list_survives_kill_9_and_never_reruns_a_query() {
    let mut fleet = two_sets(|_| {}).await;
    let http = |n: &str| fleet.addr(n, "http").to_string();

    // Over set a's memory limit it fails there, and the host list (a node
    // of a, then one of b) does not send it on to b, which would run it.
    let heavy = "SELECT v FROM (SELECT unnest(range(1, 3000000)) AS v) AS t ORDER BY v DESC";
    let out = sql_cli(&["--host", &format!("{},{}", http("sa"), http("sb1")), heavy]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the heavy query ran within 8 MiB");
    assert!(err.contains("memory"), "{err}");
    let (_, body) = fleet
        .query_on(
            "sb1",
            "SELECT count(*) AS n FROM fleet_audit WHERE strpos(text, 'un' || 'nest') > 0",
        )
        .await;
    assert_eq!(body["rows"][0][0], 0, "sb1 ran the refused query: {body}");

    // One name per set: a host list of set b's nodes moves past a dead one
    // (kill -9), over pg (libpq) and `fleetsql sql`.
    let (pa, pb) = (fleet.addr("sb1", "pg"), fleet.addr("sb2", "pg"));
    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} user=fleet dbname=fleet",
        pa.port(),
        pb.port()
    );
    let cli_hosts = format!("{},{}", http("sb1"), http("sb2"));
    let out = psql(&conninfo, "SELECT span FROM fleet_generation");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fleet.kill("sb1");
    let out = psql(&conninfo, "SELECT span FROM fleet_generation");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "b");
    let out = sql_cli(&["--host", &cli_hosts, "SELECT span FROM fleet_generation"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(" b "), "{stdout}");
    assert!(stderr.contains("not reachable"), "{stderr}");
}

const DISK_ALERT: &str = "SELECT machineip ip_key, mountp mnt_key, (100*bavail)/blocks pct \
     FROM filesystem a WHERE blocks > 0 and (100*bavail)/blocks < 3";

/// Rows of an HTTP JSON answer as `a|b|c` lines, sorted.
fn json_lines(body: &Value) -> Vec<String> {
    let mut lines: Vec<String> = body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows: {body}"))
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    lines.sort();
    lines
}

/// A server that answers every request with a redirect to itself.
async fn redirecting_to_itself() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let _ = socket.read(&mut buffer).await;
                let answer = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{addr}/v1/query\r\n\
                     content-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_set_sends_each_query_to_the_subset_serving_its_tables() {
    let fleet = two_sets(|sets| {
        let b = sets.get_mut("b").unwrap();
        b.subsets = BTreeMap::from([
            (
                "b1".to_string(),
                SubsetEntry {
                    sqlnodes: BTreeSet::from(["sb1".into()]),
                    tables: BTreeSet::from(["processes".into(), "sys".into()]),
                },
            ),
            (
                "b2".to_string(),
                SubsetEntry {
                    sqlnodes: BTreeSet::from(["sb2".into()]),
                    tables: BTreeSet::from(["filesystem".into()]),
                },
            ),
        ]);
    })
    .await;
    let (status, direct) = fleet.query_on("sb2", DISK_ALERT).await;
    assert!(status.is_success(), "{direct}");
    let expected = json_lines(&direct);
    assert!(expected.len() >= 2, "the fixture has full disks: {direct}");

    // HTTP: sb1 redirects to sb2 (once sb1 has re-read sb2's address,
    // written after sb1 started), naming it.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sb1 = fleet.addr("sb1", "http");
    let sb2 = fleet.addr("sb2", "http");
    let body = eventually(Duration::from_secs(20), "a redirect to sb2", || async {
        let response = client
            .post(format!("http://{sb1}/v1/query"))
            .json(&serde_json::json!({ "sql": DISK_ALERT }))
            .send()
            .await
            .ok()?;
        let location = response
            .headers()
            .get("location")?
            .to_str()
            .ok()?
            .to_string();
        (response.status() == reqwest::StatusCode::TEMPORARY_REDIRECT
            && location == format!("http://{sb2}/v1/query"))
        .then_some(())?;
        response.json::<Value>().await.ok()
    })
    .await;
    assert_eq!(body["redirect"][0]["node"], "sb2", "{body}");

    // `fleetsql sql` follows it and answers sb2's rows.
    let out = sql_cli(&["--host", &sb1.to_string(), "--format", "csv", DISK_ALERT]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("redirected to http://{sb2}")),
        "{stderr}"
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.replace(',', "|"))
        .collect();
    lines.sort();
    assert_eq!(lines, expected);

    // pg: sb1 runs it on sb2 and streams the answer; the NOTICE says so.
    let pg = fleet.addr("sb1", "pg");
    let out = psql(
        &format!(
            "host={} port={} user=fleet dbname=fleet",
            pg.ip(),
            pg.port()
        ),
        DISK_ALERT,
    );
    let notice = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{notice}");
    assert!(notice.contains("computed by SQL node sb2"), "{notice}");
    assert!(notice.contains("of span b"), "{notice}");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, expected);

    // A join across subsets: the error names each table's subset.
    let (status, body) = fleet
        .query_on(
            "sb1",
            "SELECT p.procname, f.mountp FROM processes p, filesystem f WHERE p.ip = f.machineip",
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("`filesystem` by subset b2") && error.contains("`processes` by subset b1"),
        "{body}"
    );
    // fleet_sets says which tables each node serves.
    let (_, body) = fleet
        .query_on(
            "sb1",
            "SELECT node, tables FROM fleet_sets WHERE set = 'b' ORDER BY node",
        )
        .await;
    let rows = json_lines(&body);
    assert_eq!(
        rows,
        ["sb1|processes,sys", "sb2|filesystem", "tb|*", "tc|*"]
    );

    // A redirect loop (nodes whose topologies disagree) is refused.
    let looping = redirecting_to_itself().await;
    let out = sql_cli(&["--host", &looping.to_string(), "SELECT 1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("redirect loop"), "{stderr}");
}
