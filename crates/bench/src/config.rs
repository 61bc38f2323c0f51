use std::path::PathBuf;
use std::time::Duration;

use crate::{BenchError, Result};

/// Named starting points for [`BenchConfig`]; flags override any field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// 2,000 machines at a 1 s tick for 10 s: a smoke test under a minute.
    Smoke,
    /// The scenario: 100,000 machines, generations every 5 s.
    Full,
}

impl Preset {
    pub fn parse(name: &str) -> Result<Preset> {
        match name {
            "smoke" => Ok(Preset::Smoke),
            "full" => Ok(Preset::Full),
            other => Err(BenchError::Config(format!(
                "unknown preset `{other}`; use `smoke` or `full`"
            ))),
        }
    }
}

/// One benchmark scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    pub machines: usize,
    /// Machines per cluster (one simulated proxy each); the fleet gets
    /// `machines / machines_per_cluster` clusters, at least one.
    pub machines_per_cluster: usize,
    pub processes_per_machine: usize,
    pub tick: Duration,
    /// Fraction of every table's rows whose values change per tick.
    pub churn: f64,
    /// Share of machines whose process count changes per tick (short-lived
    /// processes start and exit); with it, filesystems mount and unmount
    /// and machines leave and rejoin at the simulator's realistic rates
    /// (`fleetsql_sim::RowChurn::realistic`). 0 turns row churn off.
    pub process_churn: f64,
    /// How long to measure once the first complete generation arrived.
    pub duration: Duration,
    /// Flight compression between every tier (the topology's `compression`).
    pub compression: fleetsql_flight::Compression,
    pub seed: u64,
    /// Runs of each seed query per sample, in fleetsql and in DuckDB.
    pub query_runs: usize,
    /// Compare with DuckDB (needs `python3 -c "import duckdb"` to work).
    pub duckdb: bool,
    pub python: PathBuf,
    /// The `fleetsql` binary to start the TLA and SQL node from.
    pub fleetsql: PathBuf,
    /// Topology, logs, Parquet exports and the JSON report go here.
    pub work_dir: PathBuf,
    /// The run stops with an error when the tiers under test and this
    /// process together hold more resident memory than this.
    pub max_rss_bytes: u64,
    /// Run the scenario twice on one fleet, the SQL node first without
    /// and then with its apps ([`crate::run_apps_cost`]).
    pub apps: bool,
    /// The tables the apps' persistent queries read (the feed turns every
    /// row of each into an event): some of [`crate::pq_tables`].
    pub apps_pq_tables: Vec<String>,
    /// Which of [`crate::APPS`] the apps half runs (all by default), to
    /// tell one app's cost from another's.
    pub apps_only: Vec<String>,
}

impl BenchConfig {
    pub fn preset(preset: Preset, fleetsql: PathBuf, work_dir: PathBuf) -> BenchConfig {
        let base = BenchConfig {
            machines: 100_000,
            machines_per_cluster: 1_000,
            processes_per_machine: 100,
            tick: Duration::from_secs(5),
            churn: 0.10,
            process_churn: 0.05,
            duration: Duration::from_secs(60),
            compression: fleetsql_flight::Compression::default(),
            seed: 42,
            query_runs: 20,
            duckdb: true,
            python: PathBuf::from("python3"),
            fleetsql,
            work_dir,
            max_rss_bytes: 20 << 30,
            apps: false,
            apps_pq_tables: crate::pq_tables(),
            apps_only: crate::APPS.iter().map(|a| a.to_string()).collect(),
        };
        match preset {
            Preset::Full => base,
            Preset::Smoke => BenchConfig {
                machines: 2_000,
                machines_per_cluster: 500,
                tick: Duration::from_secs(1),
                duration: Duration::from_secs(10),
                query_runs: 10,
                ..base
            },
        }
    }

    pub fn clusters(&self) -> usize {
        (self.machines / self.machines_per_cluster.max(1)).max(1)
    }

    /// Machines per cluster after spreading `machines` evenly.
    pub fn per_cluster(&self) -> usize {
        (self.machines / self.clusters()).max(1)
    }

    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: &str| Err(BenchError::Config(reason.to_string()));
        if self.machines == 0 || self.machines_per_cluster == 0 {
            return invalid("--machines and --per-cluster must be at least 1");
        }
        if self.processes_per_machine == 0 {
            return invalid("--processes must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.churn) {
            return invalid("--value-churn is a fraction between 0 and 1, e.g. 0.1");
        }
        if !(0.0..=1.0).contains(&self.process_churn) {
            return invalid(
                "--churn is a fraction between 0 and 1 (machines whose process count changes per tick), e.g. 0.05",
            );
        }
        if self.tick < Duration::from_millis(100) {
            return invalid("--tick must be at least 100ms");
        }
        if self.duration < self.tick {
            return invalid("--duration must be at least one tick");
        }
        if self.query_runs == 0 {
            return invalid("--runs must be at least 1");
        }
        if !self.fleetsql.exists() {
            return Err(BenchError::Config(format!(
                "the fleetsql binary `{}` does not exist; build it or pass its path",
                self.fleetsql.display()
            )));
        }
        Ok(())
    }
}
