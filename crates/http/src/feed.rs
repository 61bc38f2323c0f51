use std::collections::BTreeSet;
use std::sync::Arc;

use fleetsql_pqa::PqaService;
use fleetsql_sqlnode::SqlNode;
use tokio::task::JoinHandle;

/// Feeds each new generation to the persistent-query engine: the rows of
/// every table some registered statement reads become events of the stream
/// named after the table. Tables nobody's statement reads are neither
/// requested nor converted.
pub fn feed_persistent_queries(node: Arc<SqlNode>, pqa: PqaService) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut generations = node.subscribe();
        let mut last_fed = 0u64;
        loop {
            let streams: BTreeSet<String> = pqa.listened_streams().into_iter().collect();
            if !streams.is_empty() {
                node.request_tables(&streams);
            }
            if generations.changed().await.is_err() {
                return;
            }
            let generation = generations.borrow_and_update().clone();
            if generation.meta.id == last_fed {
                continue;
            }
            last_fed = generation.meta.id;
            for stream in &streams {
                let Some(table) = generation.table(stream) else {
                    continue;
                };
                let events = match table_as_json(table.batches()) {
                    Ok(events) => events,
                    Err(e) => {
                        tracing::warn!(table = %stream, error = %e, "rows could not be turned into events");
                        continue;
                    }
                };
                let result = pqa.push_events(stream, events.iter());
                tracing::debug!(table = %stream, ?result, "generation fed to persistent queries");
            }
        }
    })
}

fn table_as_json(
    batches: &[arrow::array::RecordBatch],
) -> Result<Vec<serde_json::Value>, arrow::error::ArrowError> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| arrow::error::ArrowError::JsonError(e.to_string()))
}
