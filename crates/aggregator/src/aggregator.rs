use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fleetsql_model::{
    ChildStatus, Generation, GenerationMeta, Table, TableVisibility, Visibility, merge_tables,
    now_ms,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};

use crate::child::covers_all;
use crate::self_monitor::{FLEET_NODES, NodeState, fleet_nodes_table, host_name};
use crate::{AggregatorError, Child, FetchRequest, Result, TableRequests};

/// How one aggregator runs; every field has a default fit for the demo.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Producer name stamped on every generation.
    pub name: String,
    /// What this node is (`agent`, `proxy`, `tla`), for `fleet_nodes`.
    pub role: String,
    /// Time between generations.
    pub tick: Duration,
    /// Ticks fire at wall-clock multiples of `tick` plus this offset, so a
    /// proxy ticks just after its agents and a TLA just after its proxies.
    pub offset: Duration,
    /// A child whose newest data are older than this is left out.
    pub stale_after: Duration,
    /// How long one child may take to answer a fetch.
    pub fetch_timeout: Duration,
    /// How long a tick waits for its children before it closes with those
    /// that answered: a child still fetching is merged from its previous
    /// answer (while that is fresher than `stale_after`) and its fetch runs
    /// on, its rows arriving in a later generation. Shorter than `tick`, so
    /// one unreachable child never makes a tier miss its next tick.
    pub tick_deadline: Duration,
    /// At a tick, how long a child that has not made a generation newer than
    /// the one last taken from it may hold the fetch (long poll) before the
    /// older one is merged; absorbs jitter between the tiers' clocks.
    pub child_wait: Duration,
    /// How long a parent's table set lasts without being asked again.
    pub parent_grace: Duration,
    /// Tables collected whether or not anyone asked.
    pub prewarm: BTreeSet<String>,
    /// The aggregator set this node collects for, stamped on its
    /// generations so every answer says which span it covers.
    pub span: Option<String>,
}

impl AggregatorConfig {
    pub fn new(name: impl Into<String>, tick: Duration) -> Self {
        AggregatorConfig {
            name: name.into(),
            role: "aggregator".to_string(),
            tick,
            offset: Duration::ZERO,
            stale_after: tick * 3,
            fetch_timeout: tick.max(Duration::from_secs(2)),
            tick_deadline: tick * 3 / 4,
            child_wait: (tick / 4).min(Duration::from_secs(2)),
            parent_grace: (tick * 6).max(Duration::from_secs(30)),
            prewarm: BTreeSet::new(),
            span: None,
        }
    }
}

/// Children that serve the same data, tried in order until one answers with
/// fresh data: one member for an agent or proxy child, all proxies of a
/// cluster for a TLA.
#[derive(Debug, Clone)]
pub struct ChildGroup {
    pub name: String,
    pub members: Vec<Arc<dyn Child>>,
    /// The cluster this group serves and how many machines it has, from
    /// configuration: counted as expected even before the group has ever
    /// answered, so a cluster that never came up still shows as missing.
    pub expected: Option<(String, u64)>,
}

impl ChildGroup {
    pub fn single(child: Arc<dyn Child>) -> Self {
        ChildGroup {
            name: child.name().to_string(),
            members: vec![child],
            expected: None,
        }
    }

    /// Declares the cluster and machine count this group is expected to cover.
    pub fn expecting(mut self, cluster: impl Into<String>, machines: u64) -> Self {
        self.expected = Some((cluster.into(), machines));
        self
    }
}

/// Tables a tier makes itself and adds to its generations, like its own
/// `fleet_nodes` row (a proxy's `fleet_members`): offered in `available`,
/// made only when a parent asks for them, from the coverage of the
/// generation being made.
pub trait OwnTables: Send + Sync + std::fmt::Debug {
    /// The tables this source makes.
    fn names(&self) -> Vec<String>;
    /// Table `name` for the generation whose coverage is `visibility`
    /// (`visibility.children` says which children were merged); `None`
    /// leaves it out of this generation.
    fn table(&self, name: &str, visibility: &Visibility) -> Option<Table>;
}

/// Counters for `/metrics` and `fleet_nodes`.
#[derive(Debug, Clone, Default)]
pub struct AggregatorStats {
    pub generations: u64,
    /// Collecting the children's answers at the last tick (transfer, and
    /// the long poll of a timer tick waiting for a newer child generation).
    pub last_fetch_ms: f64,
    /// Merging those answers into the generation, once they were all in.
    pub last_merge_ms: f64,
    pub children_expected: u64,
    pub children_merged: u64,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug)]
struct Inner {
    config: AggregatorConfig,
    layout: Mutex<Layout>,
    requests: Mutex<TableRequests>,
    generation: watch::Sender<Arc<Generation>>,
    tick_now: Notify,
    next_id: AtomicU64,
    stats: Mutex<AggregatorStats>,
    /// Set when a re-read configuration asks for what needs a restart.
    pending_restart: Mutex<Option<String>>,
    own_tables: Mutex<Option<Arc<dyn OwnTables>>>,
    started: Instant,
    host: String,
}

/// The children, replaced whole when the configuration changes
/// ([`Aggregator::reconfigure`]); a tick works on the layout it started with.
#[derive(Debug)]
struct Layout {
    groups: Arc<Vec<ChildGroup>>,
    /// Per group: which member answered last (tried first next time) and the
    /// visibility it had, to count its machines as expected when it fails.
    state: Vec<GroupState>,
    /// Bumped by each reconfiguration, so a tick that started before one
    /// does not write its state into the new groups' places.
    epoch: u64,
    /// Per group: a fetch an earlier tick started that had not answered
    /// when that tick closed; the next tick takes its answer.
    pending: Vec<Option<Pending>>,
}

/// A fetch running on a task of its own, so a tick can close without it.
#[derive(Debug)]
struct Pending {
    /// The tables it asks for: a tick that wants others starts anew.
    tables: BTreeSet<String>,
    started: Instant,
    answer: oneshot::Receiver<Fetched>,
    /// Set when the tick that started it closed without its answer and
    /// that tick was made on demand (a newly named table): the answer then
    /// makes a tick at once instead of waiting for the timer.
    retick: Arc<std::sync::atomic::AtomicBool>,
    task: AbortHandle,
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A fetch for groups that are gone, or asking for a table set
        // nobody wants any more, is not waited for.
        self.task.abort();
    }
}

#[derive(Debug, Default, Clone)]
struct GroupState {
    preferred: usize,
    /// The generation last merged from the preferred member, for its long poll.
    last_id: Option<u64>,
    last_known: Visibility,
    available: BTreeSet<String>,
    /// The newest answer merged from this group, merged again while its
    /// next fetch is still running, until it is older than `stale_after`.
    last_answer: Option<Arc<Generation>>,
}

/// A running aggregator; dropping it stops the loop.
#[derive(Debug)]
pub struct Aggregator {
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.task.abort();
        // Fetches still running hold the loop's state; stop them too.
        self.inner.layout.lock().pending.clear();
    }
}

impl Aggregator {
    /// Starts the tick loop on the current tokio runtime.
    pub fn start(config: AggregatorConfig, groups: Vec<ChildGroup>) -> Aggregator {
        let (generation, _) = watch::channel(Arc::new(Generation::empty(&config.name)));
        let requests = TableRequests::new(config.prewarm.clone(), config.parent_grace);
        let layout = Layout {
            state: vec![GroupState::default(); groups.len()],
            pending: groups.iter().map(|_| None).collect(),
            groups: Arc::new(groups),
            epoch: 0,
        };
        let inner = Arc::new(Inner {
            config,
            layout: Mutex::new(layout),
            requests: Mutex::new(requests),
            generation,
            tick_now: Notify::new(),
            next_id: AtomicU64::new(1),
            stats: Mutex::new(AggregatorStats::default()),
            pending_restart: Mutex::new(None),
            own_tables: Mutex::new(None),
            started: Instant::now(),
            host: host_name(),
        });
        let task = tokio::spawn(run(inner.clone()));
        Aggregator { inner, task }
    }

    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    pub fn config(&self) -> &AggregatorConfig {
        &self.inner.config
    }

    /// This aggregator as a child of a parent in the same process.
    pub fn as_child(&self) -> Arc<dyn Child> {
        Arc::new(LocalLink {
            inner: self.inner.clone(),
        })
    }

    pub fn current(&self) -> Arc<Generation> {
        self.inner.generation.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Generation>> {
        self.inner.generation.subscribe()
    }

    pub fn stats(&self) -> AggregatorStats {
        self.inner.stats.lock().clone()
    }

    /// Makes a generation now instead of at the next tick.
    pub fn tick_now(&self) {
        self.inner.tick_now.notify_one();
    }

    /// Replaces the children and the prewarm list (a changed topology),
    /// without a restart: a group kept by name keeps what was learnt of it
    /// (its last visibility; its preferred member when the members are the
    /// same), so a cluster whose proxies did not change is not counted
    /// missing for a tick. Makes a generation at once.
    pub fn reconfigure(&self, groups: Vec<ChildGroup>, prewarm: BTreeSet<String>) {
        {
            let mut layout = self.inner.layout.lock();
            let state = groups
                .iter()
                .map(|group| {
                    let old = layout
                        .groups
                        .iter()
                        .position(|g| g.name == group.name)
                        .map(|i| (&layout.groups[i], layout.state[i].clone()));
                    match old {
                        Some((old_group, mut state)) => {
                            let same_members = old_group.members.len() == group.members.len()
                                && old_group
                                    .members
                                    .iter()
                                    .zip(&group.members)
                                    .all(|(a, b)| a.name() == b.name());
                            if !same_members {
                                state.preferred = 0;
                                state.last_id = None;
                                state.last_answer = None;
                            }
                            state
                        }
                        None => GroupState::default(),
                    }
                })
                .collect();
            layout.pending = groups.iter().map(|_| None).collect();
            layout.groups = Arc::new(groups);
            layout.state = state;
            layout.epoch += 1;
        }
        self.inner.requests.lock().set_prewarm(prewarm);
        self.inner.tick_now.notify_one();
    }

    /// Replaces only the prewarm list (an agent, whose children do not
    /// come from the topology).
    pub fn set_prewarm(&self, prewarm: BTreeSet<String>) {
        self.inner.requests.lock().set_prewarm(prewarm);
        self.inner.tick_now.notify_one();
    }

    /// What a re-read configuration changed that needs a restart (shown
    /// in this node's `fleet_nodes` row), or `None` once it agrees again.
    pub fn set_pending_restart(&self, what: Option<String>) {
        *self.inner.pending_restart.lock() = what;
    }

    /// Tables this tier makes itself from now on ([`OwnTables`]).
    pub fn set_own_tables(&self, tables: Option<Arc<dyn OwnTables>>) {
        *self.inner.own_tables.lock() = tables;
    }

    /// Names of the child groups now (tests, `/metrics`).
    pub fn group_names(&self) -> Vec<String> {
        self.inner
            .layout
            .lock()
            .groups
            .iter()
            .map(|g| g.name.clone())
            .collect()
    }

    /// Stops the loop; the last generation stays readable through handles.
    pub async fn shutdown(self) {
        self.task.abort();
        self.inner.layout.lock().pending.clear();
    }
}

async fn run(inner: Arc<Inner>) {
    loop {
        let sleep = until_next_tick(inner.config.tick, inner.config.offset);
        let on_timer = tokio::select! {
            _ = tokio::time::sleep(sleep) => true,
            _ = inner.tick_now.notified() => false,
        };
        tick(&inner, on_timer).await;
    }
}

/// Time until the next wall-clock multiple of `tick` plus `offset`.
fn until_next_tick(tick: Duration, offset: Duration) -> Duration {
    let tick_ms = tick.as_millis().max(1) as i64;
    let offset_ms = (offset.as_millis() as i64) % tick_ms;
    let now = now_ms();
    let phase = (now - offset_ms).rem_euclid(tick_ms);
    Duration::from_millis((tick_ms - phase) as u64)
}

#[derive(Debug)]
struct Fetched {
    group: usize,
    member: usize,
    result: Result<Arc<Generation>>,
}

/// What a tick has of one group when it closes.
#[derive(Debug)]
enum Answer {
    Fetched(Fetched),
    /// Its fetch was still running at the tick's deadline.
    Late {
        group: usize,
        running_ms: u64,
    },
}

/// Starts group `group`'s fetch on a task of its own.
fn spawn_fetch(
    inner: &Arc<Inner>,
    groups: &Arc<Vec<ChildGroup>>,
    epoch: u64,
    group: usize,
    request: &FetchRequest,
    long_poll: bool,
) -> Pending {
    let (tx, answer) = oneshot::channel();
    let retick = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = {
        let (inner, groups, request, retick) = (
            inner.clone(),
            groups.clone(),
            request.clone(),
            retick.clone(),
        );
        tokio::spawn(async move {
            let fetched = fetch_group(&inner, &groups, epoch, group, &request, long_poll).await;
            let _ = tx.send(fetched);
            if retick.load(Ordering::Acquire) {
                inner.tick_now.notify_one();
            }
        })
    };
    Pending {
        tables: request.tables.clone(),
        started: Instant::now(),
        answer,
        retick,
        task: task.abort_handle(),
    }
}

/// `long_poll`: a timer tick may wait `child_wait` for a child's next
/// generation; a tick made on demand (a new table, `tick_now`) answers with
/// what the children have.
async fn fetch_group(
    inner: &Inner,
    groups: &[ChildGroup],
    epoch: u64,
    group: usize,
    request: &FetchRequest,
    long_poll: bool,
) -> Fetched {
    let members = &groups[group].members;
    let (preferred, last_id) = {
        let layout = inner.layout.lock();
        match layout.state.get(group) {
            Some(state) if layout.epoch == epoch => (state.preferred, state.last_id),
            _ => (0, None),
        }
    };
    let stale_before = now_ms() - inner.config.stale_after.as_millis() as i64;
    let mut last_err = None;
    for k in 0..members.len() {
        let member = (preferred + k) % members.len();
        let child = &members[member];
        let mut request = request.clone();
        if long_poll
            && member == preferred
            && last_id.is_some()
            && !inner.config.child_wait.is_zero()
        {
            request.since_generation = last_id;
            request.wait = Some(inner.config.child_wait);
        }
        let answer = tokio::time::timeout(inner.config.fetch_timeout, child.fetch(&request))
            .await
            // Ages and staleness are measured on this tier's clock, never
            // on a child's, which may be wrong.
            .map(|answer| answer.map(|g| g.on_receiver_clock(now_ms())));
        let result = match answer {
            Err(_) => Err(AggregatorError::Timeout {
                child: child.name().to_string(),
                timeout_ms: inner.config.fetch_timeout.as_millis() as u64,
            }),
            Ok(Err(e)) => Err(e),
            Ok(Ok(generation)) if generation.meta.id == 0 => Err(AggregatorError::Child {
                child: child.name().to_string(),
                reason: "has not made a generation yet".to_string(),
            }),
            Ok(Ok(generation)) if generation.meta.made_at_ms < stale_before => {
                Err(AggregatorError::Child {
                    child: child.name().to_string(),
                    reason: format!(
                        "data are stale: generation {} is {} ms old",
                        generation.meta.id,
                        now_ms() - generation.meta.made_at_ms
                    ),
                })
            }
            Ok(Ok(generation)) => {
                return Fetched {
                    group,
                    member,
                    result: Ok(generation),
                };
            }
        };
        if let Err(e) = &result {
            tracing::debug!(node = %inner.config.name, child = child.name(), error = %e, "child skipped");
        }
        last_err = Some(result);
    }
    Fetched {
        group,
        member: preferred,
        result: last_err.unwrap_or_else(|| {
            Err(AggregatorError::Child {
                child: groups[group].name.clone(),
                reason: "group has no members".into(),
            })
        }),
    }
}

async fn tick(inner: &Arc<Inner>, on_timer: bool) {
    let started = Instant::now();
    let wanted = inner.requests.lock().current(started);
    let request = FetchRequest {
        requester: inner.config.name.clone(),
        tables: wanted.clone(),
        since_generation: None,
        wait: None,
        meta_only: false,
    };
    let (groups, epoch, mut pending) = {
        let mut layout = inner.layout.lock();
        let mut pending = std::mem::take(&mut layout.pending);
        pending.resize_with(layout.groups.len(), || None);
        (layout.groups.clone(), layout.epoch, pending)
    };
    // Every group's fetch runs on a task of its own; the tick waits for
    // them until its deadline and closes with those that answered.
    let mut answers: Vec<Option<Fetched>> = (0..groups.len()).map(|_| None).collect();
    for (g, slot) in pending.iter_mut().enumerate() {
        match slot.take() {
            Some(mut p) if p.tables == wanted => match p.answer.try_recv() {
                // It answered after its tick closed: that answer is this
                // tick's, and the next fetch starts now, in the background.
                Ok(fetched) => {
                    answers[g] = Some(fetched);
                    *slot = Some(spawn_fetch(inner, &groups, epoch, g, &request, on_timer));
                }
                Err(oneshot::error::TryRecvError::Empty) => *slot = Some(p),
                Err(oneshot::error::TryRecvError::Closed) => {
                    *slot = Some(spawn_fetch(inner, &groups, epoch, g, &request, on_timer));
                }
            },
            _ => *slot = Some(spawn_fetch(inner, &groups, epoch, g, &request, on_timer)),
        }
    }
    let deadline = tokio::time::Instant::from_std(started + inner.config.tick_deadline);
    let waited = futures::future::join_all(pending.iter_mut().zip(&answers).map(
        |(slot, answer)| async move {
            match (slot.as_mut(), answer) {
                (Some(p), None) => match tokio::time::timeout_at(deadline, &mut p.answer).await {
                    Ok(Ok(fetched)) => Some(fetched),
                    Ok(Err(_)) => None,
                    Err(_) => None,
                },
                _ => None,
            }
        },
    ))
    .await;
    let mut late_ms: Vec<Option<u64>> = vec![None; groups.len()];
    for (g, fetched) in waited.into_iter().enumerate() {
        if answers[g].is_some() {
            continue;
        }
        if let Some(fetched) = fetched {
            answers[g] = Some(fetched);
            pending[g] = None;
            continue;
        }
        let Some(p) = pending[g].as_mut() else {
            continue;
        };
        if !on_timer {
            p.retick.store(true, Ordering::Release);
        }
        // It may have answered between the deadline and the flag.
        match p.answer.try_recv() {
            Ok(fetched) => {
                answers[g] = Some(fetched);
                pending[g] = None;
            }
            Err(oneshot::error::TryRecvError::Closed) => pending[g] = None,
            Err(oneshot::error::TryRecvError::Empty) => {
                late_ms[g] = Some(p.started.elapsed().as_millis() as u64);
            }
        }
    }
    {
        let mut layout = inner.layout.lock();
        if layout.epoch == epoch {
            layout.pending = pending;
        }
        // Otherwise the groups changed while this tick waited: their
        // fetches are dropped (aborted) with `pending`.
    }
    let answers: Vec<Answer> = answers
        .into_iter()
        .zip(late_ms)
        .enumerate()
        .map(|(group, (fetched, late))| match (fetched, late) {
            (Some(fetched), _) => Answer::Fetched(fetched),
            (None, Some(running_ms)) => Answer::Late { group, running_ms },
            (None, None) => Answer::Fetched(Fetched {
                group,
                member: 0,
                result: Err(AggregatorError::Child {
                    child: groups[group].name.clone(),
                    reason: "its fetch ended without an answer".into(),
                }),
            }),
        })
        .collect();
    // A timer tick in which no child answered at all (every one of them
    // still fetching, none stale yet) would only merge the same answers
    // again: the generation is left as it is until some answer comes.
    let nothing_new = on_timer && !answers.is_empty() && {
        let layout = inner.layout.lock();
        let stale_before = now_ms() - inner.config.stale_after.as_millis() as i64;
        layout.epoch == epoch
            && answers.iter().all(|a| match a {
                Answer::Late { group, .. } => layout.state[*group]
                    .last_answer
                    .as_ref()
                    .is_some_and(|g| g.meta.made_at_ms >= stale_before),
                Answer::Fetched(_) => false,
            })
    };
    if nothing_new {
        tracing::debug!(node = %inner.config.name, "no child answered within the tick; no new generation");
        return;
    }

    let fetched_in = started.elapsed();
    let merge_started = Instant::now();
    let merge_inner = inner.clone();
    let merge_groups = groups.clone();
    let merged = tokio::task::spawn_blocking(move || {
        merge(&merge_inner, &merge_groups, epoch, &wanted, answers)
    })
    .await;
    let generation = match merged {
        Ok(generation) => generation,
        Err(e) => {
            tracing::error!(node = %inner.config.name, error = %e, "merge task failed; generation skipped");
            return;
        }
    };
    let merged_in = merge_started.elapsed();
    let elapsed = started.elapsed();
    {
        let mut stats = inner.stats.lock();
        stats.generations += 1;
        stats.last_fetch_ms = fetched_in.as_secs_f64() * 1000.0;
        stats.last_merge_ms = merged_in.as_secs_f64() * 1000.0;
        stats.children_expected = groups.len() as u64;
        stats.children_merged = generation
            .meta
            .visibility
            .children
            .iter()
            .filter(|c| c.merged)
            .count() as u64;
        stats.rows = generation
            .tables
            .values()
            .map(|t| t.num_rows() as u64)
            .sum();
        stats.bytes = generation.memory_size() as u64;
    }
    tracing::debug!(
        node = %inner.config.name,
        id = generation.meta.id,
        ms = elapsed.as_millis() as u64,
        "generation made"
    );
    inner.generation.send_replace(Arc::new(generation));
}

/// One group at a merge: its index, the generation merged (fresh or
/// again) or why none, and a note on a generation merged again.
type GroupMerge = (
    usize,
    std::result::Result<Arc<Generation>, String>,
    Option<String>,
);

/// The CPU-heavy half of a tick, run off the IO runtime.
fn merge(
    inner: &Inner,
    groups: &[ChildGroup],
    epoch: u64,
    wanted: &BTreeSet<String>,
    answers: Vec<Answer>,
) -> Generation {
    // Declared before `parts`, which borrows them.
    let fleet_nodes_key = FLEET_NODES.to_string();
    let own_row: Table;
    let mut own_tables: Vec<(String, Table)> = Vec::new();
    let mut visibility = Visibility::default();
    let mut available = BTreeSet::new();
    let mut parts: BTreeMap<&String, Vec<&Table>> = BTreeMap::new();
    let mut part_owner: BTreeMap<&String, Vec<usize>> = BTreeMap::new();
    let now = now_ms();
    let mut layout = inner.layout.lock();
    // After a reconfiguration mid-tick, what was learnt belongs to groups
    // that are gone: it is used for this generation and then dropped.
    let mut stale_layout;
    let state = if layout.epoch == epoch {
        &mut layout.state
    } else {
        stale_layout = vec![GroupState::default(); groups.len()];
        &mut stale_layout
    };
    let stale_before = now - inner.config.stale_after.as_millis() as i64;
    // Per group: the generation merged (fresh or again) and why not.
    let mut merged: Vec<GroupMerge> = Vec::new();
    for answer in answers {
        match answer {
            Answer::Fetched(f) => match f.result {
                Ok(generation) => {
                    let gs = &mut state[f.group];
                    gs.preferred = f.member;
                    gs.last_id = Some(generation.meta.id);
                    gs.last_known = generation.meta.visibility.clone();
                    gs.available = generation.meta.available.clone();
                    gs.last_answer = Some(generation.clone());
                    merged.push((f.group, Ok(generation), None));
                }
                Err(e) => {
                    state[f.group].last_answer = None;
                    merged.push((f.group, Err(e.to_string()), None));
                }
            },
            Answer::Late { group, running_ms } => {
                let gs = &mut state[group];
                match gs.last_answer.clone() {
                    Some(previous) if previous.meta.made_at_ms >= stale_before => {
                        let note = format!(
                            "late: its fetch has run {running_ms} ms; generation {} merged again",
                            previous.meta.id
                        );
                        merged.push((group, Ok(previous), Some(note)));
                    }
                    _ => {
                        gs.last_answer = None;
                        let e = AggregatorError::Child {
                            child: groups[group].name.clone(),
                            reason: format!(
                                "no answer within the tick ({} ms; its fetch has run {running_ms} ms) and no fresh earlier one",
                                inner.config.tick_deadline.as_millis()
                            ),
                        };
                        merged.push((group, Err(e.to_string()), None));
                    }
                }
            }
        }
    }
    for (g, result, note) in &merged {
        let g = *g;
        let group = &groups[g];
        match result {
            Ok(generation) => {
                visibility.absorb(&generation.meta.producer, &generation.meta.visibility);
                available.extend(generation.meta.available.iter().cloned());
                visibility.children.push(ChildStatus {
                    name: group.name.clone(),
                    merged: true,
                    generation_id: Some(generation.meta.id),
                    data_age_ms: Some(now - generation.meta.made_at_ms),
                    error: note.clone(),
                });
                for (name, table) in &generation.tables {
                    if wanted.contains(name) {
                        parts.entry(name).or_default().push(table.as_ref());
                        part_owner.entry(name).or_default().push(g);
                    }
                }
            }
            Err(e) => {
                let gs = &state[g];
                match (&group.expected, gs.last_known.clusters.is_empty()) {
                    (Some((cluster, machines)), true) => {
                        let entry = visibility.clusters.entry(cluster.clone()).or_default();
                        entry.machines_expected += machines;
                    }
                    _ => visibility.absorb_unseen(&gs.last_known),
                }
                available.extend(gs.available.iter().cloned());
                visibility.children.push(ChildStatus {
                    name: group.name.clone(),
                    merged: false,
                    generation_id: None,
                    data_age_ms: None,
                    error: Some(e.to_string()),
                });
            }
        }
    }
    drop(layout);

    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    if wanted.contains(FLEET_NODES) {
        let made_at_ms = now_ms();
        let row = NodeState::new(
            &inner.config.role,
            &inner.config.name,
            &inner.host,
            id,
            made_at_ms,
            inner.started.elapsed().as_secs_f64(),
        )
        .with_visibility(&visibility, made_at_ms);
        let row = NodeState {
            pending_restart: inner.pending_restart.lock().clone(),
            ..row
        };
        own_row = fleet_nodes_table(&[row]);
        parts.entry(&fleet_nodes_key).or_default().push(&own_row);
        part_owner
            .entry(&fleet_nodes_key)
            .or_default()
            .push(OWN_ROW);
        let entry = visibility
            .tables
            .entry(FLEET_NODES.to_string())
            .or_default();
        entry.rows += 1;
    }
    available.insert(FLEET_NODES.to_string());
    let own_source = inner.own_tables.lock().clone();
    if let Some(source) = own_source {
        for name in source.names() {
            if wanted.contains(&name)
                && let Some(table) = source.table(&name, &visibility)
            {
                own_tables.push((name.clone(), table));
            }
            available.insert(name);
        }
    }
    for (name, table) in &own_tables {
        parts.entry(name).or_default().push(table);
        part_owner.entry(name).or_default().push(OWN_ROW);
        visibility.tables.entry(name.clone()).or_default().rows += table.num_rows() as u64;
    }

    let mut tables = BTreeMap::new();
    for (name, table_parts) in parts {
        match merge_tables(name, &table_parts) {
            Ok((table, rejected)) => {
                for (index, reason) in &rejected {
                    let group = part_owner[name][*index];
                    let child = groups
                        .get(group)
                        .map_or(inner.config.name.as_str(), |g| g.name.as_str());
                    tracing::warn!(
                        node = %inner.config.name,
                        child = %child,
                        error = %reason,
                        "rows left out of the merge"
                    );
                }
                let entry: &mut TableVisibility =
                    visibility.tables.entry(name.clone()).or_default();
                entry.rejected_parts += rejected.len() as u64;
                tables.insert(name.clone(), Arc::new(table));
            }
            Err(e) => {
                tracing::error!(node = %inner.config.name, table = %name, error = %e, "table could not be merged");
            }
        }
    }
    Generation {
        meta: GenerationMeta {
            producer: inner.config.name.clone(),
            id,
            made_at_ms: now_ms(),
            visibility,
            available,
            span: inner.config.span.clone(),
            served_at_ms: None,
        },
        tables,
    }
}

/// Stands for this node's own `fleet_nodes` row among the merged parts.
const OWN_ROW: usize = usize::MAX;

/// An aggregator seen by a parent in the same process.
#[derive(Debug)]
struct LocalLink {
    inner: Arc<Inner>,
}

#[async_trait]
impl Child for LocalLink {
    fn name(&self) -> &str {
        &self.inner.config.name
    }

    async fn fetch(&self, request: &FetchRequest) -> Result<Arc<Generation>> {
        let new_tables =
            self.inner
                .requests
                .lock()
                .note(&request.requester, &request.tables, Instant::now());
        let mut receiver = self.inner.generation.subscribe();
        if request.meta_only {
            // A probe: the table set is noted (a standby keeps collecting
            // what its parent may switch to) but no data travel.
            if !new_tables.is_empty() {
                self.inner.tick_now.notify_one();
            }
            let current = receiver.borrow().clone();
            return Ok(Arc::new(served(current.restricted(std::iter::empty()))));
        }
        if !new_tables.is_empty() {
            // Collect a newly named table at once instead of a tick later,
            // so the first query naming it waits milliseconds, not seconds.
            self.inner.tick_now.notify_one();
            let wait = self.inner.config.fetch_timeout;
            let _ = tokio::time::timeout(
                wait,
                receiver.wait_for(|g| g.meta.id > 0 && covers_all(g, &new_tables)),
            )
            .await;
        } else if let (Some(since), Some(wait)) = (request.since_generation, request.wait) {
            let _ = tokio::time::timeout(wait, receiver.wait_for(|g| g.meta.id > since)).await;
        }
        let current = receiver.borrow().clone();
        Ok(Arc::new(served(current.restricted(&request.tables))))
    }
}

/// Stamps the serving clock, which the parent compares with its own.
fn served(mut generation: Generation) -> Generation {
    generation.meta.served_at_ms = Some(now_ms());
    generation
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::covers_all;
    use arrow::array::{Int64Array, RecordBatch};
    use fleetsql_model::ClusterVisibility;

    /// A machine that publishes `t` with one row holding its number.
    #[derive(Debug)]
    struct Machine {
        name: String,
        value: i64,
        fail: bool,
    }

    #[async_trait]
    impl Child for Machine {
        fn name(&self) -> &str {
            &self.name
        }
        async fn fetch(&self, request: &FetchRequest) -> Result<Arc<Generation>> {
            if self.fail {
                return Err(AggregatorError::Child {
                    child: self.name.clone(),
                    reason: "down".into(),
                });
            }
            let mut generation = Generation::empty(&self.name);
            generation.meta.id = 1;
            generation.meta.made_at_ms = now_ms();
            generation.meta.available.insert("t".into());
            generation.meta.visibility.clusters.insert(
                "c1".into(),
                ClusterVisibility {
                    machines_expected: 1,
                    machines_seen: 1,
                    oldest_data_ms: Some(now_ms()),
                    newest_data_ms: Some(now_ms()),
                    via: String::new(),
                },
            );
            if request.tables.contains("t") {
                let batch = RecordBatch::try_from_iter([(
                    "x",
                    Arc::new(Int64Array::from(vec![self.value])) as _,
                )])
                .unwrap();
                let table = Table::new("t", batch.schema(), vec![batch]).unwrap();
                generation.tables.insert("t".into(), Arc::new(table));
                generation.meta.visibility.tables.insert(
                    "t".into(),
                    TableVisibility {
                        machines_with_rows: 1,
                        rows: 1,
                        ..Default::default()
                    },
                );
            }
            Ok(Arc::new(generation))
        }
    }

    fn machine(value: i64, fail: bool) -> ChildGroup {
        ChildGroup::single(Arc::new(Machine {
            name: format!("m{value}"),
            value,
            fail,
        }))
    }

    /// A generation made after `tick_now`, asked for `t`.
    async fn next_generation(aggregator: &Aggregator) -> Arc<Generation> {
        let mut receiver = aggregator.subscribe();
        let before = receiver.borrow_and_update().meta.id;
        aggregator.tick_now();
        receiver.wait_for(|g| g.meta.id > before).await.unwrap();
        aggregator.current()
    }

    fn sum_of_t(generation: &Generation) -> i64 {
        generation.tables["t"].batches()[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .iter()
            .flatten()
            .sum()
    }

    #[tokio::test]
    async fn reconfigure_adds_and_drops_children_and_prewarm_tables() {
        let mut config = AggregatorConfig::new("proxy", Duration::from_secs(3600));
        config.prewarm = BTreeSet::from(["t".to_string()]);
        let proxy = Aggregator::start(config, vec![machine(1, false), machine(2, false)]);
        let first = next_generation(&proxy).await;
        assert_eq!(first.tables["t"].num_rows(), 2);

        // A machine joins, one leaves: the next generation has the new set.
        proxy.reconfigure(
            vec![machine(1, false), machine(4, false)],
            BTreeSet::from(["t".to_string()]),
        );
        let mut receiver = proxy.subscribe();
        let changed = receiver
            .wait_for(|g| {
                g.tables
                    .get("t")
                    .is_some_and(|t| sum_of_t(g) == 5 && t.num_rows() == 2)
            })
            .await
            .unwrap()
            .clone();
        assert_eq!(changed.meta.visibility.children.len(), 2);
        assert_eq!(proxy.group_names(), ["m1", "m4"]);

        // `t` leaves the prewarm list and nobody asks for it: no longer collected.
        proxy.reconfigure(vec![machine(1, false), machine(4, false)], BTreeSet::new());
        let mut receiver = proxy.subscribe();
        receiver
            .wait_for(|g| !g.tables.contains_key("t"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn first_request_triggers_a_tick_and_merges_fresh_children() {
        let config = AggregatorConfig::new("proxy", Duration::from_secs(3600));
        let proxy = Aggregator::start(
            config,
            vec![machine(1, false), machine(2, false), machine(3, true)],
        );
        let tla = Aggregator::start(
            AggregatorConfig::new("tla", Duration::from_secs(3600)),
            vec![ChildGroup::single(proxy.as_child())],
        );
        let wanted: BTreeSet<String> = ["t".to_string()].into();
        let generation = tla
            .as_child()
            .fetch(&FetchRequest {
                requester: "sql".into(),
                tables: wanted.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(covers_all(&generation, &wanted));
        assert_eq!(generation.table("t").unwrap().num_rows(), 2);
        let v = &generation.meta.visibility;
        assert_eq!(v.machines_seen(), 2);
        assert_eq!(v.tables["t"].machines_with_rows, 2);
        assert!(generation.meta.available.contains("t"));
    }

    #[tokio::test]
    async fn every_tier_adds_its_row_to_fleet_nodes_and_probes_carry_no_rows() {
        let mut config = AggregatorConfig::new("proxy", Duration::from_secs(3600));
        config.role = "proxy".into();
        let proxy = Aggregator::start(config, vec![machine(1, false), machine(2, true)]);
        let mut config = AggregatorConfig::new("tla", Duration::from_secs(3600));
        config.role = "tla".into();
        let tla = Aggregator::start(config, vec![ChildGroup::single(proxy.as_child())]);
        let wanted: BTreeSet<String> = ["fleet_nodes".to_string(), "t".to_string()].into();
        let probe = tla
            .as_child()
            .fetch(&FetchRequest {
                requester: "sql".into(),
                tables: wanted.clone(),
                meta_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(probe.tables.is_empty());
        // The probe named the tables: the next generation has them.
        let generation = tla
            .as_child()
            .fetch(&FetchRequest {
                requester: "sql".into(),
                tables: wanted,
                since_generation: Some(probe.meta.id),
                wait: Some(Duration::from_secs(20)),
                ..Default::default()
            })
            .await
            .unwrap();
        let nodes = generation.table("fleet_nodes").expect("fleet_nodes");
        let batch = arrow::compute::concat_batches(nodes.schema(), nodes.batches()).unwrap();
        let roles = arrow::array::as_string_array(batch.column_by_name("role").unwrap());
        let mut roles: Vec<&str> = roles.iter().flatten().collect();
        roles.sort();
        assert_eq!(roles, ["proxy", "tla"]);
        let seen = batch
            .column_by_name("children_seen")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::UInt64Array>()
            .unwrap();
        let expected = batch
            .column_by_name("children_expected")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::UInt64Array>()
            .unwrap();
        let proxy_row = roles_index(&batch, "proxy");
        assert_eq!((seen.value(proxy_row), expected.value(proxy_row)), (1, 2));
    }

    fn roles_index(batch: &RecordBatch, role: &str) -> usize {
        let roles = arrow::array::as_string_array(batch.column_by_name("role").unwrap());
        roles.iter().position(|r| r == Some(role)).unwrap()
    }

    #[tokio::test]
    async fn unrequested_tables_are_not_collected() {
        let proxy = Aggregator::start(
            AggregatorConfig::new("proxy", Duration::from_secs(3600)),
            vec![machine(1, false)],
        );
        proxy.tick_now();
        let mut rx = proxy.subscribe();
        let generation = rx.wait_for(|g| g.meta.id > 0).await.unwrap().clone();
        assert!(generation.tables.is_empty());
        assert!(generation.meta.available.contains("t"));
    }

    /// A child whose fetch answers after `delay` (never, for `None`);
    /// counts its fetches.
    #[derive(Debug)]
    struct Slow {
        name: String,
        delay: Option<Duration>,
        calls: AtomicU64,
    }

    #[async_trait]
    impl Child for Slow {
        fn name(&self) -> &str {
            &self.name
        }
        async fn fetch(&self, request: &FetchRequest) -> Result<Arc<Generation>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            match self.delay {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending::<()>().await,
            }
            let machine = Machine {
                name: self.name.clone(),
                value: 100,
                fail: false,
            };
            machine.fetch(request).await
        }
    }

    #[tokio::test]
    async fn a_child_that_does_not_answer_never_holds_the_tick() {
        let mut config = AggregatorConfig::new("proxy", Duration::from_secs(3600));
        config.prewarm = BTreeSet::from(["t".to_string()]);
        config.fetch_timeout = Duration::from_secs(3600);
        config.tick_deadline = Duration::from_millis(300);
        let hung = Arc::new(Slow {
            name: "hung".into(),
            delay: None,
            calls: AtomicU64::new(0),
        });
        let slow = Arc::new(Slow {
            name: "slow".into(),
            delay: Some(Duration::from_millis(600)),
            calls: AtomicU64::new(0),
        });
        let proxy = Aggregator::start(
            config,
            vec![
                machine(1, false),
                ChildGroup::single(hung.clone()),
                ChildGroup::single(slow.clone()),
            ],
        );
        let bounded = |what: &'static str| {
            let proxy = &proxy;
            async move {
                tokio::time::timeout(Duration::from_secs(20), next_generation(proxy))
                    .await
                    .unwrap_or_else(|_| panic!("{what}: the tick waited for a child"))
            }
        };
        // The first tick closes with the child that answered.
        let first = bounded("first").await;
        assert_eq!(sum_of_t(&first), 1);
        let hung_status = |g: &Generation| {
            g.meta
                .visibility
                .children
                .iter()
                .find(|c| c.name == "hung")
                .cloned()
                .unwrap()
        };
        let status = hung_status(&first);
        assert!(!status.merged, "{status:?}");
        assert!(
            status
                .error
                .as_deref()
                .is_some_and(|e| e.contains("no answer within the tick")),
            "{status:?}"
        );
        // The slow child's answer arrives in a later generation.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let later = bounded("second").await;
        assert_eq!(sum_of_t(&later), 101, "{:?}", later.meta.visibility);
        assert!(!hung_status(&later).merged);
        // The hung fetch is still the one running: not started again.
        assert_eq!(hung.calls.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn ticks_align_to_wall_clock_with_offset() {
        let d = until_next_tick(Duration::from_secs(5), Duration::from_millis(500));
        assert!(d <= Duration::from_secs(5) && d > Duration::ZERO);
    }
}
