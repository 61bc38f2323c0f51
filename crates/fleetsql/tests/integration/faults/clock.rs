//! Clock trouble (issue 20 item 5): one agent's clock 10 minutes behind,
//! another's 10 minutes ahead (`FLEETSQL_TEST_CLOCK_OFFSET_MS`, which
//! shifts `fleetsql_model::now_ms` for the whole process; tests only).
//! Data age is measured by the receiving tier: the proxy restates each
//! agent's generation on its own clock (`GenerationMeta::served_at_ms`),
//! so neither agent is dropped as stale nor makes its cluster look ten
//! minutes old or from the future. No root needed.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::fleet::{FaultFleet, fixture_topology};
use super::report;

const TICK: Duration = Duration::from_secs(1);
/// Ten minutes and a bit: the odd 300 ms also moves the agents' tick phase.
const SKEW_MS: i64 = 600_300;
/// How far a cluster's data times may be from the test's clock: a few
/// ticks of the tree on a loaded box, far under the skew.
const SLACK_MS: i64 = 8_000;

fn cluster_rows(body: &Value) -> Vec<(String, u64, i64, f64)> {
    body["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r[0].as_str()?.to_string(),
                r[1].as_u64()?,
                r[2].as_i64()?,
                r[3].as_f64()?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_wrong_clock_corrupts_no_data_age() {
    let dir = tempfile::tempdir().unwrap();
    let topology = fixture_topology(dir.path(), TICK, 1, &["t1"], &["sql"]);
    let mut fleet = FaultFleet::new(dir, topology);
    for (agent, skew) in [("c1-m1", -SKEW_MS), ("c2-m1", SKEW_MS)] {
        fleet.extra_env.insert(
            agent.to_string(),
            vec![(
                "FLEETSQL_TEST_CLOCK_OFFSET_MS".to_string(),
                skew.to_string(),
            )],
        );
    }
    fleet.start_rest().await;

    // Every machine is counted (the late clock is not "stale"), and each
    // cluster's data age and newest data time are on the test's clock.
    let sql = "SELECT cluster, machines_seen, data_age_ms, \
               date_part('epoch', newest_data_at) FROM fleet_clusters ORDER BY cluster";
    let start = Instant::now();
    let mut good_answers = 0;
    let mut last = Value::Null;
    let mut worst_age = 0i64;
    let mut worst_ahead = 0i64;
    // Ten answers in a row, over several ticks of every tier.
    while good_answers < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "never ten good answers in a row; last: {last}\nc1-p1: {}",
            fleet.log("c1-p1")
        );
        let (_, body) = fleet.query("sql", sql).await;
        let now = fleetsql_model::now_ms();
        let rows = cluster_rows(&body);
        let good = rows.len() == 2
            && rows.iter().all(|(_, seen, age, newest_s)| {
                let ahead = (newest_s * 1000.0) as i64 - now;
                *seen == 2 && (-SLACK_MS..=SLACK_MS).contains(age) && ahead <= SLACK_MS
            });
        if good {
            good_answers += 1;
            for (_, _, age, newest_s) in &rows {
                worst_age = worst_age.max(age.abs());
                worst_ahead = worst_ahead.max((newest_s * 1000.0) as i64 - now);
            }
        } else {
            good_answers = 0;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The SQL answer itself says every machine answered.
    let (_, body) = fleet.query("sql", "SELECT count(*) FROM sys").await;
    assert_eq!(body["generation"]["machines_seen"], 4, "{body}");
    report(
        "clock_skew",
        &[
            ("skew_ms", SKEW_MS.to_string()),
            ("worst_cluster_age_ms", worst_age.to_string()),
            ("worst_newest_ahead_ms", worst_ahead.to_string()),
        ],
    );
}
