//! Whether the node's own durable stores (alert state, report runs, ...)
//! accept writes, as their owners last found: a full disk or a read-only
//! file shows in `fleet_nodes.store_error` and on `/metrics` instead of
//! only in the log, and clears by itself on the next write that works.

use std::collections::BTreeMap;
use std::sync::Arc;

use fleetsql_model::now_ms;
use parking_lot::Mutex;

/// One store as its owner last reported it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreStatus {
    /// Short name (`alerts`, `reports`).
    pub store: String,
    /// The file it writes.
    pub path: String,
    /// The error of the last write while writes fail; `None` once one works.
    pub error: Option<String>,
    /// When the current run of failures began.
    pub failing_since_ms: Option<i64>,
    /// Writes that failed since the process started.
    pub write_failures: u64,
    /// The last write that worked.
    pub last_ok_ms: Option<i64>,
}

/// What changed with a report: the caller logs transitions once, not every
/// failed retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreChange {
    /// Nothing new (still failing, or still fine).
    Same,
    /// The first failure after writes worked (or the first write at all).
    Failing,
    /// The first write that worked after failures.
    Recovered,
}

/// The node's stores, by name. Cheap: one lock per report. A clone
/// shares the same stores, for owners that outlive a borrow of the node
/// (history's writer reports from its own thread).
#[derive(Debug, Default, Clone)]
pub struct StoreHealth {
    stores: Arc<Mutex<BTreeMap<String, StoreStatus>>>,
}

impl StoreHealth {
    /// Makes `store` known (its gauges show 0 before any failure).
    pub fn register(&self, store: &str, path: &str) {
        self.stores
            .lock()
            .entry(store.to_string())
            .or_insert_with(|| StoreStatus {
                store: store.to_string(),
                path: path.to_string(),
                ..StoreStatus::default()
            });
    }

    /// A write to `store` failed with `error`.
    pub fn write_failed(&self, store: &str, path: &str, error: &str) -> StoreChange {
        let mut stores = self.stores.lock();
        let status = stores
            .entry(store.to_string())
            .or_insert_with(|| StoreStatus {
                store: store.to_string(),
                ..StoreStatus::default()
            });
        status.path = path.to_string();
        status.write_failures += 1;
        let change = if status.error.is_none() {
            status.failing_since_ms = Some(now_ms());
            StoreChange::Failing
        } else {
            StoreChange::Same
        };
        status.error = Some(error.to_string());
        change
    }

    /// A write to `store` worked.
    pub fn write_ok(&self, store: &str, path: &str) -> StoreChange {
        let mut stores = self.stores.lock();
        let status = stores
            .entry(store.to_string())
            .or_insert_with(|| StoreStatus {
                store: store.to_string(),
                ..StoreStatus::default()
            });
        status.path = path.to_string();
        status.last_ok_ms = Some(now_ms());
        status.failing_since_ms = None;
        match status.error.take() {
            Some(_) => StoreChange::Recovered,
            None => StoreChange::Same,
        }
    }

    /// Every known store, by name.
    pub fn statuses(&self) -> Vec<StoreStatus> {
        self.stores.lock().values().cloned().collect()
    }

    /// The failing stores as one line for `fleet_nodes.store_error`
    /// (`alerts: <error>; reports: <error>`), `None` when all write.
    pub fn summary(&self) -> Option<String> {
        let stores = self.stores.lock();
        let failing: Vec<String> = stores
            .values()
            .filter_map(|s| Some(format!("{}: {}", s.store, s.error.as_deref()?)))
            .collect();
        (!failing.is_empty()).then(|| failing.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_shows_until_a_write_works_and_is_counted() {
        let health = StoreHealth::default();
        health.register("alerts", "/s/alerts.db");
        health.register("reports", "/s/reports.db");
        assert_eq!(health.summary(), None);
        assert_eq!(
            health.write_failed("alerts", "/s/alerts.db", "database or disk is full"),
            StoreChange::Failing
        );
        assert_eq!(
            health.write_failed("alerts", "/s/alerts.db", "database or disk is full"),
            StoreChange::Same
        );
        assert_eq!(
            health.summary().as_deref(),
            Some("alerts: database or disk is full")
        );
        assert_eq!(
            health.write_ok("reports", "/s/reports.db"),
            StoreChange::Same
        );
        assert_eq!(
            health.write_ok("alerts", "/s/alerts.db"),
            StoreChange::Recovered
        );
        assert_eq!(health.summary(), None);
        let alerts = &health.statuses()[0];
        assert_eq!(alerts.write_failures, 2);
        assert_eq!(alerts.failing_since_ms, None);
        assert!(alerts.last_ok_ms.is_some());
    }
}
