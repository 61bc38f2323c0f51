//! Self-monitoring (seed section 7): every tier publishes its own state as
//! rows of `fleet_nodes` through the same path as machine data, so "which
//! proxy is behind?" is one SQL query.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use fleetsql_model::{Table, Visibility};

/// The table every node adds its own row to.
pub const FLEET_NODES: &str = "fleet_nodes";

/// One node's state at the moment it made a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    /// `agent`, `proxy`, `tla` or `sqlnode`.
    pub role: String,
    pub name: String,
    pub host: String,
    pub generation_id: u64,
    pub made_at_ms: i64,
    /// Age of the oldest machine data in the generation when it was made.
    pub lag_ms: Option<i64>,
    pub children_seen: u64,
    pub children_expected: u64,
    pub clusters_seen: u64,
    pub machines_seen: u64,
    pub machines_expected: u64,
    /// Resident memory of the process (shared by every tier the process runs).
    pub memory_bytes: Option<u64>,
    pub uptime_s: f64,
    /// What a re-read configuration changed that this node cannot apply
    /// while running (its own listen address): applied only at a restart.
    pub pending_restart: Option<String>,
    /// A SQL node's stores that fail to write (alert state, report runs:
    /// a full disk, say), with the error; `None` when all write.
    pub store_error: Option<String>,
}

impl NodeState {
    /// A node's row before coverage is filled in: memory read now.
    pub fn new(
        role: &str,
        name: &str,
        host: &str,
        generation_id: u64,
        made_at_ms: i64,
        uptime_s: f64,
    ) -> Self {
        NodeState {
            role: role.to_string(),
            name: name.to_string(),
            host: host.to_string(),
            generation_id,
            made_at_ms,
            lag_ms: None,
            children_seen: 0,
            children_expected: 0,
            clusters_seen: 0,
            machines_seen: 0,
            machines_expected: 0,
            memory_bytes: process_rss_bytes(),
            uptime_s,
            pending_restart: None,
            store_error: None,
        }
    }

    /// Fills the coverage columns from a generation's visibility.
    pub fn with_visibility(mut self, visibility: &Visibility, now_ms: i64) -> Self {
        self.lag_ms = visibility.oldest_data_ms().map(|t| now_ms - t);
        self.children_expected = visibility.children.len() as u64;
        self.children_seen = visibility.children.iter().filter(|c| c.merged).count() as u64;
        self.clusters_seen = visibility.clusters_seen();
        self.machines_seen = visibility.machines_seen();
        self.machines_expected = visibility.machines_expected();
        self
    }
}

pub fn fleet_nodes_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("host", DataType::Utf8, false),
        Field::new("generation_id", DataType::UInt64, false),
        Field::new(
            "made_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("lag_ms", DataType::Int64, true),
        Field::new("children_seen", DataType::UInt64, false),
        Field::new("children_expected", DataType::UInt64, false),
        Field::new("clusters_seen", DataType::UInt64, false),
        Field::new("machines_seen", DataType::UInt64, false),
        Field::new("machines_expected", DataType::UInt64, false),
        Field::new("memory_bytes", DataType::UInt64, true),
        Field::new("uptime_s", DataType::Float64, false),
        Field::new("pending_restart", DataType::Utf8, true),
        Field::new("store_error", DataType::Utf8, true),
    ]))
}

/// `fleet_nodes` holding exactly `rows`.
pub fn fleet_nodes_table(rows: &[NodeState]) -> Table {
    let schema = fleet_nodes_schema();
    let text = |f: fn(&NodeState) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let count = |f: fn(&NodeState) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        text(|r| &r.role),
        text(|r| &r.name),
        text(|r| &r.host),
        count(|r| r.generation_id),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.made_at_ms))
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.lag_ms))),
        count(|r| r.children_seen),
        count(|r| r.children_expected),
        count(|r| r.clusters_seen),
        count(|r| r.machines_seen),
        count(|r| r.machines_expected),
        Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.memory_bytes))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.uptime_s),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.pending_restart.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.store_error.as_deref()),
        )),
    ];
    // The columns are built from the schema above, one per field, with equal
    // lengths; the batch cannot fail to assemble.
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .unwrap_or_else(|_| RecordBatch::new_empty(schema.clone()));
    Table::new(FLEET_NODES, schema.clone(), vec![batch]).unwrap_or_else(|_| Table::empty(schema))
}

/// Resident set size of this process, from `/proc/self/status` (Linux).
pub fn process_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This machine's host name, for the `host` column.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_into_a_table() {
        let row = NodeState {
            role: "proxy".into(),
            name: "p1".into(),
            host: host_name(),
            generation_id: 7,
            made_at_ms: 1_700_000_000_000,
            lag_ms: Some(1200),
            children_seen: 2,
            children_expected: 3,
            clusters_seen: 1,
            machines_seen: 2,
            machines_expected: 3,
            memory_bytes: process_rss_bytes(),
            uptime_s: 1.5,
            pending_restart: Some("flight address".into()),
            store_error: None,
        };
        let table = fleet_nodes_table(&[row.clone(), row]);
        assert_eq!(table.num_rows(), 2);
        assert_eq!(table.schema(), &fleet_nodes_schema());
        assert!(process_rss_bytes().is_some_and(|b| b > 0));
    }
}
