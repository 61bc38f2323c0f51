//! MQTT sink and source against a real `mosquitto` on loopback.

mod common;

use std::time::Duration;

use common::{Server, free_port, start_server};
use fleetsql_integrations::config::MqttBroker;
use fleetsql_integrations::mqtt_wire::{Connection, Incoming};
use fleetsql_integrations::{Integrations, IntegrationsConfig};
use fleetsql_pqa::{PqaService, Publish, ServiceConfig};
use tokio::sync::mpsc;

/// mosquitto with an open listener and one that refuses everyone.
fn mosquitto(dir: &std::path::Path) -> (Server, u16, u16) {
    let (open, closed) = (free_port(), free_port());
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings true\npersistence false\n\
             listener {open} 127.0.0.1\nallow_anonymous true\n\
             listener {closed} 127.0.0.1\nallow_anonymous false\n"
        ),
    )
    .unwrap();
    let server = start_server(
        "mosquitto",
        &["-c".into(), conf.display().to_string()],
        format!("127.0.0.1:{open}").parse().unwrap(),
    );
    (server, open, closed)
}

fn broker(port: u16) -> MqttBroker {
    MqttBroker {
        host: "127.0.0.1".into(),
        port,
        client_id: None,
        username: None,
        password: None,
        keep_alive: Duration::from_secs(10),
    }
}

async fn connect(port: u16) -> Connection {
    Connection::connect(
        &broker(port),
        &format!("test-{}", free_port()),
        Duration::from_secs(10),
    )
    .await
    .unwrap()
}

/// A test subscriber to `filter`, forwarding (topic, payload) once subscribed.
async fn subscriber(port: u16, filter: &str) -> mpsc::Receiver<(String, Vec<u8>)> {
    let mut conn = connect(port).await;
    conn.subscribe(&[filter.to_string()], 1).await.unwrap();
    let (tx, rx) = mpsc::channel(64);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        for _ in 0..10_000 {
            if conn.flush().await.is_err() {
                break;
            }
            match conn.read().await {
                Ok(Incoming::SubAck { .. }) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Incoming::Publish { topic, payload }) => {
                    if tx.send((topic, payload)).await.is_err() {
                        break;
                    }
                }
                Ok(Incoming::Other) => {}
                Err(_) => break,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("test client subscribed")
        .unwrap();
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_to_topics_and_messages_to_events() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port, _) = mosquitto(dir.path());
    let pqa = PqaService::new(ServiceConfig::default());
    let config = IntegrationsConfig::parse(&format!(
        r#"
        [[mqtt_sink]]
        name = "results"
        host = "127.0.0.1"
        port = {port}
        topic_prefix = "ops/pq"
        qos = 1

        [[mqtt_source]]
        name = "sensors"
        host = "127.0.0.1"
        port = {port}
        topics = ["sensors/#"]
        stream = "sensor"
        qos = 1
        "#
    ))
    .unwrap();
    let integrations = Integrations::start(&config, None, Some(pqa.clone())).unwrap();
    let registered = pqa
        .register(
            "select room, temp from sensor where temp > 20",
            Publish::All,
            None,
        )
        .unwrap();
    let mut results = subscriber(port, "ops/pq/#").await;
    let mut publisher = connect(port).await;
    for name in ["results", "sensors"] {
        let h = integrations
            .wait_health(name, Duration::from_secs(10), |h| h.status == "ok")
            .await
            .unwrap();
        assert_eq!(h.status, "ok", "{h:?}");
    }
    for payload in [
        r#"{"room": "a", "temp": 25}"#,
        r#"{"room": "b", "temp": 10}"#,
        "this is not json",
        r#"[{"room": "c", "temp": 30}]"#,
    ] {
        publisher
            .publish("sensors/floor1", 1, payload.as_bytes())
            .await
            .unwrap();
    }
    let mut rooms = Vec::new();
    for _ in 0..2 {
        let (topic, payload) = tokio::time::timeout(Duration::from_secs(10), results.recv())
            .await
            .expect("a result on MQTT")
            .unwrap();
        assert_eq!(topic, format!("ops/pq/{}", registered.id));
        let n: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(n["query"], registered.id.as_str());
        rooms.push(n["rows"][0]["room"].as_str().unwrap().to_string());
    }
    assert_eq!(rooms, ["a", "c"]);
    let source = integrations
        .wait_health("sensors", Duration::from_secs(10), |h| {
            h.bad_items == 1 && h.items == 3
        })
        .await
        .unwrap();
    assert_eq!((source.items, source.bad_items), (3, 1), "{source:?}");
    assert!(source.last_error.unwrap().contains("not JSON"));
    let sink = integrations
        .wait_health("results", Duration::from_secs(10), |h| h.items >= 2)
        .await
        .unwrap();
    assert_eq!(sink.items, 2);
    integrations.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_unreachable_brokers_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, _, closed) = mosquitto(dir.path());
    let nobody = free_port();
    let pqa = PqaService::new(ServiceConfig::default());
    let config = IntegrationsConfig::parse(&format!(
        r#"
        [[mqtt_source]]
        name = "refused"
        host = "127.0.0.1"
        port = {closed}
        username = "fleet"
        password = "wrong"
        topics = ["x"]
        stream = "x"
        retry_min = "50ms"
        retry_max = "100ms"

        [[mqtt_sink]]
        name = "nobody"
        host = "127.0.0.1"
        port = {nobody}
        retry_min = "50ms"
        retry_max = "100ms"
        "#
    ))
    .unwrap();
    let integrations = Integrations::start(&config, None, Some(pqa.clone())).unwrap();
    let refused = integrations
        .wait_health("refused", Duration::from_secs(10), |h| h.failures >= 2)
        .await
        .unwrap();
    assert_eq!(refused.status, "failing");
    let error = refused.last_error.unwrap();
    assert!(error.contains("check username and password"), "{error}");
    let nobody = integrations
        .wait_health("nobody", Duration::from_secs(10), |h| h.failures >= 2)
        .await
        .unwrap();
    assert!(
        nobody
            .last_error
            .unwrap()
            .contains("is the broker running?")
    );
    // Queries still register and run while the sink's broker is away.
    let r = pqa.register("select * from x", Publish::All, None).unwrap();
    pqa.push_event("x", &serde_json::json!({"a": 1})).unwrap();
    assert_eq!(
        pqa.list()
            .iter()
            .find(|q| q.id == r.id)
            .unwrap()
            .notifications,
        1
    );
    integrations.shutdown().await;
}
