//! Alerts in the real binary: state survives kill -9 and a restart; two
//! demo processes sharing one state file notify each instance exactly
//! once, also when the one running the alerts is killed.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

use crate::cluster::TestDemo;
use crate::tiers::{FleetSpec, TestCluster, eventually};

/// (kind, instance key) of every event every POST carried.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

async fn record(State(seen): State<Seen>, axum::Json(body): axum::Json<Value>) {
    for event in body["events"].as_array().cloned().unwrap_or_default() {
        let kind = event["kind"].as_str().unwrap_or_default().to_string();
        seen.lock().unwrap().push((kind, event["key"].to_string()));
    }
}

async fn webhook_receiver() -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/hook", post(record))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

fn write_alert(dir: &Path, hostname_pattern: &str) {
    let text = format!(
        "name = \"watched machines\"\nevery = \"500ms\"\nroutes = [\"noc\"]\n\
         sql = \"SELECT ip ip_key, hostname FROM sys WHERE hostname LIKE '{hostname_pattern}'\"\n"
    );
    // Written elsewhere and renamed: the service never reads half a file.
    let tmp = dir.join("watched.toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join("watched.toml")).unwrap();
}

fn write_routes(dir: &Path, hook: SocketAddr) {
    std::fs::write(
        dir.join("routes.toml"),
        format!(
            "[route.noc]\nkind = \"webhook\"\nurl = \"http://{hook}/hook\"\nbackoff = \"50ms\"\n"
        ),
    )
    .unwrap();
}

fn alert_dir(hook: SocketAddr) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_routes(dir.path(), hook);
    dir
}

fn args(dir: &Path, state: &Path, node: &str) -> Vec<std::ffi::OsString> {
    vec![
        "--alerts-dir".into(),
        dir.into(),
        "--alerts-state".into(),
        state.into(),
        "--alerts-node".into(),
        node.into(),
        "--alerts-poll".into(),
        "200ms".into(),
        "--alerts-lease".into(),
        "2s".into(),
    ]
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn count(seen: &Seen, kind: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k == kind)
        .count()
}

async fn one_value(demo: &TestDemo, sql: &str) -> Value {
    let (status, body) = demo.query_json(sql).await;
    assert!(status.is_success(), "{sql}: {body}");
    body["rows"][0][0].clone()
}

async fn iteration(demo: &TestDemo) -> u64 {
    one_value(
        demo,
        "SELECT iteration FROM alerts WHERE name = 'watched machines'",
    )
    .await
    .as_u64()
    .unwrap_or(0)
}

fn assert_each_once(seen: &Seen) {
    let events = seen.lock().unwrap().clone();
    for event in &events {
        let n = events.iter().filter(|e| *e == event).count();
        assert_eq!(n, 1, "{event:?} notified {n} times: {events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_state_survives_kill_and_restart() {
    let (hook, seen) = webhook_receiver().await;
    let dir = alert_dir(hook);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("alerts.db");
    write_alert(dir.path(), "%-m000");
    let demo = TestDemo::start_with(2, 3, "1s", &args(dir.path(), &state, "a")).await;
    wait_for("two instances to fire", async || count(&seen, "fired") == 2).await;
    wait_for("a few iterations", async || iteration(&demo).await >= 3).await;
    let fired_at = one_value(&demo, "SELECT string_agg(CAST(fired_at AS VARCHAR), ',' ORDER BY instance_key) FROM alert_instances").await;
    let before = iteration(&demo).await;
    drop(demo); // kill -9

    let demo = TestDemo::start_with(2, 3, "1s", &args(dir.path(), &state, "a")).await;
    wait_for("iterations to continue", async || {
        iteration(&demo).await >= before + 3
    })
    .await;
    assert_eq!(count(&seen, "fired"), 2, "nothing re-fired");
    assert_eq!(count(&seen, "cleared"), 0, "nothing lost");
    let after = one_value(&demo, "SELECT string_agg(CAST(fired_at AS VARCHAR), ',' ORDER BY instance_key) FROM alert_instances").await;
    assert_eq!(fired_at, after);
    let active = one_value(
        &demo,
        "SELECT count(*) FROM alert_instances WHERE status = 'active'",
    )
    .await;
    assert_eq!(active, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_notify_each_instance_once_across_a_kill() {
    let (hook, seen) = webhook_receiver().await;
    let dir = alert_dir(hook);
    let state_dir = tempfile::tempdir().unwrap();
    let state = state_dir.path().join("alerts.db");
    write_alert(dir.path(), "%-m000");
    // Same seed, same fleet: both nodes see the same rows.
    let a = TestDemo::start_with(3, 2, "1s", &args(dir.path(), &state, "a")).await;
    let b = TestDemo::start_with(3, 2, "1s", &args(dir.path(), &state, "b")).await;
    wait_for("three instances to fire", async || {
        count(&seen, "fired") == 3
    })
    .await;
    let holder = one_value(&a, "SELECT lease_holder FROM alerts").await;
    let holder = holder.as_str().unwrap().to_string();
    assert_eq!(
        one_value(&b, "SELECT lease_holder FROM alerts").await,
        holder.as_str()
    );
    let survivor = if holder == "a" {
        drop(a); // kill -9 the node running the alerts
        b
    } else {
        drop(b);
        a
    };
    let survivor_name = if holder == "a" { "b" } else { "a" };

    // While nobody holds the lease, the alert changes: cluster-00-m001
    // appears, the first machines of clusters 01 and 02 go.
    write_alert(dir.path(), "cluster-00-m00%");
    wait_for("the survivor to fire and clear", async || {
        count(&seen, "fired") == 4 && count(&seen, "cleared") == 2
    })
    .await;
    assert_eq!(
        one_value(&survivor, "SELECT lease_holder FROM alerts").await,
        survivor_name
    );
    // A few more iterations, so that a late duplicate would have arrived.
    let now = iteration(&survivor).await;
    wait_for("more iterations", async || {
        iteration(&survivor).await >= now + 4
    })
    .await;
    assert_each_once(&seen);
    assert_eq!(count(&seen, "fired"), 4);
    assert_eq!(count(&seen, "cleared"), 2);
}

/// `fleetsql alerts check FILE`: every shipped example runs against a live
/// demo; an alert whose SQL fails, or a file that does not parse, exits
/// non-zero with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_check_runs_the_shipped_examples_and_reports_bad_ones() {
    let demo = TestDemo::start().await;
    let check = |file: &Path| {
        std::process::Command::new(crate::cluster::BINARY)
            .args(["alerts", "check"])
            .arg(file)
            .args(["--url", &demo.url()])
            .env("FLEETSQL_LOG", "warn")
            .output()
            .expect("run fleetsql alerts check")
    };
    let examples = crate::fixture::repo_root().join("alerts/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let output = check(&path);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.starts_with("alert `"), "{stdout}");
        checked += 1;
    }
    assert_eq!(checked, 4, "the four shipped examples");

    let dir = tempfile::tempdir().unwrap();
    let failing = dir.path().join("failing.toml");
    std::fs::write(
        &failing,
        "name = \"bad sql\"\nsql = \"SELECT nope FROM sys\"\n",
    )
    .unwrap();
    let output = check(&failing);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("its SQL fails"), "{stderr}");

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "name = \"no sql\"\n").unwrap();
    let output = check(&broken);
    assert!(!output.status.success());
    assert!(!output.stderr.is_empty());
}

/// The seed's disk alert (as shipped in `alerts/examples/disk_space.toml`),
/// run every 500 ms and routed to the test's webhook.
const DISK_ALERT: &str = r#"
name = "disk space low"
every = "500ms"
fire_after = 1
clear_after = "0s"
routes = ["noc"]
sql = """
SELECT machineip ip_key, mountp mnt_key, bavail*bsize free_space, (100*bavail)/blocks pct
FROM filesystem a
WHERE blocks > 0 and (100*bavail)/blocks < 3
"""
"#;

async fn cluster_value(cluster: &TestCluster, node: &str, sql: &str) -> Value {
    let (status, body) = cluster.query_on(node, sql).await;
    assert!(status.is_success(), "{node}: {sql}: {body}");
    body["rows"][0][0].clone()
}

/// Active instances of the console's alert API on `node`.
async fn console_active(cluster: &TestCluster, node: &str) -> usize {
    let state: Value = reqwest::get(format!(
        "http://{}/alerts/api/state",
        cluster.addr(node, "http")
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    state["instances"]
        .as_array()
        .map_or(0, |i| i.iter().filter(|i| i["status"] == "active").count())
}

/// The multi-process fleet of issue 16: 2 clusters x 2 agents, 2 proxies
/// per cluster, 2 TLAs and 2 SQL nodes from one topology file whose SQL
/// node entries name one alerts directory and one alert state file. The
/// fixture's two nearly full disks fire once each on the webhook; both
/// nodes show them; the lease holder is killed with -9 and the other node
/// runs the alerts on, notifying a new instance once and no old one again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sqlnode_processes_share_the_alerts_across_a_kill() {
    let (hook, seen) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    // Paths in the topology are relative to it: the file is written into
    // `dir`, so these name `dir/alerts` and so on.
    let alerts = dir.path().join("alerts");
    std::fs::create_dir_all(&alerts).unwrap();
    write_routes(&alerts, hook);
    std::fs::write(alerts.join("disk.toml"), DISK_ALERT).unwrap();
    let reports = dir.path().join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    std::fs::copy(
        crate::fixture::repo_root().join("demo/reports/continent_hits.toml"),
        reports.join("continent_hits.toml"),
    )
    .unwrap();
    let entry = |name: &str, reports: bool| fleetsql_tiers::SqlNodeEntry {
        state_dir: Some(format!("{name}-state").into()),
        alerts_dir: Some("alerts".into()),
        alerts_state: Some("shared/alerts.db".into()),
        alerts_poll: Some(Duration::from_millis(200)),
        alerts_lease: Some(Duration::from_secs(2)),
        reports_dir: reports.then(|| "reports".into()),
        ..fleetsql_tiers::SqlNodeEntry::default()
    };
    let mut cluster = TestCluster::start_fleet_in(
        dir,
        FleetSpec {
            proxies: 2,
            tlas: 2,
            table_expiry: Duration::from_secs(600),
            extra_agent: false,
            sqlnodes: [
                ("s1".to_string(), entry("s1", true)),
                ("s2".to_string(), entry("s2", false)),
            ]
            .into(),
            tla_sql: Default::default(),
        },
    )
    .await;
    assert_eq!(
        cluster.roles(),
        std::collections::BTreeMap::from([("agent", 4), ("proxy", 4), ("sqlnode", 2), ("tla", 2)])
    );
    wait_for("both disks to fire", async || count(&seen, "fired") >= 2).await;

    // Both nodes show the instances, in SQL and on the console's alert API,
    // and agree on who holds the lease.
    for node in ["s1", "s2"] {
        wait_for("the instances on both nodes", async || {
            cluster_value(
                &cluster,
                node,
                "SELECT count(*) FROM alert_instances WHERE status = 'active'",
            )
            .await
                == 2
        })
        .await;
        wait_for("the console's alert API", async || {
            console_active(&cluster, node).await == 2
        })
        .await;
    }
    let holder = cluster_value(&cluster, "s1", "SELECT lease_holder FROM alerts").await;
    let holder = holder.as_str().expect("a lease holder").to_string();
    assert_eq!(
        cluster_value(&cluster, "s2", "SELECT lease_holder FROM alerts").await,
        holder.as_str()
    );
    assert!(
        holder == "s1" || holder == "s2",
        "the lease holder is named `{holder}`, not after a SQL node"
    );
    let survivor = if holder == "s1" { "s2" } else { "s1" };
    // One node ran the alerts: each disk was notified once.
    assert_each_once(&seen);
    assert_eq!(count(&seen, "fired"), 2);
    // Only the node with a reports directory says the console has reports.
    for (node, reports) in [("s1", true), ("s2", false)] {
        let config: Value = reqwest::get(format!(
            "http://{}/v1/console/config",
            cluster.addr(node, "http")
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        assert_eq!(config["features"]["alerts"], true, "{node}: {config}");
        assert_eq!(config["features"]["reports"], reports, "{node}: {config}");
    }

    cluster.kill(&holder); // kill -9 the node running the alerts

    // While nobody holds the lease, a third disk fills up (c2-m1's /data).
    let drop_dir = cluster.drop_dir("c2-m1");
    let file = drop_dir.join("filesystem.csv");
    let mut csv = std::fs::read_to_string(&file).unwrap();
    csv.push_str("10.0.2.1,/data,xfs,4096,1000000,20000,10000,65536,50000\n");
    let tmp = drop_dir.join("filesystem.csv.tmp");
    std::fs::write(&tmp, csv).unwrap();
    std::fs::rename(tmp, file).unwrap();

    wait_for("the survivor to fire the new disk", async || {
        count(&seen, "fired") == 3
    })
    .await;
    assert_eq!(
        cluster_value(&cluster, survivor, "SELECT lease_holder FROM alerts").await,
        survivor
    );
    // A few more iterations, so that a late duplicate would have arrived.
    let sql = "SELECT iteration FROM alerts WHERE name = 'disk space low'";
    let now = cluster_value(&cluster, survivor, sql)
        .await
        .as_u64()
        .unwrap();
    eventually(Duration::from_secs(30), "more iterations", || async {
        let n = cluster_value(&cluster, survivor, sql).await.as_u64()?;
        (n >= now + 5).then_some(())
    })
    .await;
    assert_each_once(&seen);
    assert_eq!(count(&seen, "fired"), 3);
    assert_eq!(count(&seen, "cleared"), 0);
    assert_eq!(console_active(&cluster, survivor).await, 3);
}
