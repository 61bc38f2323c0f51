//! Persistent queries on a distributed SQL node outlive the node: one
//! registered over HTTP and one over XML-RPC get fleet-table events each
//! generation, and after a clean stop and after a kill -9 the restarted
//! node (same state directory) lists both under the same ids and feeds
//! them again.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::tiers::{TestCluster, eventually};

const NODE: &str = "sql";

fn base(cluster: &TestCluster) -> String {
    format!("http://{}", cluster.addr(NODE, "http"))
}

/// `pqa.register(epl, publish)` over XML-RPC; the id of the answer.
async fn register_xmlrpc(cluster: &TestCluster, epl: &str, publish: &str) -> String {
    let call = format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>pqa.register</methodName><params>\
         <param><value><string>{epl}</string></value></param>\
         <param><value><string>{publish}</string></value></param></params></methodCall>"
    );
    let answer = xmlrpc(cluster, &call).await;
    member(&answer, "id").unwrap_or_else(|| panic!("no id in {answer}"))
}

async fn xmlrpc(cluster: &TestCluster, body: &str) -> String {
    reqwest::Client::new()
        .post(format!("{}/RPC2", base(cluster)))
        .header("content-type", "text/xml")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The string value of the first struct member `name` in an XML-RPC answer.
fn member(xml: &str, name: &str) -> Option<String> {
    let after = &xml[xml.find(&format!("<name>{name}</name>"))?..];
    let start = after.find("<string>")? + "<string>".len();
    let end = after[start..].find("</string>")?;
    Some(after[start..start + end].to_string())
}

/// The ids `pqa.list` answers with, in order.
async fn xmlrpc_ids(cluster: &TestCluster) -> Vec<String> {
    let call = "<?xml version=\"1.0\"?><methodCall><methodName>pqa.list</methodName>\
                <params></params></methodCall>";
    let answer = xmlrpc(cluster, call).await;
    answer
        .split("<name>id</name>")
        .skip(1)
        .filter_map(|rest| member(&format!("<name>id</name>{rest}"), "id"))
        .collect()
}

/// id → (epl, refs, created_ms, error) as `GET /v1/persistent-queries` lists them.
async fn listed(cluster: &TestCluster) -> BTreeMap<String, Value> {
    let list: Value = reqwest::get(format!("{}/v1/persistent-queries", base(cluster)))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["queries"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|q| {
            (
                q["id"].as_str().unwrap_or_default().to_string(),
                json!([
                    q["epl"],
                    q["publish"],
                    q["refs"],
                    q["created_ms"],
                    q["error"]
                ]),
            )
        })
        .collect()
}

/// Reads the SSE stream of `id` until one row (keyed by the columns `key`)
/// has come twice: a generation has that row once, so rows of two
/// generations reached the query (bounded).
async fn assert_fed_twice(cluster: &TestCluster, id: &str, key: &[&str]) {
    let mut response = reqwest::Client::new()
        .get(format!(
            "{}/v1/persistent-queries/{id}/events",
            base(cluster)
        ))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{id}: {}",
        response.status()
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut buf = String::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while !seen.values().any(|n| *n >= 2) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("{id}: no two generations within 30 s: {seen:?}"))
            .unwrap()
            .expect("the event stream ended");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let is_result = frame.lines().any(|l| {
                l.strip_prefix("event:")
                    .is_some_and(|e| e.trim() == "result")
            });
            let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            if !is_result {
                continue;
            }
            let frame: Value = serde_json::from_str(data.trim()).unwrap();
            assert_eq!(frame["query"], id, "{frame}");
            for row in frame["rows"].as_array().into_iter().flatten() {
                let key: Vec<String> = key.iter().map(|k| row[k].to_string()).collect();
                *seen.entry(key.join(",")).or_default() += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_queries_survive_a_restart_of_their_sql_node() {
    let mut cluster = TestCluster::start(1, 1, Duration::from_secs(600)).await;
    // The state directory from the command line (over the topology entry,
    // which names none); it stays on the node's arguments for the restarts.
    let state_dir = cluster.dir.path().join("sql-state");
    cluster
        .restart_with(
            NODE,
            "sqlnode",
            vec!["--state-dir".into(), state_dir.clone().into()],
        )
        .await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/persistent-queries", base(&cluster)))
        .json(&json!({ "epl": "select ip, hostname from sys" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let over_http = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let over_xmlrpc = register_xmlrpc(
        &cluster,
        "select machineip, mountp from filesystem",
        "current",
    )
    .await;
    assert_ne!(over_http, over_xmlrpc);
    let ids = [over_http.as_str(), over_xmlrpc.as_str()];
    let fed = async |cluster: &TestCluster| {
        assert_fed_twice(cluster, &over_http, &["ip"]).await;
        assert_fed_twice(cluster, &over_xmlrpc, &["machineip", "mountp"]).await;
    };
    fed(&cluster).await;
    let before = listed(&cluster).await;
    assert_eq!(before.keys().collect::<Vec<_>>().len(), 2, "{before:?}");
    assert!(state_dir.join("persistent_queries.db").exists());

    for (how, clean) in [("a clean stop", true), ("kill -9", false)] {
        if clean {
            cluster.stop(NODE).await;
        } else {
            cluster.kill(NODE);
        }
        cluster.restart(NODE, "sqlnode").await;
        let after = eventually(Duration::from_secs(30), "the restored list", || async {
            let now = listed(&cluster).await;
            (now.len() == before.len()).then_some(now)
        })
        .await;
        assert_eq!(
            after, before,
            "after {how}: same ids, statements, refs and times"
        );
        let mut over_rpc = xmlrpc_ids(&cluster).await;
        over_rpc.sort();
        let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(over_rpc, expected, "after {how}: pqa.list");
        fed(&cluster).await;
    }
}
