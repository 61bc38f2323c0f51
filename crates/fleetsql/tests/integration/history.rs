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
