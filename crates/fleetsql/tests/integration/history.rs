//! Query History on the real binary: `fleetsql demo` keeps `sys`,
//! `filesystem` and `load_info` by default; `history.sys` grows one
//! generation per tick, `FOR SYSTEM_TIME AS OF` reads the kept generation
//! at or before a time and says which, "when did this condition start" is
//! one query, and a restart on the same state directory keeps what was
//! written.

use std::time::{Duration, Instant};

use crate::cluster::TestDemo;

/// Polls `sql` (one integer) until `done` holds; the loop is bounded, the
/// wait is for the demo's ticks.
async fn wait_for(demo: &TestDemo, sql: &str, done: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = demo.query_json(sql).await;
        let value = body["rows"][0][0].as_u64();
        if status.is_success()
            && let Some(v) = value
            && done(v)
        {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: last answer {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rows(demo: &TestDemo, sql: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let (status, body) = demo.query_json(sql).await;
    assert!(status.is_success(), "{sql}: {status} {body}");
    (
        body["rows"].as_array().cloned().unwrap_or_default(),
        body["generation"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_keeps_history_travels_in_time_and_keeps_it_across_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let state_arg = [
        "--state-dir".into(),
        state.path().join("demo").into_os_string(),
    ];
    let demo = TestDemo::start_with(2, 3, "300ms", &state_arg).await;

    // Grows one generation per tick.
    const GENERATIONS: &str = "SELECT count(DISTINCT _generation) FROM history.sys";
    let first = wait_for(&demo, GENERATIONS, |n| n >= 2).await;
    wait_for(&demo, GENERATIONS, |n| n >= first + 2).await;
    let (per_generation, _) = rows(
        &demo,
        "SELECT _generation, CAST(_generation_time AS BIGINT), count(*) FROM history.sys GROUP BY 1, 2 ORDER BY 1",
    )
    .await;
    assert!(per_generation.len() >= 4, "{per_generation:?}");
    assert!(
        per_generation.iter().all(|r| r[2].as_u64() > Some(0)),
        "{per_generation:?}"
    );

    // AS OF a time between two kept generations reads the earlier one,
    // and the answer says so.
    let (g, t) = (
        per_generation[1][0].as_u64().unwrap(),
        per_generation[1][1].as_i64().unwrap(),
    );
    let next_t = per_generation[2][1].as_i64().unwrap();
    assert!(next_t > t + 1);
    let at = chrono::DateTime::from_timestamp_millis(t + 1)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.3f");
    let (answer, info) = rows(
        &demo,
        &format!("SELECT count(*) FROM sys FOR SYSTEM_TIME AS OF TIMESTAMP '{at}'"),
    )
    .await;
    let rows_then = per_generation[1][2].as_u64();
    assert_eq!(answer[0][0].as_u64(), rows_then);
    assert_eq!(info["history"][0]["table"], "sys", "{info}");
    assert_eq!(
        info["history"][0]["first_generation"].as_u64(),
        Some(g),
        "{info}"
    );
    assert_eq!(
        info["history"][0]["generations"].as_u64(),
        Some(1),
        "{info}"
    );
    let (answer, info) = rows(
        &demo,
        &format!("SELECT count(*) FROM sys VERSION AS OF {g}"),
    )
    .await;
    assert_eq!(answer[0][0].as_u64(), rows_then);
    assert_eq!(info["history"][0]["last_ms"].as_i64(), Some(t), "{info}");

    // "When did this condition start": the first kept generation in which
    // each machine's row shows it (here: a machine reports memory).
    let (started, _) = rows(
        &demo,
        "SELECT ip, CAST(min(_generation_time) AS BIGINT) FROM history.sys WHERE memtotal > 0 GROUP BY ip",
    )
    .await;
    assert!(!started.is_empty(), "{started:?}");
    let first_time = per_generation[0][1].as_i64().unwrap();
    let earliest = started.iter().filter_map(|r| r[1].as_i64()).min();
    assert_eq!(earliest, Some(first_time), "{started:?}");

    // A table not kept: the error names the setting.
    let (status, body) = demo.query_json("SELECT * FROM history.processes").await;
    assert!(!status.is_success());
    assert!(body.to_string().contains("history.tables"), "{body}");

    let (kept, _) = rows(
        &demo,
        "SELECT table_name, generations, writing FROM fleet_history ORDER BY table_name",
    )
    .await;
    let names: Vec<&str> = kept.iter().filter_map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["filesystem", "load_info", "sys"]);
    assert!(kept.iter().all(|r| r[2] == true), "{kept:?}");

    // A restart on the same state directory keeps what was written.
    let (before, _) = rows(&demo, "SELECT CAST(min(_generation_time) AS BIGINT), count(DISTINCT _generation_time) FROM history.sys").await;
    drop(demo);
    let demo = TestDemo::start_with(2, 3, "300ms", &state_arg).await;
    let (after, _) = rows(&demo, "SELECT CAST(min(_generation_time) AS BIGINT), count(DISTINCT _generation_time) FROM history.sys").await;
    assert_eq!(
        after[0][0], before[0][0],
        "the oldest kept generation survived"
    );
    assert!(
        after[0][1].as_u64() >= before[0][1].as_u64(),
        "{before:?} {after:?}"
    );
}

/// Issue 18 item 4 on real processes from one topology file: the TLA keeps
/// `sys` in history (`[tlas.t1.history]`) and serves it over Flight; the
/// SQL node keeps its own. Killed and started again with an empty state
/// directory, the SQL node answers `history.sys` over generations made
/// before it lost its state: it fetched them from its TLA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_node_restarted_empty_answers_history_from_its_tla() {
    restarted_empty_answers_history_from_its_tla(false).await;
}

/// The same for a combined node (`fleetsql tla-sql`): its SQL node syncs
/// from the store of the TLA in its own process, which keeps history in
/// its own directory, so losing the SQL node's state directory loses no
/// history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_combined_node_restarted_empty_answers_history_from_its_own_tla() {
    restarted_empty_answers_history_from_its_tla(true).await;
}

async fn restarted_empty_answers_history_from_its_tla(combined: bool) {
    use std::collections::{BTreeMap, BTreeSet};

    use fleetsql_tiers::{HistoryConfig, SqlNodeEntry};

    use crate::tiers::{FleetSpec, TestCluster, eventually};

    let dir = tempfile::tempdir().unwrap();
    let sql_state = dir.path().join("sql-state");
    let tla_history = dir.path().join("tla-history");
    // Separate: TLA `t1` and SQL node `sql`; combined: both are `sql`.
    let tla_name = if combined { "sql" } else { "t1" };
    let sqlnodes = BTreeMap::from([(
        "sql".to_string(),
        SqlNodeEntry {
            state_dir: Some(sql_state.clone()),
            history: Some(HistoryConfig::of_tables(["sys"])),
            tlas: if combined {
                BTreeMap::from([("sql".to_string(), 0)])
            } else {
                BTreeMap::new()
            },
            ..SqlNodeEntry::default()
        },
    )]);
    let tla_dir = tla_history.clone();
    let mut cluster = TestCluster::start_fleet_edited(
        dir,
        FleetSpec {
            proxies: 1,
            tlas: if combined { 0 } else { 1 },
            table_expiry: Duration::from_secs(60),
            extra_agent: false,
            sqlnodes,
            tla_sql: if combined {
                BTreeSet::from(["sql".to_string()])
            } else {
                BTreeSet::new()
            },
        },
        move |topology, _| {
            topology.tlas.get_mut(tla_name).expect("the TLA").history = Some(HistoryConfig {
                dir: Some(tla_dir),
                ..HistoryConfig::of_tables(["sys"])
            });
        },
    )
    .await;

    // Both keep generations: the SQL node's own files, the TLA's files.
    const SPAN: &str = "SELECT CAST(min(_generation_time) AS BIGINT), count(DISTINCT _generation) FROM history.sys";
    let (oldest, kept) = eventually(
        Duration::from_secs(60),
        "3 generations of history.sys",
        || async {
            let (status, body) = cluster.query(SPAN).await;
            let oldest = body["rows"][0][0].as_i64()?;
            let kept = body["rows"][0][1].as_u64()?;
            (status.is_success() && kept >= 3).then_some((oldest, kept))
        },
    )
    .await;
    let tla_files = || {
        std::fs::read_dir(tla_history.join("sys"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                    .count()
            })
            .unwrap_or(0)
    };
    eventually(
        Duration::from_secs(30),
        "the TLA's history files",
        || async { (tla_files() >= 3).then_some(()) },
    )
    .await;

    // The SQL node loses everything it kept.
    cluster.kill("sql");
    std::fs::remove_dir_all(&sql_state).unwrap();
    cluster
        .restart("sql", if combined { "tla-sql" } else { "sqlnode" })
        .await;

    // What it answers reaches back before the restart: from the TLA.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = cluster.query(SPAN).await;
        let after_oldest = body["rows"][0][0].as_i64();
        let after_kept = body["rows"][0][1].as_u64();
        if status.is_success()
            && after_oldest.is_some_and(|t| t <= oldest)
            && after_kept.is_some_and(|n| n >= kept)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart history.sys reads {status} {body}, before it read oldest {oldest}, {kept} generations; log: {}",
            cluster.log("sql")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(sql_state.join("history").join("sys").exists());
    assert!(
        cluster.log("sql").contains("history fetched from the TLA"),
        "{}",
        cluster.log("sql")
    );
}

/// Issue 18 item 3: time travel over the Postgres wire. `FOR SYSTEM_TIME
/// AS OF TIMESTAMP` through psql (simple protocol) and `VERSION AS OF`
/// through tokio-postgres (extended protocol) read the kept generation,
/// and on both protocols the completeness NOTICE names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_over_the_pg_wire_names_the_generation_in_its_notice() {
    use futures::StreamExt;

    let state = tempfile::tempdir().unwrap();
    let state_arg = [
        "--state-dir".into(),
        state.path().join("demo").into_os_string(),
    ];
    let demo = TestDemo::start_with(2, 3, "300ms", &state_arg).await;
    wait_for(
        &demo,
        "SELECT count(DISTINCT _generation) FROM history.sys",
        |n| n >= 3,
    )
    .await;
    let (per_generation, _) = rows(
        &demo,
        "SELECT _generation, CAST(_generation_time AS BIGINT), count(*) FROM history.sys GROUP BY 1, 2 ORDER BY 1",
    )
    .await;
    let g = per_generation[1][0].as_u64().unwrap();
    let t = per_generation[1][1].as_i64().unwrap();
    let rows_then = per_generation[1][2].as_u64().unwrap();
    let at = chrono::DateTime::from_timestamp_millis(t + 1)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.3f");

    // psql, the simple protocol: the row count of that generation, and the
    // NOTICE (on stderr) naming it.
    let output = std::process::Command::new("psql")
        .args(["-h", &demo.pg.ip().to_string()])
        .args(["-p", &demo.pg.port().to_string()])
        .args(["-U", "fleetsql", "-d", "fleetsql", "-X", "-A", "-t"])
        .args(["-v", "ON_ERROR_STOP=1"])
        .env("PGCONNECT_TIMEOUT", "10")
        .args([
            "-c",
            &format!("SELECT count(*) FROM sys FOR SYSTEM_TIME AS OF TIMESTAMP '{at}'"),
        ])
        .output()
        .expect("psql is installed (scripts/apt lists it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), rows_then.to_string(), "{stderr}");
    assert!(
        stderr.contains(&format!("history sys: generation {g} made ")),
        "{stderr}"
    );

    // tokio-postgres, the extended protocol, notices collected from the
    // connection.
    let url = format!(
        "host={} port={} user=fleetsql",
        demo.pg.ip(),
        demo.pg.port()
    );
    let (client, mut connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (notices, mut notice_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Drives the connection and hands its NOTICEs on.
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notice(notice) = message {
                let _ = notices.send(notice.message().to_string());
            }
        }
    });
    let answer = client
        .query(
            &format!("SELECT count(*) AS n FROM sys VERSION AS OF {g}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(answer[0].get::<_, i64>(0) as u64, rows_then);
    // The NOTICE arrives before the rows, so it is here once they are.
    let mut received = || std::iter::from_fn(|| notice_rx.try_recv().ok()).collect::<Vec<String>>();
    let notices = received();
    assert!(
        notices
            .iter()
            .any(|n| n.contains(&format!("history sys: generation {g} made "))),
        "{notices:?}"
    );
    // Over `history.sys`: the NOTICE names the generations read.
    let answer = client
        .query(
            &format!("SELECT count(*) FROM history.sys WHERE _generation <= {g}"),
            &[],
        )
        .await
        .unwrap();
    assert!(answer[0].get::<_, i64>(0) as u64 >= rows_then);
    let notices = received();
    assert!(
        notices.iter().any(|n| n.contains("; history sys: ")),
        "{notices:?}"
    );

    // A generation that is not kept: an error naming the retention setting.
    let error = client
        .query("SELECT count(*) FROM sys VERSION AS OF 999999999", &[])
        .await
        .unwrap_err();
    let text = error
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_else(|| error.to_string());
    assert!(text.contains("history.keep"), "{text}");
}

/// The seed's use cases over history (issue 18 Tests and item 7), on one
/// state directory across two runs of `fleetsql demo`:
///
/// - "when did this condition start": the first `_generation_time` at
///   which the disk alert's rows appear, per machine and mount. The demo's
///   nearly full disks are full from its first tick, so each starts at the
///   first kept generation, and stays there as generations are added and
///   across the restart (a condition starting mid-run is not simulated).
/// - the continent-hits report drawn for the past hour from history: the
///   second run has the report, the first did not; `history=true` draws
///   the times before its first run from the kept `load_info`, each point
///   answering what the same SQL over `history.load_info` grouped by
///   `_generation_time` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_use_cases_read_history_when_a_condition_started_and_a_report_before_it_existed() {
    const DISK_CONDITION: &str = "blocks > 0 AND (100*bavail)/blocks < 3";
    let state = tempfile::tempdir().unwrap();
    let state_arg: Vec<std::ffi::OsString> = vec![
        "--state-dir".into(),
        state.path().join("demo").into_os_string(),
    ];
    let started_sql = format!(
        "SELECT machineip, mountp, CAST(min(_generation_time) AS BIGINT) FROM history.filesystem WHERE {DISK_CONDITION} GROUP BY 1, 2 ORDER BY 1, 2"
    );

    // First run: no report; history accumulates. 200 machines, so the
    // simulator's nearly full disks (1.5% of machines) occur.
    let demo = TestDemo::start_with(8, 25, "300ms", &state_arg).await;
    wait_for(
        &demo,
        "SELECT count(DISTINCT _generation_time) FROM history.load_info",
        |n| n >= 4,
    )
    .await;
    let (first_kept, _) = rows(
        &demo,
        "SELECT CAST(min(_generation_time) AS BIGINT) FROM history.filesystem",
    )
    .await;
    let first_kept = first_kept[0][0].as_i64().expect("a kept generation");
    let (started, info) = rows(&demo, &started_sql).await;
    let (live, _) = rows(
        &demo,
        &format!("SELECT machineip, mountp FROM filesystem WHERE {DISK_CONDITION} ORDER BY 1, 2"),
    )
    .await;
    assert!(!live.is_empty(), "the demo has nearly full disks");
    let keys = |rows: &[serde_json::Value]| -> Vec<(serde_json::Value, serde_json::Value)> {
        rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect()
    };
    assert_eq!(keys(&started), keys(&live), "{started:?} {live:?}");
    assert!(
        started.iter().all(|r| r[2].as_i64() == Some(first_kept)),
        "{started:?}, first kept {first_kept}"
    );
    assert_eq!(info["history"][0]["table"], "filesystem", "{info}");
    let report_created_ms = fleetsql_model::now_ms();
    drop(demo);

    // Second run: the report exists from now on, run once at start.
    let reports = tempfile::tempdir().unwrap();
    let definition = std::fs::read_to_string(
        crate::fixture::repo_root().join("demo/reports/continent_hits.toml"),
    )
    .unwrap()
    .replace("every = \"1m\"", "every = \"1h\"");
    assert!(definition.contains("every = \"1h\""));
    std::fs::write(reports.path().join("continent_hits.toml"), &definition).unwrap();
    let mut args = state_arg.clone();
    args.extend([
        "--reports-dir".into(),
        reports.path().into(),
        "--reports-db".into(),
        reports.path().join("runs.sqlite").into(),
    ]);
    let demo = TestDemo::start_with(8, 25, "300ms", &args).await;
    let client = reqwest::Client::new();
    let base = format!("{}/v1/reports/continent_hits", demo.url());
    let since = report_created_ms - 3_600_000;
    let get = async |url: String| -> serde_json::Value {
        let response = client.get(&url).send().await.unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(status.is_success(), "{url}: {status} {body}");
        body
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first_run = loop {
        let body = get(format!("{base}/runs")).await;
        if let Some(t) = body["runs"][0]["run_at_ms"].as_i64() {
            break t;
        }
        assert!(Instant::now() < deadline, "the report never ran: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(first_run > report_created_ms);

    // The condition's start did not move across the restart.
    let (started_again, _) = rows(&demo, &started_sql).await;
    assert_eq!(started_again, started);

    // The past hour, drawn from history for every kept generation before
    // the report's first run, then its kept run.
    let body = get(format!(
        "{base}/runs?since_ms={since}&history=true&step_ms=1"
    ))
    .await;
    let runs = body["runs"].as_array().cloned().unwrap_or_default();
    let (from_history, kept): (Vec<_>, Vec<_>) = runs
        .iter()
        .partition(|r| r["run_at_ms"].as_i64() < Some(first_run));
    assert_eq!(kept.len(), 1, "{body}");
    assert!(from_history.len() >= 4, "{body}");
    assert!(from_history.iter().all(|r| r["error"].is_null()), "{body}");
    // The same question over `history.load_info`, grouped by time.
    let (expected, _) = rows(
        &demo,
        &format!(
            "SELECT CAST(l._generation_time AS BIGINT) t, c.continent_name, SUM(l.hits) hits \
             FROM history.load_info l, region_data r, continent_data c \
             WHERE l.georegion = r.id AND r.continent = c.continent \
             AND l._generation_time >= to_timestamp_millis({since}) \
             AND l._generation_time < to_timestamp_millis({report_created_ms}) \
             GROUP BY 1, 2 ORDER BY 1, 2"
        ),
    )
    .await;
    // Compared over the first run's generations, all written before the
    // second run started.
    let mut drawn: Vec<serde_json::Value> = from_history
        .iter()
        .filter(|r| r["run_at_ms"].as_i64() < Some(report_created_ms))
        .flat_map(|run| {
            let t = run["run_at_ms"].clone();
            run["rows"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |row| serde_json::json!([t.clone(), row[0], row[1]]))
        })
        .collect();
    drawn.sort_by_key(|r| (r[0].as_i64(), r[1].as_str().map(str::to_string)));
    assert!(!expected.is_empty());
    assert_eq!(drawn, expected);

    // The graph too: its SVG counts the runs it drew.
    let svg = client
        .get(format!(
            "{base}/chart.svg?since_ms={since}&history=true&step_ms=1"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        svg.contains(&format!("data-runs=\"{}\"", runs.len())),
        "{svg}"
    );
    // Without `history`, only the kept run.
    let body = get(format!("{base}/runs?since_ms={since}")).await;
    assert_eq!(body["runs"].as_array().map(Vec::len), Some(1), "{body}");
}

/// DuckDB's answers over the kept Parquet files, one JSON array of rows per
/// query (timestamps as ms, so both sides print numbers).
const DUCKDB_SCRIPT: &str = r#"
import json, sys, duckdb
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
out = [con.execute(q).fetchall() for q in json.loads(sys.argv[1])]
print(json.dumps([[list(r) for r in rows] for rows in out], default=str))
"#;

/// Issue 18 Tests, differential: the same questions over `history.sys` /
/// `history.filesystem` on the demo and over DuckDB reading the same
/// Parquet files give the same rows. Bounded by the newest generation
/// kept when the test starts, so files written meanwhile count for
/// neither side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_answers_as_duckdb_does_over_the_same_parquet() {
    let Some(python) = std::env::var_os("FLEETSQL_BENCH_PYTHON") else {
        // CI always runs through scripts/test, which provides it.
        assert!(
            std::env::var_os("CI").is_none(),
            "FLEETSQL_BENCH_PYTHON is unset; run ./scripts/test"
        );
        eprintln!("skipped: FLEETSQL_BENCH_PYTHON is unset (./scripts/test sets it)");
        return;
    };
    // 200 machines, so the simulator's nearly full disks occur.
    let demo = TestDemo::start_with(8, 25, "300ms", &[]).await;
    wait_for(
        &demo,
        "SELECT count(DISTINCT _generation) FROM history.filesystem",
        |n| n >= 4,
    )
    .await;
    let (kept, _) = rows(
        &demo,
        "SELECT table_name, dir, newest_generation FROM fleet_history WHERE table_name IN ('sys', 'filesystem') ORDER BY 1",
    )
    .await;
    let dir = |table: &str| -> String {
        let row = kept.iter().find(|r| r[0] == table).expect("kept");
        let dir = std::path::Path::new(row[1].as_str().expect("a dir"));
        // Each table's files are under its own directory.
        let table_dir = if dir.ends_with(table) {
            dir.to_path_buf()
        } else {
            dir.join(table)
        };
        format!("read_parquet('{}/*.parquet')", table_dir.display())
    };
    let newest = kept
        .iter()
        .filter_map(|r| r[2].as_u64())
        .min()
        .expect("a newest generation");
    let (times, _) = rows(
        &demo,
        &format!("SELECT DISTINCT CAST(_generation_time AS BIGINT) t FROM history.sys WHERE _generation <= {newest} ORDER BY t"),
    )
    .await;
    let middle = times[times.len() / 2][0].as_i64().unwrap();
    let (sys, fs) = (dir("sys"), dir("filesystem"));
    let condition = "blocks > 0 AND (100*bavail)/blocks < 3";
    // (fleetsql, DuckDB) spellings of each question.
    let questions: Vec<(String, String)> = vec![
        (
            format!(
                "SELECT _generation, CAST(_generation_time AS BIGINT), count(*), count(DISTINCT ip), sum(memtotal) FROM history.sys WHERE _generation <= {newest} GROUP BY 1, 2 ORDER BY 1"
            ),
            format!(
                "SELECT _generation, epoch_ms(_generation_time), count(*), count(DISTINCT ip), sum(memtotal) FROM {sys} WHERE _generation <= {newest} GROUP BY 1, 2 ORDER BY 1"
            ),
        ),
        (
            format!(
                "SELECT ip, max(memtotal), min(memtotal), count(*) FROM history.sys WHERE _generation <= {newest} AND _generation_time >= to_timestamp_millis({middle}) GROUP BY ip ORDER BY ip"
            ),
            format!(
                "SELECT ip, max(memtotal), min(memtotal), count(*) FROM {sys} WHERE _generation <= {newest} AND epoch_ms(_generation_time) >= {middle} GROUP BY ip ORDER BY ip"
            ),
        ),
        (
            format!(
                "SELECT machineip, mountp, CAST(min(_generation_time) AS BIGINT), count(*) FROM history.filesystem WHERE _generation <= {newest} AND {condition} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            format!(
                "SELECT machineip, mountp, epoch_ms(min(_generation_time)), count(*) FROM {fs} WHERE _generation <= {newest} AND {condition} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        ),
        (
            format!(
                "SELECT f.mountp, count(*), sum(s.memtotal) FROM history.filesystem f JOIN history.sys s ON f.machineip = s.ip AND f._generation_time = s._generation_time WHERE f._generation <= {newest} GROUP BY 1 ORDER BY 1"
            ),
            format!(
                "SELECT f.mountp, count(*), sum(s.memtotal) FROM {fs} f JOIN {sys} s ON f.machineip = s.ip AND f._generation_time = s._generation_time WHERE f._generation <= {newest} GROUP BY 1 ORDER BY 1"
            ),
        ),
    ];
    let duck: Vec<String> = questions.iter().map(|(_, d)| d.clone()).collect();
    let output = std::process::Command::new(python)
        .args(["-c", DUCKDB_SCRIPT])
        .arg(serde_json::to_string(&duck).unwrap())
        .output()
        .expect("the Python of scripts/python-env runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Vec<serde_json::Value>> =
        serde_json::from_slice(&output.stdout).expect("DuckDB's rows as JSON");
    for ((ours, _), theirs) in questions.iter().zip(&answers) {
        let (mine, _) = rows(&demo, ours).await;
        assert!(!mine.is_empty(), "{ours}: no rows");
        assert_eq!(&mine, theirs, "{ours}");
    }
}
