//! `fleetsql bench`: a simulated fleet feeding a real TLA and a real SQL
//! node, each tier measured against the physical limit of the box it runs
//! on.
//!
//! The fleet is simulated in this process, one [`fleetsql_sim::SimProxy`]
//! per cluster, each behind a real Arrow Flight server, so what is measured
//! is what a real fleet would cost the tiers under test: the TLA and the
//! SQL node are the `fleetsql tla` and `fleetsql sqlnode` binaries, started
//! from a generated topology file and read through their `/metrics`, their
//! Postgres port and `/proc`. Every figure comes with a baseline taken in
//! the same run (a plain copy of the same bytes, DuckDB on the same rows),
//! so a result means the same on a laptop and on a server.
//!
//! [`run`] does one scenario and returns a [`Report`]; [`markdown`] and
//! [`scaling_svg`] render reports for `BENCHMARKS.md` and `docs/`.
//! [`run_apps_cost`] runs the scenario twice on one simulated fleet, the
//! SQL node first without and then with its apps (alerts, reports,
//! persistent queries), and [`apps_markdown`] compares the two;
//! [`run_tls_cost`] runs it plaintext and then with mutual TLS on every
//! Flight link, compared by [`tls_markdown`].

mod apps;
mod config;
mod duckdb;
mod error;
mod metrics;
mod process;
mod render;
mod scenario;
mod stats;

pub use apps::{
    ALERTS, APPS, AppsCost, AppsFigures, PERSISTENT_QUERIES, REPORTS, apps_markdown, pq_tables,
};
pub use config::{BenchConfig, Preset};
pub use error::{BenchError, Result};
pub use render::{markdown, replace_section, scaling_markdown, scaling_svg};
pub use scenario::soak::{
    ProcessSample, ProcessSoak, SoakConfig, SoakReport, SoakWindow, least_squares_slope, run_soak,
    soak_markdown,
};
pub use scenario::{TlsCost, run, run_apps_cost, run_tls_cost, tls_markdown};
pub use stats::{Latency, QueryReport, Report};

/// The seed's three queries: the fleet-wide process hog, traffic by
/// continent, and the disk alert.
pub const SEED_QUERIES: [(&str, &str); 3] = [
    (
        "dns/rss",
        "SELECT sys.ip ip, procname, rss, pid FROM sys, processes WHERE sys.ip = processes.ip AND (rss*100)/sys.memtotal > 75 AND sys.ip in (SELECT ip FROM machinerole WHERE role='dns')",
    ),
    (
        "continent hits",
        "SELECT c.continent_name, SUM(l.hits) hits FROM load_info l, region_data r, continent_data c WHERE l.georegion=r.id AND r.continent=c.continent GROUP BY c.continent_name ORDER BY hits DESC",
    ),
    (
        "disk alert",
        "SELECT machineip ip_key, mountp mnt_key, bavail*bsize free_space, (100*bavail)/blocks pct FROM filesystem a WHERE blocks > 0 and (100*bavail)/blocks < 3",
    ),
];

/// The Cargo profile this binary (and so every tier the bench starts from
/// it) was built with: figures from `dev` and `release` differ severalfold.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    }
}
