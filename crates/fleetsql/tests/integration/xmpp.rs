//! `fleetsql demo --integrations FILE` with an XMPP pubsub sink and source
//! against a real Prosody: a query registered over HTTP with the sink gets
//! a node, its results arrive as items at an independent subscriber, and
//! deleting the query deletes the node; items published to a node arrive as
//! events of a persistent query; a failing source shows in `fleet_sources`.

use std::time::{Duration, Instant};

use fleetsql_integrations::xmpp_wire::{Account, Client, PubsubEvent, pubsub_event};

use crate::cluster::TestDemo;
use crate::prosody::{DOMAIN, PUBSUB, Prosody};

fn account(prosody: &Prosody, user: &str, password: &str) -> Account {
    Account {
        host: "127.0.0.1".into(),
        port: prosody.port,
        jid: format!("{user}@{DOMAIN}"),
        password: password.into(),
        resource: "e2e-test".into(),
        tls_server_name: None,
        ca_file: Some(prosody.ca.clone()),
        timeout: Duration::from_secs(5),
    }
}

async fn next_items(client: &mut Client, node: &str) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        client.flush().await.unwrap();
        let stanza = tokio::time::timeout_at(deadline, client.next_stanza())
            .await
            .expect("pubsub items within 15 s")
            .unwrap();
        match pubsub_event(&stanza) {
            Some(PubsubEvent::Items { node: n, items, .. }) if n == node => {
                return items
                    .iter()
                    .map(|i| serde_json::from_str(i.json().unwrap()).unwrap())
                    .collect();
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => {}
        }
    }
}

/// Registers the slow-probe query with the `chat` sink at `base` (an HTTP
/// URL) and returns the registration answer.
async fn register_probe_query(base: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{base}/v1/persistent-queries"))
        .json(&serde_json::json!({
            "epl": "select host, rtt from probe where rtt > 100",
            "sinks": ["chat"],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `watcher`, subscribed to `node` once the sink has created it (bounded).
async fn watcher_subscribed(prosody: &Prosody, node: &str) -> Client {
    let mut watcher = Client::connect(&account(prosody, "watcher", "w4tch"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match watcher.subscribe(PUBSUB, node).await {
            Ok(()) => return watcher,
            Err(e) if e.is("item-not-found") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("subscribing to {node}: {e}"),
        }
    }
}

/// Prosody with the node's account (`fleetsql`), a subscriber (`watcher`)
/// and `ops`, connected, owning the `ops/probes` node the sources read.
async fn prosody_with_probes_node() -> (Prosody, Client) {
    let prosody = Prosody::start(
        &[("fleetsql", "s3cret"), ("watcher", "w4tch"), ("ops", "0ps")],
        &["fleetsql", "ops"],
    );
    let mut ops = Client::connect(&account(&prosody, "ops", "0ps"))
        .await
        .unwrap();
    ops.create_node(PUBSUB, "ops/probes").await.unwrap();
    (prosody, ops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_queries_publish_to_xmpp_pubsub_and_nodes_feed_queries() {
    let (prosody, mut ops) = prosody_with_probes_node().await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("integrations.toml");
    std::fs::write(
        &file,
        format!(
            "[[xmpp_sink]]\nname = \"chat\"\n{}\n\
             [[xmpp_source]]\nname = \"probes\"\n{}stream = \"probe\"\nnodes = [{{ node = \"ops/probes\" }}]\n\n\
             [[xmpp_source]]\nname = \"locked-out\"\n{}stream = \"probe\"\nnodes = [{{ node = \"ops/probes\" }}]\n\
             retry_min = \"100ms\"\n",
            prosody.toml_account("fleetsql", "s3cret"),
            prosody.toml_account("watcher", "w4tch"),
            prosody.toml_account("watcher", "not-the-password"),
        ),
    )
    .unwrap();
    let demo = TestDemo::start_with(1, 1, "1s", &["--integrations".into(), file.into()]).await;
    let http = reqwest::Client::new();

    let answer = register_probe_query(&demo.url()).await;
    let id = answer["id"].as_str().expect("an id").to_string();
    let node = format!("fleetsql/pq/{id}");
    assert_eq!(answer["sinks"][0]["service"], PUBSUB, "{answer}");
    assert_eq!(answer["sinks"][0]["node"], node.as_str(), "{answer}");

    let mut watcher = watcher_subscribed(&prosody, &node).await;
    let posted = http
        .post(format!("{}/v1/events/probe", demo.url()))
        .json(&serde_json::json!([
            { "host": "a", "rtt": 150 },
            { "host": "b", "rtt": 20 },
        ]))
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_success(), "{posted:?}");
    let items = next_items(&mut watcher, &node).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(
        items[0]["rows"],
        serde_json::json!([{ "host": "a", "rtt": 150 }])
    );

    // Items published to the source's node are events of `probe`: this one
    // passes the filter and reaches the subscriber through the sink.
    ops.publish_json(PUBSUB, "ops/probes", "p1", r#"{"host": "c", "rtt": 300}"#)
        .await
        .unwrap();
    let items = next_items(&mut watcher, &node).await;
    assert_eq!(
        items[0]["rows"],
        serde_json::json!([{ "host": "c", "rtt": 300 }])
    );
    assert_eq!(items[0]["seq"], 2);

    let deleted = http
        .delete(format!("{}/v1/persistent-queries/{id}", demo.url()))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match watcher.items(PUBSUB, &node).await {
            Err(e) if e.is("item-not-found") => break,
            other => assert!(Instant::now() < deadline, "node still there: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = demo
            .query_json(
                "SELECT name, kind, status, last_error, items FROM fleet_sources ORDER BY name",
            )
            .await;
        let rows = &body["rows"];
        if status.is_success()
            && rows[0][0] == "chat"
            && rows[0][4] == 2
            && rows[1][0] == "locked-out"
            && rows[1][2] == "failing"
            && rows[2][0] == "probes"
            && rows[2][1] == "xmpp_source"
            && rows[2][4] == 1
        {
            assert!(
                rows[1][3].as_str().unwrap().contains("not-authorized"),
                "{body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fleet_sources never showed the XMPP integrations: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watcher.close().await;
    ops.close().await;
}

/// A distributed SQL node started with `--integrations FILE`. Its TLA is
/// not running: persistent queries over posted or integrated events do
/// not need the fleet.
fn sqlnode_with(dir: &std::path::Path, integrations: &str) -> std::process::Child {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let tla = fleetsql_tiers::TlaEntry {
        flight: Some(nobody),
        ..fleetsql_tiers::TlaEntry::default()
    };
    let sql = fleetsql_tiers::SqlNodeEntry {
        tlas: [("t1".to_string(), 0)].into(),
        ..fleetsql_tiers::SqlNodeEntry::default()
    };
    let topology = fleetsql_tiers::Topology {
        tlas: [("t1".to_string(), tla)].into(),
        sqlnodes: [("sql".to_string(), sql)].into(),
        ..fleetsql_tiers::Topology::default()
    };
    std::fs::write(dir.join("topology.toml"), topology.to_toml()).unwrap();
    std::fs::write(dir.join("integrations.toml"), integrations).unwrap();
    std::process::Command::new(crate::cluster::BINARY)
        .arg("sqlnode")
        .arg("--config")
        .arg(dir.join("topology.toml"))
        .args([
            "--name",
            "sql",
            "--pg",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--integrations")
        .arg(dir.join("integrations.toml"))
        .env("FLEETSQL_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start fleetsql sqlnode")
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_sql_node_runs_xmpp_sinks_and_sources() {
    let (prosody, mut ops) = prosody_with_probes_node().await;
    let dir = tempfile::tempdir().unwrap();
    let mut sqlnode = Killed(sqlnode_with(
        dir.path(),
        &format!(
            "[[xmpp_sink]]\nname = \"chat\"\n{}\n\
             [[xmpp_source]]\nname = \"probes\"\n{}stream = \"probe\"\nnodes = [{{ node = \"ops/probes\" }}]\n",
            prosody.toml_account("fleetsql", "s3cret"),
            prosody.toml_account("watcher", "w4tch"),
        ),
    ));
    let line = crate::cluster::ready_line(&mut sqlnode.0, "fleetsql sqlnode ready:")
        .await
        .expect("the sqlnode exited before it was ready");
    let http = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("http="))
        .expect("http= in the ready line")
        .to_string();
    let answer = register_probe_query(&format!("http://{http}")).await;
    let node = answer["sinks"][0]["node"]
        .as_str()
        .unwrap_or_else(|| panic!("no node in {answer}"))
        .to_string();
    let mut watcher = watcher_subscribed(&prosody, &node).await;
    // The source subscribes in the background: publish until an item
    // comes back through the query and the sink (bounded).
    let mut items = Vec::new();
    for attempt in 0..40 {
        ops.publish_json(
            PUBSUB,
            "ops/probes",
            &format!("p{attempt}"),
            r#"{"host": "far", "rtt": 250}"#,
        )
        .await
        .unwrap();
        watcher.flush().await.unwrap();
        if let Ok(Ok(stanza)) =
            tokio::time::timeout(Duration::from_millis(500), watcher.next_stanza()).await
            && let Some(PubsubEvent::Items { items: got, .. }) = pubsub_event(&stanza)
        {
            items = got;
            break;
        }
    }
    let first: serde_json::Value = serde_json::from_str(
        items
            .first()
            .expect("an item through the sqlnode")
            .json()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        first["rows"],
        serde_json::json!([{ "host": "far", "rtt": 250 }])
    );
    // The node answers for its own sinks and sources in `fleet_sources`
    // (it has no agent to publish them through).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body: serde_json::Value = reqwest::Client::new()
            .post(format!("http://{http}/v1/query"))
            .json(&serde_json::json!({
                "sql": "SELECT name, kind, status, items FROM fleet_sources ORDER BY name"
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = &body["rows"];
        let delivering = |name: &str, kind: &str| {
            rows.as_array().is_some_and(|rows| {
                rows.iter().any(|r| {
                    r[0] == name && r[1] == kind && r[2] == "ok" && r[3].as_u64() >= Some(1)
                })
            })
        };
        if delivering("chat", "xmpp_sink") && delivering("probes", "xmpp_source") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sqlnode's fleet_sources never showed its integrations: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.close().await;
    ops.close().await;
}

#[test]
fn a_sql_node_refuses_publishers_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let child = sqlnode_with(
        dir.path(),
        "[[prometheus]]\nname = \"node\"\nurl = \"http://127.0.0.1:9/metrics\"\n",
    );
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a local agent"), "{stderr}");
}
