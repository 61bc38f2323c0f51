//! `alerts`, `alert_instances` and `alert_errors` as tables of the SQL
//! node, built from the service's state each time a query scans them.

use std::sync::{Arc, Weak};

use arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use fleetsql_sqlnode::SqlNode;
use serde_json::Value;

use crate::service::{Inner, Snapshot};
use crate::state::Status;

#[derive(Debug, Clone, Copy)]
enum Kind {
    Alerts,
    Instances,
    Errors,
}

pub(crate) fn register(node: &SqlNode, inner: &Arc<Inner>) {
    let kinds = [Kind::Alerts, Kind::Instances, Kind::Errors];
    for (name, kind) in crate::ALERT_TABLES.into_iter().zip(kinds) {
        node.register_system_table(
            name,
            Arc::new(AlertTable {
                kind,
                schema: schema(kind),
                // Weak: the node holds the table, the service holds the node.
                inner: Arc::downgrade(inner),
            }),
        );
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn schema(kind: Kind) -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let t = |n: &str| Field::new(n, ts(), true);
    let fields = match kind {
        Kind::Alerts => vec![
            s("name"),
            s("severity"),
            s("sql"),
            Field::new("every_s", DataType::Float64, false),
            Field::new("fire_after", DataType::UInt64, false),
            Field::new("clear_after_s", DataType::Float64, false),
            s("routes"),
            s("description"),
            s("procedure"),
            s("file"),
            Field::new("iteration", DataType::UInt64, false),
            t("last_run"),
            Field::new("last_generation", DataType::UInt64, true),
            s("last_error"),
            Field::new("nodata", DataType::Boolean, false),
            Field::new("active_instances", DataType::UInt64, false),
            s("lease_holder"),
        ],
        Kind::Instances => vec![
            s("alert"),
            s("severity"),
            s("instance_key"),
            s("details"),
            s("status"),
            Field::new("stale", DataType::Boolean, false),
            Field::new("present_count", DataType::UInt64, false),
            t("first_seen"),
            t("last_seen"),
            t("fired_at"),
            t("cleared_at"),
            t("acked_at"),
            s("acked_by"),
        ],
        Kind::Errors => vec![s("file"), s("alert"), s("error"), t("since")],
    };
    Arc::new(Schema::new(fields))
}

fn strings<I: IntoIterator<Item = Option<String>>>(values: I) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn times<I: IntoIterator<Item = Option<i64>>>(values: I) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_iter(values).with_timezone("UTC"))
}

fn build(
    kind: Kind,
    snap: &Snapshot,
    schema: SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns: Vec<ArrayRef> = match kind {
        Kind::Alerts => {
            let defs: Vec<_> = snap.definitions.values().collect();
            let state = |name: &str| snap.states.get(name);
            vec![
                strings(defs.iter().map(|d| Some(d.name.clone()))),
                strings(defs.iter().map(|d| Some(d.severity.as_str().to_string()))),
                strings(defs.iter().map(|d| Some(d.sql.clone()))),
                Arc::new(arrow::array::Float64Array::from_iter_values(
                    defs.iter().map(|d| d.every.as_secs_f64()),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    defs.iter().map(|d| d.fire_after as u64),
                )),
                Arc::new(arrow::array::Float64Array::from_iter_values(
                    defs.iter().map(|d| d.clear_after.as_secs_f64()),
                )),
                strings(defs.iter().map(|d| Some(d.routes.join(",")))),
                strings(defs.iter().map(|d| Some(d.description.clone()))),
                strings(defs.iter().map(|d| Some(d.procedure.clone()))),
                strings(defs.iter().map(|d| Some(d.source.display().to_string()))),
                Arc::new(UInt64Array::from_iter_values(
                    defs.iter()
                        .map(|d| state(&d.name).map_or(0, |s| s.iteration)),
                )),
                times(
                    defs.iter()
                        .map(|d| state(&d.name).and_then(|s| s.last_run_ms)),
                ),
                Arc::new(UInt64Array::from_iter(
                    defs.iter()
                        .map(|d| state(&d.name).and_then(|s| s.last_generation)),
                )),
                strings(
                    defs.iter()
                        .map(|d| state(&d.name).and_then(|s| s.last_error.clone())),
                ),
                Arc::new(BooleanArray::from_iter(
                    defs.iter()
                        .map(|d| Some(state(&d.name).is_some_and(|s| s.nodata))),
                )),
                Arc::new(UInt64Array::from_iter_values(defs.iter().map(|d| {
                    state(&d.name).map_or(0, |s| s.active().count() as u64)
                }))),
                strings(defs.iter().map(|_| snap.leader.clone())),
            ]
        }
        Kind::Instances => {
            let rows: Vec<(&String, &crate::state::Instance)> = snap
                .states
                .iter()
                .flat_map(|(name, s)| s.instances.values().map(move |i| (name, i)))
                .filter(|(_, i)| i.status != Status::Pending)
                .collect();
            let severity = |alert: &str| {
                snap.definitions
                    .get(alert)
                    .map(|d| d.severity.as_str().to_string())
            };
            vec![
                strings(rows.iter().map(|(a, _)| Some(a.to_string()))),
                strings(rows.iter().map(|(a, _)| severity(a))),
                strings(
                    rows.iter()
                        .map(|(_, i)| Some(Value::Object(i.key.clone()).to_string())),
                ),
                strings(
                    rows.iter()
                        .map(|(_, i)| Some(Value::Object(i.details.clone()).to_string())),
                ),
                strings(
                    rows.iter()
                        .map(|(_, i)| Some(i.status.as_str().to_string())),
                ),
                Arc::new(BooleanArray::from_iter(
                    rows.iter().map(|(_, i)| Some(i.stale)),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|(_, i)| i.present_count as u64),
                )),
                times(rows.iter().map(|(_, i)| Some(i.first_seen_ms))),
                times(rows.iter().map(|(_, i)| Some(i.last_seen_ms))),
                times(rows.iter().map(|(_, i)| i.fired_at_ms)),
                times(rows.iter().map(|(_, i)| i.cleared_at_ms)),
                times(rows.iter().map(|(_, i)| i.acked_at_ms)),
                strings(rows.iter().map(|(_, i)| i.acked_by.clone())),
            ]
        }
        Kind::Errors => vec![
            strings(snap.errors.iter().map(|e| Some(e.file.clone()))),
            strings(snap.errors.iter().map(|e| e.alert.clone())),
            strings(snap.errors.iter().map(|e| Some(e.error.clone()))),
            times(snap.errors.iter().map(|e| Some(e.since_ms))),
        ],
    };
    RecordBatch::try_new(schema, columns)
}

#[derive(Debug)]
struct AlertTable {
    kind: Kind,
    schema: SchemaRef,
    inner: Weak<Inner>,
}

#[async_trait]
impl TableProvider for AlertTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = match self.inner.upgrade() {
            Some(inner) => {
                let snapshot = inner.snapshot.lock().clone();
                build(self.kind, &snapshot, self.schema.clone())
                    .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?
            }
            None => RecordBatch::new_empty(self.schema.clone()),
        };
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
