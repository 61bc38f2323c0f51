//! Flight SQL on a SQL node with users, tokens and a certificate, as the
//! other front ends have them: a Handshake with a password, a bearer
//! token, TLS verified against the fleet CA; a wrong password, no
//! credential, a token whose scope leaves SQL out, plaintext and a foreign
//! CA refused, counted on `/metrics` and audited; then a guesser is
//! throttled on every front end of the node at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::pg_auth::{add_user, create_token, fleetsql, psql};
use crate::tiers::{FleetSpec, TestCluster, metric};
use fleetsql_tiers::SqlNodeEntry;

async fn channel(addr: std::net::SocketAddr, ca: Option<&Path>) -> Result<Channel, String> {
    let scheme = if ca.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://localhost:{}", addr.port()))
        .unwrap()
        .connect_timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        endpoint = endpoint
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem))
                    .domain_name("localhost"),
            )
            .unwrap();
    }
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// Rows of `sql`, or the status's code and message.
async fn rows(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<usize, (tonic::Code, String)> {
    let status = |e: arrow_flight::error::FlightError| match e {
        arrow_flight::error::FlightError::Tonic(s) => (s.code(), s.message().to_string()),
        other => (tonic::Code::Unknown, other.to_string()),
    };
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(status)?;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let batches: Vec<RecordBatch> = client
        .do_get(ticket)
        .await
        .map_err(status)?
        .try_collect()
        .await
        .map_err(|e| (tonic::Code::Unknown, e.to_string()))?;
    Ok(batches.iter().map(RecordBatch::num_rows).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flightsql_clients_log_in_over_tls_with_a_password_or_token_and_guessers_are_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (certs, other_ca) = (path("certs"), path("other-ca"));
    let (users, tokens) = (path("users.toml"), path("tokens.toml"));
    let text = |p: &Path| p.to_str().unwrap().to_string();
    fleetsql(&["certs", "init", "--dir", &text(&certs)], None);
    fleetsql(&["certs", "issue", "sql", "--dir", &text(&certs)], None);
    fleetsql(&["certs", "init", "--dir", &text(&other_ca)], None);
    add_user(&users, "alice", "reader", "alice's secret");
    add_user(&users, "root", "admin", "root's secret");
    let token = create_token(&tokens, "reader", "dashboard", "30d");
    let out = fleetsql(
        &[
            "tokens",
            "create",
            "--role",
            "reader",
            "--scope",
            "subscribe",
            "--file",
            &text(&tokens),
        ],
        None,
    );
    let subscribe_only = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let entry = SqlNodeEntry {
        users: Some(users.clone()),
        tokens: Some(tokens.clone()),
        tls_cert: Some(certs.join("sql.crt")),
        tls_key: Some(certs.join("sql.key")),
        flightsql: Some("127.0.0.1:0".parse().unwrap()),
        ..SqlNodeEntry::default()
    };
    let cluster = TestCluster::start_fleet_in(
        dir,
        FleetSpec {
            proxies: 1,
            tlas: 1,
            table_expiry: Duration::from_secs(600),
            extra_agent: false,
            sqlnodes: BTreeMap::from([("sql".to_string(), entry)]),
            tla_sql: Default::default(),
        },
    )
    .await;
    let addr = cluster.addr("sql", "flightsql");
    let ca = certs.join("ca.crt");

    // A password in a Handshake: the answer's bearer works for queries.
    let mut alice = FlightSqlServiceClient::new(channel(addr, Some(&ca)).await.unwrap());
    alice.handshake("alice", "alice's secret").await.unwrap();
    assert!(
        alice.token().is_some(),
        "the handshake answers a session token"
    );
    assert_eq!(rows(&mut alice, "SELECT hostname FROM sys").await, Ok(4));
    // The audit log holds every user's SQL: admins only.
    let (code, message) = rows(&mut alice, "SELECT * FROM fleet_audit")
        .await
        .unwrap_err();
    assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
    assert!(message.contains("readable by admins only"), "{message}");

    // A token of the tokens file as the bearer, no handshake.
    let mut dashboard = FlightSqlServiceClient::new(channel(addr, Some(&ca)).await.unwrap());
    dashboard.set_token(token.clone());
    assert_eq!(
        rows(&mut dashboard, "SELECT * FROM machinerole").await,
        Ok(4)
    );

    // Refused, each saying why.
    let mut anonymous = FlightSqlServiceClient::new(channel(addr, Some(&ca)).await.unwrap());
    let (code, message) = rows(&mut anonymous, "SELECT 1").await.unwrap_err();
    assert_eq!(code, tonic::Code::Unauthenticated);
    assert!(message.contains("needs a credential"), "{message}");
    let mut guess = FlightSqlServiceClient::new(channel(addr, Some(&ca)).await.unwrap());
    let refused = guess
        .handshake("alice", "guess")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("password authentication failed for user") && refused.contains("alice"),
        "{refused}"
    );
    let mut scoped = FlightSqlServiceClient::new(channel(addr, Some(&ca)).await.unwrap());
    scoped.set_token(subscribe_only);
    let (code, message) = rows(&mut scoped, "SELECT 1").await.unwrap_err();
    assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
    let mut forged = FlightSqlServiceClient::new(channel(addr, Some(&ca)).await.unwrap());
    forged.set_token("not-a-session".into());
    let (code, message) = rows(&mut forged, "SELECT 1").await.unwrap_err();
    assert_eq!(code, tonic::Code::Unauthenticated);
    assert!(message.contains("log in again"), "{message}");
    // Plaintext to the TLS port, and TLS against another CA: no channel
    // that answers.
    let plain = match channel(addr, None).await {
        Ok(channel) => rows(&mut FlightSqlServiceClient::new(channel), "SELECT 1")
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(plain, "plaintext is refused");
    let foreign = match channel(addr, Some(&other_ca.join("ca.crt"))).await {
        Ok(channel) => rows(&mut FlightSqlServiceClient::new(channel), "SELECT 1")
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(foreign, "a server certificate of another CA is not trusted");

    // Audited with the user and the SQL, as on pg and HTTP.
    let port = cluster.addr("sql", "pg").port();
    let conn = format!(
        "host=localhost port={port} user=alice dbname=fleet sslmode=verify-full sslrootcert={}",
        text(&ca)
    );
    let audit_sql = "SELECT principal || '|' || text FROM fleet_audit WHERE front_end = 'flightsql' AND action = 'run_sql' ORDER BY time";
    let (ok, _, err) = psql(&conn, Some("alice's secret"), audit_sql);
    assert!(!ok && err.contains("readable by admins only"), "{err}");
    let (ok, audited, err) = psql(
        &conn.replace("user=alice", "user=root"),
        Some("root's secret"),
        audit_sql,
    );
    assert!(ok, "{err}");
    assert!(
        audited.contains("alice") && audited.contains("SELECT hostname FROM sys"),
        "{audited}"
    );
    assert!(audited.contains("dashboard"), "{audited}");
    let metrics = cluster.metrics("sql").await;
    let refusals = |reason: &str| {
        metric(
            &metrics,
            "fleetsql_auth_refusals_total",
            &[("front_end", "flightsql"), ("reason", reason)],
        )
    };
    for reason in [
        "no_credentials",
        "bad_password",
        "forbidden",
        "expired_session",
    ] {
        assert!(refusals(reason) >= 1.0, "{reason}: {metrics}");
    }

    // A guesser: after the allowed run of wrong passwords, even the right
    // one is refused for a while, on Flight SQL and on pg alike (one
    // address, one count).
    let mut last = String::new();
    for _ in 0..12 {
        last = guess
            .handshake("alice", "guess")
            .await
            .unwrap_err()
            .to_string();
    }
    assert!(
        last.contains("too many failed log-ins from 127.0.0.1"),
        "{last}"
    );
    let refused = FlightSqlServiceClient::new(channel(addr, Some(&ca)).await.unwrap())
        .handshake("alice", "alice's secret")
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("too many failed log-ins"), "{refused}");
    let (ok, _, err) = psql(&conn, Some("alice's secret"), "SELECT 1");
    assert!(!ok);
    assert!(err.contains("too many failed log-ins"), "{err}");
    // Sessions already open are not held up.
    assert_eq!(rows(&mut alice, "SELECT hostname FROM sys").await, Ok(4));
    let metrics = cluster.metrics("sql").await;
    assert!(
        metric(
            &metrics,
            "fleetsql_auth_refusals_total",
            &[("front_end", "pg"), ("reason", "throttled")],
        ) >= 1.0,
        "{metrics}"
    );
}
