//! fleetsql-pqa: persistent queries, a re-creation of RENCI's Persistent
//! Query Agent (seed `renci-pqa-tr-13-01`). Clients register continuous
//! queries in Esper EPL; every result a query triggers is published to the
//! query's topic (SSE, WebSocket, webhook; XMPP/MQTT plug in as [`Sink`]s).
//!
//! # Data flow
//!
//! ```text
//! POST /v1/events/{stream} ─┐                      ┌─> Topic (broadcast) ─> SSE / WebSocket subscribers
//! PqaService::push_event ───┼─> Engine ─> Output ──┤
//! (fleet generations)       │   (windows, joins,   └─> Sink tasks (webhook, later XMPP/MQTT)
//!                           │    patterns, aggs)
//! POST /v1/persistent-queries / XML-RPC /RPC2 ─> PqaService::register ─> Engine::register
//! ```
//!
//! 1. **Parse** ([`parser`]): a hand-written recursive-descent parser turns
//!    EPL text into a syntax tree; errors carry line, column and what was
//!    expected.
//! 2. **Compile** (`statement`, `expr`): names are resolved to (slot, field
//!    index) once; each stream's schema is learned from its events (or
//!    declared with `create schema`) and only grows.
//! 3. **Run** ([`Engine`]): a JSON event becomes a typed [`stream::Event`]
//!    once, then flows through each reading statement: stream filter →
//!    data window (one file per kind in `window/`) → join or pattern →
//!    result-set processor (where, group by, aggregates, having, order by)
//!    → output rate limiter → [`Output`] rows. `insert into` rows re-enter
//!    as events of the named stream.
//! 4. **Publish** ([`PqaService`]): identical statements (same normalized
//!    text) share one running instance; each registration (statement +
//!    publish mode) has an id and a [`Topic`]. Subscribers that fall behind
//!    are dropped with a close reason; the engine never waits for them.
//!
//! # Fast path: kernels and typed batches
//!
//! A single-stream aggregation (`count`/`sum`/`avg` over plain fields, at
//! most one plain group-by field, no window, `win:length` or `win:time`,
//! filters comparing fields with literals) compiles to a kernel: closures
//! over column indices, groups found by interned string, a window that keeps
//! only the aggregated numbers. [`Engine::prepare_batch`] turns many JSON
//! events into an [`EventBatch`] (typed columns, strings interned) and
//! [`Engine::push_batch`] feeds it with the same results as pushing the
//! events one by one; kernels read the rows in place. Everything else runs
//! on the general path; both give the same rows (`tests/kernel.rs`).
//!
//! # Time
//!
//! Time is event time when [`EngineConfig::timestamp_field`] names a field
//! the event carries, otherwise arrival time from the [`Clock`]. With
//! `Clock::Manual` (tests) time only moves through event timestamps and
//! [`Engine::advance_time`] / [`PqaService::advance_time`]. An event older
//! than the engine's clock is processed at the clock's time.
//!
//! # Output semantics (Esper's insert stream)
//!
//! - Without aggregates: one row per arriving event (per join combination,
//!   per pattern match); batch windows emit all rows of a batch together.
//! - Aggregates with only group keys selected: one row per group changed by
//!   the update, also when events *leave* a window (the average moves).
//! - Aggregates plus other fields: one row per arriving event.
//!
//! # Extension: aggregate aliases in `where`
//!
//! Esper rejects aggregates in `where` ("use the HAVING clause"). The seed
//! writes `select avg(memutil) as avgMemUtil from MemUtilEvent.win:time(20 sec)
//! where avgMemUtil > 70`, so we accept it: a `where` conjunct that names the
//! alias of an aggregated select item is evaluated after aggregation, exactly
//! like `having`; the other conjuncts still filter events before
//! aggregation. An aggregate written directly in `where` is still an error.
//!
//! # Bad input
//!
//! A field whose kind differs from the learned/declared one refuses the
//! event (counted as `wrong_type`); an event lacking a field a statement
//! reads is skipped by that statement (counted once per event as
//! `missing_field`); non-objects are counted as `not_object`. See
//! [`Engine::stream_stats`]. Nothing of this stops a query.

pub mod engine;
pub mod error;
pub mod http;
pub mod parser;
pub mod processor;
pub mod service;
pub mod sink;
pub mod stream;
pub mod topic;
pub mod value;

mod agg;
mod batch;
mod expr;
mod filter_index;
mod kernel;
mod output;
mod pattern;
mod statement;
mod store;
mod window;
mod xmlrpc;

pub use batch::EventBatch;
pub use engine::{Clock, Engine, EngineConfig, Output, StatementId, StreamHandle};
pub use error::{PqaError, Result};
pub use http::router;
pub use processor::Row;
pub use service::{
    BatchResult, ClockTask, Limits, PqaService, Publish, QueryInfo, Registered, ServiceConfig,
};
pub use sink::{Sink, SinkFactory, WebhookPolicy, WebhookSink};
pub use store::StoreObserver;
pub use topic::{CloseReason, Notification, Topic};
pub use value::Value;
