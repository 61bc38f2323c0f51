//! Where report runs are kept: SQLite, one row per run and one per result row.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ReportsError, Result};

/// A result column as the SQL node described it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

impl StoredColumn {
    /// The columns of an answer, as a run keeps them.
    pub fn of(output: &fleetsql_sqlnode::QueryOutput) -> Vec<StoredColumn> {
        output
            .schema
            .fields()
            .iter()
            .map(|f| StoredColumn {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
            })
            .collect()
    }
}

/// One run of a report: its time, the generation it read, and its rows (or
/// the error it failed with).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredRun {
    pub run_at_ms: i64,
    pub generation_id: Option<u64>,
    pub machines_seen: Option<u64>,
    pub machines_expected: Option<u64>,
    pub error: Option<String>,
    pub columns: Vec<StoredColumn>,
    pub rows: Vec<Vec<Value>>,
}

/// Report runs on disk (or in memory). Safe to share; every call is short.
#[derive(Debug)]
pub struct Store {
    connection: Mutex<Connection>,
    /// The file (`:memory:` without one), for messages and `/metrics`.
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS report_runs (
    report TEXT NOT NULL,
    run_at_ms INTEGER NOT NULL,
    generation_id INTEGER,
    machines_seen INTEGER,
    machines_expected INTEGER,
    error TEXT,
    columns TEXT NOT NULL,
    PRIMARY KEY (report, run_at_ms)
);
CREATE TABLE IF NOT EXISTS report_rows (
    report TEXT NOT NULL,
    run_at_ms INTEGER NOT NULL,
    row_index INTEGER NOT NULL,
    cells TEXT NOT NULL,
    PRIMARY KEY (report, run_at_ms, row_index)
);
";

impl Store {
    /// Opens (creating) the store at `path`; `None` keeps it in memory.
    pub fn open(path: Option<&Path>) -> Result<Store> {
        let shown = path.map_or(":memory:".to_string(), |p| p.display().to_string());
        let shown_path = shown.clone();
        let connection = match path {
            Some(p) => Connection::open(p),
            None => Connection::open_in_memory(),
        }
        .map_err(|source| ReportsError::Open {
            path: shown.clone(),
            source,
        })?;
        // WAL lets readers (the web page) go on while a run is written.
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| connection.pragma_update(None, "synchronous", "NORMAL"))
            .and_then(|_| connection.execute_batch(SCHEMA))
            .map_err(|source| ReportsError::Open {
                path: shown,
                source,
            })?;
        Ok(Store {
            connection: Mutex::new(connection),
            path: shown_path,
        })
    }

    /// The file the runs are kept in (`:memory:` without one).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Keeps one run (replacing a run of the same report at the same millisecond).
    pub fn insert(&self, report: &str, run: &StoredRun) -> Result<()> {
        let columns = serde_json::to_string(&run.columns).unwrap_or_else(|_| "[]".to_string());
        let mut connection = self.connection.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "DELETE FROM report_rows WHERE report = ?1 AND run_at_ms = ?2",
            params![report, run.run_at_ms],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO report_runs
             (report, run_at_ms, generation_id, machines_seen, machines_expected, error, columns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                report,
                run.run_at_ms,
                run.generation_id.map(|v| v as i64),
                run.machines_seen.map(|v| v as i64),
                run.machines_expected.map(|v| v as i64),
                run.error,
                columns
            ],
        )?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO report_rows (report, run_at_ms, row_index, cells) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (i, row) in run.rows.iter().enumerate() {
                let cells = serde_json::to_string(row).unwrap_or_else(|_| "[]".to_string());
                insert.execute(params![report, run.run_at_ms, i as i64, cells])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets the runs of `report` made before `before_ms`; returns how many.
    pub fn prune(&self, report: &str, before_ms: i64) -> Result<usize> {
        let mut connection = self.connection.lock();
        let tx = connection.transaction()?;
        tx.execute(
            "DELETE FROM report_rows WHERE report = ?1 AND run_at_ms < ?2",
            params![report, before_ms],
        )?;
        let runs = tx.execute(
            "DELETE FROM report_runs WHERE report = ?1 AND run_at_ms < ?2",
            params![report, before_ms],
        )?;
        tx.commit()?;
        Ok(runs)
    }

    /// Runs of `report` with `since_ms <= run_at_ms < until_ms`, oldest first.
    pub fn runs(&self, report: &str, since_ms: i64, until_ms: i64) -> Result<Vec<StoredRun>> {
        let connection = self.connection.lock();
        let mut select_runs = connection.prepare(
            "SELECT run_at_ms, generation_id, machines_seen, machines_expected, error, columns
             FROM report_runs WHERE report = ?1 AND run_at_ms >= ?2 AND run_at_ms < ?3
             ORDER BY run_at_ms",
        )?;
        let mut runs: Vec<StoredRun> = select_runs
            .query_map(params![report, since_ms, until_ms], |row| {
                let columns: String = row.get(5)?;
                Ok(StoredRun {
                    run_at_ms: row.get(0)?,
                    generation_id: row.get::<_, Option<i64>>(1)?.map(|v| v as u64),
                    machines_seen: row.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    machines_expected: row.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                    error: row.get(4)?,
                    columns: serde_json::from_str(&columns).unwrap_or_default(),
                    rows: Vec::new(),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut select_rows = connection.prepare(
            "SELECT run_at_ms, cells FROM report_rows
             WHERE report = ?1 AND run_at_ms >= ?2 AND run_at_ms < ?3
             ORDER BY run_at_ms, row_index",
        )?;
        let mut rows = select_rows.query(params![report, since_ms, until_ms])?;
        let mut at = 0usize;
        while let Some(row) = rows.next()? {
            let run_at_ms: i64 = row.get(0)?;
            let cells: String = row.get(1)?;
            while at < runs.len() && runs[at].run_at_ms < run_at_ms {
                at += 1;
            }
            if let Some(run) = runs.get_mut(at).filter(|r| r.run_at_ms == run_at_ms) {
                run.rows
                    .push(serde_json::from_str(&cells).unwrap_or_default());
            }
        }
        Ok(runs)
    }

    /// How many runs of `report` are kept, and the oldest and newest time.
    pub fn summary(&self, report: &str) -> Result<(u64, Option<i64>, Option<i64>)> {
        let connection = self.connection.lock();
        let summary = connection
            .query_row(
                "SELECT COUNT(*), MIN(run_at_ms), MAX(run_at_ms) FROM report_runs WHERE report = ?1",
                params![report],
                |row| Ok((row.get::<_, i64>(0)? as u64, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        Ok(summary.unwrap_or((0, None, None)))
    }

    /// The error of the newest run, if it failed.
    pub fn last_error(&self, report: &str) -> Result<Option<String>> {
        let connection = self.connection.lock();
        let error = connection
            .query_row(
                "SELECT error FROM report_runs WHERE report = ?1 ORDER BY run_at_ms DESC LIMIT 1",
                params![report],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()?;
        Ok(error.flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(at: i64, hits: i64) -> StoredRun {
        StoredRun {
            run_at_ms: at,
            generation_id: Some(at as u64),
            machines_seen: Some(3),
            machines_expected: Some(4),
            error: None,
            columns: vec![
                StoredColumn {
                    name: "continent".into(),
                    data_type: "Utf8".into(),
                },
                StoredColumn {
                    name: "hits".into(),
                    data_type: "Int64".into(),
                },
            ],
            rows: vec![
                vec![Value::from("Europe"), Value::from(hits)],
                vec![Value::from("Asia"), Value::from(hits * 2)],
            ],
        }
    }

    #[test]
    fn runs_come_back_in_time_order_within_the_range() {
        let store = Store::open(None).unwrap();
        for at in [3000, 1000, 2000] {
            store.insert("r", &run(at, at / 1000)).unwrap();
        }
        store.insert("other", &run(1500, 9)).unwrap();
        let runs = store.runs("r", 1000, 3000).unwrap();
        assert_eq!(
            runs.iter().map(|r| r.run_at_ms).collect::<Vec<_>>(),
            [1000, 2000]
        );
        assert_eq!(runs[1], run(2000, 2));
        assert_eq!(store.summary("r").unwrap(), (3, Some(1000), Some(3000)));
    }

    #[test]
    fn prune_forgets_old_runs_and_their_rows_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reports.sqlite");
        let store = Store::open(Some(&path)).unwrap();
        for at in [1000, 2000, 3000] {
            store.insert("r", &run(at, 1)).unwrap();
        }
        store.insert("other", &run(1000, 1)).unwrap();
        assert_eq!(store.prune("r", 2500).unwrap(), 2);
        drop(store);
        // Reopened from disk: the pruning stuck, other reports untouched.
        let store = Store::open(Some(&path)).unwrap();
        let left = store.runs("r", 0, i64::MAX).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].rows.len(), 2);
        assert_eq!(store.summary("other").unwrap().0, 1);
        let rows: i64 = store
            .connection
            .lock()
            .query_row(
                "SELECT COUNT(*) FROM report_rows WHERE report = 'r'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 2);
    }

    #[test]
    fn a_failed_run_is_kept_with_its_error() {
        let store = Store::open(None).unwrap();
        let mut failed = run(5000, 0);
        failed.rows.clear();
        failed.error = Some("no table load_info".into());
        store.insert("r", &failed).unwrap();
        assert_eq!(
            store.last_error("r").unwrap().as_deref(),
            Some("no table load_info")
        );
        store.insert("r", &run(6000, 1)).unwrap();
        assert_eq!(store.last_error("r").unwrap(), None);
    }
}
