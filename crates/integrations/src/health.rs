//! Per-source health, published as the `fleet_sources` table.
//!
//! Every integration owns one [`HealthHandle`]. Successes, failures and
//! bad items are counted there; the consecutive failures also decide the
//! retry back-off, so a source that recovers waits its normal interval again.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

/// The table the health of every integration is published as.
pub const FLEET_SOURCES: &str = "fleet_sources";

/// One integration's health.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SourceHealth {
    /// Configured name.
    pub name: String,
    /// `prometheus`, `mqtt_sink`, `mqtt_source`, `esmond`...
    pub kind: String,
    /// `starting`, `ok` or `failing`.
    pub status: &'static str,
    /// Wall time (ms) of the last successful poll, connect or delivery.
    pub last_success_ms: Option<i64>,
    /// The last error or bad item, with what to do about it when known.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_ms: Option<i64>,
    /// Successful polls, connects or deliveries.
    pub successes: u64,
    /// Failed ones (each followed by a back-off).
    pub failures: u64,
    /// Failures since the last success; drives the back-off.
    pub consecutive_failures: u32,
    /// Items taken in or sent out (rows, events, notifications).
    pub items: u64,
    /// Malformed items skipped (bad metric lines, non-JSON messages...).
    pub bad_items: u64,
}

#[derive(Debug, Default)]
pub(crate) struct HealthRegistry {
    entries: Mutex<BTreeMap<String, SourceHealth>>,
    /// Wakes the `fleet_sources` publisher (keeps one permit).
    pub(crate) changed: Notify,
    /// Wakes everyone waiting for a change (tests, `wait_health`).
    pub(crate) changed_any: Notify,
}

impl HealthRegistry {
    pub(crate) fn handle(self: &Arc<Self>, name: &str, kind: &str) -> HealthHandle {
        self.entries.lock().insert(
            name.to_string(),
            SourceHealth {
                name: name.to_string(),
                kind: kind.to_string(),
                status: "starting",
                ..SourceHealth::default()
            },
        );
        self.changed.notify_one();
        self.changed_any.notify_waiters();
        HealthHandle {
            registry: self.clone(),
            name: Arc::from(name),
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<SourceHealth> {
        self.entries.lock().values().cloned().collect()
    }
}

/// Where one integration reports what happens to it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HealthHandle {
    registry: Arc<HealthRegistry>,
    name: Arc<str>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl HealthHandle {
    fn update(&self, f: impl FnOnce(&mut SourceHealth)) {
        if let Some(h) = self.registry.entries.lock().get_mut(&*self.name) {
            f(h);
        }
        self.registry.changed.notify_one();
        self.registry.changed_any.notify_waiters();
    }

    /// The integration's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A successful poll, connect or delivery that moved `items` items.
    pub fn success(&self, items: u64) {
        self.update(|h| {
            h.status = "ok";
            h.last_success_ms = Some(now_ms());
            h.successes += 1;
            h.consecutive_failures = 0;
            h.items += items;
        });
    }

    /// Items moved without a new success (e.g. messages on a live connection).
    pub fn items(&self, items: u64) {
        self.update(|h| h.items += items);
    }

    /// A failed poll or connection; the caller backs off.
    pub fn failure(&self, error: &str) {
        tracing::warn!(source = %self.name, error, "integration failed; retrying with back-off");
        self.update(|h| {
            h.status = "failing";
            h.last_error = Some(error.to_string());
            h.last_error_ms = Some(now_ms());
            h.failures += 1;
            h.consecutive_failures = h.consecutive_failures.saturating_add(1);
        });
    }

    /// `count` malformed items were skipped; `error` describes the last one.
    pub fn bad_items(&self, count: u64, error: &str) {
        if count == 0 {
            return;
        }
        tracing::debug!(source = %self.name, count, error, "integration skipped bad items");
        self.update(|h| {
            h.bad_items += count;
            h.last_error = Some(error.to_string());
            h.last_error_ms = Some(now_ms());
        });
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.registry
            .entries
            .lock()
            .get(&*self.name)
            .map_or(0, |h| h.consecutive_failures)
    }
}

/// The schema of `fleet_sources`.
pub fn fleet_sources_schema() -> Arc<Schema> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("last_success", ts.clone(), true),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("last_error_at", ts, true),
        Field::new("successes", DataType::UInt64, false),
        Field::new("failures", DataType::UInt64, false),
        Field::new("consecutive_failures", DataType::UInt64, false),
        Field::new("items", DataType::UInt64, false),
        Field::new("bad_items", DataType::UInt64, false),
    ]))
}

/// `fleet_sources` rows for `entries`.
pub fn fleet_sources_batch(entries: &[SourceHealth]) -> RecordBatch {
    let strings = |f: fn(&SourceHealth) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(entries.iter().map(f)))
    };
    let times = |f: fn(&SourceHealth) -> Option<i64>| -> ArrayRef {
        Arc::new(
            TimestampMillisecondArray::from(entries.iter().map(f).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    let counts = |f: fn(&SourceHealth) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(entries.iter().map(f)))
    };
    let columns = vec![
        strings(|h| &h.name),
        strings(|h| &h.kind),
        strings(|h| h.status),
        times(|h| h.last_success_ms),
        Arc::new(StringArray::from(
            entries
                .iter()
                .map(|h| h.last_error.as_deref())
                .collect::<Vec<_>>(),
        )) as ArrayRef,
        times(|h| h.last_error_ms),
        counts(|h| h.successes),
        counts(|h| h.failures),
        counts(|h| u64::from(h.consecutive_failures)),
        counts(|h| h.items),
        counts(|h| h.bad_items),
    ];
    // The columns match the schema by construction.
    RecordBatch::try_new(fleet_sources_schema(), columns)
        .unwrap_or_else(|_| RecordBatch::new_empty(fleet_sources_schema()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_status_follow_reports() {
        let registry = Arc::new(HealthRegistry::default());
        let h = registry.handle("node", "prometheus");
        h.failure("connection refused");
        h.failure("connection refused");
        assert_eq!(h.consecutive_failures(), 2);
        h.success(10);
        h.bad_items(2, "line 3: no value");
        let s = &registry.snapshot()[0];
        assert_eq!((s.status, s.failures, s.consecutive_failures), ("ok", 2, 0));
        assert_eq!((s.items, s.bad_items), (10, 2));
        assert_eq!(s.last_error.as_deref(), Some("line 3: no value"));
        let batch = fleet_sources_batch(&registry.snapshot());
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), fleet_sources_schema());
    }
}
