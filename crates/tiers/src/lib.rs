//! The tiers as separate processes (seed sections 3 and 4).
//!
//! One [`Topology`] file describes the tree: agents (grouped into clusters
//! by their `cluster`), cluster proxies, TLAs and SQL nodes, with their
//! addresses. Each process is started with its role and name and finds
//! its children in the file:
//!
//! - [`AgentProcess`]: this machine's publishers behind a Flight server;
//! - [`AgentProcess::start_joining`]: an agent known only by its cluster
//!   and its proxies' addresses, announcing itself to them
//!   ([`membership`]);
//! - [`TierProcess::start_proxy`]: an aggregator over its cluster's agents,
//!   listed in the topology or announced;
//! - [`TierProcess::start_tla`]: an aggregator with one child group per
//!   cluster whose members are that cluster's proxies (failover in turn),
//!   plus static tables;
//! - [`SqlProcess`]: a SQL node over its TLAs, chosen by the clusters each
//!   sees plus a locality bonus, with the Postgres and HTTP front ends.
//!
//! Generations move between them over Arrow Flight (`fleetsql-flight`);
//! table requests travel down the same calls. Every process serves
//! `/health` and `/metrics` (Prometheus text, including per-table Flight
//! transfer counters) and adds its row to `fleet_nodes`.

mod admin;
mod error;
mod history;
mod local;
pub mod membership;
pub mod plan;
mod reload;
mod roles;
mod security;
pub mod sets;
mod topology;

pub use error::{Result, TiersError};
/// A node's `history` settings (Query History), as the topology reads them.
pub use fleetsql_history::HistoryConfig;
pub use local::LocalFleet;
pub use plan::Links;
pub use roles::{AgentProcess, JoinConfig, Listen, SqlProcess, TierProcess, TlaSqlProcess};
pub use security::{ClientSecurity, SecurityFiles};
pub use topology::{
    AgentEntry, ClusterEntry, ProxyEntry, SetEntry, SqlNodeEntry, SubsetEntry, TlaEntry,
    TlsNodeFiles, TlsSettings, Topology,
};
