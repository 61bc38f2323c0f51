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
    /// Rows inserted and deleted per tick (processes starting and exiting,
    /// filesystems mounted, machines leaving): none unless asked for.
    pub rows: RowChurn,
}

/// Churn that changes row counts, on top of `churn` (which only changes
/// values). Every share is per machine and per tick, drawn from the seed:
/// the same config gives the same inserts and deletes at the same ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowChurn {
    /// Share of machines whose set of short-lived processes changes per
    /// tick: some start, some exit, so `processes` changes length.
    pub processes: f64,
    /// Short-lived process slots per machine beside its long-lived
    /// `processes_per_machine` (each in use about half the time).
    pub transient_processes: usize,
    /// Share of machines that mount or unmount a filesystem per tick.
    pub filesystems: f64,
    /// Share of machines that leave their cluster per tick (a reboot, a
    /// move): all their rows vanish until they come back.
    pub leave: f64,
    /// Ticks a machine that left stays away before it joins again.
    pub away_ticks: u64,
}

impl RowChurn {
    /// Values change, row counts never do (what the simulator did before).
    pub const NONE: RowChurn = RowChurn {
        processes: 0.0,
        transient_processes: 0,
        filesystems: 0.0,
        leave: 0.0,
        away_ticks: 0,
    };

    /// Shares per 5 s tick from what Linux hosts do; the measurement or
    /// source behind each is in BENCHMARKS.md ("Realistic churn").
    /// `processes` is the share of machines whose process count changes
    /// per tick.
    pub fn realistic(processes: f64) -> RowChurn {
        RowChurn {
            processes,
            // A server's cron jobs, shells and health checks: a handful
            // alive at any moment beside its ~100 daemons and workers.
            transient_processes: 8,
            // A user session's /run/user tmpfs or an automounted backup
            // share: a few times a day per machine (1 in 2,000 ticks is
            // about 4 times a day at 5 s).
            filesystems: 0.0005,
            // A monthly patch reboot: one leave per machine per 518,400
            // ticks of 5 s, away for about two minutes.
            leave: 1.0 / 518_400.0,
            away_ticks: 24,
        }
    }
}

impl Default for RowChurn {
    fn default() -> Self {
        RowChurn::NONE
    }
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
            rows: RowChurn::NONE,
        }
    }
}

/// Keeps IPs (10.x.y.z from the machine number) unique.
const MAX_MACHINES: usize = 1 << 24;

/// Short-lived process slots are one bit each of a per-machine mask.
pub(crate) const MAX_TRANSIENT: usize = 32;

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
        let shares = [
            ("rows.processes", self.rows.processes),
            ("rows.filesystems", self.rows.filesystems),
            ("rows.leave", self.rows.leave),
        ];
        for (field, share) in shares {
            if !(0.0..=1.0).contains(&share) {
                return invalid(field, "must be a fraction between 0 and 1");
            }
        }
        if self.rows.transient_processes > MAX_TRANSIENT {
            return invalid(
                "rows.transient_processes",
                "must be at most 32 (slots per machine, each a bit of a mask)",
            );
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
