//! Query History of a node, from its topology entry (the logic is in
//! `fleetsql_history`; this finds the directory, attaches it, and links
//! the two tiers that keep it):
//!
//! - a SQL node keeps its own (`[sqlnodes.X.history]`) and fetches what
//!   it lacks from its TLAs ([`TlaSync`]: over Flight, or from the
//!   store of a TLA in the same process), so a SQL node that lost its
//!   state directory, or joined late, serves the history its TLA kept;
//! - a TLA keeps its own (`[tlas.X.history]`, written as each generation
//!   is made, [`TlaHistory`]) and serves the files to its parents
//!   ([`Served`], the `history` Flight ticket).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleetsql_flight::{
    FlightChild, FlightChildOptions, HistoryFileInfo, HistoryFiles, HistorySourceError,
    MAX_FILES_PER_TICKET, TlsContext,
};
use fleetsql_history::{History, HistoryConfig, HistoryError, HistoryStore, SystemClock};
use fleetsql_model::Generation;
use fleetsql_sqlnode::SqlNode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::plan::Linked;
use crate::topology::Topology;
use crate::{Result, TiersError};

/// Attaches `config` to `node`, its files under `config.dir` or
/// `<state_dir>/history`.
pub(crate) fn attach(
    node: &SqlNode,
    name: &str,
    config: Option<&HistoryConfig>,
    state_dir: Option<&Path>,
) -> Result<Option<History>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let dir = match (&config.dir, state_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(state)) => state.join("history"),
        (None, None) => {
            return Err(TiersError::Config {
                path: "topology".into(),
                reason: format!(
                    "[sqlnodes.{name}] keeps history but has no directory for it; set `history.dir` or `state_dir` (history then goes to <state_dir>/history)"
                ),
            });
        }
    };
    let history = History::attach(node, &dir, config.clone(), Arc::new(SystemClock))?;
    tracing::info!(node = %name, dir = %history.store().dir().display(), tables = ?config.tables, "keeping history");
    Ok(Some(history))
}

/// A TLA's store, when its entry keeps history (`history.dir` is required
/// there: a TLA has no state directory).
pub(crate) fn open_for_tla(topology: &Topology, name: &str) -> Result<Option<Arc<HistoryStore>>> {
    let Some(config) = topology.tlas.get(name).and_then(|e| e.history.clone()) else {
        return Ok(None);
    };
    let Some(dir) = config.dir.clone() else {
        return Err(TiersError::Config {
            path: "topology".into(),
            reason: format!(
                "[tlas.{name}] keeps history but has no directory for it; set `history.dir`"
            ),
        });
    };
    let store = HistoryStore::open(&dir, config)?;
    tracing::info!(node = %name, dir = %dir.display(), tables = ?store.tables(), "TLA keeping history");
    Ok(Some(store))
}

/// A store's kept files as a Flight server serves them.
#[derive(Debug)]
pub(crate) struct Served(pub(crate) Arc<HistoryStore>);

impl HistoryFiles for Served {
    fn list(&self, table: &str) -> std::result::Result<Vec<HistoryFileInfo>, HistorySourceError> {
        if !self.0.is_kept(table) {
            return Err(Box::new(HistoryError::NotKept {
                table: table.to_string(),
                kept: self.0.tables().join(", "),
            }));
        }
        Ok(self
            .0
            .files(table)
            .into_iter()
            .filter_map(|f| {
                Some(HistoryFileInfo {
                    name: f.path.file_name()?.to_string_lossy().into_owned(),
                    generation: f.generation,
                    time_ms: f.time_ms,
                    bytes: f.bytes,
                })
            })
            .collect())
    }

    fn read(
        &self,
        table: &str,
        name: &str,
    ) -> std::result::Result<Option<Vec<u8>>, HistorySourceError> {
        match self.0.read_kept(table, name) {
            Ok(bytes) => Ok(Some(bytes)),
            // Thinned since it was listed.
            Err(HistoryError::NoGeneration { .. }) => Ok(None),
            Err(HistoryError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(Box::new(e)),
        }
    }
}

/// A TLA writing each generation its aggregator makes into its store (on
/// a blocking thread, one at a time: a slow disk delays history, never
/// the tick). Dropping it stops the writer.
#[derive(Debug)]
pub(crate) struct TlaHistory {
    store: Arc<HistoryStore>,
    task: JoinHandle<()>,
}

impl TlaHistory {
    pub(crate) fn start(
        store: Arc<HistoryStore>,
        mut generations: watch::Receiver<Arc<Generation>>,
        node: &str,
    ) -> TlaHistory {
        let node = node.to_string();
        let kept = store.clone();
        let task = tokio::spawn(async move {
            loop {
                let generation = generations.borrow_and_update().clone();
                if generation.meta.id > 0 {
                    let store = store.clone();
                    let written = tokio::task::spawn_blocking(move || {
                        store.write_generation(&generation, fleetsql_model::now_ms())
                    })
                    .await;
                    if let Err(e) = written {
                        tracing::error!(node = %node, error = %e, "the TLA's history writer failed; history of this generation is not kept");
                    }
                }
                if generations.changed().await.is_err() {
                    return;
                }
            }
        });
        TlaHistory { store: kept, task }
    }

    pub(crate) fn store(&self) -> &Arc<HistoryStore> {
        &self.store
    }
}

impl Drop for TlaHistory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often a SQL node asks its TLAs for history it lacks: often enough
/// that a node restarted empty answers over the past within a few ticks,
/// seldom enough that listing a long history is no load.
pub(crate) fn sync_interval(tick: Duration) -> Duration {
    (tick * 6).clamp(Duration::from_secs(2), Duration::from_secs(60))
}

/// A SQL node fetching from its TLAs the kept history it lacks (at start
/// and every `every`), kept by its own ladder. Dropping it stops it.
#[derive(Debug)]
pub(crate) struct TlaSync {
    task: JoinHandle<()>,
}

/// Where a SQL node finds a TLA's kept files: over Flight, or in this
/// process (a combined TLA/SQL node, whose TLA keeps its own store).
enum TlaFiles {
    Remote(Box<FlightChild>),
    InProcess {
        name: String,
        store: Arc<HistoryStore>,
    },
}

impl TlaFiles {
    fn name(&self) -> &str {
        match self {
            TlaFiles::Remote(tla) => tla.endpoint(),
            TlaFiles::InProcess { name, .. } => name,
        }
    }

    async fn list(&self, table: &str) -> std::result::Result<Vec<HistoryFileInfo>, String> {
        match self {
            TlaFiles::Remote(tla) => tla.history_list(table).await.map_err(|e| e.to_string()),
            TlaFiles::InProcess { store, .. } => {
                Served(store.clone()).list(table).map_err(|e| e.to_string())
            }
        }
    }

    async fn files(
        &self,
        table: &str,
        names: Vec<String>,
    ) -> std::result::Result<Vec<(String, bytes::Bytes)>, String> {
        match self {
            TlaFiles::Remote(tla) => tla
                .history_files(table, names)
                .await
                .map_err(|e| e.to_string()),
            TlaFiles::InProcess { store, .. } => {
                let served = Served(store.clone());
                let table = table.to_string();
                // Reading files is disk work: off the async workers.
                tokio::task::spawn_blocking(move || {
                    let mut files = Vec::with_capacity(names.len());
                    for name in names {
                        if let Some(bytes) =
                            served.read(&table, &name).map_err(|e| e.to_string())?
                        {
                            files.push((name, bytes::Bytes::from(bytes)));
                        }
                    }
                    Ok(files)
                })
                .await
                .map_err(|e| format!("reading history files stopped: {e}"))?
            }
        }
    }
}

impl TlaSync {
    /// Syncs from the TLAs among `children`: remote ones over Flight, and
    /// those in this process (`in_process`, a combined node's TLA) from
    /// their stores. `None` when no TLA keeps history this node can reach.
    pub(crate) fn start(
        store: Arc<HistoryStore>,
        node: &str,
        children: &[Linked],
        in_process: &BTreeMap<String, Arc<HistoryStore>>,
        tls: Option<&Arc<TlsContext>>,
        every: Duration,
    ) -> Option<TlaSync> {
        let mut tlas: Vec<TlaFiles> = in_process
            .iter()
            .map(|(name, store)| TlaFiles::InProcess {
                name: name.clone(),
                store: store.clone(),
            })
            .collect();
        tlas.extend(children.iter().filter_map(|c| {
            // A TLA in this process is read from its store, not over a
            // Flight hop to this process's own address.
            if in_process.contains_key(&c.name) {
                return None;
            }
            let addr = c.addr?;
            let options = FlightChildOptions {
                tls: tls.cloned(),
                ..FlightChildOptions::default()
            };
            FlightChild::new(c.name.clone(), format!("http://{addr}"), options)
                .inspect_err(|e| tracing::warn!(tla = %c.name, error = %e, "cannot reach this TLA for history"))
                .ok()
                .map(|tla| TlaFiles::Remote(Box::new(tla)))
        }));
        if tlas.is_empty() {
            return None;
        }
        let node = node.to_string();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let fetched = sync_once(&store, &tlas, &node).await;
                if fetched > 0 {
                    tracing::info!(node = %node, files = fetched, "history fetched from the TLA");
                }
            }
        });
        Some(TlaSync { task })
    }
}

impl Drop for TlaSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One round: for each kept table, the first TLA that lists it gives the
/// files this node lacks and its ladder would keep (a file the ladder
/// would drop is not fetched, or it would be fetched again every round).
/// Returns the files kept.
async fn sync_once(store: &Arc<HistoryStore>, tlas: &[TlaFiles], node: &str) -> usize {
    let mut kept = 0;
    for table in store.tables() {
        for tla in tlas {
            let listed = match tla.list(&table).await {
                Ok(listed) => listed,
                Err(e) => {
                    tracing::debug!(node = %node, tla = tla.name(), %table, error = %e, "TLA lists no history");
                    continue;
                }
            };
            let wanted = wanted_files(store, &table, listed, fleetsql_model::now_ms());
            for chunk in wanted.chunks(MAX_FILES_PER_TICKET) {
                let files = match tla.files(&table, chunk.to_vec()).await {
                    Ok(files) => files,
                    Err(e) => {
                        tracing::warn!(node = %node, tla = tla.name(), %table, error = %e, "fetching history from the TLA failed; tried again next round");
                        break;
                    }
                };
                let store = store.clone();
                let table = table.clone();
                let imported = tokio::task::spawn_blocking(move || {
                    let mut kept = 0;
                    for (name, bytes) in files {
                        match store.import(&table, &name, &bytes) {
                            Ok(true) => kept += 1,
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(%table, file = %name, error = %e, "a history file from the TLA was not kept")
                            }
                        }
                    }
                    kept
                })
                .await
                .unwrap_or(0);
                kept += imported;
            }
            break;
        }
    }
    if kept > 0 {
        let store = store.clone();
        let _ = tokio::task::spawn_blocking(move || store.thin(fleetsql_model::now_ms())).await;
    }
    kept
}

/// The listed files this node lacks and would keep at `now_ms`.
fn wanted_files(
    store: &HistoryStore,
    table: &str,
    listed: Vec<HistoryFileInfo>,
    now_ms: i64,
) -> Vec<String> {
    let mut merged: Vec<(i64, u64, Option<String>)> = store
        .files(table)
        .into_iter()
        .map(|f| (f.time_ms, f.generation, None))
        .collect();
    for file in listed {
        if !store.has(table, file.time_ms, file.generation) {
            merged.push((file.time_ms, file.generation, Some(file.name)));
        }
    }
    merged.sort_by_key(|m| (m.0, m.1));
    merged.dedup_by_key(|m| (m.0, m.1));
    let times: Vec<i64> = merged.iter().map(|m| m.0).collect();
    let dropped = fleetsql_history::to_delete(&times, &store.config().keep, now_ms);
    merged
        .into_iter()
        .enumerate()
        .filter(|(i, _)| dropped.binary_search(i).is_err())
        .filter_map(|(_, m)| m.2)
        .collect()
}
