//! Agents that join their cluster by themselves (issue 22): a topology
//! with a proxy, a TLA and a SQL node but no agents; agents started with
//! only `--cluster` and `--proxy` announce themselves, appear in
//! `fleet_clusters`, `fleet_nodes` and `fleet_members`; one stopped is
//! counted missing, survives a proxy restart as expected, then leaves.
//! Under mutual TLS (issue 17 item 1) an agent joins only with a
//! certificate for its name, which its proxy checks by dialling it back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetsql_flight::{FlightChild, FlightChildOptions, TlsContext, TlsFiles};
use fleetsql_tiers::{ClusterEntry, ProxyEntry, SqlNodeEntry, TlaEntry, TlsSettings, Topology};
use serde_json::Value;

use crate::cluster::{BINARY, ready_line};
use crate::tiers::{TestCluster, eventually, metric};

/// `fleetsql agent --cluster ... --proxy ...`, killed on drop.
struct JoiningAgent {
    child: Child,
}

impl Drop for JoiningAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl JoiningAgent {
    async fn start(dir: &std::path::Path, name: &str, cluster: &str, proxy: SocketAddr) -> Self {
        Self::start_with(dir, name, cluster, proxy, &[]).await.0
    }

    /// With `extra` flags; also its Flight address from its ready line.
    async fn start_with(
        dir: &std::path::Path,
        name: &str,
        cluster: &str,
        proxy: impl ToString,
        extra: &[String],
    ) -> (Self, SocketAddr) {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
        let any = "127.0.0.1:0";
        let mut child = Command::new(BINARY)
            .args([
                "agent",
                "--cluster",
                cluster,
                "--name",
                name,
                "--tick",
                "1s",
            ])
            .args(["--proxy", &proxy.to_string()])
            .args(["--flight", any, "--http", any, "--publish", any])
            .args(extra)
            .env("FLEETSQL_LOG", "info")
            .env_remove("FLEETSQL_TOPOLOGY")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start fleetsql agent");
        let line = ready_line(&mut child, "fleetsql agent ready:")
            .await
            .unwrap_or_else(|| panic!("agent {name} exited before it was ready; see {name}.log"));
        let flight = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("flight="))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no flight address in {line}"));
        (JoiningAgent { child }, flight)
    }
}

/// `fleet_clusters`' (machines_seen, machines_expected) of `cluster`.
async fn coverage(cluster: &TestCluster, name: &str) -> Option<(u64, u64)> {
    let (_, body) = cluster
        .query(&format!(
            "SELECT machines_seen, machines_expected FROM fleet_clusters WHERE cluster = '{name}'"
        ))
        .await;
    let row = body["rows"].get(0)?;
    Some((row[0].as_u64()?, row[1].as_u64()?))
}

/// `fleet_members`: member → state.
async fn members(cluster: &TestCluster) -> BTreeMap<String, String> {
    let (_, body) = cluster
        .query("SELECT member, state FROM fleet_members ORDER BY member")
        .await;
    body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r[0].as_str()?.to_string(), r[1].as_str()?.to_string())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_join_their_cluster_by_themselves_and_leave_after_the_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let expiry = Duration::from_secs(12);
    let mut topology = Topology {
        tick: Duration::from_secs(1),
        member_expiry: expiry,
        ..Topology::default()
    };
    topology
        .clusters
        .insert("c1".into(), ClusterEntry::default());
    topology.proxies.insert(
        "c1-p1".into(),
        ProxyEntry {
            cluster: "c1".into(),
            state_dir: Some(dir.path().join("proxy-state")),
            ..ProxyEntry::default()
        },
    );
    topology.tlas.insert("t1".into(), TlaEntry::default());
    topology.sqlnodes.insert(
        "sql".into(),
        SqlNodeEntry {
            tlas: BTreeMap::from([("t1".to_string(), 0)]),
            ..SqlNodeEntry::default()
        },
    );
    let agents_dir = dir.path().to_path_buf();
    let mut cluster = TestCluster::launch(dir, topology, &BTreeSet::new(), false).await;
    let proxy = cluster.addr("c1-p1", "http");

    // An agent of another cluster is refused, and says why.
    let refused = reqwest::Client::new()
        .post(format!("http://{proxy}/v1/announce"))
        .json(&serde_json::json!({
            "format": 1, "name": "stray", "cluster": "c2",
            "flight": "127.0.0.1:9", "version": "0.0.0",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::CONFLICT);
    let error = refused.json::<Value>().await.unwrap()["error"].to_string();
    assert!(error.contains("`c1`") && error.contains("`c2`"), "{error}");

    let _j1 = JoiningAgent::start(&agents_dir, "j1", "c1", proxy).await;
    let mut j2 = Some(JoiningAgent::start(&agents_dir, "j2", "c1", proxy).await);

    eventually(Duration::from_secs(30), "both agents seen", || async {
        (coverage(&cluster, "c1").await == Some((2, 2))).then_some(())
    })
    .await;
    let (_, body) = cluster
        .query("SELECT count(*) FROM fleet_nodes WHERE role = 'agent'")
        .await;
    assert_eq!(body["rows"], serde_json::json!([[2]]), "{body}");
    let (_, body) = cluster
        .query("SELECT count(DISTINCT _host) FROM sys WHERE _cluster = 'c1'")
        .await;
    assert!(body["rows"][0][0].as_u64().unwrap_or(0) >= 1, "{body}");
    let present = eventually(Duration::from_secs(10), "both members present", || async {
        let m = members(&cluster).await;
        (m.values().filter(|s| *s == "present").count() == 2).then_some(m)
    })
    .await;
    assert_eq!(present.keys().collect::<Vec<_>>(), ["j1", "j2"]);

    // j2 stops, and its proxy restarts while it is down: the proxy still
    // expects it from its state directory (j2 never announces again).
    drop(j2.take());
    let stopped = Instant::now();
    cluster.kill("c1-p1");
    cluster.restart("c1-p1", "proxy").await;
    let health = cluster.health("c1-p1").await;
    assert_eq!(health["machines_expected"], 2, "{health}");

    let (seen, expected) = eventually(Duration::from_secs(20), "j2 counted missing", || async {
        coverage(&cluster, "c1")
            .await
            .filter(|(seen, _)| *seen == 1)
    })
    .await;
    assert_eq!((seen, expected), (1, 2));
    assert_eq!(members(&cluster).await["j2"], "missing");
    assert!(
        stopped.elapsed() < expiry,
        "too slow to see j2 missing first"
    );

    // After the expiry j2 leaves the expected set, logged and shown.
    eventually(expiry + Duration::from_secs(20), "j2 left", || async {
        (coverage(&cluster, "c1").await == Some((1, 1))).then_some(())
    })
    .await;
    let announce_every = expiry / 6;
    assert!(
        stopped.elapsed() + announce_every >= expiry,
        "j2 left {:?} after it stopped, before member_expiry ({expiry:?})",
        stopped.elapsed()
    );
    let states = eventually(Duration::from_secs(10), "j2 shown as left", || async {
        let m = members(&cluster).await;
        (m.get("j2").map(String::as_str) == Some("left")).then_some(m)
    })
    .await;
    assert_eq!(states["j1"], "present");
    assert!(
        cluster.log("c1-p1").contains("member left the cluster"),
        "{}",
        cluster.log("c1-p1")
    );
}

/// `fleetsql certs ARGS --dir DIR`, which must succeed.
fn certs(args: &[&str], dir: &std::path::Path) {
    let out = Command::new(BINARY)
        .arg("certs")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("FLEETSQL_LOG", "warn")
        .output()
        .expect("run fleetsql certs");
    assert!(
        out.status.success(),
        "fleetsql certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--tls-ca --tls-cert --tls-key` of `cert`.crt/.key in `dir`, with the CA of `ca_dir`.
fn tls_flags(ca_dir: &std::path::Path, dir: &std::path::Path, cert: &str) -> Vec<String> {
    let path = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    vec![
        "--tls-ca".into(),
        path(ca_dir.join("ca.crt")),
        "--tls-cert".into(),
        path(dir.join(format!("{cert}.crt"))),
        "--tls-key".into(),
        path(dir.join(format!("{cert}.key"))),
    ]
}

/// Waits until `name`'s log (in `dir`) says its announcement was refused,
/// and returns the log.
async fn refused_log(dir: &std::path::Path, name: &str) -> String {
    let file = dir.join(format!("{name}.log"));
    eventually(Duration::from_secs(30), "the refusal", || async {
        let log = std::fs::read_to_string(&file).unwrap_or_default();
        log.contains("proxy refused this agent's announcement")
            .then_some(log)
    })
    .await
}

/// `fleet_members`: member → Flight address.
async fn member_addresses(cluster: &TestCluster) -> BTreeMap<String, String> {
    let (_, body) = cluster
        .query("SELECT member, flight FROM fleet_members ORDER BY member")
        .await;
    body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r[0].as_str()?.to_string(), r[1].as_str()?.to_string())))
        .collect()
}

/// A proxy, TLA and SQL node over mutual TLS (`fleetsql certs`): an agent
/// joining with a certificate for its name is verified by its proxy and its
/// rows reach SQL; it serves its proxy and refuses another fleet node.
/// Agents joining with a certificate for another name, with one of another
/// CA, or without TLS flags are refused (403 with the reason, logged on
/// both sides, counted in the proxy's /metrics) and are no members; a
/// forged announcement of the member's name at another address is refused
/// and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_mtls_only_agents_with_a_certificate_for_their_name_join() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let other_ca = dir.path().join("other-ca");
    certs(&["init"], &certs_dir);
    certs(&["init"], &other_ca);
    for name in ["c1-p1", "t1", "sql", "good", "intruder", "pinned"] {
        certs(&["issue", name], &certs_dir);
    }
    certs(&["issue", "stranger"], &other_ca);
    let mut topology = Topology {
        tick: Duration::from_secs(1),
        ..Topology::default()
    };
    topology
        .clusters
        .insert("c1".into(), ClusterEntry::default());
    topology.proxies.insert(
        "c1-p1".into(),
        ProxyEntry {
            cluster: "c1".into(),
            ..ProxyEntry::default()
        },
    );
    topology.tlas.insert("t1".into(), TlaEntry::default());
    topology.sqlnodes.insert(
        "sql".into(),
        SqlNodeEntry {
            tlas: BTreeMap::from([("t1".to_string(), 0)]),
            ..SqlNodeEntry::default()
        },
    );
    topology.tls = Some(TlsSettings {
        ca: certs_dir.join("ca.crt"),
        certs_dir: Some(certs_dir.clone()),
        nodes: BTreeMap::new(),
        poll: None,
    });
    let agents_dir = dir.path().to_path_buf();
    let cluster = TestCluster::launch(dir, topology, &BTreeSet::new(), false).await;
    let proxy = cluster.addr("c1-p1", "http");

    // The agent with its own certificate joins: verified, fetched over
    // mTLS, its rows reach the SQL node. Its proxy's name is pinned.
    let (_good, good_flight) = JoiningAgent::start_with(
        &agents_dir,
        "good",
        "c1",
        format!("c1-p1@{proxy}"),
        &tls_flags(&certs_dir, &certs_dir, "good"),
    )
    .await;
    eventually(Duration::from_secs(30), "good's rows", || async {
        let (_, body) = cluster
            .query("SELECT count(*) FROM sys WHERE _cluster = 'c1'")
            .await;
        (body["rows"][0][0].as_u64().unwrap_or(0) >= 1).then_some(())
    })
    .await;
    assert_eq!(members(&cluster).await["good"], "present");

    // It serves its proxy only: the TLA's certificate (valid, of the fleet
    // CA) is refused, the proxy's served.
    let dial = |node: &str| {
        let files = TlsFiles {
            ca: certs_dir.join("ca.crt"),
            cert: certs_dir.join(format!("{node}.crt")),
            key: certs_dir.join(format!("{node}.key")),
        };
        FlightChild::new(
            "good",
            format!("http://{good_flight}"),
            FlightChildOptions {
                tls: Some(TlsContext::load("test", node, files).unwrap()),
                ..FlightChildOptions::default()
            },
        )
        .unwrap()
    };
    dial("c1-p1").health().await.unwrap();
    assert!(
        dial("t1").health().await.is_err(),
        "t1 is not good's parent"
    );

    // A certificate for another name, one of another CA, none: refused.
    let (_misnamed, misnamed_flight) = JoiningAgent::start_with(
        &agents_dir,
        "misnamed",
        "c1",
        proxy,
        &tls_flags(&certs_dir, &certs_dir, "intruder"),
    )
    .await;
    let (_foreign, _) = JoiningAgent::start_with(
        &agents_dir,
        "stranger",
        "c1",
        proxy,
        &tls_flags(&other_ca, &other_ca, "stranger"),
    )
    .await;
    let (_plain, plain_flight) =
        JoiningAgent::start_with(&agents_dir, "plain", "c1", proxy, &[]).await;
    // An agent told its proxy has another name than the one the proxy
    // answers with serves only the pinned name: the proxy's dial-back is
    // refused, so it never joins.
    let (_pinned, _) = JoiningAgent::start_with(
        &agents_dir,
        "pinned",
        "c1",
        format!("c1-p9@{proxy}"),
        &tls_flags(&certs_dir, &certs_dir, "pinned"),
    )
    .await;
    let log = refused_log(&agents_dir, "pinned").await;
    assert!(
        log.contains("another name than the one pinned") && log.contains("c1-p9"),
        "{log}"
    );
    assert!(
        !members(&cluster).await.contains_key("pinned"),
        "an agent serving only another proxy name is not a member"
    );
    let log = refused_log(&agents_dir, "misnamed").await;
    assert!(
        log.contains("could not verify agent `misnamed`") && log.contains("`intruder`"),
        "{log}"
    );
    let log = refused_log(&agents_dir, "stranger").await;
    assert!(log.contains("could not verify agent `stranger`"), "{log}");
    let log = refused_log(&agents_dir, "plain").await;
    assert!(
        log.contains("could not verify agent `plain`") && log.contains("--tls-cert"),
        "{log}"
    );

    // A forged announcement of `good` at another address (one serving a
    // fleet certificate, another name) is refused and moves nothing.
    for flight in [misnamed_flight, plain_flight] {
        let forged = reqwest::Client::new()
            .post(format!("http://{proxy}/v1/announce"))
            .json(&serde_json::json!({
                "format": 1, "name": "good", "cluster": "c1",
                "flight": flight.to_string(), "version": "0.0.0",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);
        let error = forged.json::<Value>().await.unwrap()["error"].to_string();
        assert!(error.contains("could not verify agent `good`"), "{error}");
    }

    let text = cluster.metrics("c1-p1").await;
    let announce_refusals = metric(
        &text,
        "fleetsql_announce_refusals_total",
        &[("reason", "unverified")],
    );
    assert!(announce_refusals >= 5.0, "{text}");
    let tls_refusals = |reason: &str| {
        metric(
            &text,
            "fleetsql_tls_refusals_total",
            &[("link", "outgoing"), ("reason", reason)],
        )
    };
    assert!(tls_refusals("not_in_topology") >= 2.0, "{text}");
    assert!(tls_refusals("unknown_ca") >= 1.0, "{text}");
    assert!(
        cluster.log("c1-p1").contains("announcement refused"),
        "{}",
        cluster.log("c1-p1")
    );

    // Only `good` is a member, at its own address, and still answers.
    let addresses = member_addresses(&cluster).await;
    assert_eq!(
        addresses.keys().collect::<Vec<_>>(),
        ["good"],
        "{addresses:?}"
    );
    assert_eq!(addresses["good"], good_flight.to_string());
    cluster.generations_pass("t1", 2).await;
    assert_eq!(members(&cluster).await["good"], "present");
    assert_eq!(coverage(&cluster, "c1").await, Some((1, 1)));
}
