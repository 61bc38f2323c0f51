//! Generation hooks: each installed generation offered once, in order; a
//! panicking hook counted and the node unharmed; a blocked hook delays
//! neither installs, queries nor other hooks, and skips to the newest
//! generation when it is free again.
//!
//! Generations are handed out one by one and every wait is for an event
//! (a generation installed, a hook called); the time-outs only turn a hang
//! into a failure.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use fleetsql_aggregator::WatchChild;
use fleetsql_model::Generation;
use fleetsql_sqlnode::{GenerationHook, SqlNode, SqlNodeConfig};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

const HANG: Duration = Duration::from_secs(60);

/// Generation `id` with one table `t` whose column `v` holds `id`.
fn generation(id: u64) -> Arc<Generation> {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let columns: Vec<Arc<dyn Array>> = vec![Arc::new(Int64Array::from(vec![id as i64; 3]))];
    let batch = RecordBatch::try_new(schema, columns).expect("batch");
    crate::generation_of_t(id, batch)
}

struct Fleet {
    node: SqlNode,
    source: Arc<WatchChild>,
    requested: watch::Receiver<BTreeSet<String>>,
}

impl Fleet {
    fn start(first: u64) -> Fleet {
        let source = WatchChild::new("scripted", generation(first));
        let requested = source.requests();
        let node = SqlNode::start(
            SqlNodeConfig::new("hooks-test", Duration::from_millis(200)),
            vec![source.clone()],
        )
        .expect("node");
        Fleet {
            node,
            source,
            requested,
        }
    }

    /// Hands out generation `id` and waits until the node installed it.
    async fn install(&self, id: u64) {
        self.source.publish(generation(id));
        let mut installed = self.node.subscribe();
        tokio::time::timeout(HANG, installed.wait_for(|g| g.meta.id >= id))
            .await
            .expect("generation installed")
            .expect("node running");
    }

    async fn max_v(&self) -> i64 {
        let output = self
            .node
            .query("SELECT max(v) FROM t")
            .await
            .expect("query");
        output.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("int64")
            .value(0)
    }
}

async fn next<T>(receiver: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(HANG, receiver.recv())
        .await
        .expect("hook called")
        .expect("hook alive")
}

/// Reports every generation id it is offered, and wants table `t`.
#[derive(Debug)]
struct Recorder {
    name: &'static str,
    seen: mpsc::UnboundedSender<u64>,
}

impl GenerationHook for Recorder {
    fn name(&self) -> &str {
        self.name
    }

    fn wanted_tables(&self) -> BTreeSet<String> {
        ["t".to_string()].into()
    }

    fn on_generation(&self, generation: &Arc<Generation>) {
        let _ = self.seen.send(generation.meta.id);
    }
}

fn recorder(name: &'static str) -> (Arc<Recorder>, mpsc::UnboundedReceiver<u64>) {
    let (seen, receiver) = mpsc::unbounded_channel();
    (Arc::new(Recorder { name, seen }), receiver)
}

#[tokio::test]
async fn a_hook_sees_every_generation_once_in_order() {
    let fleet = Fleet::start(1);
    fleet.install(1).await;
    let (hook, mut seen) = recorder("recorder");
    let handle = fleet.node.add_generation_hook(hook);
    assert_eq!(next(&mut seen).await, 1, "the current generation first");
    for id in 2..=6 {
        fleet.install(id).await;
        assert_eq!(next(&mut seen).await, id);
    }
    // Its wanted table is requested from the source.
    let mut requested = fleet.requested.clone();
    tokio::time::timeout(HANG, requested.wait_for(|t| t.contains("t")))
        .await
        .expect("wanted table requested")
        .expect("source alive");

    let stats = fleet.node.generation_hooks();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].name, "recorder");
    assert_eq!(stats[0].skipped, 0);
    assert_eq!(stats[0].last_generation_id, Some(6));

    // Removed: no further call, and gone from the stats.
    handle.remove().await;
    fleet.install(7).await;
    assert!(fleet.node.generation_hooks().is_empty());
    fleet.node.shutdown().await;
    let mut rest = Vec::new();
    while let Ok(id) = seen.try_recv() {
        rest.push(id);
    }
    assert!(rest.is_empty(), "offered again or after removal: {rest:?}");
}

/// Panics in every `on_generation`; `wanted_tables`, called after each
/// call, reports how many generations it was given.
#[derive(Debug)]
struct Panicker {
    calls: AtomicU64,
    after_call: mpsc::UnboundedSender<u64>,
}

impl GenerationHook for Panicker {
    fn name(&self) -> &str {
        "panicker"
    }

    fn wanted_tables(&self) -> BTreeSet<String> {
        let _ = self.after_call.send(self.calls.load(Ordering::SeqCst));
        BTreeSet::new()
    }

    fn on_generation(&self, generation: &Arc<Generation>) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        panic!("hook fails on generation {}", generation.meta.id);
    }
}

#[tokio::test]
async fn a_panicking_hook_leaves_the_node_answering_and_other_hooks_called() {
    let fleet = Fleet::start(1);
    fleet.install(1).await;
    let (after_call, mut panicked) = mpsc::unbounded_channel();
    let _panicker = fleet.node.add_generation_hook(Arc::new(Panicker {
        calls: AtomicU64::new(0),
        after_call,
    }));
    let (hook, mut seen) = recorder("recorder");
    let _recorder = fleet.node.add_generation_hook(hook);
    // The panicker reports after each (caught) panic how many generations
    // it was given, so each is offered once and then the next.
    assert_eq!(next(&mut panicked).await, 1);
    assert_eq!(next(&mut seen).await, 1);
    for id in 2..=3 {
        fleet.install(id).await;
        assert_eq!(next(&mut panicked).await, id, "offered after its panic");
        assert_eq!(next(&mut seen).await, id, "the other hook goes on");
    }

    assert_eq!(fleet.max_v().await, 3, "the node answers");
    let output = fleet
        .node
        .query("SELECT hook, offered, panics FROM fleet_generation_hooks ORDER BY hook")
        .await
        .expect("hooks table");
    let rows = fleetsql_model::json::batches_to_rows(&output.batches).expect("rows");
    assert_eq!(
        serde_json::json!(rows),
        serde_json::json!([["panicker", 3, 3], ["recorder", 3, 0]])
    );
    fleet.node.shutdown().await;
}

/// Blocks in `on_generation` until the test lets it go.
#[derive(Debug)]
struct Blocker {
    entered: mpsc::UnboundedSender<u64>,
    gate: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl GenerationHook for Blocker {
    fn name(&self) -> &str {
        "blocker"
    }

    fn on_generation(&self, generation: &Arc<Generation>) {
        let _ = self.entered.send(generation.meta.id);
        let _ = self.gate.lock().recv();
    }
}

/// On the test's single runtime thread: a hook that held it would stop
/// the fetch loop and every query.
#[tokio::test]
async fn a_slow_hook_delays_neither_installs_nor_queries_nor_other_hooks() {
    let fleet = Fleet::start(1);
    fleet.install(1).await;
    let (entered, mut entered_rx) = mpsc::unbounded_channel();
    let (release, gate) = std::sync::mpsc::channel();
    let _blocker = fleet.node.add_generation_hook(Arc::new(Blocker {
        entered,
        gate: Mutex::new(gate),
    }));
    assert_eq!(next(&mut entered_rx).await, 1);
    let (hook, mut seen) = recorder("recorder");
    let _recorder = fleet.node.add_generation_hook(hook);
    assert_eq!(next(&mut seen).await, 1);

    for id in 2..=5 {
        fleet.install(id).await;
        assert_eq!(
            fleet.max_v().await,
            id as i64,
            "queries read generation {id}"
        );
        assert_eq!(next(&mut seen).await, id, "the other hook is not held up");
    }
    let blocked = fleet
        .node
        .generation_hooks()
        .into_iter()
        .find(|s| s.name == "blocker")
        .expect("blocker registered");
    assert!(blocked.busy);
    assert_eq!(blocked.last_generation_id, Some(1));

    // Let go, it skips to the newest generation and counts what it missed.
    release.send(()).expect("blocker waiting");
    assert_eq!(next(&mut entered_rx).await, 5);
    let caught_up = fleet
        .node
        .generation_hooks()
        .into_iter()
        .find(|s| s.name == "blocker")
        .expect("blocker registered");
    assert_eq!((caught_up.offered, caught_up.skipped), (2, 3));
    release.send(()).expect("blocker waiting");
    fleet.node.shutdown().await;
}
