//! The agent end to end: a real agent on 127.0.0.1 port 0, publishes over
//! HTTP and the drop directory, generations read through `as_child()` the
//! way a cluster proxy reads them. No sleeps: every wait is for a
//! generation or an answer.

mod collectors;
mod drop_dir;
mod publish;
mod requested;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch};
use fleetsql_agent::{Agent, AgentConfig};
use fleetsql_aggregator::FetchRequest;
use fleetsql_model::Generation;

/// An agent that never ticks by itself: tests make generations on demand.
pub(crate) fn config() -> AgentConfig {
    AgentConfig {
        host: "testhost".into(),
        ip: "10.9.8.7".into(),
        cluster: "testcluster".into(),
        tick: Duration::from_secs(3600),
        publish_addr: "127.0.0.1:0".parse().unwrap(),
        host_collectors: false,
        ..AgentConfig::default()
    }
}

pub(crate) fn start(config: AgentConfig) -> Agent {
    Agent::start(config).expect("agent starts")
}

pub(crate) fn url(agent: &Agent, path: &str) -> String {
    format!("http://{}{}", agent.publish_addr(), path)
}

pub(crate) fn tables(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// What a parent sees after asking for `names`: waits for a generation
/// made after this call, so rows published before it are in it.
pub(crate) async fn fetch(agent: &Agent, names: &[&str]) -> Arc<Generation> {
    let child = agent.as_child();
    let request = FetchRequest {
        requester: "test-parent".into(),
        tables: tables(names),
        ..FetchRequest::default()
    };
    // The first fetch naming the tables ticks at once; later ones must
    // wait for a fresh generation, which tick_now makes.
    let since = child.fetch(&request).await.expect("fetch").meta.id;
    agent.tick_now();
    let request = FetchRequest {
        since_generation: Some(since),
        wait: Some(Duration::from_secs(20)),
        ..request
    };
    let generation = child.fetch(&request).await.expect("fetch");
    assert!(generation.meta.id > since, "no fresh generation");
    generation
}

pub(crate) async fn post(
    agent: &Agent,
    table: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, serde_json::Value) {
    send(
        reqwest::Client::new()
            .post(url(agent, &format!("/v1/tables/{table}")))
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

pub(crate) async fn send(request: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let answer = request.send().await.expect("request sent");
    let status = answer.status().as_u16();
    let body = answer.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// One column of a generation's table, as strings (for easy assertions).
pub(crate) fn column(generation: &Generation, table: &str, column: &str) -> Vec<String> {
    let table = generation
        .table(table)
        .unwrap_or_else(|| panic!("table {table} missing"));
    let index = table
        .schema()
        .index_of(column)
        .unwrap_or_else(|_| panic!("column {column} missing"));
    table
        .batches()
        .iter()
        .flat_map(|b: &RecordBatch| {
            let col = b.column(index).clone();
            (0..col.len())
                .map(move |i| {
                    arrow::util::display::array_value_to_string(&col, i).unwrap_or_default()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}
