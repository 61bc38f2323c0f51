//! The agent's one child: everything published on this machine, seen as a
//! generation like any other tier's.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use fleetsql_aggregator::{AggregatorError, Child, FetchRequest};
use fleetsql_model::{ClusterVisibility, Generation, TableVisibility, now_ms};
use parking_lot::Mutex;

use crate::collectors::{Collector, HostInfo};
use crate::drop_dir::DropDir;
use crate::store::Store;

/// Local publishers (HTTP, file drop, host collectors) as a [`Child`] of the
/// agent's aggregator. Each fetch first refreshes what is requested (drop
/// directory scan, collectors of requested tables only), then answers every
/// requested table from the store: rows with origin columns, one machine
/// of one cluster in the visibility.
#[derive(Debug, Clone)]
pub struct LocalPublishers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    cluster: String,
    host: HostInfo,
    store: Arc<Store>,
    collectors: Mutex<Vec<Box<dyn Collector>>>,
    collector_tables: BTreeSet<String>,
    drop_dir: Option<Arc<DropDir>>,
    /// The tables of the last fetch: what the aggregator collects now.
    requested: Mutex<BTreeSet<String>>,
    next_id: AtomicU64,
}

impl LocalPublishers {
    pub(crate) fn new(
        name: String,
        cluster: String,
        host: HostInfo,
        store: Arc<Store>,
        collectors: Vec<Box<dyn Collector>>,
        drop_dir: Option<Arc<DropDir>>,
    ) -> Self {
        let collector_tables = collectors.iter().map(|c| c.table().to_string()).collect();
        LocalPublishers {
            inner: Arc::new(Inner {
                name,
                cluster,
                host,
                store,
                collectors: Mutex::new(collectors),
                collector_tables,
                drop_dir,
                requested: Mutex::new(BTreeSet::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Tables the agent collects as of its last generation.
    pub fn requested(&self) -> BTreeSet<String> {
        self.inner.requested.lock().clone()
    }

    /// Every table some local publisher or collector can give.
    pub fn available(&self) -> BTreeSet<String> {
        let mut all = self.inner.store.tables();
        all.extend(self.inner.collector_tables.iter().cloned());
        all
    }
}

impl Inner {
    /// The blocking half of a fetch: refresh sources, then build.
    fn generation(&self, wanted: &BTreeSet<String>) -> Generation {
        if let Some(drop_dir) = &self.drop_dir {
            drop_dir.scan();
        }
        self.run_collectors(wanted);

        let now = now_ms();
        let mut generation = Generation::empty(&self.name);
        generation.meta.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        generation.meta.made_at_ms = now;
        let mut oldest: Option<i64> = None;
        let mut newest: Option<i64> = None;
        for table in wanted {
            let entry: &mut TableVisibility = generation
                .meta
                .visibility
                .tables
                .entry(table.clone())
                .or_default();
            match self.store.build(table) {
                Ok(Some(built)) => {
                    let rows = built.table.num_rows() as u64;
                    entry.rows = rows;
                    if rows > 0 {
                        entry.machines_with_rows = 1;
                    } else {
                        entry.machines_empty = 1;
                    }
                    oldest = Some(oldest.map_or(built.oldest_ms, |o| o.min(built.oldest_ms)));
                    newest = Some(newest.map_or(built.newest_ms, |n| n.max(built.newest_ms)));
                    generation.tables.insert(table.clone(), built.table);
                }
                // Nobody here publishes it: this machine answered, with no rows.
                Ok(None) => entry.machines_empty = 1,
                Err(e) => {
                    // Publish-time checks make this unreachable in practice;
                    // if it happens the table is reported, not the tick lost.
                    tracing::error!(table, error = %e, "local table could not be built");
                    entry.machines_empty = 1;
                    entry.rejected_parts = 1;
                }
            }
        }
        generation.meta.visibility.clusters.insert(
            self.cluster.clone(),
            ClusterVisibility {
                machines_expected: 1,
                machines_seen: 1,
                oldest_data_ms: Some(oldest.unwrap_or(now)),
                newest_data_ms: Some(newest.unwrap_or(now)),
                via: self.name.clone(),
            },
        );
        let mut available = self.store.tables();
        available.extend(self.collector_tables.iter().cloned());
        generation.meta.available = available;
        generation
    }

    /// Runs the collectors whose tables are wanted; nothing else is
    /// collected, so an unrequested host table costs nothing.
    fn run_collectors(&self, wanted: &BTreeSet<String>) {
        let mut collectors = self.collectors.lock();
        for collector in collectors.iter_mut() {
            let table = collector.table();
            if !wanted.contains(table) {
                continue;
            }
            let published_at = now_ms();
            let result = collector.collect(&self.host).and_then(|batch| {
                self.store
                    .publish(table, &format!("builtin:{table}"), &batch, published_at)
            });
            if let Err(e) = result {
                tracing::warn!(table, error = %e, "host collector failed; previous rows kept");
            }
        }
    }
}

#[async_trait]
impl Child for LocalPublishers {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn fetch(&self, request: &FetchRequest) -> fleetsql_aggregator::Result<Arc<Generation>> {
        *self.inner.requested.lock() = request.tables.clone();
        let inner = self.inner.clone();
        let wanted = request.tables.clone();
        // Collectors and file reads block; keep them off the IO runtime.
        let generation = tokio::task::spawn_blocking(move || inner.generation(&wanted))
            .await
            .map_err(|e| AggregatorError::Child {
                child: self.inner.name.clone(),
                reason: format!("local collection failed: {e}"),
            })?;
        Ok(Arc::new(generation))
    }
}
