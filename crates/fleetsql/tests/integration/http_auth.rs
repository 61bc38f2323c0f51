//! A SQL node's HTTP port with a tokens file, a users file and a
//! certificate, set up as an operator does (`fleetsql certs`, `fleetsql
//! users add`, `fleetsql tokens create`), and the clients that use it:
//! curl-like requests with bearer tokens, an XML-RPC client with HTTP
//! basic authentication, the console's log-in with its session cookie and
//! CSRF token, and HTTPS verified against the fleet CA. Refusals answer
//! 401/403 `{error, hint}` and are counted on `/metrics`; queries,
//! registrations and log-ins are in `fleet_audit`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleetsql_tiers::SqlNodeEntry;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::pg_auth::{add_user, create_token, fleetsql};
use crate::tiers::{FleetSpec, TestCluster, eventually, metric};

/// One HTTP/1.1 request over TLS verified against `ca` for `localhost`;
/// (status, body), or the handshake's error.
async fn https(
    addr: SocketAddr,
    ca: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, String), String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost:{}\r\nconnection: close\r\ncontent-length: {}\r\n",
        addr.port(),
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    if let Err(e) = tls.read_to_end(&mut answer).await {
        // A server closing without close_notify still sent its answer.
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Query answers stream, so they come chunked.
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunked(body)
    } else {
        body.to_string()
    };
    Ok((status, head.to_string(), body))
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunked(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size:?}"));
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    body
}

/// (status, JSON body) of a request.
async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn refused(body: &Value, reason: &str, error_part: &str) {
    assert_eq!(body["reason"], reason, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(error_part),
        "{body}"
    );
    assert!(!body["hint"].as_str().unwrap().is_empty(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_clients_need_a_token_or_a_console_login_of_the_right_role_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let text = |p: &Path| p.to_str().unwrap().to_string();
    let (certs, other_ca) = (path("certs"), path("other-ca"));
    let (users, tokens) = (path("users.toml"), path("tokens.toml"));
    fleetsql(&["certs", "init", "--dir", &text(&certs)], None);
    fleetsql(&["certs", "issue", "sql", "--dir", &text(&certs)], None);
    fleetsql(&["certs", "init", "--dir", &text(&other_ca)], None);
    add_user(&users, "olga", "operator", "olga's secret");
    add_user(&users, "rita", "reader", "rita's secret");
    let reader = create_token(&tokens, "reader", "grafana", "30d");
    let operator = create_token(&tokens, "operator", "deployer", "30d");
    let expiring = create_token(&tokens, "reader", "shortlived", "1s");
    let admin = create_token(&tokens, "admin", "auditor", "30d");

    let secure = SqlNodeEntry {
        users: Some(users.clone()),
        tokens: Some(tokens.clone()),
        tls_cert: Some(certs.join("sql.crt")),
        tls_key: Some(certs.join("sql.key")),
        ..SqlNodeEntry::default()
    };
    // The same files without a certificate, for reqwest (built here
    // without TLS).
    let plain = SqlNodeEntry {
        users: Some(users.clone()),
        tokens: Some(tokens.clone()),
        ..SqlNodeEntry::default()
    };
    let cluster = TestCluster::start_fleet_in(
        dir,
        FleetSpec {
            proxies: 1,
            tlas: 1,
            table_expiry: Duration::from_secs(600),
            extra_agent: false,
            sqlnodes: BTreeMap::from([("sql".to_string(), secure), ("sql2".to_string(), plain)]),
            tla_sql: Default::default(),
        },
    )
    .await;
    let base = format!("http://{}", cluster.addr("sql2", "http"));
    let url = |p: &str| format!("{base}{p}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let query = json!({ "sql": "SELECT 1 AS one" });

    // /health stays open; everything else needs a credential.
    let (status, _) = send(client.get(url("/health"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(client.post(url("/v1/query")).json(&query)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    refused(&body, "no_credentials", "needs a credential");
    let (status, body) = send(client.get(url("/v1/tables"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A good token answers.
    let (status, body) = send(
        client
            .post(url("/v1/query"))
            .bearer_auth(&reader)
            .json(&query),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["rows"], json!([[1]]), "{body}");

    // An unknown token, a malformed one, an expired one.
    let unknown = format!("fsq_0123456789abcdef_{}", "0".repeat(64));
    let (status, body) = send(
        client
            .post(url("/v1/query"))
            .bearer_auth(&unknown)
            .json(&query),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    refused(&body, "unknown_token", "unknown or revoked token");
    let (status, body) = send(
        client
            .post(url("/v1/query"))
            .bearer_auth("not-a-token")
            .json(&query),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    refused(&body, "malformed_token", "fsq_<id>_<secret>");
    let body = eventually(Duration::from_secs(10), "the 1s token expires", || {
        let request = client
            .post(url("/v1/query"))
            .bearer_auth(&expiring)
            .json(&query);
        async move {
            let (status, body) = send(request).await;
            (status == StatusCode::UNAUTHORIZED).then_some(body)
        }
    })
    .await;
    refused(&body, "expired_token", "expired");

    // A reader may subscribe but not register; an operator may.
    let epl = json!({ "epl": "select count(*) as n from sys.win:time(1 hour)" });
    let (status, body) = send(
        client
            .post(url("/v1/persistent-queries"))
            .bearer_auth(&reader)
            .json(&epl),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    refused(&body, "forbidden", "role reader may not register_query");
    let (status, body) = send(
        client
            .post(url("/v1/persistent-queries"))
            .bearer_auth(&operator)
            .json(&epl),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let events = url(&format!("/v1/persistent-queries/{id}/events"));
    let response = client.get(&events).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = client
        .get(&events)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(response);
    let (status, body) = send(
        client
            .delete(url(&format!("/v1/persistent-queries/{id}")))
            .bearer_auth(&reader),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = send(
        client
            .delete(url(&format!("/v1/persistent-queries/{id}")))
            .bearer_auth(&operator),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");

    // XML-RPC with HTTP basic authentication: an operator registers, a
    // reader is refused.
    let call = "<?xml version=\"1.0\"?><methodCall><methodName>pqa.register</methodName><params>\
         <param><value><string>select count(*) as n from sys.win:time(1 hour)</string></value></param>\
         </params></methodCall>";
    let xmlrpc = |user: &str, password: &str| {
        client
            .post(url("/RPC2"))
            .header("content-type", "text/xml")
            .basic_auth(user, Some(password))
            .body(call)
    };
    let (status, body) = send(xmlrpc("olga", "olga's secret")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.to_string().contains("fault"), "{body}");
    let (status, body) = send(xmlrpc("rita", "rita's secret")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = send(xmlrpc("olga", "wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    refused(&body, "bad_password", "password authentication failed");

    // The console: sent to the log-in page, a wrong password refused, a
    // session cookie for the right one.
    let response = client.get(url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "/login");
    let page = client.get(url("/login")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("login-password"));
    let login = |password: &str| {
        client
            .post(url("/v1/login"))
            .json(&json!({ "user": "olga", "password": password }))
    };
    let (status, body) = send(login("nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    refused(&body, "bad_password", "password authentication failed");
    let response = login("olga's secret").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session_cookie = cookies
        .iter()
        .find(|c| c.starts_with("fleetsql_session="))
        .unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age="] {
        assert!(session_cookie.contains(attribute), "{session_cookie}");
    }
    assert!(
        !session_cookie.contains("Secure"),
        "plain HTTP: {session_cookie}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["role"], "operator");
    let csrf = body["csrf"].as_str().unwrap().to_string();
    let cookie = cookies
        .iter()
        .map(|c| c.split(';').next().unwrap())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(cookie.contains(&format!("fleetsql_csrf={csrf}")));
    let with_session = |request: reqwest::RequestBuilder| request.header("cookie", &cookie);
    let response = with_session(client.get(url("/"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, _) = send(with_session(client.get(url("/v1/tables")))).await;
    assert_eq!(status, StatusCode::OK);
    // A state-changing request without the CSRF token is refused; with it,
    // it works.
    let (status, body) = send(with_session(client.post(url("/v1/query"))).json(&query)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    refused(&body, "csrf", "CSRF token");
    let (status, body) = send(
        with_session(client.post(url("/v1/query")))
            .header("x-csrf-token", "0".repeat(64))
            .json(&query),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = send(
        with_session(client.post(url("/v1/query")))
            .header("x-csrf-token", &csrf)
            .json(&query),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(
        with_session(client.post(url("/v1/persistent-queries")))
            .header("x-csrf-token", &csrf)
            .json(&epl),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = send(with_session(client.get(url("/v1/session")))).await;
    assert_eq!((status, &body["user"]), (StatusCode::OK, &json!("olga")));
    // Logged out, the cookie opens nothing.
    let (status, _) = send(
        with_session(client.post(url("/v1/logout")))
            .header("x-csrf-token", &csrf)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(with_session(client.get(url("/v1/tables")))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    refused(&body, "expired_session", "session");

    // Every refusal counted by reason.
    let metrics = cluster.metrics("sql2").await;
    let count = |front_end: &str, reason: &str| {
        metric(
            &metrics,
            "fleetsql_auth_refusals_total",
            &[("front_end", front_end), ("reason", reason)],
        )
    };
    assert!(count("http", "no_credentials") >= 3.0, "{metrics}");
    assert!(count("http", "unknown_token") >= 1.0, "{metrics}");
    assert!(count("http", "malformed_token") >= 1.0, "{metrics}");
    assert!(count("http", "expired_token") >= 1.0, "{metrics}");
    assert!(count("http", "forbidden") >= 2.0, "{metrics}");
    assert!(count("xmlrpc", "forbidden") >= 1.0, "{metrics}");
    assert!(count("http", "bad_password") >= 1.0, "{metrics}");
    assert!(count("http", "csrf") >= 2.0, "{metrics}");
    assert!(count("http", "expired_session") >= 1.0, "{metrics}");
    assert!(count("console", "bad_password") >= 1.0, "{metrics}");

    // fleet_audit holds who did what, from where, with what outcome; it
    // holds every user's SQL, so only admins read it.
    let (status, body) = send(
        client
            .post(url("/v1/query"))
            .bearer_auth(&operator)
            .json(&json!({ "sql": "SELECT count(*) FROM (SELECT * FROM fleet_audit) a" })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["sqlstate"], "42501", "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("readable by admins only")),
        "{body}"
    );
    let (status, body) = send(
        client
            .post(url("/v1/query"))
            .bearer_auth(&admin)
            .json(&json!({ "sql": "SELECT principal, COALESCE(role, '-') AS role, front_end, action, outcome, text, COALESCE(peer, '') AS peer, duration_ms FROM fleet_audit WHERE front_end <> 'pg' ORDER BY time" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows: Vec<String> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            assert!(r[6].as_str().unwrap().starts_with("127.0.0.1:"), "{r:?}");
            assert!(r[7].as_f64().unwrap() >= 0.0);
            r[..6]
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    let has = |row: &str| {
        assert!(
            rows.iter().any(|r| r == row),
            "no `{row}` in fleet_audit:\n{}",
            rows.join("\n")
        )
    };
    has("grafana|reader|http|run_sql|ok|SELECT 1 AS one");
    has("grafana|reader|http|register_query|error|select count(*) as n from sys.win:time(1 hour)");
    has("deployer|operator|http|register_query|ok|select count(*) as n from sys.win:time(1 hour)");
    has(&format!(
        "deployer|operator|http|delete_query|ok|DELETE /v1/persistent-queries/{id}"
    ));
    has(
        "olga|operator|xmlrpc|register_query|ok|pqa.register: select count(*) as n from sys.win:time(1 hour)",
    );
    has("olga|-|console|login|error|");
    has("olga|operator|console|login|ok|");
    has("olga|operator|http|run_sql|ok|SELECT 1 AS one");

    // HTTPS: the fleet CA verifies the node; another CA does not; plain
    // HTTP is told to use HTTPS (only /health and /metrics answer on it).
    let secure_addr = cluster.addr("sql", "http");
    let ca = certs.join("ca.crt");
    let (status, head, body) = https(
        secure_addr,
        &ca,
        "POST",
        "/v1/query",
        &[
            ("authorization", &format!("Bearer {reader}")),
            ("content-type", "application/json"),
        ],
        &query.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(body.contains("\"rows\":[[1]]"), "{body}");
    let (status, _, body) = https(
        secure_addr,
        &ca,
        "POST",
        "/v1/query",
        &[("content-type", "application/json")],
        &query.to_string(),
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "{body}");
    let wrong = https(
        secure_addr,
        &other_ca.join("ca.crt"),
        "GET",
        "/health",
        &[],
        "",
    )
    .await;
    assert!(
        wrong.as_ref().is_err_and(|e| e.contains("certificate")),
        "{wrong:?}"
    );
    let (status, head, _) = https(
        secure_addr,
        &ca,
        "POST",
        "/v1/login",
        &[("content-type", "application/json")],
        &json!({ "user": "rita", "password": "rita's secret" }).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(
        head.lines()
            .any(|l| l.starts_with("set-cookie: fleetsql_session=") && l.contains("; Secure")),
        "{head}"
    );
    let plain_url = format!("http://{secure_addr}");
    let (status, body) = send(
        client
            .post(format!("{plain_url}/v1/query"))
            .bearer_auth(&reader)
            .json(&query),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("takes HTTPS"));
    let (status, _) = send(client.get(format!("{plain_url}/health"))).await;
    assert_eq!(status, StatusCode::OK);
}
