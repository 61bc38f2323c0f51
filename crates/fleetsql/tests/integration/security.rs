//! Issue 17 items 6 and 7 against the real `fleetsql demo`: it binds
//! loopback only and says authentication is off; its HTTP port refuses
//! foreign Host names, cross-site state changes and bodies a cross-site
//! page could send; a client naming too many tables nobody publishes is
//! refused with the setting's name on HTTP and Postgres; a panicking query
//! answers that client an error on both, and the demo keeps answering.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{BINARY, ready_line};

#[test]
fn demo_refuses_a_non_loopback_bind() {
    for bind in ["0.0.0.0", "::"] {
        let output = Command::new(BINARY)
            .args(["demo", "--bind", bind])
            .args(["--pg-port", "0", "--http-port", "0", "--publish-port", "0"])
            .env("FLEETSQL_LOG", "warn")
            .output()
            .expect("run fleetsql demo");
        assert!(!output.status.success(), "the demo started on {bind}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("non-loopback address only with authentication and TLS"),
            "{stderr}"
        );
        assert!(stderr.contains("--users FILE"), "{stderr}");
    }
}

/// With users and a certificate the demo may listen beyond loopback: its
/// ready line says auth and TLS are on, psql logs in over verified TLS
/// (through loopback: the test talks to nothing else), and a wrong
/// password or plaintext is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_with_users_and_tls_binds_beyond_loopback() {
    use crate::pg_auth::{add_user, fleetsql, psql};
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let certs = path("certs");
    fleetsql(&["certs", "init", "--dir", &certs], None);
    fleetsql(&["certs", "issue", "demo", "--dir", &certs], None);
    let users = dir.path().join("users.toml");
    add_user(&users, "alice", "reader", "alice's secret");
    for name in ["no-alerts", "no-views", "state"] {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
    }
    let mut process = Command::new(BINARY)
        .args([
            "demo",
            "--bind",
            "0.0.0.0",
            "--clusters",
            "1",
            "--machines",
            "2",
        ])
        .args(["--pg-port", "0", "--http-port", "0", "--publish-port", "0"])
        .args(["--flightsql-port", "0", "--tick", "500ms"])
        .args([
            "--alerts-dir",
            &path("no-alerts"),
            "--views-dir",
            &path("no-views"),
        ])
        .args([
            "--state-dir",
            &path("state"),
            "--users",
            users.to_str().unwrap(),
        ])
        .args(["--tls-cert", &format!("{certs}/demo.crt")])
        .args(["--tls-key", &format!("{certs}/demo.key")])
        .env("FLEETSQL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fleetsql demo");
    let line = ready_line(&mut process, "fleetsql demo ready:").await;
    // Killed however the test ends.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _process = KillOnDrop(process);
    let line = line.expect("the secured demo started on 0.0.0.0");
    assert!(
        line.contains("auth=on") && line.contains("tls=on"),
        "{line}"
    );
    let pg = field(&line, "pg");
    let port = pg.rsplit(':').next().unwrap();
    let conn = |password_user: &str, sslmode: &str| {
        format!(
            "host=localhost port={port} user={password_user} dbname=fleet sslmode={sslmode} sslrootcert={certs}/ca.crt"
        )
    };
    let (ok, out, err) = psql(
        &conn("alice", "verify-full"),
        Some("alice's secret"),
        "SELECT count(*) > 0 FROM sys",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "t", "{err}");
    let (ok, _, err) = psql(&conn("alice", "verify-full"), Some("guess"), "SELECT 1");
    assert!(
        !ok && err.contains("password authentication failed"),
        "{err}"
    );
    let (ok, _, err) = psql(
        &conn("alice", "disable"),
        Some("alice's secret"),
        "SELECT 1",
    );
    assert!(!ok, "plaintext was accepted: {err}");
}

/// A demo whose debug build has `fleetsql_test_panic()`.
struct PanickyDemo {
    process: std::process::Child,
    line: String,
    http: String,
    pg_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for PanickyDemo {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .to_string()
}

async fn panicky_demo() -> PanickyDemo {
    let dir = tempfile::tempdir().unwrap();
    let no_alerts = dir.path().join("no-alerts");
    std::fs::create_dir_all(&no_alerts).unwrap();
    // Every listener on port 0, whichever the demo has.
    let help = Command::new(BINARY)
        .args(["demo", "--help"])
        .output()
        .expect("fleetsql demo --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let ports: std::collections::BTreeSet<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--") && w.ends_with("-port"))
        .collect();
    assert!(ports.contains("--http-port"), "{help}");
    let mut process = Command::new(BINARY)
        .args(["demo", "--processes", "5", "--tick", "1s"])
        .args(["--clusters", "2", "--machines", "2"])
        .args(ports.iter().flat_map(|p| [*p, "0"]))
        .arg("--alerts-dir")
        .arg(&no_alerts)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("FLEETSQL_LOG", "warn")
        .env(fleetsql_sqlnode::TEST_PANIC_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fleetsql demo");
    let line = ready_line(&mut process, "fleetsql demo ready:")
        .await
        .expect("fleetsql demo exited before it was ready");
    let http = format!("http://{}", field(&line, "http"));
    let pg_port = field(&line, "pg")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("pg port");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{http}/health")).send().await
            && let Ok(body) = r.json::<Value>().await
            && body["generation"]["id"].as_u64().unwrap_or(0) > 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "demo never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    PanickyDemo {
        process,
        line,
        http,
        pg_port,
        _dir: dir,
    }
}

async fn query(demo: &PanickyDemo, sql: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/query", demo.http))
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .expect("the demo answers (it did not die)");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn still_answers(demo: &PanickyDemo) {
    let (status, body) = query(demo, "SELECT count(*) AS n FROM sys").await;
    assert_eq!(status, 200, "{body}");
}

async fn pg(demo: &PanickyDemo) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=fleet dbname=fleet",
            demo.pg_port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("pg connects");
    tokio::spawn(connection);
    client
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_guards_its_ports_and_survives_what_clients_send() {
    let demo = panicky_demo().await;
    assert!(demo.line.contains("auth=off"), "{}", demo.line);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/query", demo.http);

    // DNS rebinding: a page of evil.example resolved to 127.0.0.1.
    let r = http
        .post(&url)
        .header("host", "evil.example")
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["setting"], json!("http_hosts"), "{body}");
    let r = http
        .get(format!("{}/", demo.http))
        .header("host", "evil.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421, "the console too");

    // A cross-site form post: foreign Origin, text/plain.
    let r = http
        .post(&url)
        .header("origin", "http://evil.example")
        .header("content-type", "text/plain")
        .body(r#"{"sql": "SELECT 1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["setting"], json!("http_origins"), "{body}");
    let r = http
        .post(format!("{}/v1/persistent-queries", demo.http))
        .header("origin", "http://evil.example")
        .json(&json!({"epl": "select x from S"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "persistent queries too");
    // The same text/plain body from the node's own page, or curl -d.
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let r = http
            .post(&url)
            .header("content-type", content_type)
            .body(r#"{"sql": "SELECT 1"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415, "{content_type}");
    }
    // The node's own page, with JSON: answered.
    let r = http
        .post(&url)
        .header("origin", &demo.http)
        .json(&json!({"sql": "SELECT 1 AS one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A panic inside a query: 500 over HTTP, and the demo answers on.
    let (status, body) = query(&demo, "SELECT fleetsql_test_panic()").await;
    assert_eq!(status, 500, "{body}");
    still_answers(&demo).await;

    // The same over Postgres, simple and extended protocols: XX000 to
    // that client, whose connection goes on, as do others.
    let client = pg(&demo).await;
    let e = client
        .simple_query("SELECT fleetsql_test_panic()")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "XX000", "{e}");
    let e = client
        .query("SELECT fleetsql_test_panic() FROM sys", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "XX000", "{e}");
    let rows = client
        .query("SELECT count(*) AS n FROM sys", &[])
        .await
        .expect("same connection");
    assert_eq!(rows.len(), 1);
    let other = pg(&demo).await;
    other
        .simple_query("SELECT 1")
        .await
        .expect("another connection");

    // A name no table can have (over 63 bytes) is refused unrequested.
    let (status, body) = query(&demo, &format!("SELECT * FROM {}", "t".repeat(64))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["sqlstate"], json!("42622"), "{body}");

    // 64 table names nobody publishes in a minute are this client's share
    // (`max_new_tables_per_client_minute`): they are looked for and not
    // found; one more is refused before it is requested.
    let names: Vec<String> = (0..64).map(|i| format!("nobody_publishes_{i}")).collect();
    let (status, body) = query(&demo, &format!("SELECT * FROM {}", names.join(", "))).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = query(&demo, "SELECT * FROM nobody_publishes_64").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        body["setting"],
        json!("max_new_tables_per_client_minute"),
        "{body}"
    );
    assert_eq!(body["limit"], json!(64), "{body}");
    assert_eq!(body["sqlstate"], json!("53400"), "{body}");
    // Published tables cost nothing: still answered, to this client too.
    still_answers(&demo).await;
    // Over Postgres the same client (address) has no share left either.
    let e = client
        .simple_query("SELECT * FROM nobody_publishes_65")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "53400", "{e}");
    assert!(
        e.to_string().contains("max_new_tables_per_client_minute")
            || format!("{e:?}").contains("max_new_tables_per_client_minute"),
        "{e:?}"
    );
    client
        .simple_query("SELECT count(*) FROM sys")
        .await
        .expect("pg still answers");
}
