//! SQL node behaviour over generations a test hands out one by one
//! ([`fleetsql_aggregator::WatchChild`]), in one test binary.

use std::sync::Arc;

use arrow::array::RecordBatch;
use fleetsql_model::{Generation, Table, TableVisibility, now_ms};

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
