//! The SQL node: answers SQL over one generation at a time.
//!
//! A [`SqlNode`] long-polls its TLA (any [`Child`]) for generations, naming
//! the tables its queries use; a table first named by a query is requested
//! at once and the query waits (bounded) for a generation that has it. Each
//! query is *pinned* to one generation: every table it reads, system tables
//! included, comes from that snapshot (the seed's synchronisation rule).
//!
//! SQL is DataFusion. The node is read-only (no DDL, DML, COPY or file
//! access), and every query runs under a time-out and a memory pool, so a
//! runaway query fails on its own without taking the node down.
//!
//! Front ends (Postgres wire, HTTP) call [`SqlNode::query`] or, when they
//! parse statements themselves, [`SqlNode::pin`] + [`SqlNode::execute`].
//! Components that consume every generation (persistent queries, views)
//! register a [`GenerationHook`] with [`SqlNode::add_generation_hook`].
//!
//! [`Child`]: fleetsql_aggregator::Child

mod audit;
mod catalog;
mod choice;
mod compat;
mod error;
mod execution;
mod hooks;
mod info;
mod naming;
mod node;
mod node_tables;
mod partition;
mod prepared;
mod requests;
mod settings;
mod shared;
mod stores;
mod system_tables;
mod time_travel;
mod views;

pub use audit::AUDIT_TABLE;
pub use choice::SourceStatus;
pub use compat::{TEST_PANIC_ENV, server_version, server_version_num, version_text};
pub use error::{Result, SqlError};
pub use execution::{
    DEFAULT_MAX_CONCURRENT_QUERIES, DEFAULT_MAX_QUEUED_QUERIES, QueryPermit, QueryStream,
};
pub use hooks::{
    GENERATION_HOOKS_TABLE, GenerationHook, GenerationHookHandle, GenerationHookStats,
};
pub use info::GenerationInfo;
pub use node::{Install, QueryOutput, SqlNode, SqlNodeConfig};
pub use node_tables::NodeTable;
pub use partition::{Partition, Peer, Route, Subset};
pub use prepared::Prepared;
pub use requests::RequestLimits;
pub use settings::check_setting;
pub use shared::{SHARED_ANSWERS_BYTES, SharedAnswersStats};
pub use stores::{StoreChange, StoreHealth, StoreStatus};
pub use system_tables::SYSTEM_TABLES;
pub use time_travel::{
    AsOf, HISTORY_SCHEMA, HistoryRead, PickedGeneration, TimeTravel, TimeTravelError,
    history_reads_of, history_tables, note_history_read, parse_versioned, read_as_of,
    reads_history,
};
pub use views::{VIEWS_TABLE, ViewDefinition, ViewFile, ViewFileError, ViewStats};
