//! Per-generation hooks: components that want each generation the node
//! installs (the persistent-query feed, the console's table browser, views
//! and history) register a [`GenerationHook`] instead of each running its
//! own loop over [`SqlNode::subscribe`](crate::SqlNode::subscribe).
//!
//! Every hook has a task of its own, and its calls run on the blocking
//! pool: a hook that is slow, or that blocks, delays neither installs nor
//! queries, which share the runtime's few worker threads. A hook that lags
//! skips to the newest generation (the skipped ones are counted); a hook
//! that panics is logged by name, counted, and offered the next generation
//! as usual. Counts are in [`GenerationHookStats`] and the
//! `fleet_generation_hooks` table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::node_tables::NodeTable;
use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use fleetsql_model::Generation;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The node table that shows every registered hook's counts.
pub const GENERATION_HOOKS_TABLE: &str = "fleet_generation_hooks";

/// A consumer of the generations a SQL node installs.
///
/// Calls come from a task of the hook's own, one at a time, on a blocking
/// thread, so a hook may do CPU work or take locks without holding up the
/// node.
pub trait GenerationHook: Send + Sync + Debug {
    /// Names the hook in logs and in `fleet_generation_hooks`.
    fn name(&self) -> &str;

    /// Fleet tables the node should collect for this hook. Read when the
    /// hook is registered and again after each generation, so a hook whose
    /// needs change (a new persistent query) has them requested before the
    /// next generation; tables it stops naming expire like tables no query
    /// names any more.
    fn wanted_tables(&self) -> BTreeSet<String> {
        BTreeSet::new()
    }

    /// Called once for each generation the node installs, in the order the
    /// node installs them (a source's generation ids ascend; a switch to
    /// another source may start another sequence). The generation that is
    /// current when the hook is registered is offered first. A generation
    /// whose id was offered before may come again when it came back with
    /// more tables (tables requested after it was made).
    fn on_generation(&self, generation: &Arc<Generation>);
}

/// What a hook has been offered, for self-monitoring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GenerationHookStats {
    pub name: String,
    /// Generations handed to `on_generation`.
    pub offered: u64,
    /// Generations installed while the hook was still busy with an earlier
    /// one and replaced before it was free: never offered to it.
    pub skipped: u64,
    /// Calls (`on_generation` or `wanted_tables`) that panicked.
    pub panics: u64,
    /// The id of the last generation offered.
    pub last_generation_id: Option<u64>,
    /// True while a call is running.
    pub busy: bool,
}

/// One install as hooks see it: `seq` counts installs, so a hook can tell
/// how many it missed even when generation ids repeat or restart.
#[derive(Debug, Clone)]
struct Offer {
    seq: u64,
    generation: Arc<Generation>,
}

#[derive(Debug, Default)]
struct Counters {
    offered: AtomicU64,
    skipped: AtomicU64,
    panics: AtomicU64,
    /// `last_generation_id + 1`; 0 before the first offer.
    last_generation: AtomicU64,
    busy: AtomicBool,
}

#[derive(Debug)]
struct Registered {
    hook: Arc<dyn GenerationHook>,
    counters: Arc<Counters>,
    stop: Arc<Notify>,
    task: JoinHandle<()>,
}

/// Asks the node to collect tables on a hook's behalf.
pub(crate) type Requester = Arc<dyn Fn(&BTreeSet<String>) + Send + Sync>;

/// Every hook of one node, and the installs offered to them.
#[derive(Debug)]
pub(crate) struct Hooks {
    offers: watch::Sender<Offer>,
    registered: Mutex<BTreeMap<u64, Registered>>,
    /// Tasks of hooks whose handle was dropped: they finish their current
    /// call and end; shutdown awaits them.
    stopping: Mutex<Vec<JoinHandle<()>>>,
    next_id: AtomicU64,
}

impl Hooks {
    pub(crate) fn new(first: Arc<Generation>) -> Hooks {
        let (offers, _) = watch::channel(Offer {
            seq: 0,
            generation: first,
        });
        Hooks {
            offers,
            registered: Mutex::new(BTreeMap::new()),
            stopping: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Offers `generation`, just installed, to every hook.
    pub(crate) fn installed(&self, generation: Arc<Generation>) {
        self.offers.send_modify(|offer| {
            offer.seq += 1;
            offer.generation = generation;
        });
    }

    pub(crate) fn add(
        self: &Arc<Self>,
        hook: Arc<dyn GenerationHook>,
        request: Requester,
    ) -> GenerationHookHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(run(
            hook.clone(),
            self.offers.subscribe(),
            counters.clone(),
            stop.clone(),
            request,
        ));
        self.registered.lock().insert(
            id,
            Registered {
                hook,
                counters,
                stop,
                task,
            },
        );
        GenerationHookHandle {
            id,
            hooks: Arc::downgrade(self),
        }
    }

    fn take(&self, id: u64) -> Option<JoinHandle<()>> {
        let registered = self.registered.lock().remove(&id)?;
        registered.stop.notify_one();
        Some(registered.task)
    }

    pub(crate) fn stats(&self) -> Vec<GenerationHookStats> {
        self.registered
            .lock()
            .values()
            .map(|r| GenerationHookStats {
                name: r.hook.name().to_string(),
                offered: r.counters.offered.load(Ordering::Relaxed),
                skipped: r.counters.skipped.load(Ordering::Relaxed),
                panics: r.counters.panics.load(Ordering::Relaxed),
                last_generation_id: r
                    .counters
                    .last_generation
                    .load(Ordering::Relaxed)
                    .checked_sub(1),
                busy: r.counters.busy.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Stops every hook and waits for each to finish its current call.
    pub(crate) async fn shutdown(&self) {
        let ids: Vec<u64> = self.registered.lock().keys().copied().collect();
        let mut tasks: Vec<JoinHandle<()>> =
            ids.into_iter().filter_map(|id| self.take(id)).collect();
        tasks.append(&mut self.stopping.lock());
        for task in tasks {
            let _ = task.await;
        }
    }

    /// For a node dropped without `shutdown`: no hook task outlives it.
    pub(crate) fn abort_all(&self) {
        for (_, registered) in std::mem::take(&mut *self.registered.lock()) {
            registered.task.abort();
        }
        for task in self.stopping.lock().drain(..) {
            task.abort();
        }
    }
}

/// Keeps a hook registered; dropping it (or [`remove`](Self::remove))
/// unregisters the hook.
#[derive(Debug)]
pub struct GenerationHookHandle {
    id: u64,
    hooks: Weak<Hooks>,
}

impl GenerationHookHandle {
    /// Unregisters the hook and waits until its current call, if any, has
    /// returned: afterwards the hook is never called again.
    pub async fn remove(self) {
        let task = self.hooks.upgrade().and_then(|hooks| hooks.take(self.id));
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for GenerationHookHandle {
    fn drop(&mut self) {
        if let Some(hooks) = self.hooks.upgrade()
            && let Some(task) = hooks.take(self.id)
        {
            let mut stopping = hooks.stopping.lock();
            stopping.retain(|t| !t.is_finished());
            stopping.push(task);
        }
    }
}

async fn run(
    hook: Arc<dyn GenerationHook>,
    mut offers: watch::Receiver<Offer>,
    counters: Arc<Counters>,
    stop: Arc<Notify>,
    request: Requester,
) {
    let initial = offers.borrow_and_update().clone();
    let mut last_seq = initial.seq;
    // The current generation is offered first; a node without one yet has
    // the hook only name its tables.
    let mut generation = (initial.generation.meta.id > 0).then_some(initial.generation);
    loop {
        if let Some(g) = &generation {
            counters.offered.fetch_add(1, Ordering::Relaxed);
            counters
                .last_generation
                .store(g.meta.id.saturating_add(1), Ordering::Relaxed);
        }
        counters.busy.store(true, Ordering::Relaxed);
        let call_hook = hook.clone();
        let call_counters = counters.clone();
        // Awaited even when stop is asked meanwhile, so `remove` and
        // shutdown return only after the hook's call did.
        let result =
            tokio::task::spawn_blocking(move || call(&*call_hook, generation, &call_counters))
                .await;
        counters.busy.store(false, Ordering::Relaxed);
        // Panics are caught inside the call; an error here is the runtime
        // going away.
        let Ok(wanted) = result else {
            return;
        };
        if let Some(wanted) = wanted.filter(|w| !w.is_empty()) {
            request(&wanted);
        }
        tokio::select! {
            biased;
            _ = stop.notified() => return,
            changed = offers.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let offer = offers.borrow_and_update().clone();
        let missed = offer.seq.saturating_sub(last_seq).saturating_sub(1);
        if missed > 0 {
            counters.skipped.fetch_add(missed, Ordering::Relaxed);
            tracing::debug!(
                hook = hook.name(),
                missed,
                "hook busy; skipped to the newest generation"
            );
        }
        last_seq = offer.seq;
        generation = Some(offer.generation);
    }
}

/// Runs the hook's calls on the blocking pool, each caught on its own: a
/// panic in `on_generation` still lets the hook say which tables it wants
/// (none when `wanted_tables` panics). Panics are counted here, before the
/// hook's next call, so the count never trails what the hook did.
fn call(
    hook: &dyn GenerationHook,
    generation: Option<Arc<Generation>>,
    counters: &Counters,
) -> Option<BTreeSet<String>> {
    if let Some(generation) = generation
        && let Err(payload) = catch_unwind(AssertUnwindSafe(|| hook.on_generation(&generation)))
    {
        counters.panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            hook = hook.name(),
            generation = generation.meta.id,
            panic = panic_text(payload.as_ref()),
            "generation hook panicked; it is offered the next generation as usual"
        );
    }
    match catch_unwind(AssertUnwindSafe(|| hook.wanted_tables())) {
        Ok(wanted) => Some(wanted),
        Err(payload) => {
            counters.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                hook = hook.name(),
                panic = panic_text(payload.as_ref()),
                "generation hook panicked naming its tables"
            );
            None
        }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

/// `fleet_generation_hooks`: a node table (not read from the generation)
/// built from the counters when a query scans it.
#[derive(Debug)]
pub(crate) struct HooksTable {
    hooks: Weak<Hooks>,
    schema: SchemaRef,
}

impl HooksTable {
    pub(crate) fn new(hooks: &Arc<Hooks>) -> HooksTable {
        let u64_field = |name: &str| Field::new(name, DataType::UInt64, false);
        HooksTable {
            hooks: Arc::downgrade(hooks),
            schema: Arc::new(Schema::new(vec![
                Field::new("hook", DataType::Utf8, false),
                u64_field("offered"),
                u64_field("skipped"),
                u64_field("panics"),
                Field::new("last_generation_id", DataType::UInt64, true),
                Field::new("busy", DataType::Boolean, false),
            ])),
        }
    }
}

impl NodeTable for HooksTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn batch(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let stats = self.hooks.upgrade().map(|h| h.stats()).unwrap_or_default();
        let u64s = |f: fn(&GenerationHookStats) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(stats.iter().map(f)))
        };
        RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    stats.iter().map(|s| s.name.as_str()),
                )),
                u64s(|s| s.offered),
                u64s(|s| s.skipped),
                u64s(|s| s.panics),
                Arc::new(UInt64Array::from_iter(
                    stats.iter().map(|s| s.last_generation_id),
                )),
                Arc::new(BooleanArray::from_iter(stats.iter().map(|s| Some(s.busy)))),
            ],
        )
    }
}
