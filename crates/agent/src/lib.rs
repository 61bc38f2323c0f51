//! The agent: every machine's tier, turning local publishers into
//! generations.
//!
//! Data flow in through three kinds of local publishers:
//!
//! - the loopback HTTP API ([`http`]): `POST /v1/tables/{name}` with
//!   NDJSON, CSV/TSV or an Arrow IPC stream replaces one publisher's rows of
//!   one table;
//! - the file-drop directory: `<table>.csv|.tsv|.jsonl`, one publisher per
//!   file, re-read when a file is replaced and withdrawn when it is deleted;
//! - built-in host collectors ([`collectors`]: `sys`, `processes`,
//!   `filesystem`, `machinerole`), run only for requested tables.
//!
//! All of them land in one publisher store, which checks names and schema
//! union at publish time (a refused publish keeps the previous rows) and
//! adds the origin columns `_host, _ip, _cluster, _published_at`. The store
//! is exposed to the tier loop as [`LocalPublishers`], a
//! [`fleetsql_aggregator::Child`], and the agent wraps it in the same
//! [`fleetsql_aggregator::Aggregator`] that proxies and TLAs run: each tick
//! it asks its one child for the requested tables and serves the result to
//! its parent through [`Agent::as_child`]. Requests flow the other way:
//! what parents ask for is what gets collected, and publishers can read it
//! from `GET /v1/requested` to skip work nobody asked for.

mod agent;
pub mod collectors;
mod config;
mod drop_dir;
mod error;
pub mod footprint;
mod host;
pub mod http;
mod local;
mod store;
mod watchdog;

pub use agent::Agent;
pub use config::AgentConfig;
pub use error::{AgentError, Result};
pub use local::LocalPublishers;
pub use watchdog::{FLEET_SOURCES, WATCHDOG_PUBLISHER, WatchdogConfig};
