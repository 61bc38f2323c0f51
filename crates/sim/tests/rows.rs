//! Row-count churn: processes that start and exit, mounts that come and
//! go, machines that leave and come back; all seeded, and a simulated proxy
//! still sends exactly its machines' rows.

use std::collections::BTreeSet;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Int64Type, TimestampMillisecondType};
use fleetsql_aggregator::{Child, FetchRequest};
use fleetsql_model::Table;
use fleetsql_sim::{RowChurn, SimConfig, SimFleet, TABLES};

const TICK: u64 = 357_000_000;

fn all_tables() -> BTreeSet<String> {
    TABLES.iter().map(|t| t.to_string()).collect()
}

fn batch(table: &Table) -> RecordBatch {
    concat_batches(table.schema(), table.batches()).unwrap()
}

fn config(rows: RowChurn) -> SimConfig {
    SimConfig {
        clusters: 4,
        machines_per_cluster: 50,
        processes_per_machine: 20,
        rows,
        ..SimConfig::default()
    }
}

/// Share of machines whose `table` row count differs between two ticks.
fn count_changed(fleet: &SimFleet, table: &str, tick: u64) -> f64 {
    let tables: BTreeSet<String> = [table.to_string()].into();
    let changed = fleet
        .machines()
        .filter(|m| {
            let rows = |t| m.generation_at(t, &tables).unwrap().tables[table].num_rows();
            rows(tick) != rows(tick + 1)
        })
        .count();
    changed as f64 / fleet.machine_count() as f64
}

#[test]
fn process_counts_change_on_the_configured_share_of_machines() {
    let none = SimFleet::new(config(RowChurn::NONE)).unwrap();
    assert_eq!(count_changed(&none, "processes", TICK), 0.0);
    let fleet = SimFleet::new(config(RowChurn::realistic(0.2))).unwrap();
    let mut shares = Vec::new();
    for t in 0..5 {
        shares.push(count_changed(&fleet, "processes", TICK + t));
    }
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    assert!((0.15..0.25).contains(&mean), "{shares:?}");
    // Counts go both ways: rows are inserted and deleted.
    let tables: BTreeSet<String> = ["processes".to_string()].into();
    let (mut more, mut fewer) = (0, 0);
    for m in fleet.machines() {
        let rows = |t| m.generation_at(t, &tables).unwrap().tables["processes"].num_rows();
        let (a, b) = (rows(TICK), rows(TICK + 1));
        more += usize::from(b > a);
        fewer += usize::from(b < a);
        assert!((20..=28).contains(&a), "{a} rows");
    }
    assert!(more > 0 && fewer > 0, "{more} grew, {fewer} shrank");
}

#[test]
fn a_running_process_keeps_its_pid_and_a_new_one_starts_at_its_tick() {
    let fleet = SimFleet::new(config(RowChurn::realistic(0.5))).unwrap();
    let tables: BTreeSet<String> = ["processes".to_string()].into();
    let tick_ms = fleet.config().tick.as_millis() as i64;
    let mut started = 0;
    for m in fleet.machines() {
        let at = |t| batch(&m.generation_at(t, &tables).unwrap().tables["processes"]);
        let (before, after) = (at(TICK), at(TICK + 1));
        let pids = |b: &RecordBatch| -> Vec<(i64, i64)> {
            let pid = b.column_by_name("pid").unwrap().as_primitive::<Int64Type>();
            let start = b
                .column_by_name("start_time")
                .unwrap()
                .as_primitive::<TimestampMillisecondType>();
            pid.values()
                .iter()
                .copied()
                .zip(start.values().iter().copied())
                .collect()
        };
        let old: BTreeSet<(i64, i64)> = pids(&before).into_iter().collect();
        for (pid, start) in pids(&after) {
            if !old.contains(&(pid, start)) {
                // Not there a tick ago: it started during this tick.
                assert_eq!(start, (TICK as i64 + 1) * tick_ms, "pid {pid}");
                started += 1;
            }
        }
    }
    assert!(started > 0);
}

#[test]
fn row_churn_is_seeded_and_incremental_equals_fresh() {
    let rows = RowChurn {
        filesystems: 0.3,
        leave: 0.05,
        away_ticks: 3,
        ..RowChurn::realistic(0.3)
    };
    let fleet = SimFleet::new(config(rows)).unwrap();
    let fresh = SimFleet::new(config(rows)).unwrap();
    for (m, f) in fleet.machines().zip(fresh.machines()).take(40) {
        let mut last = None;
        for t in 0..6 {
            last = Some(m.generation_at(TICK + t, &all_tables()).unwrap());
        }
        let last = last.unwrap();
        let direct = f.generation_at(TICK + 5, &all_tables()).unwrap();
        for t in TABLES {
            assert_eq!(batch(&last.tables[t]), batch(&direct.tables[t]), "{t}");
        }
    }
    let mounts = count_changed(&fleet, "filesystem", TICK);
    assert!(mounts > 0.1, "{mounts}");
}

#[tokio::test]
async fn machines_leave_and_come_back_and_a_proxy_sends_exactly_its_machines_rows() {
    let rows = RowChurn {
        filesystems: 0.3,
        leave: 0.05,
        away_ticks: 3,
        ..RowChurn::realistic(0.3)
    };
    let fleet = SimFleet::new(config(rows)).unwrap();
    let proxies = fleet.proxies();
    let mut away_seen = 0;
    for (proxy, cluster) in proxies.iter().zip(fleet.clusters()) {
        for tick in [TICK, TICK + 1, TICK + 4] {
            let merged = proxy.generation_at(tick, &all_tables()).unwrap();
            // A machine away has no rows in any table.
            let present: Vec<_> = cluster
                .machines
                .iter()
                .filter(|m| {
                    !m.generation_at(tick, &all_tables()).unwrap().tables["sys"]
                        .batches()
                        .is_empty()
                })
                .collect();
            away_seen += cluster.machines.len() - present.len();
            let seen = &merged.meta.visibility.clusters[&cluster.name];
            assert_eq!(seen.machines_seen, present.len() as u64);
            for t in TABLES {
                let parts: Vec<RecordBatch> = cluster
                    .machines
                    .iter()
                    .map(|m| batch(&m.generation_at(tick, &all_tables()).unwrap().tables[t]))
                    .filter(|b| b.num_rows() > 0)
                    .collect();
                let expected =
                    concat_batches(&fleetsql_sim::table_schema(t).unwrap(), &parts).unwrap();
                assert_eq!(batch(&merged.tables[t]), expected, "{t} at {tick}");
            }
        }
    }
    assert!(away_seen > 0, "some machine should be away");
    // An agent that is away does not answer its proxy (tried again if
    // the tick moved on during the fetch).
    let request = FetchRequest {
        tables: all_tables(),
        ..FetchRequest::default()
    };
    let is_away = |m: &fleetsql_sim::SimMachine, tick| {
        m.generation_at(tick, &all_tables()).unwrap().tables["sys"].num_rows() == 0
    };
    let mut checked = false;
    for _ in 0..3 {
        let now = fleet.current_tick();
        let away = fleet
            .machines()
            .find(|m| is_away(m, now))
            .expect("a machine away now (5% leave per tick, 3 ticks away)");
        let answer = away.fetch(&request).await;
        if fleet.current_tick() == now {
            assert!(answer.is_err());
            checked = true;
            break;
        }
    }
    assert!(checked);
}
