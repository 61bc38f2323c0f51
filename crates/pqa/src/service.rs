//! The query manager: registrations, shared running instances, publish
//! functions and topics, behind one cloneable handle.
//!
//! Identical statements (same normalized text) share one running engine
//! statement. A *registration* is a statement plus a publish function; its
//! id is a hash of both, so registering the same thing twice returns the
//! same id and topic (and counts a reference; delete drops one).
//!
//! With a store ([`PqaService::with_store`]) registrations are durable:
//! every registration, added reference, delete and requested webhook or
//! sink is written before it is answered, and a restarted node registers
//! each stored query again under its stored id, so clients subscribe to
//! the same id (and topic) as before. What the queries had computed does
//! not survive: windows, pattern states and the running max/min/avg of a
//! publish function start empty, and notification numbers start at 1.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::{Clock, Engine, EngineConfig, Output, StatementId};
use crate::error::{PqaError, Result};
use crate::parser;
use crate::sink::{Sink, SinkFactory, SinkTask, WebhookPolicy, WebhookSink, spawn_sink};
use crate::store::{Store, StoreObserver, StoredQuery};
use crate::stream::StreamStats;
use crate::topic::{Notification, SharedCache, Subscription, Topic};
use crate::value::Value;

/// What a registration publishes per trigger (the seed's ClientSideUpdateListener functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Publish {
    /// Every row of every trigger.
    #[default]
    All,
    /// Only the latest row of each trigger.
    Current,
    /// The latest row with each numeric column replaced by its maximum since registration.
    Max,
    /// Same with the minimum.
    Min,
    /// Same with the running average.
    Avg,
}

impl Publish {
    /// The name clients give (`all`, `current`, `max`, `min`, `avg`).
    pub fn as_str(self) -> &'static str {
        match self {
            Publish::All => "all",
            Publish::Current => "current",
            Publish::Max => "max",
            Publish::Min => "min",
            Publish::Avg => "avg",
        }
    }
}

impl std::str::FromStr for Publish {
    type Err = PqaError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "" | "all" => Publish::All,
            "current" => Publish::Current,
            "max" => Publish::Max,
            "min" => Publish::Min,
            "avg" => Publish::Avg,
            other => {
                return Err(PqaError::BadRequest(format!(
                    "unknown publish mode '{other}'"
                )));
            }
        })
    }
}

/// Service settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Engine settings (timestamp field, clock).
    pub engine: EngineConfig,
    /// Notifications a topic holds for slow subscribers before dropping them.
    pub topic_capacity: usize,
    /// How often [`PqaService::start_clock`] advances a wall clock.
    pub tick: Duration,
    /// Bounds on what clients may ask of this node.
    pub limits: Limits,
    /// Hosts a webhook may point at although they are loopback, private,
    /// link-local or unspecified addresses (see [`crate::sink::WebhookPolicy`]).
    /// Empty by default: webhooks reach public hosts only.
    pub webhook_allow_hosts: Vec<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            engine: EngineConfig::default(),
            topic_capacity: 1024,
            tick: Duration::from_millis(100),
            limits: Limits::default(),
            webhook_allow_hosts: Vec::new(),
        }
    }
}

/// What one client request may make this node hold or do. Each breach is
/// a [`PqaError::Limit`] (HTTP 400, XML-RPC fault 1) naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Nesting depth of an EPL statement (parentheses, chained operators,
    /// `not`/`every`); see [`parser::parse_limited`].
    pub max_epl_depth: usize,
    /// Element nesting of an XML-RPC call (`methodCall`, `params`, ...
    /// each `value`/`array`/`data` counts).
    pub max_xmlrpc_depth: usize,
    /// Bytes of a stream name.
    pub max_stream_name_len: usize,
    /// Streams this node knows (posted to or read by a statement); streams
    /// are never forgotten, so this bounds their memory.
    pub max_streams: usize,
    /// Distinct registrations (statement + publish function) on this node.
    pub max_registrations: usize,
    /// Live subscribers of all topics together: SSE and WebSocket clients
    /// and sinks (webhooks included).
    pub max_subscribers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_epl_depth: parser::DEFAULT_MAX_DEPTH,
            max_xmlrpc_depth: 64,
            max_stream_name_len: 128,
            max_streams: 4096,
            // The seed's load is ~10,000 persistent queries per node; a
            // registration costs a few KiB, so this bounds memory, not use.
            max_registrations: 16_384,
            max_subscribers: 4096,
        }
    }
}

/// The answer to a registration.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Registered {
    /// Registration id.
    pub id: String,
    /// Topic name.
    pub topic: String,
    /// Handles of the registration's sinks that have one (e.g. the XMPP
    /// pubsub node its results are published to).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<serde_json::Value>,
}

/// A registration as listed.
#[derive(Debug, Clone, Serialize)]
pub struct QueryInfo {
    /// Registration id.
    pub id: String,
    /// The statement as registered first.
    pub epl: String,
    /// Publish function.
    pub publish: Publish,
    /// Topic name.
    pub topic: String,
    /// How many registrations share it.
    pub refs: u32,
    /// Notifications published so far.
    pub notifications: u64,
    /// Live subscribers (SSE, WebSocket, sinks).
    pub subscribers: usize,
    /// Webhooks attached.
    pub webhooks: Vec<String>,
    /// When it was first registered (ms since the Unix epoch); kept across
    /// restarts of a node with a store.
    pub created_ms: i64,
    /// Why a stored registration does not run after a restart (its
    /// statement no longer compiles, a webhook is refused...). It is kept,
    /// listed and deletable; registering the same statement again retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a batch of events did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchResult {
    /// Events accepted.
    pub accepted: usize,
    /// Events refused.
    pub rejected: usize,
    /// The first few refusal reasons.
    pub errors: Vec<String>,
}

#[derive(Debug, Default)]
struct ColStat {
    max: f64,
    min: f64,
    sum: f64,
    n: u64,
}

#[derive(Debug)]
struct Reg {
    epl: String,
    publish: Publish,
    stmt: Option<StatementId>,
    refs: u32,
    topic: Topic,
    seq: u64,
    stats: HashMap<String, ColStat>,
    sinks: Vec<SinkTask>,
    /// Webhook URLs given at registration (the sinks made of them are in
    /// `sinks`), kept to be stored.
    webhooks: Vec<String>,
    /// Names of the requested sinks (`"sinks": [...]`).
    requested: Vec<String>,
    created_ms: i64,
    /// Set when a stored registration could not be restored whole.
    error: Option<String>,
    /// A stored publish function this version does not know, written back
    /// as it was (the registration does not run).
    unknown_publish: Option<String>,
}

impl Reg {
    fn stored(&self, id: &str) -> StoredQuery {
        StoredQuery {
            id: id.to_string(),
            epl: self.epl.clone(),
            publish: self
                .unknown_publish
                .clone()
                .unwrap_or_else(|| self.publish.as_str().to_string()),
            refs: self.refs,
            webhooks: self.webhooks.clone(),
            sinks: self.requested.clone(),
            created_ms: self.created_ms,
        }
    }
}

/// Writes `q`, when the service has a store.
fn store_put(store: &Option<Store>, q: &StoredQuery) -> Result<()> {
    store.as_ref().map_or(Ok(()), |s| s.put(q))
}

#[derive(Debug)]
struct State {
    engine: Engine,
    /// By id. A hash map: publishing looks a registration up for every
    /// notification, and with 10,000 registrations the sorted map's string
    /// comparisons took a quarter of the time (`list` sorts instead).
    regs: HashMap<String, Reg>,
    /// Running statement -> registrations fed by it.
    instances: HashMap<StatementId, Vec<String>>,
    by_text: HashMap<String, StatementId>,
    outputs: Vec<Output>,
    /// Durable registrations; written under this lock, so the file changes
    /// in the order the registrations do.
    store: Option<Store>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    config: ServiceConfig,
    webhook_policy: WebhookPolicy,
    factories: Mutex<Vec<Arc<dyn SinkFactory>>>,
}

/// The shared handle: engine + registrations + topics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PqaService {
    inner: Arc<Inner>,
}

/// Events per typed batch in [`PqaService::push_events`].
const BATCH_EVENTS: usize = 1024;

fn hash_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..8])
}

impl PqaService {
    /// A service with no queries.
    pub fn new(config: ServiceConfig) -> Self {
        let engine = Engine::new(config.engine.clone());
        PqaService {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    engine,
                    regs: HashMap::new(),
                    instances: HashMap::new(),
                    by_text: HashMap::new(),
                    outputs: Vec::new(),
                    store: None,
                }),
                webhook_policy: WebhookPolicy::allowing(&config.webhook_allow_hosts),
                config,
                factories: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A service whose registrations are kept in the SQLite file `path`
    /// (created if missing): every query stored there is registered again
    /// under its stored id, with its references, webhooks and requested
    /// sinks (those of factories added later attach when they are added).
    /// A stored query that no longer compiles is kept, logged and listed
    /// with its [`QueryInfo::error`], never dropped.
    ///
    /// A file that cannot be read is an error naming it and what to do, and
    /// is left as it is: the caller (a SQL node) does not start, rather than
    /// start without the queries and overwrite them. Call inside a tokio
    /// runtime, which the restored webhooks run on.
    pub fn with_store(config: ServiceConfig, path: &Path) -> Result<Self> {
        let (store, stored) = Store::open(path)?;
        let service = PqaService::new(config);
        {
            let mut st = service.inner.state.lock();
            let mut failed = 0usize;
            for q in stored {
                if let Some(error) = service.restore_locked(&mut st, q) {
                    failed += 1;
                    tracing::warn!(store = %path.display(), %error, "a stored persistent query does not run");
                }
            }
            tracing::info!(
                store = %path.display(),
                queries = st.regs.len(),
                failed,
                "persistent queries restored"
            );
            st.store = Some(store);
        }
        Ok(service)
    }

    /// The store's file, when the service keeps its registrations in one.
    pub fn store_path(&self) -> Option<std::path::PathBuf> {
        let st = self.inner.state.lock();
        st.store.as_ref().map(|s| s.path().to_path_buf())
    }

    /// Tells `observer` the outcome of every later write to the store (a
    /// registration, a reference added or dropped, a removal); without a
    /// store, nothing. A write that fails answers its request with the
    /// error and changes nothing, so the next write that works is the
    /// store taking writes again.
    pub fn observe_store(&self, observer: Arc<dyn StoreObserver>) {
        if let Some(store) = self.inner.state.lock().store.as_mut() {
            store.set_observer(observer);
        }
    }

    /// Registers a stored query again under its stored id (not the hash of
    /// its text, which a newer normalizer may compute differently). Returns
    /// the error the registration keeps, if any.
    fn restore_locked(&self, st: &mut State, q: StoredQuery) -> Option<String> {
        let limits = &self.inner.config.limits;
        let mut errors = Vec::new();
        let mut unknown_publish = None;
        let (publish, stmt) = match q.publish.parse::<Publish>() {
            Ok(publish) => {
                let compiled = parser::normalize(&q.epl).and_then(|normalized| {
                    let ast = parser::parse_limited(&q.epl, limits.max_epl_depth)?;
                    compile_locked(st, &normalized, &ast, limits)
                });
                match compiled {
                    Ok((stmt, _)) => (publish, stmt),
                    Err(e) => {
                        errors.push(format!("the statement no longer compiles: {e}"));
                        (publish, None)
                    }
                }
            }
            // Not run at all: running it with another function would
            // publish something nobody asked for.
            Err(e) => {
                errors.push(format!("stored publish function: {e}"));
                unknown_publish = Some(q.publish.clone());
                (Publish::All, None)
            }
        };
        let mut reg = Reg {
            epl: q.epl,
            publish,
            stmt,
            refs: q.refs.max(1),
            topic: Topic::for_query(&q.id, self.inner.config.topic_capacity),
            seq: 0,
            stats: HashMap::new(),
            sinks: Vec::new(),
            webhooks: q.webhooks,
            requested: q.sinks,
            created_ms: q.created_ms,
            error: None,
            unknown_publish,
        };
        for url in reg.webhooks.clone() {
            match WebhookSink::with_policy(&url, &self.inner.webhook_policy) {
                Ok(sink) => attach(&mut reg, Arc::new(sink)),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if let Some(s) = stmt {
            st.instances.entry(s).or_default().push(q.id.clone());
        }
        if !errors.is_empty() {
            reg.error = Some(format!("query {}: {}", q.id, errors.join("; ")));
        }
        let error = reg.error.clone();
        st.regs.insert(q.id, reg);
        error
    }

    /// Gives every registration, present and future, the sinks `factory`
    /// makes for it.
    pub fn add_sink_factory(&self, factory: Arc<dyn SinkFactory>) {
        let mut st = self.inner.state.lock();
        for (id, reg) in st.regs.iter_mut() {
            // A requested factory serves only the registrations naming it
            // (restored ones get their factories this way, at start).
            if factory
                .requested_as()
                .is_some_and(|name| !reg.requested.iter().any(|r| r == name))
            {
                continue;
            }
            for sink in factory.sinks_for(id, &reg.epl) {
                attach(reg, sink);
            }
        }
        self.inner.factories.lock().push(factory);
    }

    /// Registers a statement (or adds a reference to an identical one) and,
    /// if given, attaches a webhook to its topic.
    pub fn register(
        &self,
        epl: &str,
        publish: Publish,
        webhook: Option<&str>,
    ) -> Result<Registered> {
        self.register_with_sinks(epl, publish, webhook, &[])
    }

    /// [`PqaService::register`], also attaching the sinks of the factories
    /// named in `sinks` (see [`SinkFactory::requested_as`]). An unknown
    /// name is refused before anything is registered.
    pub fn register_with_sinks(
        &self,
        epl: &str,
        publish: Publish,
        webhook: Option<&str>,
        sinks: &[String],
    ) -> Result<Registered> {
        let factories: Vec<Arc<dyn SinkFactory>> = self.inner.factories.lock().clone();
        for wanted in sinks {
            if !factories
                .iter()
                .any(|f| f.requested_as() == Some(wanted.as_str()))
            {
                let known: Vec<&str> = factories.iter().filter_map(|f| f.requested_as()).collect();
                return Err(PqaError::BadRequest(format!(
                    "no sink named `{wanted}`; configured sinks: {known:?}"
                )));
            }
        }
        let wanted = |f: &Arc<dyn SinkFactory>| {
            f.requested_as()
                .is_none_or(|name| sinks.iter().any(|s| s == name))
        };
        let limits = &self.inner.config.limits;
        let normalized = parser::normalize(epl)?;
        let ast = parser::parse_limited(epl, limits.max_epl_depth)?;
        let sink = webhook
            .map(|url| WebhookSink::with_policy(url, &self.inner.webhook_policy))
            .transpose()?;
        let id = hash_id(&[&normalized, &format!("{publish:?}")]);
        let mut st = self.inner.state.lock();
        let st = &mut *st;
        if sink.is_some() {
            check_subscribers(st, limits)?;
        }
        if let Some(reg) = st.regs.get(&id) {
            // A stored registration whose statement failed to compile at
            // start: this registration is the chance to run it (or to say
            // why not). One kept for another reason (a refused webhook)
            // runs already.
            let failed = reg.stmt.is_none() && reg.error.is_some();
            let mut stored = reg.stored(&id);
            stored.refs += 1;
            add_new(&mut stored.webhooks, webhook.into_iter());
            add_new(&mut stored.sinks, sinks.iter().map(String::as_str));
            let revived = if failed {
                Some(compile_locked(st, &normalized, &ast, limits)?)
            } else {
                None
            };
            if let Err(e) = store_put(&st.store, &stored) {
                if let Some((Some(stmt), true)) = revived {
                    uncompile_locked(st, stmt);
                }
                return Err(e);
            }
            let Some(reg) = st.regs.get_mut(&id) else {
                return Err(PqaError::UnknownQuery(id));
            };
            if let Some((stmt, _)) = revived {
                reg.stmt = stmt;
                reg.error = None;
                if let Some(s) = stmt {
                    st.instances.entry(s).or_default().push(id.clone());
                }
            }
            reg.refs = stored.refs;
            reg.webhooks = stored.webhooks;
            reg.requested = stored.sinks;
            if let Some(s) = sink {
                attach(reg, Arc::new(s));
            }
            // Requested sinks the earlier registrations did not ask for.
            for factory in factories.iter().filter(|f| f.requested_as().is_some()) {
                if wanted(factory) {
                    for sink in factory.sinks_for(&id, epl) {
                        attach(reg, sink);
                    }
                }
            }
            return Ok(Registered {
                id,
                topic: reg.topic.name().to_string(),
                sinks: sink_handles(reg),
            });
        }
        if st.regs.len() >= limits.max_registrations {
            return Err(PqaError::Limit {
                what: "the number of registrations on this node".to_string(),
                max: limits.max_registrations,
                setting: "limits.max_registrations",
            });
        }
        let (stmt, created) = compile_locked(st, &normalized, &ast, limits)?;
        let mut requested = Vec::new();
        add_new(&mut requested, sinks.iter().map(String::as_str));
        let mut reg = Reg {
            epl: epl.to_string(),
            publish,
            stmt,
            refs: 1,
            topic: Topic::for_query(&id, self.inner.config.topic_capacity),
            seq: 0,
            stats: HashMap::new(),
            sinks: Vec::new(),
            webhooks: webhook.map(str::to_string).into_iter().collect(),
            requested,
            created_ms: crate::engine::wall_ms(),
            error: None,
            unknown_publish: None,
        };
        if let Err(e) = store_put(&st.store, &reg.stored(&id)) {
            if let (Some(stmt), true) = (stmt, created) {
                uncompile_locked(st, stmt);
            }
            return Err(e);
        }
        if let Some(s) = sink {
            attach(&mut reg, Arc::new(s));
        }
        for factory in factories.iter().filter(|f| wanted(f)) {
            for sink in factory.sinks_for(&id, epl) {
                attach(&mut reg, sink);
            }
        }
        if let Some(s) = stmt {
            st.instances.entry(s).or_default().push(id.clone());
        }
        let sinks = sink_handles(&reg);
        let topic = reg.topic.name().to_string();
        st.regs.insert(id.clone(), reg);
        Ok(Registered { id, topic, sinks })
    }

    /// Attaches any sink (XMPP, MQTT...) to a registration's topic. Not
    /// stored: after a restart, whoever attached it attaches it again
    /// (factories, [`PqaService::add_sink_factory`], do so by themselves).
    pub fn add_sink(&self, id: &str, sink: Arc<dyn Sink>) -> Result<()> {
        let mut st = self.inner.state.lock();
        let reg = st
            .regs
            .get_mut(id)
            .ok_or_else(|| PqaError::UnknownQuery(id.to_string()))?;
        attach(reg, sink);
        Ok(())
    }

    /// Drops one reference; the registration (and, when unused, the running
    /// statement) goes away with the last. Returns the references left.
    pub fn delete(&self, id: &str) -> Result<u32> {
        let mut st = self.inner.state.lock();
        let st = &mut *st;
        let reg = st
            .regs
            .get_mut(id)
            .ok_or_else(|| PqaError::UnknownQuery(id.to_string()))?;
        if reg.refs > 1 {
            let mut stored = reg.stored(id);
            stored.refs -= 1;
            store_put(&st.store, &stored)?;
            reg.refs -= 1;
            return Ok(reg.refs);
        }
        if let Some(store) = &st.store {
            store.remove(id)?;
        }
        let Some(reg) = st.regs.remove(id) else {
            return Ok(0);
        };
        if let Some(s) = reg.stmt {
            let left = st.instances.get_mut(&s).map(|v| {
                v.retain(|x| x != id);
                v.len()
            });
            if left == Some(0) {
                st.instances.remove(&s);
                uncompile_locked(st, s);
            }
        }
        for task in &reg.sinks {
            task.sink().query_deleted();
        }
        // Dropping the topic's sender closes SSE/WebSocket subscribers with "query deleted".
        drop(reg);
        Ok(0)
    }

    /// All registrations.
    pub fn list(&self) -> Vec<QueryInfo> {
        let st = self.inner.state.lock();
        let mut list: Vec<QueryInfo> = st
            .regs
            .iter()
            .map(|(id, r)| QueryInfo {
                id: id.clone(),
                epl: r.epl.clone(),
                publish: r.publish,
                topic: r.topic.name().to_string(),
                refs: r.refs,
                notifications: r.seq,
                subscribers: r.topic.subscriber_count(),
                webhooks: r.sinks.iter().map(|s| s.name().to_string()).collect(),
                created_ms: r.created_ms,
                error: r.error.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Subscribes a client (SSE, WebSocket) to a registration's topic, if
    /// the node has room for one more subscriber.
    pub fn subscribe(&self, id: &str) -> Result<Subscription> {
        let st = self.inner.state.lock();
        check_subscribers(&st, &self.inner.config.limits)?;
        st.regs
            .get(id)
            .map(|r| r.topic.subscribe())
            .ok_or_else(|| PqaError::UnknownQuery(id.to_string()))
    }

    /// The webhook policy of this node (from
    /// [`ServiceConfig::webhook_allow_hosts`]).
    pub fn webhook_policy(&self) -> &WebhookPolicy {
        &self.inner.webhook_policy
    }

    /// The limits of this node.
    pub fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    /// Events posted by a client: like [`PqaService::push_events`], after
    /// checking the stream name against the stream limits.
    pub fn accept_events<'a, I>(&self, stream: &str, events: I) -> Result<BatchResult>
    where
        I: IntoIterator<Item = &'a serde_json::Value>,
    {
        let mut st = self.inner.state.lock();
        check_stream(&st.engine, stream, &self.inner.config.limits)?;
        Ok(push_events_locked(&mut st, stream, events))
    }

    /// A registration's topic, to subscribe to.
    pub fn topic(&self, id: &str) -> Option<Topic> {
        self.inner
            .state
            .lock()
            .regs
            .get(id)
            .map(|r| r.topic.clone())
    }

    /// Streams some registered statement reads (see [`Engine::listened_streams`]).
    pub fn listened_streams(&self) -> Vec<String> {
        self.inner.state.lock().engine.listened_streams()
    }

    /// Number of running engine statements (shared instances count once).
    pub fn running_statements(&self) -> usize {
        self.inner.state.lock().engine.statement_count()
    }

    /// Pushes one JSON object as an event of `stream`.
    pub fn push_event(&self, stream: &str, json: &serde_json::Value) -> Result<()> {
        let mut st = self.inner.state.lock();
        let st = &mut *st;
        let mut outputs = std::mem::take(&mut st.outputs);
        let r = st.engine.push_json_into(stream, json, &mut outputs);
        publish(st, &mut outputs);
        st.outputs = outputs;
        r
    }

    /// Pushes many events of one stream under one lock (e.g. a table's rows
    /// of a new fleet generation). Bad events are counted and skipped.
    pub fn push_events<'a, I>(&self, stream: &str, events: I) -> BatchResult
    where
        I: IntoIterator<Item = &'a serde_json::Value>,
    {
        let mut st = self.inner.state.lock();
        push_events_locked(&mut st, stream, events)
    }

    /// Pushes already typed rows (column name, value) as events of `stream`.
    pub fn push_rows(&self, stream: &str, rows: &[Vec<(Arc<str>, Value)>]) -> BatchResult {
        let mut res = BatchResult::default();
        let mut st = self.inner.state.lock();
        let st = &mut *st;
        let mut outputs = std::mem::take(&mut st.outputs);
        let h = st.engine.stream(stream);
        for r in rows {
            match st.engine.push_values(h, r, &mut outputs) {
                Ok(()) => res.accepted += 1,
                Err(e) => {
                    res.rejected += 1;
                    if res.errors.len() < 10 {
                        res.errors.push(e.to_string());
                    }
                }
            }
        }
        publish(st, &mut outputs);
        st.outputs = outputs;
        res
    }

    /// Moves the engine clock to `to` (ms) and publishes what became due.
    pub fn advance_time(&self, to: i64) {
        let mut st = self.inner.state.lock();
        let st = &mut *st;
        let mut outputs = std::mem::take(&mut st.outputs);
        st.engine.advance_time_into(to, &mut outputs);
        publish(st, &mut outputs);
        st.outputs = outputs;
    }

    /// Engine time (ms).
    pub fn now(&self) -> i64 {
        self.inner.state.lock().engine.now()
    }

    /// Per-stream event counters and bad-input counts.
    pub fn stream_stats(&self) -> Vec<(String, StreamStats)> {
        self.inner.state.lock().engine.stream_stats()
    }

    /// With a wall clock, a task that advances time every `tick` so time
    /// windows expire without new events. Stops when the returned guard drops.
    pub fn start_clock(&self) -> Option<ClockTask> {
        if self.inner.config.engine.clock != Clock::Wall {
            return None;
        }
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let svc = self.clone();
        let tick = self.inner.config.tick;
        let handle = rt.spawn(async move {
            let mut iv = tokio::time::interval(tick);
            loop {
                iv.tick().await;
                svc.advance_time(crate::engine::wall_ms());
            }
        });
        Some(ClockTask { handle })
    }
}

/// The wall-clock ticker; dropping it stops the task.
#[derive(Debug)]
pub struct ClockTask {
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for ClockTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// [`PqaService::push_events`] under the state lock.
fn push_events_locked<'a, I>(st: &mut State, stream: &str, events: I) -> BatchResult
where
    I: IntoIterator<Item = &'a serde_json::Value>,
{
    let mut res = BatchResult::default();
    let mut outputs = std::mem::take(&mut st.outputs);
    let h = st.engine.stream(stream);
    let mut events = events.into_iter().peekable();
    let mut chunk = Vec::with_capacity(BATCH_EVENTS);
    while events.peek().is_some() {
        // Typed batches of bounded size: kernels read them in place, and
        // notifications go out after each batch rather than at the end.
        chunk.clear();
        chunk.extend(events.by_ref().take(BATCH_EVENTS));
        let (batch, errors) = st.engine.prepare_batch(h, chunk.iter().copied());
        res.accepted += batch.len();
        res.rejected += errors.len();
        for (_, e) in errors {
            if res.errors.len() < 10 {
                res.errors.push(e.to_string());
            }
        }
        st.engine.push_batch(&batch, &mut outputs);
        publish(st, &mut outputs);
    }
    st.outputs = outputs;
    res
}

/// The running statement for `ast`: the one already running its text, or a
/// new one (`true`) after checking its streams against the limits.
fn compile_locked(
    st: &mut State,
    normalized: &str,
    ast: &parser::ast::Statement,
    limits: &Limits,
) -> Result<(Option<StatementId>, bool)> {
    if let Some(s) = st.by_text.get(normalized) {
        return Ok((Some(*s), false));
    }
    let mut names = Vec::new();
    ast_streams(ast, &mut names);
    for name in names {
        check_stream(&st.engine, name, limits)?;
    }
    let s = st.engine.register_parsed(ast)?;
    if let Some(s) = s {
        st.by_text.insert(normalized.to_string(), s);
    }
    Ok((s, s.is_some()))
}

/// Stops a running statement no registration uses any more.
fn uncompile_locked(st: &mut State, s: StatementId) {
    st.by_text.retain(|_, v| *v != s);
    st.engine.remove(s);
}

/// Appends the items of `new` that `list` lacks.
fn add_new<'a>(list: &mut Vec<String>, new: impl Iterator<Item = &'a str>) {
    for item in new {
        if !list.iter().any(|x| x == item) {
            list.push(item.to_string());
        }
    }
}

/// Stream names a statement reads or writes, for the stream limits.
fn ast_streams<'a>(st: &'a parser::ast::Statement, out: &mut Vec<&'a str>) {
    use parser::ast::{Body, From};
    if let Some(into) = &st.insert_into {
        out.push(&into.name);
    }
    match &st.body {
        Body::CreateSchema(c) => out.push(&c.name.name),
        Body::Select(sel) => match &sel.from {
            From::Streams(specs) => out.extend(specs.iter().map(|s| s.name.name.as_str())),
            From::Pattern(p, _) => pattern_streams(p, out),
        },
    }
}

/// Recursion is bounded: the parser refused patterns deeper than the limit.
fn pattern_streams<'a>(p: &'a parser::ast::PatternExpr, out: &mut Vec<&'a str>) {
    use parser::ast::PatternExpr as P;
    match p {
        P::Filter { stream, .. } => out.push(&stream.name),
        P::FollowedBy(v) | P::Or(v) | P::And(v) => v.iter().for_each(|p| pattern_streams(p, out)),
        P::Every(p) | P::Not(p) | P::Within(p, _) | P::EveryDistinct { inner: p, .. } => {
            pattern_streams(p, out)
        }
        P::Repeat { inner, until, .. } => {
            pattern_streams(inner, out);
            if let Some(u) = until {
                pattern_streams(u, out);
            }
        }
        P::Interval(_) | P::TimerAt(_) => {}
    }
}

/// A stream name a client may use: short enough, and either known or with
/// room for one more stream.
fn check_stream(engine: &Engine, name: &str, limits: &Limits) -> Result<()> {
    if name.len() > limits.max_stream_name_len {
        return Err(PqaError::Limit {
            what: format!(
                "the stream name `{}...` ({} bytes)",
                name.chars().take(32).collect::<String>(),
                name.len()
            ),
            max: limits.max_stream_name_len,
            setting: "limits.max_stream_name_len",
        });
    }
    if !engine.has_stream(name) && engine.stream_count() >= limits.max_streams {
        return Err(PqaError::Limit {
            what: format!("a new stream `{name}`: the number of streams on this node"),
            max: limits.max_streams,
            setting: "limits.max_streams",
        });
    }
    Ok(())
}

/// Room for one more subscriber (SSE, WebSocket or sink) on this node.
fn check_subscribers(st: &State, limits: &Limits) -> Result<()> {
    let live: usize = st.regs.values().map(|r| r.topic.subscriber_count()).sum();
    if live >= limits.max_subscribers {
        return Err(PqaError::Limit {
            what: "the number of subscribers on this node".to_string(),
            max: limits.max_subscribers,
            setting: "limits.max_subscribers",
        });
    }
    Ok(())
}

fn sink_handles(reg: &Reg) -> Vec<serde_json::Value> {
    reg.sinks.iter().filter_map(|t| t.sink().handle()).collect()
}

fn attach(reg: &mut Reg, sink: Arc<dyn Sink>) {
    if reg.sinks.iter().any(|s| s.name() == sink.name()) {
        return;
    }
    match spawn_sink(&reg.topic, sink) {
        Some(t) => reg.sinks.push(t),
        None => tracing::warn!(topic = %reg.topic.name(), "no tokio runtime: sink not started"),
    }
}

/// Hands engine outputs to the registrations' topics.
fn publish(st: &mut State, outputs: &mut Vec<Output>) {
    // Publish modes `all` and `current` pass rows through unchanged, so every
    // registration (of any statement) publishing the same rows for the same
    // trigger shares one serialization.
    let mut shared = SharedCache::default();
    for o in outputs.drain(..) {
        let Some(ids) = st.instances.get(&o.statement) else {
            continue;
        };
        for id in ids {
            let Some(reg) = st.regs.get_mut(id) else {
                continue;
            };
            if matches!(reg.publish, Publish::All | Publish::Current) {
                if reg.topic.subscriber_count() == 0 {
                    // Nobody listens (no SSE/WebSocket client, no sink): count
                    // the notification, skip building and serializing it.
                    reg.seq += 1;
                    continue;
                }
                let (rows, old) = match reg.publish {
                    Publish::All => (&o.rows[..], &o.old[..]),
                    _ => (
                        o.rows.last().map(std::slice::from_ref).unwrap_or(&[]),
                        &[][..],
                    ),
                };
                if rows.is_empty() && old.is_empty() {
                    continue;
                }
                reg.seq += 1;
                reg.topic
                    .publish_shared(reg.seq, o.time, &shared.get(rows, old));
                continue;
            }
            let rows = apply_publish(reg, &o.rows);
            let old_rows: Vec<_> = match reg.publish {
                Publish::All => o.old.iter().map(|r| r.to_json()).collect(),
                _ => Vec::new(),
            };
            if rows.is_empty() && old_rows.is_empty() {
                continue;
            }
            reg.seq += 1;
            reg.topic.publish(Notification {
                query: id.clone(),
                seq: reg.seq,
                time: o.time,
                rows,
                old_rows,
            });
        }
    }
}

fn apply_publish(
    reg: &mut Reg,
    rows: &[crate::processor::Row],
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    match reg.publish {
        Publish::All => rows.iter().map(|r| r.to_json()).collect(),
        Publish::Current => rows.last().map(|r| vec![r.to_json()]).unwrap_or_default(),
        Publish::Max | Publish::Min | Publish::Avg => {
            for r in rows {
                for (k, v) in &r.cols {
                    if let Some(f) = v.as_f64() {
                        let s = reg.stats.entry(k.to_string()).or_insert(ColStat {
                            max: f,
                            min: f,
                            sum: 0.0,
                            n: 0,
                        });
                        s.max = s.max.max(f);
                        s.min = s.min.min(f);
                        s.sum += f;
                        s.n += 1;
                    }
                }
            }
            let Some(last) = rows.last() else {
                return Vec::new();
            };
            let mut m = last.to_json();
            for (k, v) in m.iter_mut() {
                if let Some(s) = reg.stats.get(k) {
                    let x = match reg.publish {
                        Publish::Max => s.max,
                        Publish::Min => s.min,
                        _ => s.sum / s.n.max(1) as f64,
                    };
                    *v = Value::Float(x).to_json();
                }
            }
            vec![m]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    /// Sinks that record what happens to them.
    #[derive(Debug, Default)]
    struct Recording {
        made: Mutex<Vec<String>>,
        deleted: Arc<Mutex<Vec<String>>>,
    }

    #[derive(Debug)]
    struct RecordingSink {
        id: String,
        deleted: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl Sink for RecordingSink {
        fn name(&self) -> String {
            format!("recording:{}", self.id)
        }
        async fn deliver(&self, _n: &Notification, _json: &str) -> Result<()> {
            Ok(())
        }
        fn handle(&self) -> Option<serde_json::Value> {
            Some(serde_json::json!({ "node": self.id }))
        }
        fn query_deleted(&self) {
            self.deleted.lock().push(self.id.clone());
        }
    }

    impl SinkFactory for Recording {
        fn sinks_for(&self, id: &str, _epl: &str) -> Vec<Arc<dyn Sink>> {
            self.made.lock().push(id.to_string());
            vec![Arc::new(RecordingSink {
                id: id.to_string(),
                deleted: self.deleted.clone(),
            })]
        }
        fn requested_as(&self) -> Option<&str> {
            Some("rec")
        }
    }

    #[tokio::test]
    async fn requested_sinks_attach_answer_with_handles_and_hear_the_delete() {
        let svc = PqaService::new(ServiceConfig::default());
        let factory = Arc::new(Recording::default());
        svc.add_sink_factory(factory.clone());
        let epl = "select * from s";

        let plain = svc.register(epl, Publish::All, None).unwrap();
        assert!(plain.sinks.is_empty(), "not requested: no sink");
        assert!(factory.made.lock().is_empty());

        let asked = svc
            .register_with_sinks(epl, Publish::All, None, &["rec".to_string()])
            .unwrap();
        assert_eq!(asked.id, plain.id, "same statement, same registration");
        assert_eq!(asked.sinks, vec![serde_json::json!({ "node": plain.id })]);

        let unknown = svc
            .register_with_sinks(epl, Publish::Max, None, &["nope".to_string()])
            .unwrap_err();
        assert!(unknown.to_string().contains("`nope`"), "{unknown}");

        assert_eq!(svc.delete(&plain.id).unwrap(), 1);
        assert!(factory.deleted.lock().is_empty(), "a reference is left");
        assert_eq!(svc.delete(&plain.id).unwrap(), 0);
        assert_eq!(*factory.deleted.lock(), vec![plain.id.clone()]);
    }
}
