//! Durable registrations: one SQLite file holding what it takes to register
//! every query again after a restart (id, statement, publish function,
//! references, the webhooks and sink names it was given, when it came).
//!
//! SQLite rather than a rewritten JSON file: a node holds up to
//! `limits.max_registrations` (16,384) queries, and rewriting all of them
//! on each registration would make loading a node's queries quadratic. Each
//! change is one row in one transaction, with `synchronous=FULL`, so an
//! answered registration survives a power cut too (registrations are rare;
//! the cost is one fsync each).
//!
//! A file this module cannot read is never written to or replaced: opening
//! fails with the file's name and what to do, and the node does not start
//! (see [`Store::open`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, params};

use crate::error::{PqaError, Result};

/// `PRAGMA application_id` of a store ("FQPQ"), telling it from other
/// SQLite files (e.g. the alerts' `alerts.db` named by mistake).
const APPLICATION_ID: i64 = 0x4651_5051;
/// `PRAGMA user_version` this code writes and reads.
const VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS persistent_query (
    id TEXT PRIMARY KEY NOT NULL,
    epl TEXT NOT NULL,
    publish TEXT NOT NULL,
    refs INTEGER NOT NULL,
    webhooks TEXT NOT NULL,
    sinks TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);";

/// Moving a bad file aside is the operator's decision: it may be the only
/// copy of the node's queries.
const FIX_UNREADABLE: &str = "nothing was changed; restore the file from a backup, or move it aside \
     to start this node with no persistent queries (clients must register theirs again)";

/// One registration as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredQuery {
    pub id: String,
    pub epl: String,
    /// The publish function's name (`all`, `max`...), parsed on restore so
    /// an unknown one is reported like a statement that does not compile.
    pub publish: String,
    pub refs: u32,
    /// Webhook URLs given at registration, in the order given.
    pub webhooks: Vec<String>,
    /// Names of requested sinks (`"sinks": [...]`).
    pub sinks: Vec<String>,
    pub created_ms: i64,
}

/// Told the outcome of every write to the store (see
/// [`crate::PqaService::observe_store`]), so a node can show a store that
/// stopped taking writes (a full disk, a read-only file) beside its other
/// stores rather than only in the answers of the requests that failed.
pub trait StoreObserver: Send + Sync {
    /// A registration or removal was written to `path`.
    fn write_ok(&self, path: &Path);
    /// A write to `path` failed; the request was answered with `error` and
    /// not applied.
    fn write_failed(&self, path: &Path, error: &PqaError);
}

/// The open store; lives inside the service's state lock, which orders
/// writes like the changes they record.
pub(crate) struct Store {
    path: PathBuf,
    conn: Connection,
    observer: Option<Arc<dyn StoreObserver>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

fn unreadable(path: &Path, problem: String) -> PqaError {
    PqaError::Store {
        path: path.to_path_buf(),
        problem,
        fix: FIX_UNREADABLE,
    }
}

impl Store {
    /// Opens the store at `path` (creating it if missing) and reads every
    /// registration, oldest first (a `create schema` before the statements
    /// that read its stream). A file that is not a store this version can
    /// read is an error and is left untouched.
    pub(crate) fn open(path: &Path) -> Result<(Store, Vec<StoredQuery>)> {
        let conn = Connection::open(path).map_err(|e| PqaError::Store {
            path: path.to_path_buf(),
            problem: format!("cannot be opened: {e}"),
            fix: "check that its directory exists and this user may write there",
        })?;
        // The first read of the header: a file that is not SQLite fails here,
        // before anything could write to it.
        let app_id: i64 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(|e| {
                unreadable(
                    path,
                    format!("is not a SQLite database or is damaged ({e})"),
                )
            })?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| unreadable(path, format!("cannot be read ({e})")))?;
        let foreign_tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name <> 'persistent_query'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| unreadable(path, format!("cannot be read ({e})")))?;
        if app_id != APPLICATION_ID && (app_id != 0 || foreign_tables > 0) {
            return Err(PqaError::Store {
                path: path.to_path_buf(),
                problem: "is a SQLite database of something else, not a persistent-query store"
                    .to_string(),
                fix: "nothing was changed; give the node its own file (default \
                      <state_dir>/persistent_queries.db) or move this one aside",
            });
        }
        if version > VERSION {
            return Err(PqaError::Store {
                path: path.to_path_buf(),
                problem: format!(
                    "was written by a newer fleetsql (store version {version}; this one reads up to {VERSION})"
                ),
                fix: "nothing was changed; run the newer fleetsql, or move the file aside to start \
                      this node with no persistent queries",
            });
        }
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| unreadable(path, format!("is damaged ({e})")))?;
        if check != "ok" {
            return Err(unreadable(path, format!("is damaged ({check})")));
        }
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            conn.execute_batch(SCHEMA)?;
            conn.pragma_update(None, "application_id", APPLICATION_ID)?;
            conn.pragma_update(None, "user_version", VERSION)?;
            Ok(())
        };
        setup().map_err(|e| PqaError::Store {
            path: path.to_path_buf(),
            problem: format!("cannot be prepared for writing: {e}"),
            fix: "check the disk and that this user may write the file and its directory",
        })?;
        let store = Store {
            path: path.to_path_buf(),
            conn,
            observer: None,
        };
        let queries = store.load()?;
        Ok((store, queries))
    }

    fn load(&self) -> Result<Vec<StoredQuery>> {
        let read = || -> rusqlite::Result<Vec<(StoredQuery, String, String)>> {
            let mut stmt = self.conn.prepare(
                "SELECT id, epl, publish, refs, webhooks, sinks, created_ms \
                 FROM persistent_query ORDER BY rowid",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    StoredQuery {
                        id: r.get(0)?,
                        epl: r.get(1)?,
                        publish: r.get(2)?,
                        refs: r.get::<_, i64>(3)?.clamp(1, u32::MAX as i64) as u32,
                        webhooks: Vec::new(),
                        sinks: Vec::new(),
                        created_ms: r.get(6)?,
                    },
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            rows.collect()
        };
        let rows = read().map_err(|e| unreadable(&self.path, format!("cannot be read ({e})")))?;
        rows.into_iter()
            .map(|(mut q, webhooks, sinks)| {
                let list = |text: &str, what: &str| {
                    serde_json::from_str::<Vec<String>>(text).map_err(|e| {
                        unreadable(
                            &self.path,
                            format!("query {} has unreadable {what} `{text}` ({e})", q.id),
                        )
                    })
                };
                let webhooks = list(&webhooks, "webhooks")?;
                let sinks = list(&sinks, "sinks")?;
                q.webhooks = webhooks;
                q.sinks = sinks;
                Ok(q)
            })
            .collect()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn set_observer(&mut self, observer: Arc<dyn StoreObserver>) {
        self.observer = Some(observer);
    }

    /// Maps a write's outcome to the crate's error and tells the observer:
    /// a write that works after failures is the store taking writes again.
    fn written(&self, outcome: rusqlite::Result<usize>) -> Result<()> {
        let result = outcome.map(|_| ()).map_err(|e| PqaError::Store {
            path: self.path.clone(),
            problem: format!("could not be written ({e}), so the request was not applied"),
            fix: "check the disk and the file's permissions, then try again",
        });
        if let Some(observer) = &self.observer {
            match &result {
                Ok(()) => observer.write_ok(&self.path),
                Err(e) => observer.write_failed(&self.path, e),
            }
        }
        result
    }

    /// Adds or replaces one registration.
    pub(crate) fn put(&self, q: &StoredQuery) -> Result<()> {
        let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        self.written(self.conn.execute(
            // An upsert keeps the rowid, so the order of restoring stays
            // the order of first registration.
            "INSERT INTO persistent_query (id, epl, publish, refs, webhooks, sinks, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT(id) DO UPDATE SET epl = excluded.epl, publish = excluded.publish, \
                 refs = excluded.refs, webhooks = excluded.webhooks, sinks = excluded.sinks",
            params![
                q.id,
                q.epl,
                q.publish,
                i64::from(q.refs),
                json(&q.webhooks),
                json(&q.sinks),
                q.created_ms
            ],
        ))
    }

    /// Forgets one registration.
    pub(crate) fn remove(&self, id: &str) -> Result<()> {
        self.written(
            self.conn
                .execute("DELETE FROM persistent_query WHERE id = ?1", [id]),
        )
    }
}

#[cfg(test)]
mod tests;
