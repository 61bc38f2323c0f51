//! Generations between tiers over Arrow Flight.
//!
//! A child tier runs a [`FlightServer`] over anything implementing
//! [`Child`](fleetsql_aggregator::Child) (normally its aggregator's
//! `as_child()`); its parent holds a [`FlightChild`], which is itself a
//! `Child`, so a remote tier plugs into an aggregator exactly like a local
//! one.
//!
//! One parent fetch is one `DoGet`:
//!
//! 1. [`FlightChild`] turns the parent's `FetchRequest` into a JSON
//!    [`FetchTicket`] (`requester`, `tables`, `since_generation`, `wait_ms`,
//!    `base_generation`). Table requests thus flow down the same call.
//! 2. The server hands the request to its source, which may hold it until
//!    it has a generation newer than `since_generation` (long poll), and
//!    streams the answer: a metadata-only header message carrying the
//!    `GenerationMeta` as JSON plus the list of tables and row counts, then
//!    each table as an Arrow IPC schema message (table name in
//!    `app_metadata`) and its batches, compressed with lz4 (or zstd).
//!    Encoding runs on a blocking thread. The exact layout is documented
//!    in `src/wire.rs` (the wire contract; [`WIRE_FORMAT`] versions it).
//! 3. The client decodes the stream into a `Generation` and checks that it
//!    adds up (every announced table, every announced row); anything else
//!    is an error and the parent keeps merging without this child, never
//!    with part of its data.
//! 4. Once the parent holds a generation, its tickets name it
//!    (`base_generation`, `accept_diff`) and tables whose rows line up with
//!    the parent's copy travel as the columns that changed (`src/diff.rs`):
//!    identity columns cross once, and each new generation shares their
//!    buffers with the one before.
//!
//! With a [`TlsContext`] both ends speak mutual TLS (`src/tls.rs`): the
//! server accepts only its parents' certificates, the client only the
//! dialled child's; [`certs`] makes a fleet CA and node certificates.
//!
//! A TLA keeping Query History also serves its kept files (a
//! `history-list` action and a `history` ticket, `src/history.rs`), so a
//! SQL node fetches the history it lacks from its TLA.
//!
//! Both ends count bytes and rows per table ([`TransferStats`]) for
//! `/metrics` ([`render_prometheus`]).

pub mod certs;
mod client;
mod diff;
mod error;
mod history;
mod server;
mod stats;
mod tls;
mod wire;

pub use client::{FlightChild, FlightChildOptions};
pub use error::{FlightError, Result};
pub use history::{
    ChunkHeader, HISTORY_LIST_ACTION, HistoryFileInfo, HistoryFiles, HistoryListRequest,
    HistorySourceError, HistoryTicket, HistoryWanted, MAX_FILES_PER_TICKET,
};
pub use server::{FlightServer, FlightServerConfig, HEALTH_ACTION, HealthReport};
pub use stats::{TableTransfer, TransferSnapshot, TransferStats, render_prometheus};
pub use tls::{Link, Refusal, TlsContext, TlsFiles, TlsWatch, is_dns_name};
pub use wire::{Compression, DIFF_VERSION, ENCODING_DIFF, ENCODING_FULL, FetchTicket, WIRE_FORMAT};
