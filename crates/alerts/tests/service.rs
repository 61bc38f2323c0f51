//! The service over a real SQL node: no-data and failures, shared
//! queries, the alert tables, and state surviving a restart.

mod common;

use arrow::util::pretty::pretty_format_batches;
use common::TestFleet;

const FIRST: &str = r#"
name = "first"
every = "1s"
sql = "SELECT ip ip_key, hostname FROM sys WHERE hostname LIKE '%-m000'"
"#;

async fn sql(fleet: &TestFleet, sql: &str) -> String {
    let output = fleet.node.query(sql).await.unwrap();
    pretty_format_batches(&output.batches).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tables_and_failed_queries_neither_fire_nor_clear() {
    let fleet = TestFleet::start().await;
    fleet.write("first.toml", FIRST);
    let service = fleet.service();
    assert_eq!(service.run_pass(10_000).await.unwrap().events, 3);

    // The alert now reads a table nobody publishes: no data, instances
    // stay active but stale.
    fleet.write(
        "first.toml",
        &FIRST.replace("FROM sys", "FROM sys_renamed_away"),
    );
    let report = service.run_pass(20_000).await.unwrap();
    assert_eq!(report.events, 1, "one nodata event, no clears");
    let state = service.state("first").unwrap();
    assert!(state.nodata);
    assert!(
        state
            .last_error
            .as_deref()
            .unwrap()
            .contains("sys_renamed_away")
    );
    let active = service.active_instances("first");
    assert_eq!(active.len(), 3);
    assert!(active.iter().all(|i| i.stale));

    // A query that fails (bad column): nothing changes, the error is shown.
    fleet.write(
        "first.toml",
        &FIRST.replace("hostname LIKE", "no_such_column LIKE"),
    );
    let report = service.run_pass(30_000).await.unwrap();
    assert_eq!(report.events, 0);
    assert_eq!(service.active_instances("first").len(), 3);
    let shown = sql(
        &fleet,
        "SELECT name, iteration, last_error IS NOT NULL failed FROM alerts",
    )
    .await;
    assert!(shown.contains("| first | 3         | true   |"), "{shown}");

    // Back to good SQL: the same instances, no longer stale, not re-fired.
    fleet.write("first.toml", FIRST);
    let report = service.run_pass(40_000).await.unwrap();
    assert_eq!(report.events, 0);
    assert!(service.active_instances("first").iter().all(|i| !i.stale));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_sql_is_computed_once_per_generation() {
    let fleet = TestFleet::start().await;
    fleet.write("a.toml", FIRST);
    fleet.write(
        "b.toml",
        &FIRST.replace("name = \"first\"", "name = \"first again\""),
    );
    fleet.write(
        "c.toml",
        &FIRST
            .replace("name = \"first\"", "name = \"other\"")
            .replace("m000", "m001"),
    );
    let service = fleet.service();
    let report = service.run_pass(10_000).await.unwrap();
    assert_eq!(report.iterations, 3);
    assert_eq!(report.queries, 2, "a and b share one query");
    assert_eq!(report.events, 9);
    // Same generation, next iteration: the answers are reused.
    let report = service.run_pass(12_000).await.unwrap();
    assert_eq!(report.iterations, 3);
    assert_eq!(report.queries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_tables_show_definitions_instances_and_errors() {
    let fleet = TestFleet::start().await;
    fleet.write("first.toml", FIRST);
    fleet.write(
        "broken.toml",
        "name = \"broken\"\nsql = \"SELECT 1\"\nevery = \"soon\"\n",
    );
    let service = fleet.service();
    service.run_pass(10_000).await.unwrap();
    let alerts = sql(
        &fleet,
        "SELECT name, fire_after, iteration, active_instances FROM alerts",
    )
    .await;
    assert!(
        alerts.contains("| first | 1          | 1         | 3                |"),
        "{alerts}"
    );
    let instances = sql(
        &fleet,
        "SELECT alert, status, details FROM alert_instances ORDER BY details",
    )
    .await;
    assert!(
        instances.contains(r#"| first | active | {"hostname":"cluster-00-m000"} |"#),
        "{instances}"
    );
    assert_eq!(instances.matches("active").count(), 3, "{instances}");
    let errors = sql(&fleet, "SELECT file, error FROM alert_errors").await;
    assert!(errors.contains("broken.toml"), "{errors}");
    assert!(errors.contains("`every`"), "{errors}");
    // A join with fleet data: the node pins a generation for `sys` and
    // reads alert state beside it.
    let joined = sql(
        &fleet,
        r#"SELECT count(*) n FROM alert_instances i JOIN sys s ON i.instance_key = concat('{"ip_key":"', s.ip, '"}')"#,
    )
    .await;
    assert!(joined.contains("| 3 |"), "{joined}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_without_refiring() {
    let fleet = TestFleet::start().await;
    fleet.write("first.toml", FIRST);
    let service = fleet.service();
    assert_eq!(service.run_pass(10_000).await.unwrap().events, 3);
    service.run_pass(12_000).await.unwrap();
    let before = service.state("first").unwrap();
    assert_eq!(before.iteration, 2);
    service.shutdown().await;

    let service = fleet.service();
    let report = service.run_pass(14_000).await.unwrap();
    assert_eq!(report.events, 0, "nothing fires again after a restart");
    let after = service.state("first").unwrap();
    assert_eq!(after.iteration, 3, "iterations continue");
    assert_eq!(after.active().count(), 3, "nothing lost");
    for (key, instance) in &before.instances {
        assert_eq!(after.instances[key].fired_at_ms, instance.fired_at_ms);
    }
    // Deleting the file stops the alert and forgets it.
    std::fs::remove_file(fleet.alerts_dir().join("first.toml")).unwrap();
    service.run_pass(16_000).await.unwrap();
    assert!(service.state("first").is_none());
}

/// Fires, clears and pending counts are written with their iteration;
/// `last_seen_ms` and details of active instances only at checkpoints (and
/// at a clean shutdown). A kill between checkpoints loses only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_checkpoints_loses_only_refreshes() {
    let fleet = TestFleet::start().await;
    fleet.write("first.toml", FIRST);
    fleet.write(
        "third.toml",
        &FIRST
            .replace("\"first\"", "\"third\"")
            .replace("every = \"1s\"", "every = \"1s\"\nfire_after = 3"),
    );
    let service = fleet.service();
    assert_eq!(service.run_pass(10_000).await.unwrap().events, 3);
    assert_eq!(service.run_pass(12_000).await.unwrap().events, 0);
    let pending = service.state("third").unwrap();
    assert!(pending.instances.values().all(|i| i.present_count == 2));
    drop(service); // no shutdown: nothing unsaved is written

    let service = fleet.service();
    let loaded = service.state("first").unwrap();
    assert!(
        loaded.active().all(|i| i.last_seen_ms == 10_000),
        "refreshes since the checkpoint at 10 s are lost: {loaded:?}"
    );
    let report = service.run_pass(14_000).await.unwrap();
    assert_eq!(
        report.events, 3,
        "only `third` fires, on its third iteration in a row"
    );
    assert_eq!(service.active_instances("third").len(), 3);
    assert!(
        service
            .state("first")
            .unwrap()
            .active()
            .all(|i| i.last_seen_ms == 14_000),
        "the first iteration after the restart refreshes them"
    );
    assert_eq!(service.state("third").unwrap().iteration, 3);

    // A clean shutdown writes what is unsaved (while it holds the lease,
    // which it checks against the clock: this pass runs at the real time).
    let now = fleetsql_model::now_ms();
    service.run_pass(now).await.unwrap();
    service.shutdown().await;
    let service = fleet.service();
    assert!(
        service
            .state("first")
            .unwrap()
            .active()
            .all(|i| i.last_seen_ms == now)
    );
}
