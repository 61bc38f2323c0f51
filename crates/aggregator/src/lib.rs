//! The tier loop: one piece of code for agent, cluster proxy and TLA.
//!
//! An [`Aggregator`] has children (anything implementing [`Child`]: local
//! publishers, simulated machines, another aggregator in this process, or a
//! remote one over Flight), a set of requested tables and a timer. Each tick
//! it fetches the requested tables from every child group, drops children
//! whose data are older than `stale_after`, merges the rest table by table
//! (`fleetsql_model::merge_tables`), stamps a new [`Generation`] and serves
//! it to its parents through [`Child::fetch`] on its own handle.
//!
//! Table requests flow down the same call: a parent's [`FetchRequest`] names
//! every table it wants, the child keeps collecting exactly those (for as
//! long as the parent keeps asking), and a table it had not been asked for
//! before triggers an immediate tick instead of waiting for the timer.
//!
//! [`Generation`]: fleetsql_model::Generation

mod aggregator;
mod child;
mod error;
mod requests;
mod self_monitor;
mod static_tables;
mod watch_child;

pub use aggregator::{Aggregator, AggregatorConfig, AggregatorStats, ChildGroup, OwnTables};
pub use child::{Child, FetchRequest, covers_all};
pub use error::{AggregatorError, Result};
pub use requests::TableRequests;
pub use self_monitor::{
    FLEET_NODES, NodeState, fleet_nodes_schema, fleet_nodes_table, host_name, process_rss_bytes,
};
pub use static_tables::StaticTables;
pub use watch_child::WatchChild;
