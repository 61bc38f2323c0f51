//! A deterministic simulated fleet for `fleetsql demo`, tests and benchmarks.
//!
//! [`SimFleet::new`] lays out `clusters` x `machines_per_cluster` machines
//! (`cluster-00-m000`, ...) from a seed. Each [`SimMachine`] plays its own
//! agent: it implements [`fleetsql_aggregator::Child`], so a cluster proxy
//! merges simulated machines exactly as it merges real agents. A fetch
//! answers with the requested tables only (`sys`, `processes`,
//! `filesystem`, `machinerole`, `load_info`; see [`TABLES`]), every row
//! carrying the origin columns `_host, _ip, _cluster, _published_at`.
//!
//! Time is simulated in ticks of wall-clock length `tick`: a machine's
//! generation id is the tick number, two fetches in one tick get the same
//! data, and at each tick a fraction `churn` of every table's rows takes new
//! values. Every value is a pure function of (seed, machine, table, row,
//! row version), so any tick can be produced directly, and a machine keeps
//! its tables as Arrow arrays and re-samples only the rows that churned.
//!
//! The data are shaped for the seed's queries: some dns machines run a
//! `named` holding more than 75% of memory (`rss` and `memtotal` are both
//! KiB), a few machines have a nearly full `/var`, and `load_info.hits`
//! follows the seed's per-continent figures through the georegions of
//! [`REGIONS`] (the demo's `region_data` static table).

mod churn;
mod config;
mod error;
mod fleet;
mod geo;
mod machine;
mod profile;
mod rng;
mod tables;

pub use config::{RowChurn, SimConfig};
pub use error::{Result, SimError};
pub use fleet::{SimCluster, SimFleet};
pub use geo::{CONTINENTS, Continent, DEMO_STATIC_FILES, REGIONS, Region};
pub use machine::{SimMachine, SimProxy};
pub use profile::Role;
pub use tables::{TABLES, table_schema};
