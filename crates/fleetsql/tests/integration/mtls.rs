//! Mutual TLS between tiers (issue 17, item 1): real `fleetsql` processes
//! with a `[tls]` topology section and certificates made by `fleetsql
//! certs`; a child whose certificate is not the topology's is refused and
//! counted, the rest of the tree answers, and a re-issued certificate is
//! taken without a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fleetsql_aggregator::FetchRequest;
use fleetsql_flight::{FlightChild, FlightChildOptions, TlsContext, TlsFiles};
use fleetsql_tiers::{SqlNodeEntry, TlsSettings, Topology};

use crate::cluster::BINARY;
use crate::tiers::{FleetSpec, TestCluster, eventually, metric};

fn certs(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(BINARY)
        .arg("certs")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("FLEETSQL_LOG", "warn")
        .output()
        .expect("run fleetsql certs")
}

fn certs_ok(args: &[&str], dir: &Path) {
    let out = certs(args, dir);
    assert!(
        out.status.success(),
        "fleetsql certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `name`'s files in `dir` replaced by a certificate for `as_name` made in
/// `dir` (another node's name, or the same name from another CA's dir).
fn swap_in(dir: &Path, name: &str, from: &Path, as_name: &str) {
    certs_ok(&["issue", as_name, "--force"], from);
    for ext in ["crt", "key"] {
        std::fs::copy(
            from.join(format!("{as_name}.{ext}")),
            dir.join(format!("{name}.{ext}")),
        )
        .unwrap();
    }
}

fn files(certs: &Path, name: &str) -> TlsFiles {
    TlsFiles {
        ca: certs.join("ca.crt"),
        cert: certs.join(format!("{name}.crt")),
        key: certs.join(format!("{name}.key")),
    }
}

async fn machines_seen(cluster: &TestCluster) -> u64 {
    let (status, body) = cluster.query("SELECT count(*) FROM sys").await;
    assert!(status.is_success(), "{body}");
    body["generation"]["machines_seen"].as_u64().unwrap_or(0)
}

/// A whole tree over mTLS answers; an agent with a certificate for another
/// name, and one with a certificate of another CA, are refused by their
/// proxies (counted by reason in the proxies' `/metrics`, logged with the
/// names); a parent the topology does not give a node, and a plaintext
/// client, are refused by the node; re-issuing the misnamed agent's
/// certificate (`fleetsql certs issue --force`) lets it in without a
/// restart; a corrupt new key is refused and the old one kept; re-issuing a
/// working proxy's certificate keeps its links working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_over_mtls_answers_and_refuses_what_the_topology_does_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    let other_ca = dir.path().join("other-ca");
    certs_ok(&["init"], &certs_dir);
    certs_ok(&["init"], &other_ca);
    let out = certs(&["init"], &certs_dir);
    assert!(!out.status.success(), "a second init without --force");
    let out = certs(&["issue", "x"], &dir.path().join("no-ca-here"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("fleetsql certs init"),
        "{err}"
    );

    let spec = FleetSpec {
        proxies: 1,
        tlas: 1,
        table_expiry: Duration::from_secs(600),
        extra_agent: true,
        sqlnodes: BTreeMap::from([("sql".to_string(), SqlNodeEntry::default())]),
        tla_sql: BTreeSet::new(),
    };
    let issue_dir = certs_dir.clone();
    let cluster = TestCluster::start_fleet_edited(dir, spec, |topology: &mut Topology, _| {
        let names: Vec<String> = topology
            .agents
            .keys()
            .chain(topology.proxies.keys())
            .chain(topology.tlas.keys())
            .chain(topology.sqlnodes.keys())
            .cloned()
            .collect();
        for name in &names {
            certs_ok(&["issue", name], &issue_dir);
        }
        let out = certs(&["issue", &names[0]], &issue_dir);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("--force"), "{err}");
        // Each cluster's extra agent (`c1-m3`, `c2-m3`) gets a stranger's
        // certificate: one of the fleet CA for another name, one of
        // another CA for its own name.
        swap_in(&issue_dir, "c1-m3", &issue_dir, "intruder");
        swap_in(&issue_dir, "c2-m3", &other_ca, "c2-m3");
        topology.tls = Some(TlsSettings {
            ca: PathBuf::from("certs/ca.crt"),
            certs_dir: Some(PathBuf::from("certs")),
            nodes: BTreeMap::new(),
            poll: Some(Duration::from_millis(200)),
        });
    })
    .await;

    // (a) The tree answers end to end over mTLS, without the two strangers.
    let (status, body) = cluster
        .query("SELECT ip, hostname FROM sys ORDER BY ip")
        .await;
    assert!(status.is_success(), "{body}\n{}", cluster.log("sql"));
    assert_eq!(body["rows"].as_array().unwrap().len(), 4, "{body}");
    assert_eq!(machines_seen(&cluster).await, 4);
    assert_eq!(body["generation"]["machines_expected"], 6, "{body}");

    // (b) Each proxy refused its stranger, counted by reason and logged
    // with the names.
    let c1 = cluster.metrics("c1-p1").await;
    let refused = |text: &str, link: &str, reason: &str| {
        metric(
            text,
            "fleetsql_tls_refusals_total",
            &[("link", link), ("reason", reason)],
        )
    };
    assert!(refused(&c1, "outgoing", "not_in_topology") >= 1.0, "{c1}");
    let c2 = cluster.metrics("c2-p1").await;
    assert!(refused(&c2, "outgoing", "unknown_ca") >= 1.0, "{c2}");
    assert_eq!(refused(&c2, "outgoing", "not_in_topology"), 0.0, "{c2}");
    let log = cluster.log("c1-p1");
    assert!(
        log.contains("child `c1-m3` presented a certificate naming `intruder`"),
        "{log}"
    );

    // A valid fleet certificate whose node is not a parent of the agent
    // (the TLA's) is refused by the agent; its proxy's is served.
    let certs_dir = cluster.dir.path().join("certs");
    let agent = format!("http://{}", cluster.addr("c1-m1", "flight"));
    let dial = |tls: Option<Arc<TlsContext>>| {
        FlightChild::new(
            "c1-m1",
            agent.clone(),
            FlightChildOptions {
                tls,
                ..FlightChildOptions::default()
            },
        )
        .unwrap()
    };
    let tla = TlsContext::load("tla", "t1", files(&certs_dir, "t1")).unwrap();
    let request = FetchRequest {
        requester: "t1".into(),
        ..FetchRequest::default()
    };
    // (Under TLS 1.3 the client's handshake ends before the server
    // refuses its certificate: the call fails, the agent says why.)
    dial(Some(tla))
        .fetch_generation(&request)
        .await
        .unwrap_err();
    let proxy = TlsContext::load("proxy", "c1-p1", files(&certs_dir, "c1-p1")).unwrap();
    dial(Some(proxy)).health().await.unwrap();
    assert!(dial(None).health().await.is_err());
    // (Counted by the agent's handshake task, which may finish after the
    // client saw the connection close.)
    eventually(Duration::from_secs(10), "the agent's refusals", || async {
        let m1 = cluster.metrics("c1-m1").await;
        (refused(&m1, "incoming", "not_in_topology") >= 1.0
            && refused(&m1, "incoming", "handshake") >= 1.0)
            .then_some(())
    })
    .await;
    let log = cluster.log("c1-m1");
    assert!(
        log.contains(
            "peer certificate names `t1`, `localhost`, which the topology does not list as a parent of agent `c1-m1`"
        ),
        "{log}"
    );

    // (c) Rotation: the misnamed agent's certificate issued again for its
    // own name is taken by the running agent; the proxy's next connection
    // accepts it and its machine joins.
    certs_ok(&["issue", "c1-m3", "--force"], &certs_dir);
    eventually(Duration::from_secs(30), "c1-m3 accepted", || async {
        (machines_seen(&cluster).await == 5).then_some(())
    })
    .await;
    let m3 = cluster.metrics("c1-m3").await;
    assert!(
        metric(&m3, "fleetsql_tls_reloads_total", &[("result", "ok")]) >= 1.0,
        "{m3}"
    );

    // A corrupt new key is refused and the previous pair kept: the proxy
    // still serves its TLA.
    std::fs::write(certs_dir.join("c1-p1.key"), "not a key").unwrap();
    eventually(Duration::from_secs(30), "a refused reload", || async {
        let text = cluster.metrics("c1-p1").await;
        (metric(&text, "fleetsql_tls_reloads_total", &[("result", "failed")]) >= 1.0).then_some(())
    })
    .await;
    assert!(cluster.log("c1-p1").contains("do not load"));
    cluster.generations_pass("t1", 2).await;
    assert_eq!(machines_seen(&cluster).await, 5);

    // Re-issued while running, the proxy's certificate is taken and its
    // links keep working: the TLA's connection made before, and a new one
    // to the agent with the new certificate.
    certs_ok(&["issue", "c1-p1", "--force"], &certs_dir);
    eventually(Duration::from_secs(30), "the proxy's reload", || async {
        let text = cluster.metrics("c1-p1").await;
        (metric(&text, "fleetsql_tls_reloads_total", &[("result", "ok")]) >= 1.0).then_some(())
    })
    .await;
    cluster.generations_pass("t1", 2).await;
    assert_eq!(machines_seen(&cluster).await, 5);
    let proxy = TlsContext::load("proxy", "c1-p1", files(&certs_dir, "c1-p1")).unwrap();
    dial(Some(proxy)).health().await.unwrap();
}
