//! The perfSONAR esmond poller against a local archive answering in the
//! esmond JSON format (metadata listing, base data, statistics summaries).

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use fleetsql_integrations::{Integrations, IntegrationsConfig};
use fleetsql_pqa::{PqaService, Publish, ServiceConfig};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::HashMap;

#[derive(Debug, Default)]
struct Archive {
    /// Query strings of metadata requests, to check the filters sent.
    listings: Vec<HashMap<String, String>>,
    throughput: Vec<Value>,
}

type Shared = Arc<Mutex<Archive>>;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// When the archive's fixed points were measured.
fn start() -> i64 {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *START.get_or_init(now)
}

const ROOT: &str = "/esmond/perfsonar/archive/";

fn metadata(key: &str, source: &str) -> Value {
    json!({
        "url": format!("http://ignored{ROOT}{key}/"),
        "uri": format!("{ROOT}{key}/"),
        "metadata-key": key,
        "subject-type": "point-to-point",
        "source": source,
        "destination": "10.0.0.2",
        "measurement-agent": source,
        "input-source": "ps-a.example.net",
        "input-destination": "ps-b.example.net",
        "tool-name": "bwctl/iperf3",
        "event-types": [
            {"base-uri": format!("{ROOT}{key}/throughput/base"), "event-type": "throughput",
             "summaries": [{"summary-type": "average", "summary-window": "86400",
                            "uri": format!("{ROOT}{key}/throughput/averages/86400")}],
             "time-updated": now()},
            {"base-uri": format!("{ROOT}{key}/packet-loss-rate/base"), "event-type": "packet-loss-rate",
             "summaries": [], "time-updated": now()},
            {"base-uri": format!("{ROOT}{key}/histogram-owdelay/base"), "event-type": "histogram-owdelay",
             "summaries": [{"summary-type": "statistics", "summary-window": "0",
                            "uri": format!("{ROOT}{key}/histogram-owdelay/statistics/0")}],
             "time-updated": now()},
            {"base-uri": format!("{ROOT}{key}/failures/base"), "event-type": "failures",
             "summaries": [], "time-updated": now()}
        ]
    })
}

fn since(q: &HashMap<String, String>) -> i64 {
    q.get("time-start")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

fn after(points: &[Value], start: i64) -> Json<Value> {
    Json(Value::Array(
        points
            .iter()
            .filter(|p| p["ts"].as_i64().is_none_or(|ts| ts >= start))
            .cloned()
            .collect(),
    ))
}

fn archive(state: Shared) -> Router {
    Router::new()
        .route(
            ROOT,
            get(
                |State(s): State<Shared>, Query(q): Query<HashMap<String, String>>| async move {
                    s.lock().listings.push(q.clone());
                    let all = [metadata("abc", "10.0.0.1"), metadata("def", "10.9.9.9")];
                    let matching: Vec<Value> = all
                        .into_iter()
                        .filter(|m| q.get("source").is_none_or(|s| m["source"] == s.as_str()))
                        .collect();
                    Json(Value::Array(matching))
                },
            ),
        )
        .route(
            "/esmond/perfsonar/archive/{key}/throughput/base",
            get(
                |State(s): State<Shared>, Query(q): Query<HashMap<String, String>>| async move {
                    after(&s.lock().throughput, since(&q))
                },
            ),
        )
        .route(
            "/esmond/perfsonar/archive/{key}/packet-loss-rate/base",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                after(&[json!({"ts": start() - 60, "val": 0.015})], since(&q))
            }),
        )
        .route(
            "/esmond/perfsonar/archive/{key}/histogram-owdelay/statistics/0",
            get(|Query(q): Query<HashMap<String, String>>| async move {
                after(
                    &[json!({"ts": start() - 60, "val": {
                        "mean": 12.4, "median": 12.1, "minimum": 11.0, "maximum": 19.5,
                        "percentile-95": 14.2, "standard-deviation": 0.8, "mode": [12.0]}})],
                    since(&q),
                )
            }),
        )
        .with_state(state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_points_become_events_once() {
    let state: Shared = Arc::default();
    let t0 = start();
    state.lock().throughput = vec![
        json!({"ts": t0 - 120, "val": 9.1e9}),
        json!({"ts": "yesterday", "val": 1.0}),
        json!({"ts": t0 - 100, "val": 9.4e9}),
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, archive(state.clone())).into_future());

    let pqa = PqaService::new(ServiceConfig::default());
    let mut topics = HashMap::new();
    for stream in [
        "throughput",
        "packet_loss_rate",
        "histogram_owdelay",
        "failures",
    ] {
        let r = pqa
            .register(&format!("select * from {stream}"), Publish::All, None)
            .unwrap();
        topics.insert(stream, pqa.topic(&r.id).unwrap().subscribe());
    }
    let config = IntegrationsConfig::parse(&format!(
        r#"
        [[esmond]]
        name = "ps"
        archives = ["http://{addr}{ROOT}"]
        source = "10.0.0.1"
        event_types = ["throughput", "packet-loss-rate", "histogram-owdelay"]
        interval = "200ms"
        "#
    ))
    .unwrap();
    let integrations = Integrations::start(&config, None, Some(pqa.clone())).unwrap();

    let mut next = async |stream: &str| {
        let sub = topics.get_mut(stream).unwrap();
        let p = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("no {stream} event"))
            .unwrap();
        p.notification.rows[0].clone()
    };
    let first = next("throughput").await;
    assert_eq!(first["value"], json!(9.1e9));
    assert_eq!(first["source"], "10.0.0.1");
    assert_eq!(first["metadata_key"], "abc");
    assert_eq!(first["tool_name"], "bwctl/iperf3");
    assert_eq!(next("throughput").await["ts"], json!(t0 - 100));
    let loss = next("packet_loss_rate").await;
    assert_eq!(loss["value"], json!(0.015));
    let owd = next("histogram_owdelay").await;
    assert_eq!(owd["percentile_95"], json!(14.2));
    assert_eq!(owd["median"], json!(12.1));

    // A new point arrives; the next polls bring it and nothing seen before.
    state
        .lock()
        .throughput
        .push(json!({"ts": t0 - 10, "val": 8.0e9}));
    let third = next("throughput").await;
    assert_eq!(third["ts"], json!(t0 - 10));
    let health = integrations
        .wait_health("ps", Duration::from_secs(10), |h| h.successes >= 3)
        .await
        .unwrap();
    assert_eq!(health.status, "ok");
    // 3 throughput + 1 loss + 1 delay; the unreadable point is counted.
    assert_eq!(health.items, 5, "{health:?}");
    assert!(health.bad_items >= 1);
    assert!(health.last_error.unwrap().contains("ts"));
    assert!(
        topics
            .get_mut("throughput")
            .unwrap()
            .next()
            .now_or_never_pending()
    );
    assert!(
        topics
            .get_mut("failures")
            .unwrap()
            .next()
            .now_or_never_pending()
    );
    let listings = state.lock().listings.clone();
    assert!(
        listings
            .iter()
            .all(|q| q.get("source").map(String::as_str) == Some("10.0.0.1"))
    );
    integrations.shutdown().await;
    server.abort();
}

trait Pending {
    fn now_or_never_pending(self) -> bool;
}

impl<F: std::future::Future> Pending for F {
    /// True when the future is not ready at once (nothing queued).
    fn now_or_never_pending(self) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(self);
        f.as_mut().poll(&mut cx).is_pending()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_archives_are_reported_and_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(ROOT, get(|| async { "<html>maintenance</html>" }));
    let server = tokio::spawn(axum::serve(listener, app).into_future());
    let closed = common::free_port();
    let pqa = PqaService::new(ServiceConfig::default());
    let config = IntegrationsConfig::parse(&format!(
        r#"
        [[esmond]]
        name = "html"
        archives = ["http://{addr}{ROOT}"]
        retry_min = "50ms"
        retry_max = "100ms"

        [[esmond]]
        name = "down"
        archives = ["http://127.0.0.1:{closed}{ROOT}"]
        retry_min = "50ms"
        retry_max = "100ms"
        "#
    ))
    .unwrap();
    let integrations = Integrations::start(&config, None, Some(pqa)).unwrap();
    let html = integrations
        .wait_health("html", Duration::from_secs(10), |h| h.failures >= 2)
        .await
        .unwrap();
    assert!(html.last_error.unwrap().contains("did not answer JSON"));
    let down = integrations
        .wait_health("down", Duration::from_secs(10), |h| h.failures >= 2)
        .await
        .unwrap();
    assert!(
        down.last_error
            .unwrap()
            .contains("cannot reach esmond archive")
    );
    integrations.shutdown().await;
    server.abort();
}
