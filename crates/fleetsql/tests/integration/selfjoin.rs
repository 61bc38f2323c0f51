//! Agents that join their cluster by themselves (issue 22): a topology
//! with a proxy, a TLA and a SQL node but no agents; agents started with
//! only `--cluster` and `--proxy` announce themselves, appear in
//! `fleet_clusters`, `fleet_nodes` and `fleet_members`; one stopped is
//! counted missing, survives a proxy restart as expected, then leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetsql_tiers::{ClusterEntry, ProxyEntry, SqlNodeEntry, TlaEntry, Topology};
use serde_json::Value;

use crate::cluster::{BINARY, ready_line};
use crate::tiers::{TestCluster, eventually};

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
            .env("FLEETSQL_LOG", "info")
            .env_remove("FLEETSQL_TOPOLOGY")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start fleetsql agent");
        ready_line(&mut child, "fleetsql agent ready:")
            .await
            .unwrap_or_else(|| panic!("agent {name} exited before it was ready; see {name}.log"));
        JoiningAgent { child }
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
