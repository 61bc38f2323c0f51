//! Alert state in SQLite: instances, iteration counts, the notification
//! outbox and the lease that lets one of several SQL nodes run the alerts.
//!
//! Every iteration commits in one transaction: its instance changes, its
//! notifications (into the outbox) and a check that this node still holds
//! the lease. So a node that lost the lease cannot write, and a
//! notification exists exactly when the state change that caused it does.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};

use crate::state::{AlertState, Instance, Status};
use crate::{AlertError, Result};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alert_state (
    alert TEXT PRIMARY KEY,
    iteration INTEGER NOT NULL,
    last_run_ms INTEGER,
    last_error TEXT,
    last_generation INTEGER,
    nodata INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS alert_instance (
    alert TEXT NOT NULL,
    key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    details_json TEXT NOT NULL,
    status TEXT NOT NULL,
    present_count INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    fired_at_ms INTEGER,
    cleared_at_ms INTEGER,
    absent_since_ms INTEGER,
    stale INTEGER NOT NULL DEFAULT 0,
    acked_at_ms INTEGER,
    acked_by TEXT,
    PRIMARY KEY (alert, key)
);
CREATE TABLE IF NOT EXISTS alert_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert TEXT NOT NULL,
    route TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    delivered_ms INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS alert_outbox_pending ON alert_outbox (delivered_ms, next_attempt_ms);
CREATE TABLE IF NOT EXISTS alert_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert TEXT NOT NULL,
    key TEXT NOT NULL,
    key_json TEXT NOT NULL,
    details_json TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    fired_at_ms INTEGER,
    cleared_at_ms INTEGER NOT NULL,
    acked_at_ms INTEGER,
    acked_by TEXT
);
CREATE INDEX IF NOT EXISTS alert_history_cleared ON alert_history (cleared_at_ms);
CREATE TABLE IF NOT EXISTS alert_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
);
";

const LEASE: &str = "alerts";

/// A notification waiting to be delivered (or delivered).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub id: i64,
    pub alert: String,
    pub route: String,
    pub payload: Value,
    pub attempts: u32,
}

/// One cleared instance, as the history keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryEntry {
    pub alert: String,
    /// The instance's key text (the `id` of the console's state).
    pub id: String,
    pub key: Value,
    pub details: Value,
    pub first_seen_ms: i64,
    pub fired_at_ms: Option<i64>,
    pub cleared_at_ms: i64,
    pub acked_at_ms: Option<i64>,
    pub acked_by: Option<String>,
}

/// The alert state database; one connection, shared by the service.
#[derive(Debug)]
pub struct Store {
    path: String,
    conn: Mutex<Connection>,
}

fn opt_json(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

impl Store {
    /// Opens (creating if needed) the database at `path`; several
    /// processes may open the same file.
    pub fn open(path: &Path) -> Result<Store> {
        let name = path.display().to_string();
        let err = |source| AlertError::Store {
            path: name.clone(),
            source,
        };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(parent);
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        // WAL: readers (the other SQL nodes) never block the writer.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Store {
            path: name,
            conn: Mutex::new(conn),
        })
    }

    fn err(&self, source: rusqlite::Error) -> AlertError {
        AlertError::Store {
            path: self.path.clone(),
            source,
        }
    }

    /// Every alert's state as last committed.
    pub fn load(&self) -> Result<BTreeMap<String, AlertState>> {
        let conn = self.conn.lock();
        let mut states: BTreeMap<String, AlertState> = BTreeMap::new();
        let mut stmt = conn
            .prepare("SELECT alert, iteration, last_run_ms, last_error, last_generation, nodata FROM alert_state")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AlertState {
                    name: r.get(0)?,
                    iteration: r.get::<_, i64>(1)? as u64,
                    last_run_ms: r.get(2)?,
                    last_error: r.get(3)?,
                    last_generation: r.get::<_, Option<i64>>(4)?.map(|g| g as u64),
                    nodata: r.get::<_, i64>(5)? != 0,
                    instances: BTreeMap::new(),
                    ..AlertState::default()
                })
            })
            .map_err(|e| self.err(e))?;
        for state in rows {
            let state = state.map_err(|e| self.err(e))?;
            states.insert(state.name.clone(), state);
        }
        let mut stmt = conn
            .prepare(
                "SELECT alert, key, key_json, details_json, status, present_count, first_seen_ms,
                        last_seen_ms, fired_at_ms, cleared_at_ms, absent_since_ms, stale,
                        acked_at_ms, acked_by
                 FROM alert_instance",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let alert: String = r.get(0)?;
                let key: String = r.get(1)?;
                let instance = Instance {
                    key: opt_json(&r.get::<_, String>(2)?),
                    details: opt_json(&r.get::<_, String>(3)?),
                    status: Status::parse(&r.get::<_, String>(4)?),
                    present_count: r.get::<_, i64>(5)? as u32,
                    first_seen_ms: r.get(6)?,
                    last_seen_ms: r.get(7)?,
                    fired_at_ms: r.get(8)?,
                    cleared_at_ms: r.get(9)?,
                    absent_since_ms: r.get(10)?,
                    stale: r.get::<_, i64>(11)? != 0,
                    acked_at_ms: r.get(12)?,
                    acked_by: r.get(13)?,
                };
                Ok((alert, key, instance))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (alert, key, instance) = row.map_err(|e| self.err(e))?;
            states
                .entry(alert.clone())
                .or_insert_with(|| AlertState::new(&alert))
                .instances
                .insert(key, instance);
        }
        Ok(states)
    }

    /// Commits one iteration of `state`: the alert row, the instances named
    /// in `changed` and `removed`, and `notifications` (route, payload) into
    /// the outbox. With `holder`, only while that node holds the lease;
    /// returns false (and writes nothing) when it does not.
    ///
    /// The caller names in `changed` the instances whose durable state
    /// changed (every iteration) and, at checkpoints, those only refreshed
    /// since the last one ([`AlertState::unsaved`]); see ARCHITECTURE.md
    /// for what a kill between checkpoints loses.
    pub fn commit(
        &self,
        holder: Option<&str>,
        now_ms: i64,
        state: &AlertState,
        changed: &[&String],
        removed: &[&String],
        notifications: &[(String, Value)],
    ) -> Result<bool> {
        let mut conn = self.conn.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.err(e))?;
        if let Some(holder) = holder {
            let holds: Option<String> = tx
                .prepare_cached(
                    "SELECT holder FROM alert_lease WHERE name = ?1 AND holder = ?2 AND expires_ms > ?3",
                )
                .and_then(|mut s| {
                    s.query_row(params![LEASE, holder, now_ms], |r| r.get(0))
                        .optional()
                })
                .map_err(|e| self.err(e))?;
            if holds.is_none() {
                return Ok(false);
            }
        }
        tx.prepare_cached(
            "INSERT INTO alert_state (alert, iteration, last_run_ms, last_error, last_generation, nodata)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (alert) DO UPDATE SET iteration = excluded.iteration,
                 last_run_ms = excluded.last_run_ms, last_error = excluded.last_error,
                 last_generation = excluded.last_generation, nodata = excluded.nodata",
        )
        .and_then(|mut s| {
            s.execute(params![
                state.name,
                state.iteration as i64,
                state.last_run_ms,
                state.last_error,
                state.last_generation.map(|g| g as i64),
                state.nodata as i64
            ])
        })
        .map_err(|e| self.err(e))?;
        {
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO alert_instance (alert, key, key_json, details_json, status,
                        present_count, first_seen_ms, last_seen_ms, fired_at_ms, cleared_at_ms,
                        absent_since_ms, stale)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (alert, key) DO UPDATE SET key_json = excluded.key_json,
                        details_json = excluded.details_json, status = excluded.status,
                        present_count = excluded.present_count,
                        first_seen_ms = excluded.first_seen_ms, last_seen_ms = excluded.last_seen_ms,
                        fired_at_ms = excluded.fired_at_ms, cleared_at_ms = excluded.cleared_at_ms,
                        absent_since_ms = excluded.absent_since_ms, stale = excluded.stale,
                        acked_at_ms = CASE WHEN excluded.first_seen_ms = alert_instance.first_seen_ms
                                           THEN alert_instance.acked_at_ms END,
                        acked_by = CASE WHEN excluded.first_seen_ms = alert_instance.first_seen_ms
                                        THEN alert_instance.acked_by END",
                )
                .map_err(|e| self.err(e))?;
            for key in changed {
                let Some(i) = state.instances.get(*key) else {
                    continue;
                };
                upsert
                    .execute(params![
                        state.name,
                        key,
                        serde_json::to_string(&i.key).unwrap_or_default(),
                        serde_json::to_string(&i.details).unwrap_or_default(),
                        i.status.as_str(),
                        i.present_count as i64,
                        i.first_seen_ms,
                        i.last_seen_ms,
                        i.fired_at_ms,
                        i.cleared_at_ms,
                        i.absent_since_ms,
                        i.stale as i64
                    ])
                    .map_err(|e| self.err(e))?;
            }
            // Each clear is appended to the history (with the ack the
            // instance row kept), in the transaction that clears it.
            let mut history = tx
                .prepare_cached(
                    "INSERT INTO alert_history (alert, key, key_json, details_json, first_seen_ms,
                        fired_at_ms, cleared_at_ms, acked_at_ms, acked_by)
                     SELECT alert, key, key_json, details_json, first_seen_ms, fired_at_ms,
                        cleared_at_ms, acked_at_ms, acked_by
                     FROM alert_instance WHERE alert = ?1 AND key = ?2",
                )
                .map_err(|e| self.err(e))?;
            for key in changed {
                if let Some(i) = state.instances.get(*key)
                    && i.status == Status::Cleared
                    && i.cleared_at_ms == Some(now_ms)
                {
                    history
                        .execute(params![state.name, key])
                        .map_err(|e| self.err(e))?;
                }
            }
            let mut delete = tx
                .prepare_cached("DELETE FROM alert_instance WHERE alert = ?1 AND key = ?2")
                .map_err(|e| self.err(e))?;
            for key in removed {
                delete
                    .execute(params![state.name, key])
                    .map_err(|e| self.err(e))?;
            }
            let mut outbox = tx
                .prepare_cached(
                    "INSERT INTO alert_outbox (alert, route, payload_json, created_ms) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| self.err(e))?;
            for (route, payload) in notifications {
                outbox
                    .execute(params![state.name, route, payload.to_string(), now_ms])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// The most recently cleared instances, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT alert, key, key_json, details_json, first_seen_ms, fired_at_ms,
                        cleared_at_ms, acked_at_ms, acked_by
                 FROM alert_history ORDER BY cleared_at_ms DESC, id DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                Ok(HistoryEntry {
                    alert: r.get(0)?,
                    id: r.get(1)?,
                    key: Value::Object(opt_json(&r.get::<_, String>(2)?)),
                    details: Value::Object(opt_json(&r.get::<_, String>(3)?)),
                    first_seen_ms: r.get(4)?,
                    fired_at_ms: r.get(5)?,
                    cleared_at_ms: r.get(6)?,
                    acked_at_ms: r.get(7)?,
                    acked_by: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// Drops history cleared before `before_ms`.
    pub fn prune_history(&self, before_ms: i64) -> Result<()> {
        let conn = self.conn.lock();
        conn.prepare_cached("DELETE FROM alert_history WHERE cleared_at_ms < ?1")
            .and_then(|mut s| s.execute(params![before_ms]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets an alert whose definition was deleted.
    pub fn forget(&self, alert: &str) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute("DELETE FROM alert_state WHERE alert = ?1", params![alert])
            .map_err(|e| self.err(e))?;
        conn.execute(
            "DELETE FROM alert_instance WHERE alert = ?1",
            params![alert],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records an operator's acknowledgement; false if no such active instance.
    pub fn ack(&self, alert: &str, key: &str, by: &str, now_ms: i64) -> Result<bool> {
        let conn = self.conn.lock();
        let n = conn
            .execute(
                "UPDATE alert_instance SET acked_at_ms = ?3, acked_by = ?4
                 WHERE alert = ?1 AND key = ?2 AND status = 'active'",
                params![alert, key, now_ms, by],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Takes or renews the lease for `ttl`; true while `holder` has it.
    pub fn acquire_lease(&self, holder: &str, now_ms: i64, ttl: Duration) -> Result<bool> {
        let conn = self.conn.lock();
        let expires = now_ms + ttl.as_millis() as i64;
        let n = conn
            .execute(
                "INSERT INTO alert_lease (name, holder, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms
                 WHERE alert_lease.holder = excluded.holder OR alert_lease.expires_ms <= ?4",
                params![LEASE, holder, expires, now_ms],
            )
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Gives the lease up (clean shutdown) so another node takes over at once.
    pub fn release_lease(&self, holder: &str) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute(
            "DELETE FROM alert_lease WHERE name = ?1 AND holder = ?2",
            params![LEASE, holder],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn lease_holder(&self, now_ms: i64) -> Result<Option<String>> {
        let conn = self.conn.lock();
        conn.query_row(
            "SELECT holder FROM alert_lease WHERE name = ?1 AND expires_ms > ?2",
            params![LEASE, now_ms],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    /// Notifications due for delivery, oldest first.
    pub fn pending(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxEntry>> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, alert, route, payload_json, attempts FROM alert_outbox
                 WHERE delivered_ms IS NULL AND next_attempt_ms <= ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![now_ms, limit as i64], |r| {
                Ok(OutboxEntry {
                    id: r.get(0)?,
                    alert: r.get(1)?,
                    route: r.get(2)?,
                    payload: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or(Value::Null),
                    attempts: r.get::<_, i64>(4)? as u32,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))
    }

    /// Whether a later batch of `alert` for `route` was queued after `id`.
    pub fn has_newer(&self, id: i64, alert: &str, route: &str) -> Result<bool> {
        let conn = self.conn.lock();
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM alert_outbox WHERE alert = ?1 AND route = ?2 AND id > ?3)",
            params![alert, route, id],
            |r| r.get(0),
        )
        .map_err(|e| self.err(e))
    }

    /// Marks a notification delivered, if `holder` (when given) still
    /// holds the lease; false otherwise.
    pub fn delivered(&self, id: i64, now_ms: i64) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute(
            "UPDATE alert_outbox SET delivered_ms = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
            params![id, now_ms],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a failed attempt; the next one waits until `retry_at_ms`.
    pub fn failed(&self, id: i64, error: &str, retry_at_ms: i64) -> Result<()> {
        let conn = self.conn.lock();
        conn.execute(
            "UPDATE alert_outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_ms = ?3 WHERE id = ?1",
            params![id, error, retry_at_ms],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// (delivered, pending, failed attempts) over the whole outbox.
    pub fn outbox_counts(&self) -> Result<(u64, u64)> {
        let conn = self.conn.lock();
        conn.query_row(
            "SELECT COUNT(delivered_ms), COUNT(*) - COUNT(delivered_ms) FROM alert_outbox",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
        .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Observation, Row, Timing};
    use serde_json::json;

    fn disk_rows(ips: &[&str]) -> Observation {
        Observation::Rows(
            ips.iter()
                .map(|ip| {
                    Row::from_values(&["ip_key".into(), "pct".into()], vec![json!(ip), json!(1)])
                })
                .collect(),
        )
    }

    #[test]
    fn state_round_trips_and_acks_survive_updates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("alerts.db")).unwrap();
        let timing = Timing {
            fire_after: 1,
            clear_after: Duration::ZERO,
        };
        let mut state = AlertState::new("disk");
        let out = state.step(timing, 10, disk_rows(&["a", "b"]));
        let changed: Vec<&String> = out.changed.iter().collect();
        assert!(
            store
                .commit(
                    None,
                    10,
                    &state,
                    &changed,
                    &[],
                    &[("console".into(), json!(1))]
                )
                .unwrap()
        );
        let key_a = state.instances.keys().next().unwrap().clone();
        assert!(store.ack("disk", &key_a, "ops", 11).unwrap());
        let key_b = state.instances.keys().nth(1).unwrap().clone();
        assert!(store.ack("disk", &key_b, "night shift", 12).unwrap());

        let out = state.step(timing, 20, disk_rows(&["a"]));
        let changed: Vec<&String> = out.changed.iter().collect();
        store.commit(None, 20, &state, &changed, &[], &[]).unwrap();

        let loaded = store.load().unwrap();
        let disk = &loaded["disk"];
        assert_eq!(disk.iteration, 2);
        assert_eq!(disk.instances[&key_a].acked_by.as_deref(), Some("ops"));
        assert_eq!(disk.active().count(), 1);
        assert_eq!(disk.instances.len(), 2);
        assert_eq!(store.pending(100, 10).unwrap().len(), 1);

        // The clear of b is in the history, with its ack.
        let history = store.history(10).unwrap();
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(history[0].key["ip_key"], json!("b"));
        assert_eq!(history[0].cleared_at_ms, 20);
        assert_eq!(history[0].fired_at_ms, Some(10));
        assert_eq!(history[0].acked_by.as_deref(), Some("night shift"));
        store.prune_history(21).unwrap();
        assert!(store.history(10).unwrap().is_empty());
    }

    #[test]
    fn lease_is_exclusive_until_it_expires_and_fences_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.db");
        let a = Store::open(&path).unwrap();
        let b = Store::open(&path).unwrap();
        let ttl = Duration::from_secs(5);
        assert!(a.acquire_lease("a", 0, ttl).unwrap());
        assert!(!b.acquire_lease("b", 1_000, ttl).unwrap());
        assert!(a.acquire_lease("a", 2_000, ttl).unwrap(), "renewal");
        assert!(!b.acquire_lease("b", 6_000, ttl).unwrap());
        assert!(
            b.acquire_lease("b", 7_001, ttl).unwrap(),
            "expired: taken over"
        );
        let state = AlertState::new("x");
        assert!(!a.commit(Some("a"), 7_002, &state, &[], &[], &[]).unwrap());
        assert!(b.commit(Some("b"), 7_002, &state, &[], &[], &[]).unwrap());
        assert_eq!(b.lease_holder(7_003).unwrap().as_deref(), Some("b"));
        b.release_lease("b").unwrap();
        assert!(a.acquire_lease("a", 7_004, ttl).unwrap());
    }
}
