//! System tables describing the generation a query is pinned to, so their
//! numbers always agree with the rows the same query reads.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt64Array,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use fleetsql_model::{Generation, now_ms};

pub const SYSTEM_TABLES: [&str; 3] = ["fleet_generation", "fleet_clusters", "fleet_tables"];

pub(crate) fn build(name: &str, generation: &Generation) -> DfResult<Option<RecordBatch>> {
    let batch = match name {
        "fleet_generation" => fleet_generation(generation),
        "fleet_clusters" => fleet_clusters(generation),
        "fleet_tables" => fleet_tables(generation),
        _ => return Ok(None),
    };
    batch
        .map(Some)
        .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))
}

fn timestamps(values: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(values).with_timezone("UTC"))
}

fn strings<'a>(values: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn u64s(values: impl IntoIterator<Item = u64>) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(values))
}

fn fleet_generation(g: &Generation) -> Result<RecordBatch, arrow::error::ArrowError> {
    let v = &g.meta.visibility;
    let now = now_ms();
    let rows: u64 = g.tables.values().map(|t| t.num_rows() as u64).sum();
    RecordBatch::try_from_iter([
        ("id", u64s([g.meta.id])),
        ("producer", strings([g.meta.producer.as_str()])),
        ("made_at", timestamps(vec![Some(g.meta.made_at_ms)])),
        (
            "age_ms",
            Arc::new(Int64Array::from(vec![now - g.meta.made_at_ms])) as ArrayRef,
        ),
        ("oldest_data_at", timestamps(vec![v.oldest_data_ms()])),
        ("clusters_seen", u64s([v.clusters_seen()])),
        ("clusters_expected", u64s([v.clusters_expected()])),
        ("machines_seen", u64s([v.machines_seen()])),
        ("machines_expected", u64s([v.machines_expected()])),
        ("tables_collected", u64s([g.tables.len() as u64])),
        ("rows", u64s([rows])),
        ("bytes", u64s([g.memory_size() as u64])),
        (
            "span",
            Arc::new(StringArray::from(vec![g.meta.span.as_deref()])) as ArrayRef,
        ),
    ])
}

fn fleet_clusters(g: &Generation) -> Result<RecordBatch, arrow::error::ArrowError> {
    let clusters = &g.meta.visibility.clusters;
    let now = now_ms();
    RecordBatch::try_from_iter([
        ("cluster", strings(clusters.keys().map(String::as_str))),
        (
            "machines_seen",
            u64s(clusters.values().map(|c| c.machines_seen)),
        ),
        (
            "machines_expected",
            u64s(clusters.values().map(|c| c.machines_expected)),
        ),
        (
            "complete",
            Arc::new(BooleanArray::from_iter(clusters.values().map(|c| {
                Some(c.machines_seen == c.machines_expected && c.machines_seen > 0)
            }))) as ArrayRef,
        ),
        (
            "oldest_data_at",
            timestamps(clusters.values().map(|c| c.oldest_data_ms).collect()),
        ),
        (
            "newest_data_at",
            timestamps(clusters.values().map(|c| c.newest_data_ms).collect()),
        ),
        (
            "data_age_ms",
            Arc::new(Int64Array::from_iter(
                clusters.values().map(|c| c.oldest_data_ms.map(|t| now - t)),
            )) as ArrayRef,
        ),
        ("via", strings(clusters.values().map(|c| c.via.as_str()))),
    ])
}

fn fleet_tables(g: &Generation) -> Result<RecordBatch, arrow::error::ArrowError> {
    let v = &g.meta.visibility;
    let machines_expected = v.machines_expected();
    let mut names: Vec<&String> = g.meta.available.iter().collect();
    for name in v.tables.keys().chain(g.tables.keys()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.sort();
    let stats: Vec<_> = names
        .iter()
        .map(|n| v.tables.get(*n).cloned().unwrap_or_default())
        .collect();
    let table = |n: &String| g.tables.get(n);
    RecordBatch::try_from_iter([
        ("table_name", strings(names.iter().map(|n| n.as_str()))),
        (
            "collected",
            Arc::new(BooleanArray::from_iter(
                names.iter().map(|n| Some(table(n).is_some())),
            )) as ArrayRef,
        ),
        (
            "rows",
            u64s(
                names
                    .iter()
                    .map(|n| table(n).map_or(0, |t| t.num_rows() as u64)),
            ),
        ),
        (
            "machines_with_rows",
            u64s(stats.iter().map(|s| s.machines_with_rows)),
        ),
        (
            "machines_empty",
            u64s(stats.iter().map(|s| s.machines_empty)),
        ),
        (
            "machines_not_answering",
            u64s(names.iter().zip(&stats).map(|(n, s)| {
                if table(n).is_none() && !v.tables.contains_key(*n) {
                    // Not collected: nobody was asked, so nobody failed to answer.
                    0
                } else {
                    machines_expected.saturating_sub(s.machines_with_rows + s.machines_empty)
                }
            })),
        ),
        (
            "rejected_parts",
            u64s(stats.iter().map(|s| s.rejected_parts)),
        ),
        (
            "columns",
            u64s(
                names
                    .iter()
                    .map(|n| table(n).map_or(0, |t| t.schema().fields().len() as u64)),
            ),
        ),
        (
            "bytes",
            u64s(
                names
                    .iter()
                    .map(|n| table(n).map_or(0, |t| t.memory_size() as u64)),
            ),
        ),
    ])
}
