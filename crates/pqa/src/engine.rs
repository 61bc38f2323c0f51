//! The engine: streams, registered statements, routing and the clock.
//!
//! Single-threaded and synchronous by design (the service wraps it in a
//! mutex): an event is converted once, then handed to every statement that
//! reads its stream, in registration order; rows a statement emits are
//! returned as [`Output`]s, and rows of `insert into` statements are queued
//! as new events and processed before the call returns. Time only moves
//! when an event carries a later timestamp or [`Engine::advance_time`] is
//! called; due window expiries, batch releases, pattern timers and output
//! intervals then run in timestamp order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use crate::batch::EventBatch;
use crate::error::{PqaError, Result};
use crate::expr::Streams;
use crate::filter_index::{Reader, StreamIndex};
use crate::parser::ast::StreamSel;
use crate::parser::{self, ast};
use crate::processor::Row;
use crate::statement::{self, Compiled, Emit, Fed, Stmt};
use crate::stream::{Event, StreamStats};
use crate::value::Value;

/// Where "now" comes from for events without an event-time field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// Only explicit [`Engine::advance_time`] calls and event timestamps move time (tests).
    #[default]
    Manual,
    /// Arrival time is the system clock (milliseconds since the Unix epoch).
    Wall,
}

/// Engine settings.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// A field holding event time (milliseconds since the epoch as a number,
    /// or an RFC 3339 string). Events without it get arrival time.
    pub timestamp_field: Option<String>,
    /// Where arrival time comes from.
    pub clock: Clock,
}

/// A registered statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatementId(pub u64);

/// A stream, resolved once (for callers pushing many prepared events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamHandle(usize);

/// Rows one statement emitted at one moment.
#[derive(Debug, Clone)]
pub struct Output {
    /// The statement.
    pub statement: StatementId,
    /// Engine time of the trigger.
    pub time: i64,
    /// The rows: the insert stream (with `select rstream`, the rows leaving).
    pub rows: Vec<Row>,
    /// The remove stream of `select irstream`: rows leaving windows, or a
    /// fully aggregated statement's groups as they were before the update.
    pub old: Vec<Row>,
}

#[derive(Debug)]
struct Entry {
    stmt: Box<Stmt>,
    scheduled: Option<i64>,
}

/// Guards against `insert into` cycles (A feeds B feeds A...).
const MAX_INSERT_DEPTH: u8 = 16;

/// The persistent-query engine.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    now: i64,
    streams: Streams,
    stmts: Vec<Option<Entry>>,
    by_stream: Vec<Vec<(usize, usize)>>,
    /// Per stream, the shared filter index over its readers.
    index: Vec<StreamIndex>,
    /// Route events through `index` (on by default).
    use_index: bool,
    /// Scratch list of the readers an event may trigger.
    candidates: Vec<Reader>,
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    rows: Emit,
    /// `insert into` events waiting to be processed (kept to reuse its memory).
    queue: VecDeque<(usize, Arc<Event>, u8)>,
    /// Compile qualifying statements to kernels (see `crate::kernel`).
    kernels: bool,
    /// Scratch row for building batches.
    scratch: Vec<(usize, Value)>,
}

impl Engine {
    /// A new engine with no statements; time starts at 0 (manual clock) or now (wall clock).
    pub fn new(config: EngineConfig) -> Self {
        let now = if config.clock == Clock::Wall {
            wall_ms()
        } else {
            0
        };
        Engine {
            config,
            now,
            streams: Streams::default(),
            stmts: Vec::new(),
            by_stream: Vec::new(),
            index: Vec::new(),
            use_index: true,
            candidates: Vec::new(),
            heap: BinaryHeap::new(),
            rows: Emit::default(),
            queue: VecDeque::new(),
            kernels: true,
            scratch: Vec::new(),
        }
    }

    /// Whether statements registered from now on may run as compiled
    /// kernels (on by default). Both paths give the same rows; turning
    /// kernels off is for comparing them.
    pub fn set_kernels(&mut self, on: bool) {
        self.kernels = on;
    }

    /// Whether events are routed through the shared filter index (on by
    /// default) or handed to every statement reading their stream. Both
    /// give the same outputs in the same order; off is for comparing them.
    pub fn set_filter_index(&mut self, on: bool) {
        self.use_index = on;
    }

    /// Current engine time in milliseconds.
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Parses and registers an EPL statement. `create schema` returns `None`
    /// (it declares a stream; nothing runs).
    pub fn register(&mut self, epl: &str) -> Result<Option<StatementId>> {
        let st = parser::parse(epl)?;
        self.register_parsed(&st)
    }

    /// Registers an already parsed statement.
    pub fn register_parsed(&mut self, st: &ast::Statement) -> Result<Option<StatementId>> {
        if self.config.clock == Clock::Wall {
            self.now = self.now.max(wall_ms());
        }
        match statement::compile(st, &mut self.streams, self.now, self.kernels)? {
            Compiled::Schema => Ok(None),
            Compiled::Stmt(stmt) => {
                let id = self.stmts.len();
                self.grow();
                for &(s, k) in &stmt.listen {
                    self.by_stream[s].push((id, k));
                    self.index[s].insert((id, k), stmt.index_key(k), stmt.required(k));
                }
                self.stmts.push(Some(Entry {
                    stmt,
                    scheduled: None,
                }));
                self.reschedule(id);
                Ok(Some(StatementId(id as u64)))
            }
        }
    }

    /// Stops a statement; returns false if it was not registered.
    pub fn remove(&mut self, id: StatementId) -> bool {
        let i = id.0 as usize;
        let Some(slot) = self.stmts.get_mut(i) else {
            return false;
        };
        let Some(entry) = slot.take() else {
            return false;
        };
        for &(s, _) in &entry.stmt.listen {
            if let Some(v) = self.by_stream.get_mut(s) {
                v.retain(|(x, _)| *x != i);
            }
        }
        let mut streams: Vec<usize> = entry.stmt.listen.iter().map(|&(s, _)| s).collect();
        streams.dedup();
        for s in streams {
            let keyed: Vec<(bool, &[usize])> = entry
                .stmt
                .listen
                .iter()
                .filter(|&&(t, _)| t == s)
                .map(|&(_, k)| (entry.stmt.index_key(k).is_some(), entry.stmt.required(k)))
                .collect();
            if let Some(ix) = self.index.get_mut(s) {
                ix.remove(i, &keyed);
            }
        }
        true
    }

    /// True when a running statement was compiled to a kernel (the fast
    /// path for single-stream aggregations, see the crate docs).
    pub fn uses_kernel(&self, id: StatementId) -> bool {
        matches!(self.stmts.get(id.0 as usize), Some(Some(e)) if e.stmt.has_kernel())
    }

    /// Number of running statements.
    pub fn statement_count(&self) -> usize {
        self.stmts.iter().filter(|s| s.is_some()).count()
    }

    /// Streams some running statement reads: what a feeder (the SQL node's
    /// generation feed) must supply and may skip otherwise.
    pub fn listened_streams(&self) -> Vec<String> {
        self.by_stream
            .iter()
            .enumerate()
            .filter(|(_, listeners)| !listeners.is_empty())
            .filter_map(|(id, _)| self.streams.list.get(id).map(|s| s.name.to_string()))
            .collect()
    }

    /// Per-stream counters: accepted events and refused/skipped bad input.
    pub fn stream_stats(&self) -> Vec<(String, StreamStats)> {
        self.streams
            .list
            .iter()
            .map(|s| (s.name.to_string(), s.stats.clone()))
            .collect()
    }

    /// Resolves a stream by name (creating it), for [`Engine::prepare`] / [`Engine::push_prepared`].
    /// Whether a stream of this name exists (was posted to or is read).
    pub fn has_stream(&self, name: &str) -> bool {
        self.streams.ids.contains_key(name)
    }

    /// Streams known to this engine.
    pub fn stream_count(&self) -> usize {
        self.streams.list.len()
    }

    pub fn stream(&mut self, name: &str) -> StreamHandle {
        let id = self.streams.id(name);
        self.grow();
        StreamHandle(id)
    }

    fn grow(&mut self) {
        let n = self.streams.list.len();
        if self.by_stream.len() < n {
            self.by_stream.resize(n, Vec::new());
        }
        if self.index.len() < n {
            self.index.resize_with(n, StreamIndex::default);
        }
    }

    /// Fills `self.candidates` with the readers of `sid` that `ev` may
    /// trigger; false when every reader must be visited.
    fn route(&mut self, sid: usize, ev: &Event) -> bool {
        self.use_index
            && self
                .index
                .get(sid)
                .is_some_and(|ix| ix.candidates(ev, &mut self.candidates))
    }

    /// The `j`-th reader to visit: of the candidates when routed, else of all.
    #[inline]
    fn reader(&self, routed: bool, sid: usize, j: usize) -> Reader {
        if routed {
            self.candidates[j]
        } else {
            self.by_stream[sid][j]
        }
    }

    fn readers(&self, routed: bool, sid: usize) -> usize {
        if routed {
            self.candidates.len()
        } else {
            self.by_stream.get(sid).map_or(0, Vec::len)
        }
    }

    fn event_time(&self, obj: &serde_json::Map<String, serde_json::Value>) -> i64 {
        let arrival = match self.config.clock {
            Clock::Manual => self.now,
            Clock::Wall => self.now.max(wall_ms()),
        };
        let Some(field) = &self.config.timestamp_field else {
            return arrival;
        };
        match obj.get(field) {
            Some(serde_json::Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .unwrap_or(arrival),
            Some(serde_json::Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|d| d.timestamp_millis())
                .unwrap_or(arrival),
            _ => arrival,
        }
    }

    /// Converts a JSON object into a typed event of `stream` (learning its schema),
    /// without running any statement. Counts and refuses bad input.
    pub fn prepare(
        &mut self,
        stream: StreamHandle,
        json: &serde_json::Value,
    ) -> Result<Arc<Event>> {
        let state = &mut self.streams.list[stream.0];
        let Some(obj) = json.as_object() else {
            state.stats.not_object += 1;
            state.stats.last_error = Some("event is not a JSON object".into());
            return Err(PqaError::BadEvent {
                stream: state.name.to_string(),
                message: "event is not a JSON object".into(),
            });
        };
        let ts = self.event_time(obj);
        let state = &mut self.streams.list[stream.0];
        state
            .event_from_json(obj, ts)
            .map_err(|message| PqaError::BadEvent {
                stream: state.name.to_string(),
                message,
            })
    }

    /// Pushes one JSON event into `stream`; returns the rows it triggered.
    pub fn push_json(&mut self, stream: &str, json: &serde_json::Value) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        self.push_json_into(stream, json, &mut out)?;
        Ok(out)
    }

    /// Like [`Engine::push_json`], appending to `out`.
    pub fn push_json_into(
        &mut self,
        stream: &str,
        json: &serde_json::Value,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let h = self.stream(stream);
        let ev = self.prepare(h, json)?;
        self.push_prepared(h, ev, out);
        Ok(())
    }

    /// Pushes an event built by [`Engine::prepare`].
    pub fn push_prepared(&mut self, stream: StreamHandle, ev: Arc<Event>, out: &mut Vec<Output>) {
        let ts = ev.ts.max(self.now);
        self.run_due(ts, out);
        self.now = ts;
        let mut queue = std::mem::take(&mut self.queue);
        queue.push_back((stream.0, ev, 0u8));
        self.drain(&mut queue, out);
        self.queue = queue;
    }

    /// Converts JSON objects into a typed batch of `stream` (learning its
    /// schema), without running any statement. Bad input is counted and
    /// left out; the errors come back with the index of the event.
    pub fn prepare_batch<'a, I>(
        &mut self,
        stream: StreamHandle,
        events: I,
    ) -> (EventBatch, Vec<(usize, PqaError)>)
    where
        I: IntoIterator<Item = &'a serde_json::Value>,
    {
        let mut batch = EventBatch::new(stream.0);
        let mut errors = Vec::new();
        let mut row = std::mem::take(&mut self.scratch);
        for (i, json) in events.into_iter().enumerate() {
            let Some(obj) = json.as_object() else {
                let state = &mut self.streams.list[stream.0];
                state.stats.not_object += 1;
                state.stats.last_error = Some("event is not a JSON object".into());
                errors.push((
                    i,
                    PqaError::BadEvent {
                        stream: state.name.to_string(),
                        message: "event is not a JSON object".into(),
                    },
                ));
                continue;
            };
            let ts = self.event_time(obj);
            let state = &mut self.streams.list[stream.0];
            match state.check_json(obj, &mut row) {
                Ok(()) => state.append(&mut batch, ts, &mut row),
                Err(message) => errors.push((
                    i,
                    PqaError::BadEvent {
                        stream: state.name.to_string(),
                        message,
                    },
                )),
            }
        }
        self.scratch = row;
        (batch, errors)
    }

    /// Pushes a batch built by [`Engine::prepare_batch`]: the same as pushing
    /// its events one by one, in order, but statements compiled to kernels
    /// read the rows in place.
    pub fn push_batch(&mut self, batch: &EventBatch, out: &mut Vec<Output>) {
        let sid = batch.stream;
        self.grow();
        let mut queue = std::mem::take(&mut self.queue);
        for row in 0..batch.len() {
            let ts = batch.ts[row].max(self.now);
            if self.heap.peek().is_some_and(|Reverse((t, _))| *t <= ts) {
                self.run_due(ts, out);
            }
            self.now = ts;
            let mut event: Option<Arc<Event>> = None;
            let mut missing = false;
            // The index reads the event's values: build it only when the
            // stream has indexed readers.
            let routed =
                self.use_index && self.index.get(sid).is_some_and(StreamIndex::has_indexed) && {
                    let ev = batch.event(row, &self.streams.list[sid].symbols);
                    let routed = self.route(sid, &ev);
                    event = Some(ev);
                    routed
                };
            let n = self.readers(routed, sid);
            for j in 0..n {
                let (id, k) = self.reader(routed, sid, j);
                let Some(Some(entry)) = self.stmts.get_mut(id) else {
                    continue;
                };
                let state = &self.streams.list[sid];
                let fed = if entry.stmt.has_kernel() {
                    entry
                        .stmt
                        .on_batch_row(batch, row, self.now, state, &mut self.rows)
                } else {
                    let ev = event.get_or_insert_with(|| batch.event(row, &state.symbols));
                    entry
                        .stmt
                        .on_event(k, sid, ev, self.now, state, &mut self.rows)
                };
                missing |= fed == Fed::MissingField;
                if !self.rows.is_empty() {
                    self.emit(id, 0, &mut queue, out);
                }
                self.reschedule(id);
            }
            if missing {
                let s = &mut self.streams.list[sid];
                s.stats.missing_field += 1;
                s.stats.last_error = Some("event lacks a field a statement reads".into());
            }
            if !queue.is_empty() {
                self.drain(&mut queue, out);
            }
        }
        self.queue = queue;
    }

    /// Moves the clock to `to` (milliseconds; never backwards) and runs what
    /// became due on the way, in time order.
    pub fn advance_time(&mut self, to: i64) -> Vec<Output> {
        let mut out = Vec::new();
        self.advance_time_into(to, &mut out);
        out
    }

    /// Like [`Engine::advance_time`], appending to `out`.
    pub fn advance_time_into(&mut self, to: i64, out: &mut Vec<Output>) {
        self.run_due(to, out);
        self.now = self.now.max(to);
    }

    fn run_due(&mut self, to: i64, out: &mut Vec<Output>) {
        while let Some(&Reverse((t, id))) = self.heap.peek() {
            if t > to {
                break;
            }
            self.heap.pop();
            let Some(Some(entry)) = self.stmts.get_mut(id) else {
                continue;
            };
            if entry.scheduled != Some(t) {
                continue; // stale heap entry
            }
            entry.scheduled = None;
            self.now = self.now.max(t);
            let now = self.now;
            entry.stmt.advance(now, &mut self.rows);
            let mut queue = std::mem::take(&mut self.queue);
            self.emit(id, 0, &mut queue, out);
            self.reschedule(id);
            self.drain(&mut queue, out);
            self.queue = queue;
        }
    }

    fn reschedule(&mut self, id: usize) {
        let Some(Some(entry)) = self.stmts.get_mut(id) else {
            return;
        };
        let d = entry.stmt.next_deadline();
        if d != entry.scheduled {
            entry.scheduled = d;
            if let Some(d) = d {
                self.heap.push(Reverse((d, id)));
            }
        }
    }

    /// Turns `self.rows` of statement `id` into an output (and insert-into events).
    fn emit(
        &mut self,
        id: usize,
        depth: u8,
        queue: &mut VecDeque<(usize, Arc<Event>, u8)>,
        out: &mut Vec<Output>,
    ) {
        if self.rows.is_empty() {
            return;
        }
        let mut rows = std::mem::take(&mut self.rows.new);
        let mut old = std::mem::take(&mut self.rows.old);
        let Some(Some(entry)) = self.stmts.get(id) else {
            return;
        };
        let (target, routed, selected) = (
            entry.stmt.insert_into,
            entry.stmt.insert_stream,
            entry.stmt.select_stream,
        );
        if let Some(target) = target {
            if depth < MAX_INSERT_DEPTH {
                let state = &mut self.streams.list[target];
                let (ins, rem) = match routed {
                    StreamSel::IStream => (&rows[..], &[][..]),
                    StreamSel::RStream => (&[][..], &old[..]),
                    StreamSel::IRStream => (&rows[..], &old[..]),
                };
                for r in ins.iter().chain(rem) {
                    if let Ok(ev) = state.event_from_values(&r.cols, self.now) {
                        queue.push_back((target, ev, depth + 1));
                    }
                }
            } else {
                let state = &mut self.streams.list[target];
                state.stats.last_error =
                    Some("insert into: too many chained statements (cycle?)".into());
            }
        }
        // Listeners see what the select clause's stream selector asks for;
        // `select rstream` hands the remove stream over as the insert stream.
        match selected {
            StreamSel::IStream => old.clear(),
            StreamSel::RStream => {
                rows = old;
                old = Vec::new();
            }
            StreamSel::IRStream => {}
        }
        if rows.is_empty() && old.is_empty() {
            return;
        }
        out.push(Output {
            statement: StatementId(id as u64),
            time: self.now,
            rows,
            old,
        });
    }

    fn drain(&mut self, queue: &mut VecDeque<(usize, Arc<Event>, u8)>, out: &mut Vec<Output>) {
        self.grow();
        while let Some((sid, ev, depth)) = queue.pop_front() {
            let mut missing = false;
            let routed = self.route(sid, &ev);
            let n = self.readers(routed, sid);
            for j in 0..n {
                let (id, k) = self.reader(routed, sid, j);
                let Some(Some(entry)) = self.stmts.get_mut(id) else {
                    continue;
                };
                let state = &self.streams.list[sid];
                if entry
                    .stmt
                    .on_event(k, sid, &ev, self.now, state, &mut self.rows)
                    == Fed::MissingField
                {
                    missing = true;
                }
                if !self.rows.is_empty() {
                    self.emit(id, depth, queue, out);
                }
                self.reschedule(id);
            }
            if missing {
                let s = &mut self.streams.list[sid];
                s.stats.missing_field += 1;
                s.stats.last_error = Some("event lacks a field a statement reads".into());
            }
        }
    }

    /// Pushes typed columns as an event (no JSON decoding).
    pub fn push_values(
        &mut self,
        stream: StreamHandle,
        cols: &[(Arc<str>, Value)],
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let ts = self.now;
        let state = &mut self.streams.list[stream.0];
        let ev = state
            .event_from_values(cols, ts)
            .map_err(|message| PqaError::BadEvent {
                stream: state.name.to_string(),
                message,
            })?;
        self.push_prepared(stream, ev, out);
        Ok(())
    }
}

/// Milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
