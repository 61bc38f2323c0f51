//! Origin columns: the agent adds them to every published row so that a
//! query can always tell which machine, cluster and moment a row came from.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use crate::{ModelError, Result};

pub const HOST: &str = "_host";
pub const IP: &str = "_ip";
pub const CLUSTER: &str = "_cluster";
pub const PUBLISHED_AT: &str = "_published_at";
pub const COLUMNS: [&str; 4] = [HOST, IP, CLUSTER, PUBLISHED_AT];

/// Where rows come from: one machine in one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub host: String,
    pub ip: String,
    pub cluster: String,
}

pub fn fields() -> [Field; 4] {
    [
        Field::new(HOST, DataType::Utf8, false),
        Field::new(IP, DataType::Utf8, false),
        Field::new(CLUSTER, DataType::Utf8, false),
        Field::new(
            PUBLISHED_AT,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
    ]
}

/// Appends the origin columns to `batch`. `published_at_ms` is when the
/// publisher handed the rows over, not when they were collected, so data age
/// stays honest however long the rows wait on the agent.
pub fn with_origin(
    table: &str,
    batch: &RecordBatch,
    origin: &Origin,
    published_at_ms: i64,
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(fields_iter());
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(origin.host.as_str(), rows),
    )));
    columns.push(Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(origin.ip.as_str(), rows),
    )));
    columns.push(Arc::new(StringArray::from_iter_values(
        std::iter::repeat_n(origin.cluster.as_str(), rows),
    )));
    columns.push(Arc::new(
        TimestampMillisecondArray::from(vec![published_at_ms; rows]).with_timezone("UTC"),
    ));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| ModelError::arrow(table, e))
}

fn fields_iter() -> impl Iterator<Item = Field> {
    fields().into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    #[test]
    fn adds_four_columns() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2]))]).unwrap();
        let origin = Origin {
            host: "h1".into(),
            ip: "10.0.0.1".into(),
            cluster: "c1".into(),
        };
        let out = with_origin("t", &batch, &origin, 1000).unwrap();
        assert_eq!(out.num_columns(), 5);
        assert_eq!(out.schema().field(1).name(), HOST);
        let ips = out
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(ips.value(1), "10.0.0.1");
    }
}
