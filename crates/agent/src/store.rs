//! The publisher store: per table, the current rows of each publisher.
//!
//! Rows get their origin columns once, when they are published, and a
//! table is built (schema union of its publishers) at most once per publish
//! version, so an unchanged table costs nothing per generation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use fleetsql_model::origin::{Origin, with_origin};
use fleetsql_model::{Table, unify_schemas, validate_column_name, validate_table_name};
use parking_lot::Mutex;

use crate::{AgentError, Result};

#[derive(Debug)]
pub(crate) struct Store {
    origin: Origin,
    limits: StoreLimits,
    inner: Mutex<Inner>,
}

/// How much the store holds, whoever publishes: each publisher keeps its
/// rows until it withdraws them, so names alone could grow it without end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreLimits {
    pub(crate) max_publishers_per_table: usize,
    pub(crate) max_tables: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_publishers_per_table: 256,
            max_tables: 4096,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    tables: BTreeMap<String, TableState>,
    next_version: u64,
}

#[derive(Debug, Default)]
struct TableState {
    publishers: BTreeMap<String, Rows>,
    /// Bumped by every publish and withdrawal.
    version: u64,
    built: Option<(u64, Built)>,
}

#[derive(Debug, Clone)]
struct Rows {
    /// Already carries the origin columns.
    batch: RecordBatch,
    published_at_ms: i64,
}

/// One table as served: the union of its publishers' rows.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub(crate) table: Arc<Table>,
    pub(crate) oldest_ms: i64,
    pub(crate) newest_ms: i64,
}

impl Store {
    #[cfg(test)]
    pub(crate) fn new(origin: Origin) -> Self {
        Self::with_limits(origin, StoreLimits::default())
    }

    pub(crate) fn with_limits(origin: Origin, limits: StoreLimits) -> Self {
        Store {
            origin,
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Replaces `publisher`'s rows of `table` with `batch`. On any error the
    /// previous rows stay as they were.
    pub(crate) fn publish(
        &self,
        table: &str,
        publisher: &str,
        batch: &RecordBatch,
        published_at_ms: i64,
    ) -> Result<usize> {
        validate_table_name(table).map_err(AgentError::from_model)?;
        self.publish_named(table, publisher, batch, published_at_ms)
    }

    /// Like [`Store::publish`] for a `fleet_` table that an in-process
    /// component owns (e.g. `fleet_sources`): the reserved prefix is what
    /// keeps outside publishers from spoofing it, so only the syntax is checked.
    pub(crate) fn publish_fleet_table(
        &self,
        table: &str,
        publisher: &str,
        batch: &RecordBatch,
        published_at_ms: i64,
    ) -> Result<usize> {
        let rest = table.strip_prefix("fleet_").unwrap_or("");
        validate_table_name(&format!("x{rest}")).map_err(AgentError::from_model)?;
        if rest.is_empty() {
            return Err(AgentError::from_model(
                fleetsql_model::ModelError::InvalidTableName {
                    name: table.chars().take(80).collect(),
                    reason: "only fleet_<name> tables are published this way".to_string(),
                },
            ));
        }
        self.publish_named(table, publisher, batch, published_at_ms)
    }

    fn publish_named(
        &self,
        table: &str,
        publisher: &str,
        batch: &RecordBatch,
        published_at_ms: i64,
    ) -> Result<usize> {
        for field in batch.schema().fields() {
            validate_column_name(field.name()).map_err(AgentError::from_model)?;
        }
        let batch = with_origin(table, batch, &self.origin, published_at_ms)
            .map_err(AgentError::from_model)?;
        let rows = batch.num_rows();
        let mut inner = self.inner.lock();
        match inner.tables.get(table) {
            None if inner.tables.len() >= self.limits.max_tables => {
                return Err(AgentError::Limit {
                    what: format!("a new table `{table}`: the number of tables on this agent"),
                    max: self.limits.max_tables,
                    setting: "max_tables",
                });
            }
            Some(state)
                if !state.publishers.contains_key(publisher)
                    && state.publishers.len() >= self.limits.max_publishers_per_table =>
            {
                return Err(AgentError::Limit {
                    what: format!(
                        "a new publisher `{publisher}` of table `{table}`: the number of its publishers"
                    ),
                    max: self.limits.max_publishers_per_table,
                    setting: "max_publishers_per_table",
                });
            }
            _ => {}
        }
        if let Some(state) = inner.tables.get(table) {
            // Checked against every row present, the publisher's own
            // included: a type change is refused until the old rows are
            // withdrawn, so a table never flips type under its readers.
            let mut schemas: Vec<_> = state
                .publishers
                .values()
                .map(|r| r.batch.schema())
                .collect();
            schemas.push(batch.schema());
            unify_schemas(table, schemas.iter()).map_err(AgentError::from_model)?;
        }
        inner.next_version += 1;
        let version = inner.next_version;
        let state = inner.tables.entry(table.to_string()).or_default();
        state.publishers.insert(
            publisher.to_string(),
            Rows {
                batch,
                published_at_ms,
            },
        );
        state.version = version;
        Ok(rows)
    }

    /// Removes `publisher`'s rows of `table`; the number of rows removed, or
    /// `None` when it had none there.
    pub(crate) fn withdraw(&self, table: &str, publisher: &str) -> Option<usize> {
        let mut inner = self.inner.lock();
        inner.next_version += 1;
        let version = inner.next_version;
        let state = inner.tables.get_mut(table)?;
        let rows = state.publishers.remove(publisher)?;
        state.version = version;
        if state.publishers.is_empty() {
            inner.tables.remove(table);
        }
        Some(rows.batch.num_rows())
    }

    /// Every table some publisher has rows (or an empty set of rows) in.
    pub(crate) fn tables(&self) -> BTreeSet<String> {
        self.inner.lock().tables.keys().cloned().collect()
    }

    /// Publishers of `table`, for diagnostics and tests.
    pub(crate) fn publishers(&self, table: &str) -> Vec<String> {
        self.inner
            .lock()
            .tables
            .get(table)
            .map(|s| s.publishers.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// `table` as served now, from the cache when nothing was published
    /// since it was last built.
    pub(crate) fn build(&self, table: &str) -> Result<Option<Built>> {
        let (version, parts) = {
            let inner = self.inner.lock();
            let Some(state) = inner.tables.get(table) else {
                return Ok(None);
            };
            if let Some((v, built)) = &state.built
                && *v == state.version
            {
                return Ok(Some(built.clone()));
            }
            let parts: Vec<Rows> = state.publishers.values().cloned().collect();
            (state.version, parts)
        };
        // Built outside the lock: concatenating large tables must not hold
        // up publishers.
        let schemas: Vec<_> = parts.iter().map(|r| r.batch.schema()).collect();
        let schema = unify_schemas(table, schemas.iter())?;
        let batches = parts.iter().map(|r| r.batch.clone()).collect();
        let built = Built {
            table: Arc::new(Table::new(table, schema, batches)?),
            oldest_ms: parts.iter().map(|r| r.published_at_ms).min().unwrap_or(0),
            newest_ms: parts.iter().map(|r| r.published_at_ms).max().unwrap_or(0),
        };
        let mut inner = self.inner.lock();
        if let Some(state) = inner.tables.get_mut(table)
            && state.version == version
        {
            state.built = Some((version, built.clone()));
        }
        Ok(Some(built))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    fn store() -> Store {
        Store::new(Origin {
            host: "h".into(),
            ip: "10.1.1.1".into(),
            cluster: "c".into(),
        })
    }

    fn ints(values: Vec<i64>) -> RecordBatch {
        RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(values)) as _)]).unwrap()
    }

    #[test]
    fn builds_are_cached_per_version() {
        let s = store();
        s.publish("t", "a", &ints(vec![1, 2]), 10).unwrap();
        let first = s.build("t").unwrap().unwrap();
        let again = s.build("t").unwrap().unwrap();
        assert!(Arc::ptr_eq(&first.table, &again.table));
        s.publish("t", "b", &ints(vec![3]), 20).unwrap();
        let third = s.build("t").unwrap().unwrap();
        assert_eq!(third.table.num_rows(), 3);
        assert_eq!((third.oldest_ms, third.newest_ms), (10, 20));
    }

    #[test]
    fn limit_publishers_per_table_and_tables_just_over_are_refused() {
        let s = Store::with_limits(
            store().origin.clone(),
            StoreLimits {
                max_publishers_per_table: 2,
                max_tables: 2,
            },
        );
        s.publish("t", "a", &ints(vec![1]), 10).unwrap();
        s.publish("t", "b", &ints(vec![1]), 10).unwrap();
        let e = s.publish("t", "c", &ints(vec![1]), 10).unwrap_err();
        assert!(
            matches!(
                e,
                AgentError::Limit {
                    setting: "max_publishers_per_table",
                    max: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("limit of 2"), "{e}");
        // Known publishers still replace their rows; a withdrawal makes room.
        s.publish("t", "a", &ints(vec![1, 2]), 11).unwrap();
        s.withdraw("t", "b").unwrap();
        s.publish("t", "c", &ints(vec![1]), 12).unwrap();
        s.publish("u", "a", &ints(vec![1]), 10).unwrap();
        let e = s.publish("v", "a", &ints(vec![1]), 10).unwrap_err();
        assert!(
            matches!(
                e,
                AgentError::Limit {
                    setting: "max_tables",
                    ..
                }
            ),
            "{e}"
        );
        s.publish("u", "b", &ints(vec![1]), 10).unwrap();
    }

    #[test]
    fn conflicts_keep_previous_rows() {
        let s = store();
        s.publish("t", "a", &ints(vec![1]), 10).unwrap();
        let strings =
            RecordBatch::try_from_iter([("x", Arc::new(StringArray::from(vec!["no"])) as _)])
                .unwrap();
        assert!(matches!(
            s.publish("t", "a", &strings, 11),
            Err(AgentError::SchemaConflict(_))
        ));
        assert_eq!(s.build("t").unwrap().unwrap().table.num_rows(), 1);
        assert_eq!(s.withdraw("t", "a"), Some(1));
        assert!(s.tables().is_empty());
        assert_eq!(s.withdraw("t", "a"), None);
    }
}
