//! Alerts: SQL run on a schedule against the SQL node, each result row an
//! *instance* that fires and clears (the seed's alert system, section 5.1).
//!
//! Data flow: [`DefinitionSet`] re-reads the alerts directory every pass
//! (a bad file is reported in `alert_errors` and its previous version keeps
//! running). [`AlertService`] runs each due alert's SQL on the
//! [`fleetsql_sqlnode::SqlNode`] — identical SQL once per generation — and
//! feeds the rows (keyed by their `*_key` columns) to the
//! [`AlertState`] state machine, which decides what fires and clears
//! (`fire_after` iterations present, `clear_after` time absent; failed
//! queries and missing or too incomplete data change nothing and mark
//! active instances stale). Each iteration commits its state and its
//! notifications in one SQLite transaction ([`Store`]), guarded by a lease
//! so that of several SQL nodes sharing the file only one runs the alerts;
//! the holder delivers the outbox to the routes (e-mail, webhook, SNMP
//! trap). The console (`/alerts`, live over SSE) and the tables `alerts`,
//! `alert_instances` and `alert_errors` show the same state.

mod check;
mod console;
mod definition;
mod error;
pub mod routes;
mod service;
mod state;
mod store;
mod tables;

pub use check::{describe, load_definition, rows_from_answer};
pub use definition::{
    AlertDefinition, CONSOLE_ROUTE, DefinitionError, DefinitionSet, ROUTES_FILE, Severity,
    parse_duration,
};
pub use error::{AlertError, Result};
pub use routes::RouteConfig;
pub use service::{ALERT_TABLES, AlertService, AlertsConfig, PassReport, rows_from_batches};
pub use state::{
    AlertState, Event, EventKind, Instance, Observation, Row, Status, StepOutcome, Timing, key_text,
};
pub use store::{HistoryEntry, OutboxEntry, Store};
