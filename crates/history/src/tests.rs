//! The store on a real directory, driven by explicit times: writes, the
//! ladder, a restart, unreadable files, a disk that fills, a failing write.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use fleetsql_model::{Generation, Table};
use fleetsql_sqlnode::AsOf;

use crate::config::{Every, KeepRule};
use crate::range::Range;
use crate::{HistoryConfig, HistoryStore};

const MIN: i64 = 60_000;
const T0: i64 = 1_800_000_000_000;

/// Generation `id` made at `made_at_ms` with `sys` (one row per host, load
/// = id) and `other`.
pub(crate) fn generation(id: u64, made_at_ms: i64) -> Arc<Generation> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ip", DataType::Utf8, false),
        Field::new("load", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["10.0.0.1", "10.0.0.2"])) as Arc<dyn Array>,
            Arc::new(Int64Array::from(vec![id as i64, id as i64 * 10])),
        ],
    )
    .expect("batch");
    let mut generation = Generation::empty("tla");
    generation.meta.id = id;
    generation.meta.made_at_ms = made_at_ms;
    for name in ["sys", "other"] {
        generation.meta.available.insert(name.to_string());
        generation.tables.insert(
            name.to_string(),
            Arc::new(Table::new(name, schema.clone(), vec![batch.clone()]).expect("table")),
        );
    }
    Arc::new(generation)
}

fn config(min_free_mib: u64) -> HistoryConfig {
    HistoryConfig {
        tables: ["sys".to_string()].into(),
        keep: vec![
            KeepRule {
                every: Every::Generation,
                keep_for: std::time::Duration::from_secs(5 * 60),
            },
            KeepRule {
                every: Every::Interval(std::time::Duration::from_secs(60)),
                keep_for: std::time::Duration::from_secs(30 * 60),
            },
        ],
        dir: None,
        min_free_mib,
    }
}

fn parquet_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("sys"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn generations_are_kept_thinned_by_the_ladder_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path(), config(0)).unwrap();
    // A generation every 10 s for 10 minutes, each written at its time.
    for i in 0..60u64 {
        let now = T0 + i as i64 * 10_000;
        let report = store.write_generation(&generation(i + 1, now), now);
        assert_eq!(report.written, 1, "only `sys` is configured");
        assert!(report.stopped.is_none());
    }
    let now = T0 + 59 * 10_000;
    // The last 5 minutes every generation (30), the 5 before one a minute
    // (minutes 0..=4 of T0's hour, T0 being a whole minute).
    assert_eq!(T0 % MIN, 0);
    let files = store.files("sys");
    let young = files.iter().filter(|f| now - f.time_ms < 5 * MIN).count();
    let old = files.iter().filter(|f| now - f.time_ms >= 5 * MIN).count();
    assert_eq!((young, old), (30, 5), "{files:?}");
    assert_eq!(parquet_files(dir.path()), 35);
    assert_eq!(store.status()[0].rows, 70);

    // The same generation offered again (with more tables) is not written twice.
    let again = store.write_generation(&generation(60, now), now);
    assert_eq!(again.written, 0);

    // Time travel picks the newest kept generation at or before a time:
    // the one made at T0 + 2 min, the oldest of its minute. It is
    // generation 13 (`generation(i + 1, T0 + i * 10 s)`, i = 12); the test
    // expected 3, as if one generation were made a minute.
    let picked = store.pick("sys", AsOf::TimeMs(T0 + 125_000)).unwrap();
    assert_eq!((picked.generation, picked.made_at_ms), (13, T0 + 2 * MIN));
    let picked = store.pick("sys", AsOf::Generation(60)).unwrap();
    assert_eq!(picked.made_at_ms, now);
    let error = store
        .pick("sys", AsOf::TimeMs(T0 - 1))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no kept generation made at or before"),
        "{error}"
    );
    let error = store
        .pick("sys", AsOf::Generation(2))
        .unwrap_err()
        .to_string();
    assert!(error.contains("generation 2 is not kept"), "{error}");
    let error = store
        .pick("other", AsOf::Generation(2))
        .unwrap_err()
        .to_string();
    assert!(error.contains("`history.tables`"), "{error}");

    // A restart reads the same index back from the directory.
    drop(store);
    std::fs::write(dir.path().join("sys").join("123-4.parquet.tmp"), b"half").unwrap();
    let store = HistoryStore::open(dir.path(), config(0)).unwrap();
    assert_eq!(store.files("sys").len(), 35);
    assert!(!dir.path().join("sys").join("123-4.parquet.tmp").exists());
    let schema = store.schema("sys").unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["ip", "load", "_generation", "_generation_time"]);

    // Half an hour later everything is past the ladder.
    assert_eq!(store.thin(now + 31 * MIN), 35);
    assert_eq!(parquet_files(dir.path()), 0);
}

#[test]
fn a_time_range_selects_only_the_files_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path(), config(0)).unwrap();
    for i in 0..20u64 {
        let now = T0 + i as i64 * 10_000;
        store.write_generation(&generation(i + 1, now), now);
    }
    let range = Range {
        time_min_ns: Some(i128::from(T0 + 50_000) * 1_000_000),
        time_max_ns: Some(i128::from(T0 + 80_000) * 1_000_000),
        ..Range::default()
    };
    let before = store.files_opened();
    let (files, skipped) = store.select("sys", &range);
    assert_eq!(files.len(), 4);
    assert_eq!(skipped, 0);
    assert_eq!(store.files_opened() - before, 4);
}

#[test]
fn an_unreadable_file_is_left_out_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path(), config(0)).unwrap();
    for i in 0..3u64 {
        let now = T0 + i as i64 * 10_000;
        store.write_generation(&generation(i + 1, now), now);
    }
    // One file damaged while the node runs, one planted before a restart.
    let victim = store.files("sys")[1].path.clone();
    std::fs::write(&victim, b"PAR1 not really").unwrap();
    let (files, skipped) = store.select("sys", &Range::default());
    assert_eq!(files.len(), 2);
    assert_eq!(skipped, 1);
    let status = &store.status()[0];
    assert_eq!(status.corrupt_files, 1);
    assert!(
        status
            .corrupt_error
            .as_deref()
            .unwrap_or("")
            .contains(&victim.display().to_string())
    );
    drop(store);
    std::fs::write(
        dir.path()
            .join("sys")
            .join(format!("{}-99.parquet", T0 + 5)),
        b"junk",
    )
    .unwrap();
    let store = HistoryStore::open(dir.path(), config(0)).unwrap();
    assert_eq!(store.files("sys").len(), 2);
    assert_eq!(store.status()[0].corrupt_files, 2);
    // Kept on disk for whoever looks into it.
    assert!(victim.exists());
}

#[test]
fn a_full_disk_stops_writing_and_it_resumes_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    // No disk has an exabyte free.
    let store = HistoryStore::open(dir.path(), config(u64::MAX >> 21)).unwrap();
    let report = store.write_generation(&generation(1, T0), T0);
    assert_eq!(report.written, 0);
    let reason = report.stopped.expect("stopped");
    assert!(reason.contains("history.min_free_mib"), "{reason}");
    assert_eq!(store.stopped(), Some(reason));
    assert_eq!(parquet_files(dir.path()), 0);

    // The same store with room again (a restart with a lower setting) writes.
    drop(store);
    let store = HistoryStore::open(dir.path(), config(0)).unwrap();
    assert_eq!(store.write_generation(&generation(2, T0), T0).written, 1);
}

#[test]
fn a_failing_write_stops_writing_until_a_retry_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = HistoryStore::open(dir.path(), config(0)).unwrap();
    // The table's directory is a file: every write fails.
    std::fs::write(dir.path().join("sys"), b"in the way").unwrap();
    let report = store.write_generation(&generation(1, T0), T0);
    assert!(report.stopped.is_some(), "{report:?}");
    let (.., failures) = store.write_counters();
    assert_eq!(failures, 1);
    std::fs::remove_file(dir.path().join("sys")).unwrap();
    // Within the minute it does not try again...
    let report = store.write_generation(&generation(2, T0 + 10_000), T0 + 10_000);
    assert_eq!(report.written, 0);
    assert!(report.stopped.is_some());
    // ...after it, it does, and clears the stop.
    let report = store.write_generation(&generation(3, T0 + 61_000), T0 + 61_000);
    assert_eq!(report.written, 1);
    assert!(store.stopped().is_none());
}

/// A history file as another node would send it, damaged at random bytes
/// and cut short: import refuses it with a reason, or keeps it and a query
/// over it answers or errs. Never a panic.
mod imported_files {
    use std::sync::OnceLock;

    use datafusion::prelude::SessionContext;
    use proptest::prelude::*;

    use super::*;
    use crate::HistorySchema;

    /// The bytes of one kept `sys` file, with rows enough for several pages.
    fn sound_file() -> &'static [u8] {
        static FILE: OnceLock<Vec<u8>> = OnceLock::new();
        FILE.get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = HistoryStore::open(dir.path(), config(0)).expect("store");
            store.write_generation(&generation(1, T0), T0);
            std::fs::read(&store.files("sys")[0].path).expect("kept file")
        })
    }

    fn query_all(store: Arc<HistoryStore>) -> std::result::Result<usize, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let ctx = SessionContext::new();
            ctx.catalog("datafusion")
                .expect("default catalog")
                .register_schema("history", Arc::new(HistorySchema::new(store)))
                .map_err(|e| e.to_string())?;
            let batches = ctx
                .sql("SELECT * FROM history.sys")
                .await
                .map_err(|e| e.to_string())?
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok(batches.iter().map(|b| b.num_rows()).sum())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn a_damaged_imported_file_is_refused_or_read_never_a_panic(
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..6),
            cut in prop::option::weighted(0.2, any::<prop::sample::Index>()),
        ) {
            let mut bytes = sound_file().to_vec();
            for (at, mask) in &flips {
                let at = at.index(bytes.len());
                bytes[at] ^= mask;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let store = HistoryStore::open(dir.path(), config(0)).expect("store");
            let name = format!("{T0}-1.parquet");
            match store.import("sys", &name, &bytes) {
                Err(e) => {
                    let reason = e.to_string();
                    prop_assert!(reason.contains("does not read as a history file"), "{reason}");
                    prop_assert!(store.files("sys").is_empty());
                    prop_assert_eq!(parquet_files(dir.path()), 0, "a refused file is not left behind");
                }
                Ok(kept) => {
                    prop_assert!(kept);
                    // A file that decodes whole answers whole.
                    let rows = query_all(store.clone());
                    prop_assert!(rows.is_ok(), "{rows:?}");
                }
            }
        }
    }

    #[test]
    fn the_sound_file_is_kept_and_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = HistoryStore::open(dir.path(), config(0)).expect("store");
        assert!(
            store
                .import("sys", &format!("{T0}-1.parquet"), sound_file())
                .expect("import")
        );
        assert_eq!(query_all(store), Ok(2));
    }
}
