//! Each route against a real local receiver: an axum webhook receiver,
//! an SMTP server (aiosmtpd), `snmptrapd`; and the console over HTTP/SSE.
//! The alerts run through the whole service: definition files, a SQL node
//! over a simulated fleet, the state store, the outbox, delivery.

mod common;
#[path = "../../integrations/tests/common/prosody.rs"]
mod prosody;
#[path = "../../integrations/tests/common/tls.rs"]
mod tls;

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::TestFleet;
use fleetsql_alerts::AlertService;
use parking_lot::Mutex;
use serde_json::Value;

/// An alert over the machines named `cluster-0N-m000` (one per cluster).
const FIRST_MACHINES: &str = r#"
name = "first machines"
severity = "critical"
every = "1s"
description = "the first machine of each cluster"
procedure = "look at it"
sql = "SELECT ip ip_key, hostname FROM sys WHERE hostname LIKE '%-m000'"
"#;

fn with_routes(routes: &str) -> String {
    format!("{FIRST_MACHINES}routes = [{routes}]\n")
}

/// Polls `done` (bounded) between delivery attempts.
async fn deliver_until(service: &AlertService, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        service.deliver_pending().await;
        if done() {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Clone, Default)]
struct Received {
    bodies: Arc<Mutex<Vec<Value>>>,
    failures_left: Arc<Mutex<u32>>,
}

async fn receive(State(r): State<Received>, axum::Json(body): axum::Json<Value>) -> StatusCode {
    let mut left = r.failures_left.lock();
    if *left > 0 {
        *left -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.bodies.lock().push(body);
    StatusCode::OK
}

async fn webhook_receiver(failures: u32) -> (SocketAddr, Received) {
    let received = Received::default();
    *received.failures_left.lock() = failures;
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_one_batch_per_iteration_after_retries() {
    let fleet = TestFleet::start().await;
    let (addr, received) = webhook_receiver(2).await;
    fleet.write(
        "routes.toml",
        &format!(
            "[route.noc]\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\nretries = 3\nbackoff = \"10ms\"\n"
        ),
    );
    fleet.write("first.toml", &with_routes("\"console\", \"noc\""));
    let service = fleet.service();
    let report = service.run_pass(1_000_000).await.unwrap();
    assert_eq!(report.iterations, 1);
    assert_eq!(report.events, 3);
    deliver_until(&service, "the webhook", || {
        !received.bodies.lock().is_empty()
    })
    .await;
    let bodies = received.bodies.lock().clone();
    assert_eq!(bodies.len(), 1, "one batch for the alert's iteration");
    let body = &bodies[0];
    assert_eq!(body["alert"], "first machines");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["procedure"], "look at it");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e["kind"] == "fired"));
    let mut hosts: Vec<&str> = events
        .iter()
        .map(|e| e["details"]["hostname"].as_str().unwrap())
        .collect();
    hosts.sort();
    assert_eq!(
        hosts,
        ["cluster-00-m000", "cluster-01-m000", "cluster-02-m000"]
    );
    assert!(body["id"].as_i64().is_some());

    // The same rows again: nothing new to say. Then the alert changes to
    // one machine: two instances clear in one batch.
    service.run_pass(1_002_000).await.unwrap();
    fleet.write(
        "first.toml",
        &with_routes("\"noc\"").replace("'%-m000'", "'cluster-00-m000'"),
    );
    let report = service.run_pass(1_004_000).await.unwrap();
    assert_eq!(report.events, 2);
    deliver_until(&service, "the clear batch", || {
        received.bodies.lock().len() == 2
    })
    .await;
    let clear = received.bodies.lock()[1].clone();
    let kinds: Vec<&str> = clear["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["cleared", "cleared"]);
    assert_eq!(
        service.deliver_pending().await,
        0,
        "nothing delivered twice"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn command_path(name: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin"])
    {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("`{name}` not found; scripts/test installs it from scripts/apt/alerts.txt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_batches_instances_per_alert_through_a_real_smtp_server() {
    let fleet = TestFleet::start().await;
    let maildir = fleet.dir.path().join("mail");
    let port = free_port();
    let _smtp = Process(
        Command::new(command_path("aiosmtpd"))
            .args(["-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start aiosmtpd"),
    );
    // Ready when it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aiosmtpd did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.write(
        "routes.toml",
        &format!(
            "[route.ops]\nkind = \"email\"\nsmtp = \"127.0.0.1:{port}\"\nfrom = \"alerts@fleet.test\"\nto = [\"ops@fleet.test\", \"noc@fleet.test\"]\n"
        ),
    );
    fleet.write("first.toml", &with_routes("\"ops\""));
    let service = fleet.service();
    service.run_pass(1_000_000).await.unwrap();
    let new_mail = maildir.join("new");
    let count = || std::fs::read_dir(&new_mail).map(|d| d.count()).unwrap_or(0);
    deliver_until(&service, "the e-mail", || count() >= 1).await;
    assert_eq!(count(), 1, "one message for the alert's three instances");
    let file = std::fs::read_dir(&new_mail)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let message = std::fs::read_to_string(file.path()).unwrap();
    assert!(
        message.contains("Subject: [fleetsql critical] first machines: 3 fired"),
        "{message}"
    );
    assert!(
        message.contains("To: ops@fleet.test, noc@fleet.test"),
        "{message}"
    );
    for host in ["cluster-00-m000", "cluster-01-m000", "cluster-02-m000"] {
        assert!(message.contains(host), "{host} missing from {message}");
    }
    assert!(
        message.contains("look at it"),
        "procedure missing: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snmp_traps_reach_snmptrapd() {
    let fleet = TestFleet::start().await;
    let port = {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let conf = fleet.dir.path().join("snmptrapd.conf");
    std::fs::write(
        &conf,
        "disableAuthorization yes\ndoNotRetainNotificationLogs yes\n",
    )
    .unwrap();
    let log = fleet.dir.path().join("traps.log");
    let _trapd = Process(
        Command::new(command_path("snmptrapd"))
            .args(["-f", "-C", "-n", "-On"])
            .arg("-c")
            .arg(&conf)
            .arg("-Lf")
            .arg(&log)
            .arg(format!("udp:127.0.0.1:{port}"))
            .env("SNMP_PERSISTENT_DIR", fleet.dir.path())
            .env("MIBS", "")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start snmptrapd"),
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !read().contains("NET-SNMP version") {
        assert!(
            Instant::now() < deadline,
            "snmptrapd did not start: {}",
            read()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.write(
        "routes.toml",
        &format!("[route.traps]\nkind = \"snmp\"\ntarget = \"127.0.0.1:{port}\"\ncommunity = \"public\"\nenterprise_oid = \"1.3.6.1.4.1.8072.9999.42\"\n"),
    );
    fleet.write("first.toml", &with_routes("\"traps\""));
    let service = fleet.service();
    service.run_pass(1_000_000).await.unwrap();
    deliver_until(&service, "three traps in the log", || {
        read().matches("cluster-0").count() >= 3
    })
    .await;
    let text = read();
    // snmpTrapOID.0 = <enterprise>.1 (fired), and the alert's strings.
    assert!(
        text.contains(".1.3.6.1.6.3.1.1.4.1.0 = OID: .1.3.6.1.4.1.8072.9999.42.1"),
        "{text}"
    );
    assert!(text.contains("\"first machines\""), "{text}");
    assert!(text.contains("\"critical\""), "{text}");
    for host in ["cluster-00-m000", "cluster-01-m000", "cluster-02-m000"] {
        assert!(text.contains(host), "{host} missing from {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xmpp_route_publishes_pubsub_items() {
    use fleetsql_integrations::xmpp_wire::{Account, Client};
    let server = prosody::Prosody::start(&[("alerts", "a1erts"), ("noc", "n0c")], &["alerts"]);
    let fleet = TestFleet::start().await;
    fleet.write(
        "routes.toml",
        &format!(
            "[route.chat]\nkind = \"xmpp\"\nnode = \"alerts/critical\"\n{}",
            server
                .toml_account("alerts", "a1erts")
                .replace("timeout = \"5s\"\n", "")
        ),
    );
    fleet.write("first.toml", &with_routes("\"chat\""));
    let service = fleet.service();
    service.run_pass(1_000_000).await.unwrap();
    let mut noc = Client::connect(&Account {
        host: "127.0.0.1".into(),
        port: server.port,
        jid: format!("noc@{}", prosody::DOMAIN),
        password: "n0c".into(),
        resource: "test".into(),
        tls_server_name: None,
        ca_file: Some(server.ca.clone()),
        timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let mut items = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while items.is_empty() {
        service.deliver_pending().await;
        if let Ok(found) = noc.items(prosody::PUBSUB, "alerts/critical").await {
            items = found;
        }
        assert!(Instant::now() < deadline, "no item on the node");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(items.len(), 1, "one item for the alert's iteration");
    let body: Value = serde_json::from_str(items[0].json().unwrap()).unwrap();
    assert_eq!(body["alert"], "first machines");
    assert_eq!(body["events"].as_array().unwrap().len(), 3);
    noc.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_lists_acknowledges_and_streams() {
    let fleet = TestFleet::start().await;
    fleet.write("first.toml", FIRST_MACHINES);
    let service = fleet.service();
    service.run_pass(1_000_000).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = service.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let page = client
        .get(format!("http://{addr}/alerts"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("EventSource(\"/alerts/events\")"));

    let mut stream = client
        .get(format!("http://{addr}/alerts/events"))
        .send()
        .await
        .unwrap();
    let mut buffer = String::new();
    // The first event is the state as it is.
    let first = next_event(&mut stream, &mut buffer).await;
    let instances = first["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 3);
    assert!(
        instances
            .iter()
            .all(|i| i["status"] == "active" && i["procedure"] == "look at it")
    );
    let id = instances[0]["id"].as_str().unwrap().to_string();

    let ack = client
        .post(format!("http://{addr}/alerts/api/ack"))
        .json(&serde_json::json!({"alert": "first machines", "key": id, "by": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 200);
    // The acknowledgement arrives as the next event, and survives the
    // next iteration.
    let after = next_event(&mut stream, &mut buffer).await;
    let acked: Vec<&Value> = after["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["acked_by"] == "alice")
        .collect();
    assert_eq!(acked.len(), 1);
    service.run_pass(1_002_000).await.unwrap();
    let after_pass = next_event(&mut stream, &mut buffer).await;
    assert_eq!(
        after_pass["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["acked_by"] == "alice")
            .count(),
        1
    );
    let missing = client
        .post(format!("http://{addr}/alerts/api/ack"))
        .json(&serde_json::json!({"alert": "first machines", "key": "{}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

async fn next_event(stream: &mut reqwest::Response, buffer: &mut String) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                return serde_json::from_str(data).unwrap();
            }
            continue;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, stream.chunk())
            .await
            .expect("no SSE event in time")
            .unwrap()
            .expect("SSE stream ended");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Debian's `prometheus-alertmanager` on a loopback port, no cluster,
/// notifying our webhook receiver of every group, resolved ones too.
async fn start_alertmanager(dir: &Path, hook: SocketAddr) -> (Process, String) {
    let port = free_port();
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: hook\n  group_by: ['alertname']\n  group_wait: 100ms\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: 'http://{hook}/hook'\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let process = Process(
        Command::new(command_path("prometheus-alertmanager"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus-alertmanager"),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(format!("{url}/-/ready")).await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "alertmanager did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (process, url)
}

/// Alertmanager's current alerts named `alertname` (resolved ones are
/// not listed), by their `ip` label.
async fn am_alerts(url: &str, alertname: &str) -> std::collections::BTreeMap<String, Value> {
    let alerts: Vec<Value> = reqwest::get(format!("{url}/api/v2/alerts"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    alerts
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == alertname)
        .map(|a| (a["labels"]["ip"].as_str().unwrap_or("").to_string(), a))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_shows_instances_firing_and_resolved() {
    let fleet = TestFleet::start().await;
    let (hook, received) = webhook_receiver(0).await;
    let (_am, url) = start_alertmanager(fleet.dir.path(), hook).await;
    fleet.write(
        "routes.toml",
        &format!(
            "[route.am]\nkind = \"alertmanager\"\nurl = \"{url}\"\nresend = \"30s\"\nlabels = {{ team = \"ops\" }}\nbackoff = \"10ms\"\n"
        ),
    );
    fleet.write("first.toml", &with_routes("\"am\""));
    let service = fleet.service();
    // In the recent past, so that a clear's endsAt is already over.
    let t0 = fleetsql_model::now_ms() - 120_000;
    service.run_pass(t0).await.unwrap();
    // The fired batch and the first re-send of the active instances.
    assert_eq!(service.deliver_pending().await, 2);
    let firing = am_alerts(&url, "first machines").await;
    assert_eq!(firing.len(), 3, "{firing:?}");
    let ips: Vec<String> = service
        .active_instances("first machines")
        .iter()
        .map(|i| i.key["ip_key"].as_str().unwrap().to_string())
        .collect();
    for ip in &ips {
        let alert = &firing[ip];
        assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
        assert_eq!(alert["labels"]["team"], "ops", "{alert}");
        assert!(
            alert["labels"].get("hostname").is_none(),
            "details are not labels"
        );
        assert!(
            alert["annotations"]["hostname"]
                .as_str()
                .unwrap()
                .ends_with("-m000"),
            "{alert}"
        );
        assert_eq!(alert["annotations"]["procedure"], "look at it");
        assert_eq!(alert["status"]["state"], "active", "{alert}");
        let starts = chrono::DateTime::parse_from_rfc3339(alert["startsAt"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        assert_eq!(starts, t0, "startsAt is when it fired");
    }

    // Every 30 s of alert time the active instances go again; not before.
    service.run_pass(t0 + 10_000).await.unwrap();
    assert_eq!(service.deliver_pending().await, 0);
    service.run_pass(t0 + 31_000).await.unwrap();
    assert_eq!(service.deliver_pending().await, 1, "one re-send batch");

    // Two instances clear: Alertmanager lists only the one left, and its
    // receiver is told the two are resolved.
    fleet.write(
        "first.toml",
        &with_routes("\"am\"").replace("'%-m000'", "'cluster-00-m000'"),
    );
    service.run_pass(t0 + 40_000).await.unwrap();
    assert_eq!(service.deliver_pending().await, 1, "the clear batch");
    let left = am_alerts(&url, "first machines").await;
    assert_eq!(left.len(), 1, "{left:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let resolved = loop {
        let resolved: std::collections::BTreeSet<String> = received
            .bodies
            .lock()
            .iter()
            .flat_map(|b| b["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["status"] == "resolved")
            .map(|a| a["labels"]["ip"].as_str().unwrap_or("").to_string())
            .collect();
        if resolved.len() == 2 {
            break resolved;
        }
        assert!(
            Instant::now() < deadline,
            "alertmanager never notified the resolved instances: {:?}",
            received.bodies.lock()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!resolved.iter().any(|ip| left.contains_key(ip)));
}
