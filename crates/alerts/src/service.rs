//! The alert service: schedules each alert's SQL on the SQL node, feeds the
//! answers through the state machine, commits state and notifications to
//! the store, and delivers notifications from the store's outbox.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleetsql_model::{Generation, now_ms};
use fleetsql_sqlnode::{SqlError, SqlNode, StoreChange};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

use crate::definition::{AlertDefinition, CONSOLE_ROUTE, DefinitionError, DefinitionSet};
use crate::routes::RouteConfig;
use crate::state::{AlertState, EventKind, Observation, Row, Timing};
use crate::store::Store;
use crate::{AlertError, Result, tables};

/// The alert state's name among the node's stores (`fleet_nodes.store_error`,
/// `fleetsql_store_failing{store="alerts"}`).
pub(crate) const STORE: &str = "alerts";

/// The SQLite error without the path (the path is the store's own label).
fn store_reason(e: &AlertError) -> String {
    match e {
        AlertError::Store { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Tables the alert service adds to the SQL node.
pub const ALERT_TABLES: [&str; 3] = ["alerts", "alert_instances", "alert_errors"];

/// How the alert service runs; every field but `dir` and `state_path` has
/// a working default.
#[derive(Debug, Clone)]
pub struct AlertsConfig {
    /// The watched directory of `*.toml` definitions (and `routes.toml`).
    pub dir: PathBuf,
    /// The SQLite file holding state; SQL nodes sharing it share the alerts.
    pub state_path: PathBuf,
    /// This node's name in the lease (unique among nodes sharing the file).
    pub node_id: String,
    /// How often the scheduler looks for due alerts and re-reads the directory.
    pub poll: Duration,
    /// Below this fraction of machines answering for a table an alert
    /// reads, the alert is in "no data" (alerts may override it).
    pub min_completeness: f64,
    /// How long the lease lasts without renewal; another node takes over
    /// this long after the holder dies.
    pub lease_ttl: Duration,
    /// How long cleared instances stay in `alert_instances`.
    pub retention: Duration,
    /// Distinct alert queries run at once.
    pub parallel_queries: usize,
    /// Reuse an answer for identical SQL in later passes while the
    /// generation is the same (within one pass it is always shared).
    pub reuse_answers: bool,
    /// How often refreshes that need not survive a crash exactly (an
    /// instance's `last_seen_ms`, details, an active instance's count) are
    /// written; fires, clears and pending counts are written at once.
    pub checkpoint_every: Duration,
}

impl AlertsConfig {
    pub fn new(dir: impl Into<PathBuf>, state_path: impl Into<PathBuf>) -> Self {
        AlertsConfig {
            dir: dir.into(),
            state_path: state_path.into(),
            node_id: format!("node-{}", std::process::id()),
            poll: Duration::from_secs(1),
            min_completeness: 0.5,
            lease_ttl: Duration::from_secs(10),
            retention: Duration::from_secs(24 * 3600),
            parallel_queries: 4,
            reuse_answers: true,
            checkpoint_every: Duration::from_secs(60),
        }
    }
}

/// What one scheduler pass did (for tests and the benchmark).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassReport {
    pub leader: bool,
    /// Alert iterations run.
    pub iterations: usize,
    /// Distinct queries executed (identical SQL shares one).
    pub queries: usize,
    pub events: usize,
    /// Time spent running the queries (and turning answers into rows).
    pub query_time: Duration,
    /// Time spent in the state machine (and building notifications).
    pub step_time: Duration,
    /// Time spent committing to the store.
    pub commit_time: Duration,
}

/// The state the console and the alert tables show.
#[derive(Debug, Default, Clone)]
pub(crate) struct Snapshot {
    pub(crate) definitions: BTreeMap<String, AlertDefinition>,
    pub(crate) states: BTreeMap<String, AlertState>,
    pub(crate) errors: Vec<DefinitionError>,
    pub(crate) leader: Option<String>,
}

pub(crate) struct Inner {
    pub(crate) node: Arc<SqlNode>,
    pub(crate) config: AlertsConfig,
    pub(crate) store: Store,
    definitions: Mutex<DefinitionSet>,
    pub(crate) snapshot: Mutex<Snapshot>,
    /// Bumped on every visible change; the console's SSE streams follow it.
    pub(crate) updates: broadcast::Sender<()>,
    leader: AtomicBool,
    deliver_now: Notify,
    http: reqwest::Client,
    /// Last answers by SQL text, valid for one generation id.
    cache: Mutex<(u64, BTreeMap<String, Arc<Evaluation>>)>,
    /// When each (alert, route) that re-sends its active instances
    /// (Alertmanager) last had them queued.
    resent: Mutex<BTreeMap<(String, String), i64>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A running alert service; dropping it stops the scheduler.
#[derive(Debug)]
pub struct AlertService {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for AlertService {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One query's answer, shared by every alert with the same SQL.
#[derive(Debug, Clone)]
struct Evaluation {
    observation: Observation,
    /// Lowest fraction of machines answering among the fleet tables read.
    completeness: f64,
    least_complete: Option<String>,
    generation: Option<u64>,
}

/// Fraction of expected machines that answered for `table`.
fn table_completeness(generation: &Generation, table: &str) -> f64 {
    let visibility = &generation.meta.visibility;
    let expected = visibility.machines_expected();
    match visibility.tables.get(table) {
        Some(s) if expected > 0 && s.machines_with_rows + s.machines_empty > 0 => {
            ((s.machines_with_rows + s.machines_empty) as f64 / expected as f64).min(1.0)
        }
        // Static tables come from the TLA itself, not from machines.
        _ if generation.tables.contains_key(table) => 1.0,
        _ => 0.0,
    }
}

/// Rows of an answer, keyed by their `*_key` columns.
pub fn rows_from_batches(
    batches: &[arrow::array::RecordBatch],
    schema: &arrow::datatypes::Schema,
) -> std::result::Result<Vec<Row>, String> {
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    // A filter over a big table answers in many small batches; converting
    // one batch costs a cast per column, so join them first.
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let joined =
        arrow::compute::concat_batches(&first.schema(), batches).map_err(|e| e.to_string())?;
    let values = fleetsql_model::json::batches_to_rows(std::slice::from_ref(&joined))
        .map_err(|e| e.to_string())?;
    Ok(values
        .into_iter()
        .map(|v| Row::from_values(&columns, v))
        .collect())
}

impl Inner {
    async fn evaluate(&self, sql: &str) -> Evaluation {
        let failed = |reason: String| Evaluation {
            observation: Observation::Failed(reason),
            completeness: 1.0,
            least_complete: None,
            generation: None,
        };
        let nodata = |reason: String, generation: Option<u64>| Evaluation {
            observation: Observation::NoData(reason),
            completeness: 0.0,
            least_complete: None,
            generation,
        };
        // The same SQL every iteration: parsed and planned once, while the
        // tables it reads keep their schemas.
        let prepared = match self.node.prepare(sql) {
            Ok(p) => p,
            Err(e) => return failed(e.to_string()),
        };
        let generation = match self.node.pin_prepared(&prepared).await {
            Ok(g) => g,
            Err(
                e @ (SqlError::UnknownTable { .. }
                | SqlError::NotYetCollected { .. }
                | SqlError::NoGeneration { .. }),
            ) => return nodata(e.to_string(), None),
            Err(e) => return failed(e.to_string()),
        };
        let mut completeness = 1.0;
        let mut least_complete = None;
        for table in prepared.fleet_tables() {
            let c = table_completeness(&generation, table);
            if c < completeness {
                completeness = c;
                least_complete = Some(table.clone());
            }
        }
        let id = generation.meta.id;
        match self.node.execute_prepared(&prepared, generation).await {
            Ok(output) => match rows_from_batches(&output.batches, &output.schema) {
                Ok(rows) => Evaluation {
                    observation: Observation::Rows(rows),
                    completeness,
                    least_complete,
                    generation: Some(id),
                },
                Err(e) => failed(e),
            },
            Err(e @ (SqlError::UnknownTable { .. } | SqlError::NotYetCollected { .. })) => {
                nodata(e.to_string(), Some(id))
            }
            Err(e) => failed(e.to_string()),
        }
    }

    /// Answers for every distinct SQL text, computing each once per
    /// generation.
    async fn evaluate_all(
        &self,
        sqls: BTreeSet<String>,
    ) -> (BTreeMap<String, Arc<Evaluation>>, usize) {
        let current = self.node.current().meta.id;
        let mut answers = BTreeMap::new();
        let mut todo = Vec::new();
        {
            let mut cache = self.cache.lock();
            if cache.0 != current || !self.config.reuse_answers {
                *cache = (current, BTreeMap::new());
            }
            for sql in sqls {
                match cache.1.get(&sql) {
                    Some(e) => {
                        answers.insert(sql, e.clone());
                    }
                    None => todo.push(sql),
                }
            }
        }
        let ran = todo.len();
        let computed: Vec<(String, Arc<Evaluation>)> = futures::stream::iter(todo)
            .map(|sql| async move {
                // Shared, not copied: an answer can hold thousands of rows.
                let e = Arc::new(self.evaluate(&sql).await);
                (sql, e)
            })
            .buffer_unordered(self.config.parallel_queries.max(1))
            .collect()
            .await;
        let current = self.node.current().meta.id;
        let mut cache = self.cache.lock();
        if cache.0 != current {
            // A generation arrived while the queries ran.
            *cache = (current, BTreeMap::new());
        }
        for (sql, e) in computed {
            // Only answers of the current generation are reused.
            if matches!(e.observation, Observation::Rows(_)) && e.generation == Some(current) {
                cache.1.insert(sql.clone(), e.clone());
            }
            answers.insert(sql, e);
        }
        (answers, ran)
    }

    fn reload_states(&self) {
        match self.store.load() {
            Ok(states) => self.snapshot.lock().states = states,
            Err(e) => tracing::warn!(error = %e, "cannot read alert state"),
        }
    }

    /// One scheduler pass at `now`, its writes reported to the node's
    /// store health: every pass writes (the lease at least), so a pass
    /// that works after failures is writing resumed. A failed pass left
    /// memory as the store has it (see `reload_states`); the next pass
    /// runs the same iterations again.
    async fn pass(&self, now: i64) -> Result<PassReport> {
        let result = self.pass_once(now).await;
        match &result {
            Ok(_) => self.store_ok(),
            Err(e) => self.store_failed(e),
        }
        result
    }

    fn store_path(&self) -> String {
        self.config.state_path.display().to_string()
    }

    fn store_ok(&self) {
        let path = self.store_path();
        if self.node.stores().write_ok(STORE, &path) == StoreChange::Recovered {
            tracing::info!(path = %path, "alert state written again");
        }
    }

    /// Reports a store error (others, such as a failed query, are not the
    /// store's). Logged once per run of failures; each retry at debug.
    fn store_failed(&self, e: &AlertError) {
        if !matches!(e, AlertError::Store { .. }) {
            return;
        }
        let path = self.store_path();
        let reason = store_reason(e);
        match self.node.stores().write_failed(STORE, &path, &reason) {
            StoreChange::Failing => tracing::error!(
                path = %path,
                error = %e,
                "cannot write the alert state; alerts neither fire nor clear until it can, retried every pass"
            ),
            _ => tracing::debug!(error = %e, "alert state still not written"),
        }
    }

    /// One scheduler pass at `now`: re-read definitions, hold the lease,
    /// run the due alerts.
    async fn pass_once(&self, now: i64) -> Result<PassReport> {
        let (definitions, errors, routes_changed, routes) = {
            let mut set = self.definitions.lock();
            let changed = set.scan(now);
            (
                set.definitions(),
                set.errors(),
                changed,
                set.routes().clone(),
            )
        };
        let was_leader = self.leader.load(Ordering::SeqCst);
        let leader = self
            .store
            .acquire_lease(&self.config.node_id, now, self.config.lease_ttl)?;
        self.leader.store(leader, Ordering::SeqCst);
        if leader && !was_leader {
            tracing::info!(node = %self.config.node_id, "holding the alert lease; running alerts here");
            self.reload_states();
        }
        let holder = if leader {
            Some(self.config.node_id.clone())
        } else {
            self.store.lease_holder(now).ok().flatten()
        };
        {
            let mut snapshot = self.snapshot.lock();
            snapshot.definitions = definitions.clone();
            snapshot.errors = errors;
            snapshot.leader = holder;
        }
        if !leader {
            if was_leader {
                tracing::warn!(node = %self.config.node_id, "lost the alert lease; another node runs the alerts");
            }
            self.reload_states();
            if routes_changed {
                let _ = self.updates.send(());
            }
            return Ok(PassReport::default());
        }
        if routes_changed {
            // Alerts whose file is gone stop and are forgotten.
            let stale: Vec<String> = self
                .snapshot
                .lock()
                .states
                .keys()
                .filter(|name| !definitions.contains_key(*name))
                .cloned()
                .collect();
            for name in stale {
                self.store.forget(&name)?;
                self.snapshot.lock().states.remove(&name);
            }
        }

        let due: Vec<&AlertDefinition> = {
            let snapshot = self.snapshot.lock();
            definitions
                .values()
                .filter(|d| {
                    snapshot
                        .states
                        .get(&d.name)
                        .and_then(|s| s.last_run_ms)
                        .is_none_or(|last| now - last >= d.every.as_millis() as i64)
                })
                .collect()
        };
        let mut report = PassReport {
            leader: true,
            ..Default::default()
        };
        if due.is_empty() {
            if routes_changed {
                let _ = self.updates.send(());
            }
            return Ok(report);
        }
        let sqls: BTreeSet<String> = due.iter().map(|d| d.sql.clone()).collect();
        let started = Instant::now();
        let (answers, ran) = self.evaluate_all(sqls).await;
        report.query_time = started.elapsed();
        report.queries = ran;

        let mut notified = false;
        for def in due {
            let Some(answer) = answers.get(&def.sql) else {
                continue;
            };
            let threshold = def.min_completeness.unwrap_or(self.config.min_completeness);
            let too_incomplete = match &answer.observation {
                Observation::Rows(_) if answer.completeness < threshold => {
                    Some(Observation::NoData(format!(
                        "only {:.0}% of machines answered for `{}` (needs {:.0}%)",
                        answer.completeness * 100.0,
                        answer.least_complete.as_deref().unwrap_or("?"),
                        threshold * 100.0
                    )))
                }
                _ => None,
            };
            let observation = too_incomplete.as_ref().unwrap_or(&answer.observation);
            if let Observation::Failed(reason) = &observation {
                tracing::warn!(alert = %def.name, error = %reason, "alert query failed; nothing fires or clears");
            }
            let timing = Timing {
                fire_after: def.fire_after,
                clear_after: def.clear_after,
            };
            let started = Instant::now();
            let mut snapshot = self.snapshot.lock();
            // Stepped in place (no copy of every instance per iteration);
            // if the commit does not happen, the state is reloaded from
            // the store, so memory never runs ahead of it.
            let mut state = snapshot
                .states
                .remove(&def.name)
                .unwrap_or_else(|| AlertState::new(&def.name));
            let mut outcome = state.step_shared(timing, now, observation);
            if answer.generation.is_some() {
                state.last_generation = answer.generation;
            }
            outcome
                .removed
                .extend(state.prune(now, self.config.retention));
            let events: Vec<Value> = outcome
                .events
                .iter()
                .filter(|e| e.kind != EventKind::NoData || def.notify_nodata)
                .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
                .collect();
            let mut notifications = Vec::new();
            let batch = |events: Vec<Value>| {
                json!({
                    "alert": def.name,
                    "severity": def.severity.as_str(),
                    "description": def.description,
                    "procedure": def.procedure,
                    "node": self.config.node_id,
                    "every_ms": def.every.as_millis() as u64,
                    "events": events,
                })
            };
            if !events.is_empty() {
                let payload = batch(events);
                for route in def.routes.iter().filter(|r| *r != CONSOLE_ROUTE) {
                    notifications.push((route.clone(), payload.clone()));
                }
            }
            // Routes that forget an alert not sent again in time get every
            // active instance again, through the outbox like any batch.
            let mut resent = Vec::new();
            for route in &def.routes {
                let Some(every) = routes.get(route).and_then(RouteConfig::resend_every) else {
                    continue;
                };
                let slot = (def.name.clone(), route.clone());
                let due = self
                    .resent
                    .lock()
                    .get(&slot)
                    .is_none_or(|at| now - at >= every.as_millis() as i64);
                if !due || state.active().next().is_none() {
                    continue;
                }
                let active: Vec<Value> = state
                    .active()
                    .map(|i| {
                        json!({
                            "kind": EventKind::Fired.as_str(),
                            "alert": def.name,
                            "key": i.key,
                            "details": i.details,
                            "at_ms": now,
                            "fired_at_ms": i.fired_at_ms,
                        })
                    })
                    .collect();
                let mut payload = batch(active);
                payload["resend"] = json!(true);
                notifications.push((route.clone(), payload));
                resent.push(slot);
            }
            let checkpoint = state.checkpointed_ms.is_none_or(|at| {
                now.saturating_sub(at) >= self.config.checkpoint_every.as_millis() as i64
            });
            let mut changed: Vec<&String> = outcome.changed.iter().collect();
            if checkpoint {
                changed.extend(state.unsaved.iter());
            }
            let removed: Vec<&String> = outcome.removed.iter().collect();
            report.step_time += started.elapsed();
            let started = Instant::now();
            let committed = self.store.commit(
                Some(&self.config.node_id),
                now,
                &state,
                &changed,
                &removed,
                &notifications,
            );
            report.commit_time += started.elapsed();
            let started = Instant::now();
            match committed {
                Ok(true) => {}
                Ok(false) => {
                    drop(snapshot);
                    tracing::warn!(node = %self.config.node_id, "lease lost during an iteration; its result is dropped");
                    self.leader.store(false, Ordering::SeqCst);
                    self.reload_states();
                    return Ok(report);
                }
                Err(e) => {
                    drop(snapshot);
                    self.reload_states();
                    return Err(e);
                }
            }
            if checkpoint {
                state.unsaved.clear();
                state.checkpointed_ms = Some(now);
            }
            self.resent
                .lock()
                .extend(resent.into_iter().map(|slot| (slot, now)));
            for event in &outcome.events {
                tracing::info!(alert = %def.name, kind = event.kind.as_str(), key = %serde_json::Value::Object(event.key.clone()), "alert event");
            }
            report.iterations += 1;
            report.events += outcome.events.len();
            notified |= !notifications.is_empty();
            snapshot.states.insert(def.name.clone(), state);
            report.step_time += started.elapsed();
        }
        if notified {
            self.deliver_now.notify_one();
        }
        if report.events > 0 {
            let cutoff = now.saturating_sub(self.config.retention.as_millis() as i64);
            self.store.prune_history(cutoff)?;
        }
        let _ = self.updates.send(());
        Ok(report)
    }

    /// Writes every alert's unsaved refreshes (clean shutdown).
    fn checkpoint_all(&self, now: i64) -> Result<()> {
        let mut snapshot = self.snapshot.lock();
        for state in snapshot.states.values_mut() {
            if state.unsaved.is_empty() {
                continue;
            }
            let keys: Vec<&String> = state.unsaved.iter().collect();
            if !self
                .store
                .commit(Some(&self.config.node_id), now, state, &keys, &[], &[])?
            {
                return Ok(());
            }
            state.unsaved.clear();
            state.checkpointed_ms = Some(now);
        }
        Ok(())
    }

    /// Delivers due outbox entries (only while holding the lease).
    async fn deliver(&self) -> usize {
        if !self.leader.load(Ordering::SeqCst) {
            return 0;
        }
        let now = now_ms();
        let pending = match self.store.pending(now, 64) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the notification outbox");
                return 0;
            }
        };
        let routes: BTreeMap<String, RouteConfig> = self.definitions.lock().routes().clone();
        let results: Vec<(i64, u32, std::result::Result<(), String>)> =
            futures::stream::iter(pending)
                .map(|entry| {
                    let route = routes.get(&entry.route).cloned();
                    async move {
                        let mut payload = entry.payload.clone();
                        payload["id"] = json!(entry.id);
                        // A re-send delivered after a newer batch of its
                        // alert (a clear, say) would undo it: it is dropped.
                        if payload["resend"] == json!(true)
                            && self
                                .store
                                .has_newer(entry.id, &entry.alert, &entry.route)
                                .unwrap_or(false)
                        {
                            return (entry.id, entry.attempts, Ok(()));
                        }
                        let result = match route {
                            Some(route) => route.deliver(&payload, &self.http).await,
                            None => Err(format!(
                                "route `{}` is no longer configured in routes.toml",
                                entry.route
                            )),
                        };
                        (entry.id, entry.attempts, result)
                    }
                })
                .buffer_unordered(8)
                .collect()
                .await;
        let mut delivered = 0;
        for (id, attempts, result) in results {
            let stored = match result {
                Ok(()) => {
                    delivered += 1;
                    self.store.delivered(id, now_ms())
                }
                Err(error) => {
                    let wait = 1000i64 << attempts.min(8);
                    tracing::warn!(
                        notification = id,
                        error,
                        retry_in_ms = wait,
                        "notification not delivered; will retry"
                    );
                    self.store.failed(id, &error, now_ms() + wait)
                }
            };
            match stored {
                Ok(()) => self.store_ok(),
                Err(e) => {
                    // Delivered but not recorded: sent again after a
                    // restart (at least once, as for a crash here).
                    tracing::warn!(error = %e, "cannot record a delivery");
                    self.store_failed(&e);
                }
            }
        }
        delivered
    }
}

impl AlertService {
    /// Opens the state, registers the alert tables on `node` and starts the
    /// scheduler and the delivery loop.
    pub fn start(node: Arc<SqlNode>, config: AlertsConfig) -> Result<AlertService> {
        let service = Self::open(node, config)?;
        let mut service = service;
        let scheduler = service.inner.clone();
        service.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(scheduler.config.poll);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = scheduler.pass(now_ms()).await
                    && !matches!(e, AlertError::Store { .. })
                {
                    // Store errors are logged by `pass` once per outage.
                    tracing::warn!(error = %e, "alert pass failed");
                }
            }
        }));
        let delivery = service.inner.clone();
        service.tasks.push(tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(
                    Duration::from_millis(500),
                    delivery.deliver_now.notified(),
                )
                .await;
                while delivery.deliver().await > 0 {}
            }
        }));
        Ok(service)
    }

    /// Like `start` but runs nothing by itself: the caller drives passes
    /// with [`AlertService::run_pass`] and [`AlertService::deliver_pending`]
    /// (tests, benchmarks, `alerts check`).
    pub fn open(node: Arc<SqlNode>, config: AlertsConfig) -> Result<AlertService> {
        let store = Store::open(&config.state_path)?;
        node.stores()
            .register(STORE, &config.state_path.display().to_string());
        let states = store.load()?;
        let (updates, _) = broadcast::channel(64);
        let inner = Arc::new(Inner {
            node: node.clone(),
            definitions: Mutex::new(DefinitionSet::new(&config.dir)),
            config,
            store,
            snapshot: Mutex::new(Snapshot {
                states,
                ..Default::default()
            }),
            updates,
            leader: AtomicBool::new(false),
            deliver_now: Notify::new(),
            http: reqwest::Client::new(),
            cache: Mutex::new((0, BTreeMap::new())),
            resent: Mutex::new(BTreeMap::new()),
        });
        tables::register(&node, &inner);
        Ok(AlertService {
            inner,
            tasks: Vec::new(),
        })
    }

    /// Runs one scheduler pass as if the time were `now_ms`.
    pub async fn run_pass(&self, now_ms: i64) -> Result<PassReport> {
        self.inner.pass(now_ms).await
    }

    /// Delivers every due notification once; returns how many went out.
    pub async fn deliver_pending(&self) -> usize {
        self.inner.deliver().await
    }

    /// The console: `GET /alerts` (page), `/alerts/api/state`,
    /// `POST /alerts/api/ack`, `GET /alerts/events` (SSE).
    pub fn router(&self) -> axum::Router {
        crate::console::router(self.inner.clone())
    }

    pub fn is_leader(&self) -> bool {
        self.inner.leader.load(Ordering::SeqCst)
    }

    /// Active instances of `alert` (for tests and tools).
    pub fn active_instances(&self, alert: &str) -> Vec<crate::state::Instance> {
        self.inner
            .snapshot
            .lock()
            .states
            .get(alert)
            .map(|s| s.active().cloned().collect())
            .unwrap_or_default()
    }

    pub fn state(&self, alert: &str) -> Option<AlertState> {
        self.inner.snapshot.lock().states.get(alert).cloned()
    }

    /// The most recently cleared instances, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<crate::store::HistoryEntry>> {
        self.inner.store.history(limit)
    }

    pub fn definition_errors(&self) -> Vec<DefinitionError> {
        self.inner.snapshot.lock().errors.clone()
    }

    /// Stops the loops, writes what is unsaved and hands the lease to
    /// another node at once.
    pub async fn shutdown(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        if self.is_leader() {
            if let Err(e) = self.inner.checkpoint_all(now_ms()) {
                tracing::warn!(error = %e, "cannot write the alert state at shutdown");
            }
            if let Err(e) = self.inner.store.release_lease(&self.inner.config.node_id) {
                tracing::warn!(error = %e, "cannot release the alert lease");
            }
        }
    }
}
