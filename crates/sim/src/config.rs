use std::time::Duration;

use crate::{Result, SimError};

/// The shape of a simulated fleet. Everything it generates is a function of
/// these fields and the tick number, so two fleets with the same config
/// publish the same rows.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Number of clusters, named `cluster-00`, `cluster-01`, ...
    pub clusters: usize,
    pub machines_per_cluster: usize,
    pub seed: u64,
    /// Fraction of rows (of every table) whose values change per tick.
    pub churn: f64,
    /// Rows of `processes` per machine (the first is the machine's main
    /// service, e.g. `named` on a dns machine).
    pub processes_per_machine: usize,
    /// Simulated collection interval: data change at wall-clock multiples
    /// of it, and a machine's generation id is the tick number. A machine's
    /// data are as old as the tick's start, so keep it at (or below) the
    /// proxies' tick: an aggregator drops children older than its
    /// `stale_after` (three of its ticks by default).
    pub tick: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            clusters: 20,
            machines_per_cluster: 25,
            seed: 42,
            churn: 0.10,
            processes_per_machine: 100,
            tick: Duration::from_secs(5),
        }
    }
}

/// Keeps IPs (10.x.y.z from the machine number) unique.
const MAX_MACHINES: usize = 1 << 24;

impl SimConfig {
    pub fn machines(&self) -> usize {
        self.clusters * self.machines_per_cluster
    }

    /// Checks every field before a fleet is built.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field, reason: &str| {
            Err(SimError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if self.clusters == 0 {
            return invalid("clusters", "must be at least 1");
        }
        if self.machines_per_cluster == 0 {
            return invalid("machines_per_cluster", "must be at least 1");
        }
        if self
            .clusters
            .checked_mul(self.machines_per_cluster)
            .is_none_or(|n| n >= MAX_MACHINES)
        {
            return invalid(
                "machines_per_cluster",
                "clusters x machines_per_cluster must stay below 16,777,216",
            );
        }
        if !(0.0..=1.0).contains(&self.churn) {
            return invalid("churn", "must be a fraction between 0 and 1");
        }
        if self.processes_per_machine == 0 {
            return invalid("processes_per_machine", "must be at least 1");
        }
        if self.tick.as_millis() == 0 {
            return invalid("tick", "must be at least 1 ms");
        }
        Ok(())
    }

    pub(crate) fn tick_ms(&self) -> i64 {
        self.tick.as_millis().min(i64::MAX as u128) as i64
    }

    /// The tick number at `now_ms` (milliseconds since the epoch).
    pub fn tick_at(&self, now_ms: i64) -> u64 {
        now_ms.div_euclid(self.tick_ms()).max(0) as u64
    }

    /// When tick `tick` began, in milliseconds since the epoch.
    pub fn tick_start_ms(&self, tick: u64) -> i64 {
        (tick as i64).saturating_mul(self.tick_ms())
    }
}
