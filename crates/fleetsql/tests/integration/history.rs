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
    use std::collections::{BTreeMap, BTreeSet};

    use fleetsql_tiers::{HistoryConfig, SqlNodeEntry};

    use crate::tiers::{FleetSpec, TestCluster, eventually};

    let dir = tempfile::tempdir().unwrap();
    let sql_state = dir.path().join("sql-state");
    let tla_history = dir.path().join("t1-history");
    let sqlnodes = BTreeMap::from([(
        "sql".to_string(),
        SqlNodeEntry {
            state_dir: Some(sql_state.clone()),
            history: Some(HistoryConfig::of_tables(["sys"])),
            ..SqlNodeEntry::default()
        },
    )]);
    let tla_dir = tla_history.clone();
    let mut cluster = TestCluster::start_fleet_edited(
        dir,
        FleetSpec {
            proxies: 1,
            tlas: 1,
            table_expiry: Duration::from_secs(60),
            extra_agent: false,
            sqlnodes,
            tla_sql: BTreeSet::new(),
        },
        move |topology, _| {
            topology.tlas.get_mut("t1").expect("t1").history = Some(HistoryConfig {
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
    cluster.restart("sql", "sqlnode").await;

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
/// through tokio-postgres (extended protocol) read the kept generation;
/// over psql the completeness NOTICE names it.
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
    tokio::spawn(async move {
        // Drives the connection. Its NOTICE is not checked: over the
        // extended protocol the protocol layer runs the plan outside the
        // node's history-read scope, so the NOTICE names only the live
        // generation (a known gap, issue 18 item 3).
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(_)) = messages.next().await {}
    });
    let answer = client
        .query(
            &format!("SELECT count(*) AS n FROM sys VERSION AS OF {g}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(answer[0].get::<_, i64>(0) as u64, rows_then);

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
