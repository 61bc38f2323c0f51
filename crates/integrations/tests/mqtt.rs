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
        tls: false,
        ca_file: None,
        tls_server_name: None,
    }
}

async fn connect(port: u16) -> Connection {
    connect_to(&broker(port)).await
}

async fn connect_to(broker: &MqttBroker) -> Connection {
    Connection::connect(
        broker,
        &format!("test-{}", free_port()),
        Duration::from_secs(10),
    )
    .await
    .unwrap()
}

/// A test subscriber to `filter`, forwarding (topic, payload) once subscribed.
async fn subscriber(port: u16, filter: &str) -> mpsc::Receiver<(String, Vec<u8>)> {
    subscriber_to(&broker(port), filter).await
}

async fn subscriber_to(broker: &MqttBroker, filter: &str) -> mpsc::Receiver<(String, Vec<u8>)> {
    let mut conn = connect_to(broker).await;
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
                Ok(_) => {}
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

/// mosquitto with a TLS listener (certificate from a test CA) and a plain one.
fn mosquitto_tls(dir: &std::path::Path) -> (Server, u16, u16, std::path::PathBuf) {
    let certs = common::tls::test_certs(dir, &["localhost", "127.0.0.1"]);
    let (tls, plain) = (free_port(), free_port());
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings true\npersistence false\n\
             # Stay root: the test's key file is readable by root only.\nuser root\n\
             listener {tls} 127.0.0.1\nallow_anonymous true\ncertfile {}\nkeyfile {}\n\
             listener {plain} 127.0.0.1\nallow_anonymous true\n",
            certs.cert.display(),
            certs.key.display()
        ),
    )
    .unwrap();
    let server = start_server(
        "mosquitto",
        &["-c".into(), conf.display().to_string()],
        format!("127.0.0.1:{plain}").parse().unwrap(),
    );
    (server, tls, plain, certs.ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_carries_results_and_events_and_untrusted_certificates_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, tls, _, ca) = mosquitto_tls(dir.path());
    let elsewhere = tempfile::tempdir().unwrap();
    let other_ca = common::tls::test_certs(elsewhere.path(), &["localhost"]).ca;
    let pqa = PqaService::new(ServiceConfig::default());
    let secure = format!(
        "host = \"127.0.0.1\"\nport = {tls}\ntls = true\nca_file = {:?}\n",
        ca.display().to_string()
    );
    let config = IntegrationsConfig::parse(&format!(
        "[[mqtt_sink]]\nname = \"results\"\n{secure}qos = 1\n\n\
         [[mqtt_source]]\nname = \"sensors\"\n{secure}topics = [\"sensors/#\"]\nstream = \"sensor\"\n\n\
         [[mqtt_sink]]\nname = \"untrusting\"\nhost = \"127.0.0.1\"\nport = {tls}\ntls = true\n\
         ca_file = {:?}\nretry_min = \"50ms\"\nretry_max = \"100ms\"\n",
        other_ca.display().to_string()
    ))
    .unwrap();
    let integrations = Integrations::start(&config, None, Some(pqa.clone())).unwrap();
    let registered = pqa
        .register(
            "select room from sensor where temp > 20",
            Publish::All,
            None,
        )
        .unwrap();
    let mut over_tls = broker(tls);
    over_tls.tls = true;
    over_tls.ca_file = Some(ca.clone());
    let mut results = subscriber_to(&over_tls, "fleetsql/pq/#").await;
    for name in ["results", "sensors"] {
        let h = integrations
            .wait_health(name, Duration::from_secs(10), |h| h.status == "ok")
            .await
            .unwrap();
        assert_eq!(h.status, "ok", "{h:?}");
    }
    let mut publisher = connect_to(&over_tls).await;
    publisher
        .publish("sensors/a", 1, br#"{"room": "hot", "temp": 30}"#)
        .await
        .unwrap();
    let (topic, payload) = tokio::time::timeout(Duration::from_secs(10), results.recv())
        .await
        .expect("a result over TLS")
        .unwrap();
    assert_eq!(topic, format!("fleetsql/pq/{}", registered.id));
    let n: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(n["rows"][0]["room"], "hot");
    let refused = integrations
        .wait_health("untrusting", Duration::from_secs(10), |h| h.failures >= 2)
        .await
        .unwrap();
    assert!(
        refused
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("TLS handshake failed"),
        "{refused:?}"
    );
    integrations.shutdown().await;
}

/// A proxy in front of the broker: the first connection passes CONNECT and
/// CONNACK, then swallows everything the client sends and is closed when
/// `cut` fires; later connections pass everything both ways.
async fn swallowing_proxy(
    broker: u16,
    cut: tokio::sync::oneshot::Receiver<()>,
) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut upstream = tokio::net::TcpStream::connect(("127.0.0.1", broker))
            .await
            .unwrap();
        // CONNECT: fixed header, one-byte length (short client ids), body.
        let mut head = [0u8; 2];
        client.read_exact(&mut head).await.unwrap();
        let mut body = vec![0u8; usize::from(head[1])];
        client.read_exact(&mut body).await.unwrap();
        upstream.write_all(&head).await.unwrap();
        upstream.write_all(&body).await.unwrap();
        let mut connack = [0u8; 4];
        upstream.read_exact(&mut connack).await.unwrap();
        client.write_all(&connack).await.unwrap();
        let mut sink = vec![0u8; 4096];
        tokio::select! {
            _ = cut => {}
            _ = async { while client.read(&mut sink).await.is_ok_and(|n| n > 0) {} } => {}
        }
        drop(client);
        drop(upstream);
        for _ in 0..10 {
            let Ok((mut client, _)) = listener.accept().await else {
                break;
            };
            let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", broker)).await
            else {
                break;
            };
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_publishes_unacknowledged_at_a_disconnect_are_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port, _) = mosquitto(dir.path());
    let (cut, cut_rx) = tokio::sync::oneshot::channel();
    let (proxy, proxy_task) = swallowing_proxy(port, cut_rx).await;
    let pqa = PqaService::new(ServiceConfig::default());
    let config = IntegrationsConfig::parse(&format!(
        "[[mqtt_sink]]\nname = \"results\"\nhost = \"127.0.0.1\"\nport = {proxy}\n\
         client_id = \"qos1\"\nqos = 1\nretry_min = \"50ms\"\nretry_max = \"100ms\"\n"
    ))
    .unwrap();
    let mut results = subscriber(port, "fleetsql/pq/#").await;
    let integrations = Integrations::start(&config, None, Some(pqa.clone())).unwrap();
    let registered = pqa.register("select n from x", Publish::All, None).unwrap();
    let up = integrations
        .wait_health("results", Duration::from_secs(10), |h| h.status == "ok")
        .await
        .unwrap();
    assert_eq!(up.status, "ok", "{up:?}");
    for n in 1..=3 {
        pqa.push_event("x", &serde_json::json!({ "n": n })).unwrap();
    }
    // Sent into the void: no acknowledgement, nothing delivered yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), results.recv())
            .await
            .is_err(),
        "the proxy let a publish through"
    );
    let waiting = integrations
        .wait_health("results", Duration::from_secs(5), |h| h.items == 0)
        .await
        .unwrap();
    assert_eq!(waiting.items, 0, "nothing acknowledged yet: {waiting:?}");
    cut.send(()).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (topic, payload) = tokio::time::timeout(Duration::from_secs(10), results.recv())
            .await
            .expect("the unacknowledged publishes, sent again")
            .unwrap();
        assert_eq!(topic, format!("fleetsql/pq/{}", registered.id));
        let n: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        seen.push(n["rows"][0]["n"].as_i64().unwrap());
    }
    assert_eq!(seen, [1, 2, 3]);
    let sink = integrations
        .wait_health("results", Duration::from_secs(5), |h| h.items == 3)
        .await
        .unwrap();
    assert_eq!((sink.items, sink.failures), (3, 1), "{sink:?}");
    integrations.shutdown().await;
    proxy_task.abort();
}
