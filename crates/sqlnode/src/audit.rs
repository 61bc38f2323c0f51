//! `fleet_audit`: the node's [`AuditLog`] as a table, built from the log
//! when a query scans it (a node table, not read from the generation).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::node_tables::NodeTable;
use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use fleetsql_auth::{AuditLog, Outcome};

pub const AUDIT_TABLE: &str = "fleet_audit";

#[derive(Debug)]
pub(crate) struct AuditTable {
    log: Arc<AuditLog>,
    schema: SchemaRef,
}

impl AuditTable {
    pub(crate) fn new(log: Arc<AuditLog>) -> AuditTable {
        let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
        AuditTable {
            log,
            schema: Arc::new(Schema::new(vec![
                Field::new(
                    "time",
                    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                    false,
                ),
                text("principal", false),
                text("role", true),
                text("front_end", false),
                text("peer", true),
                text("action", false),
                text("text", false),
                text("outcome", false),
                text("error", true),
                Field::new("duration_ms", DataType::Float64, false),
                // Rows sent, for a query's answer (NULL for other requests).
                Field::new("rows", DataType::Int64, true),
            ])),
        }
    }
}

impl NodeTable for AuditTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn batch(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let entries = self.log.entries();
        let strings = |f: &dyn Fn(&fleetsql_auth::AuditEntry) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from_iter(entries.iter().map(|e| f(e))))
        };
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(entries.iter().map(|e| {
                        e.time
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_millis() as i64)
                            .unwrap_or(0)
                    }))
                    .with_timezone("UTC"),
                ),
                strings(&|e| Some(e.principal.clone())),
                strings(&|e| e.role.map(|r| r.as_str().to_string())),
                strings(&|e| Some(e.front_end.as_str().to_string())),
                strings(&|e| e.peer.map(|p| p.to_string())),
                strings(&|e| Some(e.action.as_str().to_string())),
                strings(&|e| Some(e.text.clone())),
                strings(&|e| {
                    Some(match e.outcome {
                        Outcome::Ok => "ok".to_string(),
                        Outcome::Error(_) => "error".to_string(),
                    })
                }),
                strings(&|e| match &e.outcome {
                    Outcome::Ok => None,
                    Outcome::Error(message) => Some(message.clone()),
                }),
                Arc::new(Float64Array::from_iter_values(
                    entries.iter().map(|e| e.duration.as_secs_f64() * 1000.0),
                )),
                Arc::new(Int64Array::from_iter(
                    entries
                        .iter()
                        .map(|e| e.rows.map(|r| i64::try_from(r).unwrap_or(i64::MAX))),
                )),
            ],
        )
    }
}
