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

/// pgjdbc, Debian's `libpostgresql-jdbc-java` (scripts/apt/jdbc.txt):
/// a query and its NOTICE as a warning, a PreparedStatement, a `SELECT *`
/// join, `DatabaseMetaData` (getTables, getColumns, getPrimaryKeys,
/// getSchemas) and a timestamptz, by `tests/clients/PgJdbc.java`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_driver() {
    let jar = std::path::Path::new(JDBC_JAR);
    if !jar.exists() {
        // CI always runs through scripts/test, which installs it.
        assert!(
            std::env::var_os("CI").is_none(),
            "{JDBC_JAR} is missing; run ./scripts/test"
        );
        eprintln!("skipped: {JDBC_JAR} is missing (./scripts/test installs it)");
        return;
    }
    let fleet = FixtureFleet::start().await;
    let script = crate::fixture::repo_root().join("tests/clients/PgJdbc.java");
    let output = tokio::process::Command::new("java")
        .arg("-cp")
        .arg(jar)
        .arg(script)
        .arg(fleet.pg.local_addr().port().to_string())
        .output()
        .await
        .expect("java is installed (scripts/apt/jdbc.txt lists it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "JDBC failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ok   getPrimaryKeys"), "{stdout}");
}

const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

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

/// Runs the real `psql` against `fleet` as a user would at a terminal, but
/// with every setting that changes its output fixed: no psqlrc (`-X`),
/// quiet (`-q`: no `SET`/`COPY n` chatter), no pager, the C locale
/// (untranslated headers), UTC, UTF-8. `commands` go in with `-c`, each
/// in order over one connection. Returns stdout; stderr (the completeness
/// NOTICE, which names generations and ages) must have no ERROR.
fn psql_fixed(fleet: &FixtureFleet, commands: &[&str]) -> String {
    psql_fixed_on(fleet.pg.local_addr().port(), commands)
}

/// [`psql_fixed`] against any Postgres listener on loopback.
fn psql_fixed_on(port: u16, commands: &[&str]) -> String {
    let port = port.to_string();
    let mut command = Command::new("psql");
    command
        .args(["-X", "-q", "-h", "127.0.0.1", "-p", &port, "-U", "fleetsql"])
        .args(["-d", "fleetsql", "-v", "ON_ERROR_STOP=1", "-P", "pager=off"]);
    for c in commands {
        command.args(["-c", c]);
    }
    let output = command
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGTZ", "UTC")
        .env("PGCLIENTENCODING", "UTF8")
        .env("LC_ALL", "C")
        .env_remove("PSQLRC")
        .env_remove("PAGER")
        .env_remove("COLUMNS")
        .output()
        .expect("psql is installed (scripts/apt lists it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("ERROR"),
        "psql {commands:?} failed: {stderr}"
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The expected output of one psql meta-command, `tests/integration/psql/NAME`;
/// with `FLEETSQL_BLESS=1` the actual output is written there instead.
fn expect_psql(name: &str, actual: &str) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/integration/psql")
        .join(name);
    if std::env::var_os("FLEETSQL_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (FLEETSQL_BLESS=1 writes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "psql output differs from {} (FLEETSQL_BLESS=1 rewrites it)",
        path.display()
    );
}

/// psql's meta-commands against the fixed fleet's Postgres listener,
/// compared with the files in `tests/integration/psql/`. What differs from
/// run to run (ports, generations, ages) is never in the compared output:
/// the completeness NOTICE goes to stderr, the catalogs list names and
/// types, and the fixed fleet's rows are the same every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_match_the_expected_output() {
    let fleet = FixtureFleet::start().await;
    // Before any query: every table the fleet publishes is listed, none
    // collected yet (their columns are not known).
    let dt = psql_fixed(&fleet, &["\\dt"]);
    for never_queried in ["load_info", "machinerole", "processes", "sys"] {
        assert!(
            dt.contains(&format!(" {never_queried} ")),
            "{never_queried} not listed:\n{dt}"
        );
    }
    expect_psql("dt.out", &dt);
    // Collected now, so `\d sys` has its columns.
    psql_fixed(&fleet, &["SELECT count(*) FROM sys"]);
    for (name, commands) in [
        ("d.out", &["\\d"][..]),
        ("d_sys.out", &["\\d sys"]),
        ("dn.out", &["\\dn"]),
        ("l.out", &["\\l"]),
        (
            "x.out",
            &[
                "\\x on",
                "SELECT _host, ip, role FROM machinerole ORDER BY _host LIMIT 2",
            ],
        ),
    ] {
        expect_psql(name, &psql_fixed(&fleet, commands));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sys.csv");
    let out = psql_fixed(
        &fleet,
        &[&format!(
            "\\copy (SELECT _host, ip, memtotal, cpu_pct FROM sys ORDER BY _host) TO '{}' WITH CSV HEADER",
            file.display()
        )],
    );
    assert_eq!(out, "", "quiet \\copy printed {out}");
    expect_psql("copy_sys.csv", &std::fs::read_to_string(&file).unwrap());
}

/// In psql's expanded output (`\x`), the values of `fields` replaced by
/// `*`: what the simulated fleet changes every tick (free memory, load,
/// uptime, publication times). A record's header line is as wide as its
/// widest value, so its dashes go too.
fn mask_expanded(out: &str, fields: &[&str]) -> String {
    out.lines()
        .map(|line| match line.split_once(" | ") {
            Some((name, _)) if fields.contains(&name.trim_end()) => format!("{name} | *"),
            _ if line.starts_with("-[ RECORD ") => line.trim_end_matches('-').to_string(),
            _ => line.to_string(),
        })
        .map(|line| line + "\n")
        .collect()
}

/// What a user types at `fleetsql demo` (the real binary, started on port
/// 0 and waited on its `/health`), compared with the files in
/// `tests/integration/psql/demo/`: the tables listed, a table described,
/// the schemas, an expanded row and a `\copy`. The simulated fleet's
/// seed fixes its machines and their fixed facts; what changes each tick
/// is masked, and the demo's own machine (named after the host running
/// the test) is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_against_the_demo_match_the_expected_output() {
    let demo = crate::cluster::TestDemo::start().await;
    let port = demo.pg.port();
    expect_psql("demo/dt.out", &psql_fixed_on(port, &["\\dt"]));
    expect_psql("demo/dn.out", &psql_fixed_on(port, &["\\dn"]));
    // Collected first, so `\d sys` has its columns.
    psql_fixed_on(port, &["SELECT count(*) FROM sys"]);
    expect_psql("demo/d_sys.out", &psql_fixed_on(port, &["\\d public.sys"]));
    let x = psql_fixed_on(
        port,
        &[
            "\\x on",
            "SELECT * FROM sys WHERE _cluster <> 'local' ORDER BY _host LIMIT 2",
        ],
    );
    let ticking = [
        "memfree",
        "memavail",
        "swapfree",
        "cpu_pct",
        "load1",
        "load5",
        "load15",
        "uptime",
        "_published_at",
    ];
    let masked = mask_expanded(&x, &ticking);
    // The mask hides values, never rows or columns.
    assert_eq!(masked.lines().count(), x.lines().count(), "{x}");
    assert!(masked.contains("_published_at | *"), "{x}");
    expect_psql("demo/x_sys.out", &masked);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("machinerole.csv");
    let out = psql_fixed_on(
        port,
        &[&format!(
            "\\copy (SELECT _host, ip, memtotal, ncpus, os FROM sys WHERE _cluster <> 'local' ORDER BY _host) TO '{}' WITH CSV HEADER",
            file.display()
        )],
    );
    assert_eq!(out, "", "quiet \\copy printed {out}");
    expect_psql(
        "demo/copy_sys.csv",
        &std::fs::read_to_string(&file).unwrap(),
    );
}
