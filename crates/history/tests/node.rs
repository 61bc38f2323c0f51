//! History on a real SQL node fed generation by generation: `history.sys`
//! grows one generation per install, time predicates read only the files
//! in range, time travel picks the kept generation at or before a time,
//! answers say what they read, and tables not kept get an error naming
//! the setting. Retention runs on a manual clock, never on sleeps.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, UInt64Type};
use fleetsql_aggregator::WatchChild;
use fleetsql_history::{History, HistoryConfig, ManualClock};
use fleetsql_model::{Generation, Table, TableVisibility};
use fleetsql_sqlnode::{GenerationHook, QueryOutput, SqlNode, SqlNodeConfig};

const HANG: Duration = Duration::from_secs(60);
const T0: i64 = 1_800_000_000_000;
const TICK: i64 = 5000;

/// Generation `id`, made at `T0 + id * TICK`: `sys` with three machines
/// whose `load` is `id`, except 10.0.0.3 whose disk fills from
/// generation 4 on (`full` = 1); and `processes`, which is not kept.
fn generation(id: u64) -> Arc<Generation> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ip", DataType::Utf8, false),
        Field::new("load", DataType::Int64, false),
        Field::new("full", DataType::Int64, false),
    ]));
    let full = i64::from(id >= 4);
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"])) as Arc<dyn Array>,
            Arc::new(Int64Array::from(vec![id as i64; 3])),
            Arc::new(Int64Array::from(vec![0, 0, full])),
        ],
    )
    .expect("batch");
    let mut generation = Generation::empty("scripted");
    generation.meta.id = id;
    generation.meta.made_at_ms = T0 + id as i64 * TICK;
    for name in ["sys", "processes"] {
        generation.meta.available.insert(name.to_string());
        generation.meta.visibility.tables.insert(
            name.to_string(),
            TableVisibility {
                machines_with_rows: 3,
                rows: 3,
                ..Default::default()
            },
        );
        generation.tables.insert(
            name.to_string(),
            Arc::new(Table::new(name, schema.clone(), vec![batch.clone()]).expect("table")),
        );
    }
    Arc::new(generation)
}

struct Fleet {
    node: SqlNode,
    generations: Arc<WatchChild>,
    clock: Arc<ManualClock>,
    history: Option<History>,
    dir: tempfile::TempDir,
}

fn config() -> HistoryConfig {
    toml::from_str(
        r#"
        tables = ["sys"]
        keep = [{ every = "generation", for = "30s" }, { every = "1m", for = "10m" }]
        min_free_mib = 0
        "#,
    )
    .expect("config")
}

impl Fleet {
    async fn start(dir: tempfile::TempDir) -> Fleet {
        let generations = WatchChild::new("scripted", Arc::new(Generation::empty("scripted")));
        let node = SqlNode::start(
            SqlNodeConfig::new("history-test", Duration::from_millis(200)),
            vec![generations.clone()],
        )
        .expect("node");
        let clock = Arc::new(ManualClock::new(T0));
        let history = History::attach(&node, dir.path(), config(), clock.clone()).expect("history");
        Fleet {
            node,
            generations,
            clock,
            history: Some(history),
            dir,
        }
    }

    /// Installs generation `id` at its own time and waits until history
    /// kept it (the writer runs on its hook's thread).
    async fn install(&self, id: u64) {
        self.clock.set(T0 + id as i64 * TICK);
        self.generations.publish(generation(id));
        let store = self.history.as_ref().expect("history").store().clone();
        tokio::time::timeout(HANG, async {
            let mut installed = self.node.subscribe();
            let _ = installed.wait_for(|g| g.meta.id >= id).await;
            // The hook reports each call in its counters; wait for this one.
            loop {
                let done =
                    self.node.generation_hooks().iter().any(|h| {
                        h.name == "history" && h.last_generation_id >= Some(id) && !h.busy
                    });
                if done && store.files("sys").iter().any(|f| f.generation == id) {
                    return;
                }
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("generation kept");
    }

    async fn query(&self, sql: &str) -> QueryOutput {
        self.node
            .query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

fn u64s(output: &QueryOutput, column: usize) -> Vec<u64> {
    output
        .batches
        .iter()
        .flat_map(|b| {
            let c = arrow::compute::cast(b.column(column), &DataType::UInt64).expect("cast");
            c.as_primitive::<UInt64Type>().values().to_vec()
        })
        .collect()
}

fn i64s(output: &QueryOutput, column: usize) -> Vec<i64> {
    output
        .batches
        .iter()
        .flat_map(|b| {
            let c = arrow::compute::cast(b.column(column), &DataType::Int64).expect("cast");
            c.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

fn ts(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_grows_prunes_travels_and_survives_a_restart() {
    let fleet = Fleet::start(tempfile::tempdir().expect("dir")).await;
    let hook_wants: BTreeSet<String> = fleetsql_history::HistoryWriter::new(
        fleet.history.as_ref().unwrap().store().clone(),
        fleet.clock.clone(),
    )
    .wanted_tables();
    assert_eq!(hook_wants, BTreeSet::from(["sys".to_string()]));

    for id in 1..=6 {
        fleet.install(id).await;
        let out = fleet
            .query("SELECT count(DISTINCT _generation), count(*) FROM history.sys")
            .await;
        assert_eq!(u64s(&out, 0), [id], "one generation per install");
        assert_eq!(u64s(&out, 1), [id * 3]);
    }

    // "When did this condition start": the first generation in which the
    // full disk's row appears.
    let out = fleet
        .query("SELECT min(_generation), CAST(min(_generation_time) AS BIGINT) FROM history.sys WHERE full = 1")
        .await;
    assert_eq!(u64s(&out, 0), [4]);
    let started = out.batches[0]
        .column(1)
        .as_primitive::<Int64Type>()
        .value(0);
    assert_eq!(started, T0 + 4 * TICK);

    // A time predicate reads only the files in range, and the answer says
    // which generations and times it read.
    let store = fleet.history.as_ref().unwrap().store().clone();
    let before = store.files_opened();
    let out = fleet
        .query(&format!(
            "SELECT sum(load) FROM history.sys WHERE _generation_time >= TIMESTAMP '{}' AND _generation_time < TIMESTAMP '{}'",
            ts(T0 + 2 * TICK),
            ts(T0 + 4 * TICK)
        ))
        .await;
    assert_eq!(i64s(&out, 0), [3 * 2 + 3 * 3]);
    assert_eq!(store.files_opened() - before, 2, "generations 2 and 3 only");
    let read = &out.generation.history;
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(
        (read[0].first_generation, read[0].last_generation),
        (Some(2), Some(3))
    );
    assert_eq!(
        (read[0].first_ms, read[0].last_ms),
        (Some(T0 + 2 * TICK), Some(T0 + 3 * TICK))
    );
    let summary = out.generation.summary();
    assert!(
        summary.contains("history sys: 2 generations (2..3)"),
        "{summary}"
    );

    // Time travel on the live name: the kept generation at or before.
    let out = fleet
        .query(&format!(
            "SELECT max(load) FROM sys FOR SYSTEM_TIME AS OF TIMESTAMP '{}'",
            ts(T0 + 3 * TICK + 1200)
        ))
        .await;
    assert_eq!(i64s(&out, 0), [3]);
    assert!(
        out.generation
            .summary()
            .contains("history sys: generation 3 made"),
        "{}",
        out.generation.summary()
    );
    let out = fleet
        .query("SELECT s.ip, s.load FROM sys VERSION AS OF 5 s ORDER BY s.ip")
        .await;
    assert_eq!(i64s(&out, 1), [5, 5, 5]);
    assert_eq!(out.schema.fields().len(), 2);
    // The live table and a past one in one query.
    let out = fleet
        .query("SELECT now_.load - then_.load FROM sys now_ JOIN sys VERSION AS OF 2 then_ ON now_.ip = then_.ip WHERE now_.ip = '10.0.0.1'")
        .await;
    assert_eq!(i64s(&out, 0), [6 - 2]);
    let error = fleet
        .node
        .query(&format!(
            "SELECT * FROM sys FOR SYSTEM_TIME AS OF TIMESTAMP '{}'",
            ts(T0)
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no kept generation made at or before"),
        "{error}"
    );

    // A table not kept: the error names the setting.
    for sql in [
        "SELECT * FROM history.processes",
        "SELECT * FROM processes VERSION AS OF 3",
    ] {
        let error = fleet.node.query(sql).await.unwrap_err().to_string();
        assert!(error.contains("`history.tables`"), "{sql}: {error}");
    }

    // What is kept, on the node itself.
    let out = fleet
        .query("SELECT table_name, generations, writing, corrupt_files FROM fleet_history")
        .await;
    assert_eq!(u64s(&out, 1), [6]);

    // Retention on the clock: 45 s after generation 6, generation 6 is
    // past the every-generation rung (30 s) and the minute rung keeps the
    // first of each minute.
    fleet.clock.set(T0 + 6 * TICK + 45_000);
    store.thin(T0 + 6 * TICK + 45_000);
    let kept: Vec<u64> = store.files("sys").iter().map(|f| f.generation).collect();
    assert_eq!(kept, [1], "T0 is a whole minute; all six fall in it");

    // A restart (a new node and store over the same directory) keeps it.
    let Fleet {
        node, history, dir, ..
    } = fleet;
    drop(history);
    node.shutdown().await;
    let fleet = Fleet::start(dir).await;
    let out = fleet
        .query("SELECT _generation FROM history.sys GROUP BY 1")
        .await;
    assert_eq!(u64s(&out, 0), [1]);
    assert!(fleet.dir.path().join("sys").exists());
}
