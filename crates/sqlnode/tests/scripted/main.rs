//! SQL node behaviour over generations a test hands out one by one
//! ([`fleetsql_aggregator::WatchChild`]), in one test binary.

use std::sync::Arc;

use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::datatypes::DataType;
use fleetsql_model::{Generation, Table, TableVisibility, now_ms};
use fleetsql_sqlnode::{QueryOutput, SqlNode};

mod catalog;
mod execution;
mod hooks;
mod prepared;
mod views;

/// Generation `id` (made `id` ms after now, so each is newer) holding one
/// table `t` of `batch`, from one machine.
fn generation_of_t(id: u64, batch: RecordBatch) -> Arc<Generation> {
    let mut generation = Generation::empty("scripted");
    generation.meta.id = id;
    generation.meta.made_at_ms = now_ms() + id as i64;
    generation.meta.available.insert("t".to_string());
    generation.meta.visibility.tables.insert(
        "t".to_string(),
        TableVisibility {
            machines_with_rows: 1,
            rows: batch.num_rows() as u64,
            ..Default::default()
        },
    );
    let table = Table::new("t", batch.schema(), vec![batch]).expect("table");
    generation.tables.insert("t".to_string(), Arc::new(table));
    Arc::new(generation)
}

/// Waits until `node` answers from generation `id` (or a newer one).
async fn installed(node: &SqlNode, id: u64) {
    let mut generations = node.subscribe();
    tokio::time::timeout(
        Duration::from_secs(30),
        generations.wait_for(|g| g.meta.id >= id),
    )
    .await
    .expect("generation installed in time")
    .expect("node running");
}

/// An integer column's values, whatever its integer type.
fn int_column(output: &QueryOutput, column: usize) -> Vec<i64> {
    output
        .batches
        .iter()
        .flat_map(|b| {
            arrow::compute::cast(b.column(column), &DataType::Int64)
                .expect("an integer column")
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int64")
                .values()
                .to_vec()
        })
        .collect()
}
