//! A SQL node with users, a certificate and a client CA, as an operator
//! sets it up (`fleetsql certs`, `fleetsql users add`), and the clients a
//! user connects with: `psql` over TLS (`sslmode=verify-full`), and
//! tokio-postgres's extended protocol against a node with users but no
//! certificate. Wrong and missing passwords, a wrong CA and plaintext are
//! refused with Postgres's codes and counted on `/metrics`; every query is
//! in `fleet_audit` with its user and outcome.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use fleetsql_tiers::SqlNodeEntry;

use crate::cluster::BINARY;
use crate::tiers::{FleetSpec, TestCluster, eventually, metric};

/// `fleetsql ARGS` with `stdin`, which must succeed; shared by the
/// front ends' log-in tests.
pub(crate) fn fleetsql(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "fleetsql {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub(crate) fn add_user(users: &Path, name: &str, role: &str, password: &str) {
    let file = users.to_str().unwrap();
    fleetsql(
        &[
            "users",
            "add",
            name,
            "--role",
            role,
            "--file",
            file,
            "--password-stdin",
        ],
        Some(&format!("{password}\n")),
    );
}

/// `psql` with a libpq connection string; (succeeded, stdout, stderr).
pub(crate) fn psql(conninfo: &str, password: Option<&str>, sql: &str) -> (bool, String, String) {
    let mut command = Command::new("psql");
    command
        .args(["-X", "-A", "-t", "-w", "-d", conninfo, "-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command
        .output()
        .expect("psql is installed (scripts/apt lists it)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `fleetsql tokens create`; the token it prints.
pub(crate) fn create_token(tokens: &Path, role: &str, name: &str, expires: &str) -> String {
    let out = fleetsql(
        &[
            "tokens",
            "create",
            "--role",
            role,
            "--name",
            name,
            "--expires",
            expires,
            "--file",
            tokens.to_str().unwrap(),
        ],
        None,
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("fsq_"), "{token}");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_clients_log_in_over_tls_with_scram_or_a_certificate_and_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let certs = path("certs");
    let other_ca = path("other-ca");
    let users = path("users.toml");
    let text = |p: &Path| p.to_str().unwrap().to_string();
    fleetsql(&["certs", "init", "--dir", &text(&certs)], None);
    fleetsql(&["certs", "issue", "sql", "--dir", &text(&certs)], None);
    fleetsql(&["certs", "issue", "alice", "--dir", &text(&certs)], None);
    fleetsql(&["certs", "init", "--dir", &text(&other_ca)], None);
    add_user(&users, "alice", "reader", "alice's secret");
    add_user(&users, "bob", "admin", "bob's secret");
    let listed = fleetsql(&["users", "list", "--file", &text(&users)], None);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "alice\treader\nbob\tadmin\n"
    );
    let stored = std::fs::read_to_string(&users).unwrap();
    assert!(!stored.contains("secret") && stored.contains("SCRAM-SHA-256$4096:"));

    let secure = SqlNodeEntry {
        users: Some(users.clone()),
        tls_cert: Some(certs.join("sql.crt")),
        tls_key: Some(certs.join("sql.key")),
        client_ca: Some(certs.join("ca.crt")),
        ..SqlNodeEntry::default()
    };
    // Users without a certificate: SCRAM over plaintext, for the extended
    // protocol from tokio-postgres (which has no TLS here).
    let plain = SqlNodeEntry {
        users: Some(users.clone()),
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
    let port = cluster.addr("sql", "pg").port();
    let ca = text(&certs.join("ca.crt"));
    let no_cert = text(&cluster.dir.path().join("no-such-client.crt"));
    let conn = |user: &str, root: &str| {
        format!(
            "host=localhost port={port} user={user} dbname=fleet sslmode=verify-full sslrootcert={root} sslcert={no_cert}"
        )
    };

    // The right password over verified TLS answers.
    let (ok, out, err) = psql(
        &conn("alice", &ca),
        Some("alice's secret"),
        "SELECT count(*) FROM sys",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "4", "{err}");

    // Wrong password, no password, a CA the server's certificate is not
    // from, plaintext: refused, each with what went wrong.
    let (ok, _, err) = psql(&conn("alice", &ca), Some("guess"), "SELECT 1");
    assert!(!ok);
    assert!(
        err.contains("password authentication failed for user \"alice\""),
        "{err}"
    );
    let (ok, _, err) = psql(&conn("mallory", &ca), Some("guess"), "SELECT 1");
    assert!(!ok);
    assert!(
        err.contains("password authentication failed for user \"mallory\""),
        "an unknown user reads as a wrong password: {err}"
    );
    let (ok, _, err) = psql(&conn("alice", &ca), None, "SELECT 1");
    assert!(!ok);
    assert!(err.contains("no password supplied"), "{err}");
    let (ok, _, err) = psql(
        &conn("alice", &text(&other_ca.join("ca.crt"))),
        Some("alice's secret"),
        "SELECT 1",
    );
    assert!(!ok);
    assert!(err.contains("certificate verify failed"), "{err}");
    let (ok, _, err) = psql(
        &format!("host=127.0.0.1 port={port} user=alice dbname=fleet sslmode=disable"),
        Some("alice's secret"),
        "SELECT 1",
    );
    assert!(!ok);
    assert!(
        err.contains("this server accepts only TLS connections"),
        "{err}"
    );

    // A client certificate of the client CA naming the user logs in
    // without a password; naming someone else, it does not.
    let with_cert = |user: &str| {
        format!(
            "host=localhost port={port} user={user} dbname=fleet sslmode=verify-full sslrootcert={ca} sslcert={} sslkey={}",
            text(&certs.join("alice.crt")),
            text(&certs.join("alice.key"))
        )
    };
    let (ok, out, err) = psql(
        &with_cert("alice"),
        None,
        "SELECT count(*) FROM machinerole",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "4");
    let (ok, _, err) = psql(&with_cert("bob"), None, "SELECT 1");
    assert!(!ok);
    assert!(err.contains("the client certificate names alice"), "{err}");

    // A user added while the node runs logs in without a restart.
    add_user(&users, "carol", "operator", "carol's secret");
    eventually(Duration::from_secs(10), "carol can log in", || async {
        psql(&conn("carol", &ca), Some("carol's secret"), "SELECT 1")
            .0
            .then_some(())
    })
    .await;

    // A failing query is audited with its error.
    let (ok, _, _) = psql(
        &conn("alice", &ca),
        Some("alice's secret"),
        "SELECT no_such_column FROM sys",
    );
    assert!(!ok);

    // The extended protocol on the node without TLS: SCRAM, a prepared
    // statement with a parameter; a wrong password is 28P01.
    let pg2 = cluster.addr("sql2", "pg").port();
    let config = |password: &str| {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(pg2)
            .user("bob")
            .password(password)
            .dbname("fleet");
        config
    };
    let refused = config("guess")
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("a wrong password is refused");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "{refused:?}"
    );
    let (client, connection) = config("bob's secret")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query("SELECT hostname FROM sys WHERE hostname = $1", &[&"m1"])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let audit = client
        .query(
            "SELECT principal, role, front_end, outcome, text FROM fleet_audit WHERE action = 'run_sql' AND text LIKE '%WHERE hostname = $1%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(audit.len(), 1, "the prepared statement's execution");
    assert_eq!(audit[0].get::<_, String>(0), "bob");
    assert_eq!(audit[0].get::<_, String>(1), "admin");
    assert_eq!(audit[0].get::<_, String>(3), "ok");

    // fleet_audit on the TLS node, read over psql by bob.
    let (ok, out, err) = psql(
        &conn("bob", &ca),
        Some("bob's secret"),
        "SELECT principal || '|' || COALESCE(role, '-') || '|' || outcome || '|' || text || '|' || COALESCE(error, '') FROM fleet_audit WHERE front_end = 'pg' ORDER BY time",
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"alice|reader|ok|SELECT count(*) FROM sys|"),
        "{out}"
    );
    assert!(
        lines.contains(&"alice|reader|ok|SELECT count(*) FROM machinerole|"),
        "the certificate login's query: {out}"
    );
    assert!(
        lines.iter().any(
            |l| l.starts_with("alice|reader|error|SELECT no_such_column FROM sys|")
                && l.contains("no_such_column")
        ),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("mallory|-|error||")
                && l.contains("password authentication failed")),
        "refused log-ins are audited too: {out}"
    );

    // Each refusal counted by reason.
    let metrics = cluster.metrics("sql").await;
    let refusals = |reason: &str| {
        metric(
            &metrics,
            "fleetsql_auth_refusals_total",
            &[("front_end", "pg"), ("reason", reason)],
        )
    };
    assert!(refusals("bad_password") >= 2.0, "{metrics}");
    assert!(refusals("no_password") >= 1.0, "{metrics}");
    assert!(
        refusals("tls_client_refused_certificate") >= 1.0,
        "{metrics}"
    );
    assert!(refusals("tls_required") >= 1.0, "{metrics}");
    assert!(refusals("cert_user_mismatch") >= 1.0, "{metrics}");
}
