//! The node's history writer (a [`GenerationHook`]) and how a SQL node
//! wires history in ([`History::attach`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use fleetsql_model::Generation;
use fleetsql_sqlnode::{
    AsOf, GenerationHook, GenerationHookHandle, PickedGeneration, SqlNode, StoreHealth, TimeTravel,
    TimeTravelError,
};

use crate::{HistoryConfig, HistorySchema, HistoryStatusTable, HistoryStore, Result};

/// The time retention is measured against; tests use a [`ManualClock`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        fleetsql_model::now_ms()
    }
}

/// A clock that moves only when told.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock(AtomicI64::new(now_ms))
    }

    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Writes each generation the node installs (on the hook's own blocking
/// thread, so queries never wait for it) and thins by the ladder.
#[derive(Debug)]
pub struct HistoryWriter {
    store: Arc<HistoryStore>,
    clock: Arc<dyn Clock>,
    /// The node's store health, told of each write that fails or works
    /// (`fleet_nodes.store_error`, `fleetsql_store_failing{store="history"}`).
    health: Option<StoreHealth>,
}

impl HistoryWriter {
    pub fn new(store: Arc<HistoryStore>, clock: Arc<dyn Clock>) -> HistoryWriter {
        HistoryWriter {
            store,
            clock,
            health: None,
        }
    }

    /// Reports writes to `health` as the store [`STORE`].
    pub fn reporting_to(mut self, health: StoreHealth) -> HistoryWriter {
        health.register(STORE, &self.store.dir().display().to_string());
        self.health = Some(health);
        self
    }
}

/// History's name among the node's stores (`fleet_nodes.store_error`,
/// `fleetsql_store_failing{store="history"}`).
pub const STORE: &str = "history";

impl GenerationHook for HistoryWriter {
    fn name(&self) -> &str {
        "history"
    }

    fn wanted_tables(&self) -> BTreeSet<String> {
        self.store.config().tables.clone()
    }

    fn on_generation(&self, generation: &Arc<Generation>) {
        let report = self.store.write_generation(generation, self.clock.now_ms());
        let Some(health) = &self.health else {
            return;
        };
        // The store logs the transitions itself; this only makes them
        // visible where the node's other stores are.
        if !report.attempted {
            return;
        }
        let dir = self.store.dir().display().to_string();
        match &report.stopped {
            Some(reason) => {
                health.write_failed(STORE, &dir, reason);
            }
            None => {
                health.write_ok(STORE, &dir);
            }
        }
    }
}

/// Time travel on the node's live names, over the store's index.
#[derive(Debug)]
struct Travel(Arc<HistoryStore>);

impl TimeTravel for Travel {
    fn pick(
        &self,
        table: &str,
        at: AsOf,
    ) -> std::result::Result<PickedGeneration, TimeTravelError> {
        self.0
            .pick(table, at)
            .map_err(|e| Box::new(e) as TimeTravelError)
    }
}

/// History running on a SQL node: the writer hook, the `history` schema,
/// `fleet_history` and time travel. Dropping it stops the writer; the
/// schema stays registered (reading what is on disk).
#[derive(Debug)]
pub struct History {
    store: Arc<HistoryStore>,
    _hook: GenerationHookHandle,
}

impl History {
    /// Opens `dir` (or `config.dir`) and wires history into `node`.
    pub fn attach(
        node: &SqlNode,
        dir: &Path,
        config: HistoryConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<History> {
        let dir = config.dir.clone().unwrap_or_else(|| dir.to_path_buf());
        let store = HistoryStore::open(&dir, config)?;
        let ctx = node.session_context();
        if let Some(catalog) = ctx.catalog("datafusion") {
            let _ = catalog.register_schema(
                fleetsql_sqlnode::HISTORY_SCHEMA,
                Arc::new(HistorySchema::new(store.clone())),
            );
        }
        node.register_system_table(
            crate::HISTORY_STATUS_TABLE,
            Arc::new(HistoryStatusTable::new(store.clone())),
        );
        node.set_time_travel(Some(Arc::new(Travel(store.clone()))));
        let writer = HistoryWriter::new(store.clone(), clock).reporting_to(node.stores().clone());
        let hook = node.add_generation_hook(Arc::new(writer));
        Ok(History { store, _hook: hook })
    }

    pub fn store(&self) -> &Arc<HistoryStore> {
        &self.store
    }
}
