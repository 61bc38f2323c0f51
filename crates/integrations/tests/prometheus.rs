//! The Prometheus scrape publisher against a real `prometheus-node-exporter`
//! and against a local server answering bad expositions.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Float64Array, StringArray};
use arrow::datatypes::DataType;
use common::{RecordingAgent, eventually, free_port, start_server};
use fleetsql_integrations::{Integrations, IntegrationsConfig, TableTarget};

fn config(url: &str, extra: &str) -> IntegrationsConfig {
    IntegrationsConfig::parse(&format!(
        "[[prometheus]]\nname = \"node\"\nurl = \"{url}\"\ninterval = \"200ms\"\nretry_min = \"50ms\"\nretry_max = \"200ms\"\ntimeout = \"2s\"\n{extra}"
    ))
    .unwrap()
}

fn column<'a>(batch: &'a arrow::array::RecordBatch, name: &str) -> &'a dyn Array {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", batch.schema()))
        .as_ref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_exporter_families_become_tables() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let _exporter = start_server(
        "prometheus-node-exporter",
        &[
            format!("--web.listen-address=127.0.0.1:{port}"),
            // Only collectors that work in any sandbox.
            "--collector.disable-defaults".into(),
            "--collector.loadavg".into(),
            "--collector.cpu".into(),
            "--collector.meminfo".into(),
        ],
        addr,
    );
    let agent = RecordingAgent::start();
    let target: Arc<dyn TableTarget> = agent.clone();
    let integrations = Integrations::start(
        &config(&format!("http://127.0.0.1:{port}/metrics"), ""),
        Some(target),
        None,
    )
    .unwrap();

    let load = eventually(20, "node_load1", || agent.table("node_load1")).await;
    assert_eq!(load.num_rows(), 1);
    let value = load.column_by_name("value").unwrap();
    assert_eq!(value.data_type(), &DataType::Float64);
    let v = value
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap()
        .value(0);
    assert!(v >= 0.0, "load average {v}");
    let job = column(&load, "job")
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(job.value(0), "node");
    let instance = column(&load, "instance")
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(instance.value(0), format!("127.0.0.1:{port}"));

    // Labels become columns: one row per cpu and mode.
    let cpu = agent.table("node_cpu_seconds_total").expect("cpu family");
    let modes = column(&cpu, "mode")
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert!((0..modes.len()).any(|i| modes.value(i) == "idle"));
    assert!(cpu.column_by_name("cpu").is_some());
    // A histogram or summary family keeps its sample names apart.
    let gc = agent
        .table("go_gc_duration_seconds")
        .expect("go summary family");
    let samples = column(&gc, "sample")
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert!((0..samples.len()).any(|i| samples.value(i) == "go_gc_duration_seconds_count"));

    // The agent holds them as this publisher's rows, next to fleet_sources.
    assert_eq!(agent.agent.publishers("node_load1"), ["prometheus:node"]);
    let health = integrations
        .wait_health("node", Duration::from_secs(10), |h| h.successes >= 2)
        .await
        .unwrap();
    assert_eq!(
        (health.status, health.failures, health.bad_items),
        ("ok", 0, 0)
    );
    assert!(health.items > 10);
    let sources = eventually(10, "fleet_sources", || agent.table("fleet_sources")).await;
    let names = column(&sources, "name")
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(names.value(0), "node");
    assert!(agent.agent.available().contains("fleet_sources"));
    integrations.shutdown().await;
}

async fn serve(listener: tokio::net::TcpListener, body: &'static str) {
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(move || async move { body }));
    axum::serve(listener, app).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_counted_and_good_families_kept() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(serve(
        listener,
        "# TYPE up gauge\nup 1\nbroken{job=\"x} 3\nno_value\n# TYPE temp gauge\ntemp{room=\"a\"} 21.5\ntemp{room=\"b\"} 19\n",
    ));
    let agent = RecordingAgent::start();
    let target: Arc<dyn TableTarget> = agent.clone();
    let integrations = Integrations::start(
        &config(&format!("http://127.0.0.1:{port}/metrics"), ""),
        Some(target),
        None,
    )
    .unwrap();
    let health = integrations
        .wait_health("node", Duration::from_secs(10), |h| h.bad_items >= 2)
        .await
        .unwrap();
    assert_eq!(health.status, "ok");
    let error = health.last_error.unwrap();
    assert!(error.contains("line 4"), "{error}");
    let temp = agent.table("temp").unwrap();
    assert_eq!(temp.num_rows(), 2);
    assert!(agent.table("up").is_some());
    assert!(agent.table("broken").is_none());
    integrations.shutdown().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_then_recovering_exporter() {
    let port = free_port();
    let agent = RecordingAgent::start();
    let target: Arc<dyn TableTarget> = agent.clone();
    let integrations = Integrations::start(
        &config(&format!("http://127.0.0.1:{port}/metrics"), ""),
        Some(target),
        None,
    )
    .unwrap();
    let failing = integrations
        .wait_health("node", Duration::from_secs(10), |h| h.failures >= 3)
        .await
        .unwrap();
    assert_eq!(failing.status, "failing");
    assert!(failing.consecutive_failures >= 3);
    let error = failing.last_error.unwrap();
    assert!(error.contains("is the exporter running?"), "{error}");
    assert!(agent.table("fleet_sources").is_some());

    // Not a Prometheus exposition at all: a failure, not bad items.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = tokio::spawn(serve(listener, "<html>hello</html>\n"));
    let bad = integrations
        .wait_health("node", Duration::from_secs(10), |h| {
            h.last_error
                .as_deref()
                .is_some_and(|e| e.contains("not a Prometheus"))
        })
        .await
        .unwrap();
    assert_eq!(bad.status, "failing");
    server.abort();
    let _ = server.await;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = tokio::spawn(serve(listener, "up 1\n"));
    let ok = integrations
        .wait_health("node", Duration::from_secs(10), |h| h.status == "ok")
        .await
        .unwrap();
    assert_eq!(ok.consecutive_failures, 0);
    assert!(agent.table("up").is_some());
    integrations.shutdown().await;
    server.abort();
}
