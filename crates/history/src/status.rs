//! `fleet_history`: per kept table, what is on disk and whether writing
//! works (a full disk or a failing write shows here, with the reason).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::HistoryStore;

/// The node table showing the history store.
pub const HISTORY_STATUS_TABLE: &str = "fleet_history";

#[derive(Debug)]
pub struct HistoryStatusTable {
    store: Arc<HistoryStore>,
    schema: SchemaRef,
}

impl HistoryStatusTable {
    pub fn new(store: Arc<HistoryStore>) -> HistoryStatusTable {
        let time = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        HistoryStatusTable {
            store,
            schema: Arc::new(Schema::new(vec![
                Field::new("table_name", DataType::Utf8, false),
                Field::new("generations", DataType::UInt64, false),
                Field::new("rows", DataType::UInt64, false),
                Field::new("bytes", DataType::UInt64, false),
                Field::new("oldest", time.clone(), true),
                Field::new("newest", time, true),
                Field::new("newest_generation", DataType::UInt64, true),
                Field::new("writing", DataType::Boolean, false),
                Field::new("error", DataType::Utf8, true),
                Field::new("corrupt_files", DataType::UInt64, false),
                Field::new("corrupt_error", DataType::Utf8, true),
                Field::new("last_write_ms", DataType::Float64, true),
                Field::new("dir", DataType::Utf8, false),
            ])),
        }
    }

    fn batch(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let status = self.store.status();
        let stopped = self.store.stopped();
        let (last_write_ms, ..) = self.store.write_counters();
        let n = status.len();
        let u64s = |f: fn(&crate::TableStatus) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(status.iter().map(f)))
        };
        let times = |f: fn(&crate::TableStatus) -> Option<i64>| -> ArrayRef {
            Arc::new(
                TimestampMillisecondArray::from(status.iter().map(f).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            )
        };
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    status.iter().map(|s| s.table.as_str()),
                )),
                u64s(|s| s.files),
                u64s(|s| s.rows),
                u64s(|s| s.bytes),
                times(|s| s.oldest_ms),
                times(|s| s.newest_ms),
                Arc::new(UInt64Array::from(
                    status
                        .iter()
                        .map(|s| s.newest_generation)
                        .collect::<Vec<_>>(),
                )),
                Arc::new(BooleanArray::from(vec![stopped.is_none(); n])),
                Arc::new(StringArray::from(vec![stopped.clone(); n])),
                u64s(|s| s.corrupt_files),
                Arc::new(StringArray::from(
                    status
                        .iter()
                        .map(|s| s.corrupt_error.clone())
                        .collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(vec![last_write_ms; n])),
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    self.store.dir().display().to_string(),
                    n,
                ))),
            ],
        )
    }
}

#[async_trait]
impl TableProvider for HistoryStatusTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self
            .batch()
            .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
        let exec = MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}
