//! What users type, with the clients they type it in: the real `psql`
//! binary and tokio-postgres against the fixed fleet's Postgres listener.

use std::process::Command;

use crate::fixture::FixtureFleet;

/// Runs `psql` (unaligned, no psqlrc) with `args` against `fleet`.
fn psql(fleet: &FixtureFleet, args: &[&str]) -> (String, String) {
    let port = fleet.pg.local_addr().port().to_string();
    let output = Command::new("psql")
        .args(["-X", "-A", "-h", "127.0.0.1", "-p", &port, "-U", "fleetsql"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql is installed (scripts/apt lists it)");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_select_star_over_a_join_keeps_both_sides_columns() {
    let fleet = FixtureFleet::start().await;
    let (out, err) = psql(
        &fleet,
        &[
            "-c",
            "SELECT * FROM sys s JOIN machinerole m ON s.ip = m.ip ORDER BY s.hostname",
        ],
    );
    assert!(!err.contains("ERROR"), "psql failed: {err}");
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
    assert_eq!(header.iter().filter(|c| **c == "ip").count(), 2, "{out}");
    assert_eq!(header.iter().filter(|c| **c == "_host").count(), 2, "{out}");
    let rows: Vec<&str> = lines.filter(|l| l.starts_with("10.0.")).collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert!(out.contains("(4 rows)"), "{out}");
    // The same query through the extended protocol (psql's \gexec-free
    // way: a prepared statement over tokio-postgres).
    let url = format!(
        "host=127.0.0.1 port={} user=fleetsql",
        fleet.pg.local_addr().port()
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let statement = client
        .prepare("SELECT s.hostname, m.role, s.ip, m.ip FROM sys s JOIN machinerole m ON s.ip = m.ip WHERE m.role = $1 ORDER BY 1")
        .await
        .unwrap();
    let names: Vec<&str> = statement.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["hostname", "role", "ip", "ip"]);
    let rows = client.query(&statement, &[&"dns"]).await.unwrap();
    let hosts: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(hosts, ["m1", "m3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_says_it_is_postgres_in_postgres_form() {
    let fleet = FixtureFleet::start().await;
    let (out, err) = psql(
        &fleet,
        &[
            "-t",
            "-c",
            "SHOW server_version",
            "-c",
            "SHOW server_version_num",
            "-c",
            "SELECT version()",
        ],
    );
    assert!(!err.contains("ERROR"), "psql failed: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("16.6 (fleetsql "), "{out}");
    assert_eq!(lines[1], "160006", "{out}");
    assert!(lines[2].starts_with("PostgreSQL 16.6 (fleetsql "), "{out}");
}

/// psycopg 3, psycopg2, asyncpg, SQLAlchemy and pandas, from the Python
/// environment `scripts/test` builds (`FLEETSQL_BENCH_PYTHON`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_drivers() {
    let Some(python) = std::env::var_os("FLEETSQL_BENCH_PYTHON") else {
        // CI always runs through scripts/test, which provides it.
        assert!(
            std::env::var_os("CI").is_none(),
            "FLEETSQL_BENCH_PYTHON is unset; run ./scripts/test"
        );
        eprintln!("skipped: FLEETSQL_BENCH_PYTHON is unset (./scripts/test sets it)");
        return;
    };
    let fleet = FixtureFleet::start().await;
    let script = crate::fixture::repo_root().join("tests/clients/pg_drivers.py");
    let port = fleet.pg.local_addr().port().to_string();
    let output = tokio::process::Command::new(python)
        .arg(script)
        .arg(port)
        .output()
        .await
        .expect("the Python of scripts/python-env runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "drivers failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("ok   pandas read_sql SELECT * join"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describes_a_table_without_a_notice_per_catalog_query() {
    let fleet = FixtureFleet::start().await;
    // Collected first, so its columns are known.
    let (_, err) = psql(&fleet, &["-c", "SELECT count(*) FROM sys"]);
    assert_eq!(err.matches("NOTICE").count(), 1, "{err}");
    let (out, err) = psql(&fleet, &["-c", "\\d sys"]);
    assert!(!err.contains("ERROR"), "{err}");
    assert!(
        !err.contains("NOTICE"),
        "catalog queries sent a NOTICE: {err}"
    );
    assert!(out.contains("Table \"public.sys\""), "{out}");
    for column in ["ip|text", "memtotal|bigint", "cpu_pct|double precision"] {
        assert!(out.contains(column), "no {column} in:\n{out}");
    }
    let (out, _) = psql(&fleet, &["-c", "\\dt"]);
    assert!(out.contains("public|sys|table"), "{out}");
}
