//! Query History (seed 4.3): a SQL node (or TLA) keeps old generations of
//! chosen tables, and answers SQL over them.
//!
//! - [`HistoryConfig`]: which tables, and a retention ladder (every
//!   generation for 2 h, one a minute for 2 days, ...), from the topology.
//! - [`HistoryStore`]: one zstd Parquet file per generation and table,
//!   `<dir>/<table>/<made_at_ms>-<generation>.parquet`, with `_generation`
//!   and `_generation_time` columns; an in-memory index of the kept files
//!   rebuilt from the directory at start; thinning by the ladder.
//! - [`HistoryWriter`]: the node's [`GenerationHook`] writing each installed
//!   generation, off the query path, on an explicit [`Clock`].
//! - [`HistorySchema`]: the `history` schema of the node's catalog; its
//!   tables read only the files a `_generation_time` / `_generation`
//!   predicate leaves in range, skip unreadable files, and say what they
//!   read in the answer's completeness notice. It also picks the
//!   generation for time travel ([`fleetsql_sqlnode::TimeTravel`]).
//! - `fleet_history`: what is kept and whether writing works.
//!
//! [`GenerationHook`]: fleetsql_sqlnode::GenerationHook

mod config;
mod error;
mod provider;
mod range;
mod retention;
mod status;
mod store;
mod writer;

pub use config::{Every, HistoryConfig, KeepRule};
pub use error::{HistoryError, Result};
pub use provider::HistorySchema;
pub use range::Range;
pub use retention::to_delete;
pub use status::{HISTORY_STATUS_TABLE, HistoryStatusTable};
pub use store::{HistoryStore, KeptFile, TableStatus, WriteReport};
pub use writer::{Clock, History, HistoryWriter, ManualClock, STORE, SystemClock};

#[cfg(test)]
mod tests;
