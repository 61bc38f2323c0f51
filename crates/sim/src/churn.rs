//! Row-count churn: which rows of a machine exist at a tick.
//!
//! A machine has its long-lived rows plus a few *slots* per table (short-
//! lived processes, mounts that come and go), each in use or not. The set
//! of slots in use has a version that moves at the configured share per
//! tick (the same `row_version` as values), and each version's set is a
//! pure function of (machine, table, version), so any tick is computed
//! directly. A machine that left its cluster has no rows at all.

use crate::config::RowChurn;
use crate::profile::Profile;
use crate::rng::{derive, mix, phase, row_version, unit, version_start};
use crate::tables::Kind;

/// Transient slots of `kind` per machine under `rows`.
pub(crate) fn slots(kind: Kind, rows: &RowChurn) -> usize {
    match kind {
        Kind::Processes if rows.processes > 0.0 => rows.transient_processes,
        Kind::Filesystem if rows.filesystems > 0.0 => crate::tables::EXTRA_MOUNTS,
        _ => 0,
    }
}

fn share(kind: Kind, rows: &RowChurn) -> f64 {
    match kind {
        Kind::Processes => rows.processes,
        Kind::Filesystem => rows.filesystems,
        _ => 0.0,
    }
}

/// True when the machine is away (it left within the last `away_ticks`).
pub(crate) fn away(p: &Profile, tick: u64, rows: &RowChurn) -> bool {
    if rows.leave <= 0.0 {
        return false;
    }
    let key = derive(p.key, 0x4c45_4156);
    (0..rows.away_ticks.max(1))
        .take_while(|back| *back <= tick)
        .any(|back| unit(derive(key, tick - back)) < rows.leave)
}

/// The slots of one machine's table at one tick.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slots {
    key: u64,
    phase: f64,
    count: usize,
    share: f64,
    /// Version of the set in use, and the set (bit `j`: slot `j`).
    pub(crate) version: u64,
    pub(crate) mask: u64,
}

impl Slots {
    pub(crate) fn at(kind: Kind, p: &Profile, tick: u64, rows: &RowChurn) -> Slots {
        let count = slots(kind, rows);
        let key = derive(p.key, 0x534c_0000 + kind as u64);
        let phase = phase(key);
        let share = share(kind, rows);
        let version = row_version(phase, tick, share);
        let mut slots = Slots {
            key,
            phase,
            count,
            share,
            version,
            mask: 0,
        };
        slots.mask = slots.mask_at(version);
        slots
    }

    /// The set in use at `version`. Its size's parity is the version's, so
    /// every change of version changes the row count.
    fn mask_at(&self, version: u64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let all = if self.count >= 64 {
            u64::MAX
        } else {
            (1u64 << self.count) - 1
        };
        let draw = mix(derive(self.key, version));
        let mut mask = draw & all;
        if u64::from(mask.count_ones() % 2) != version % 2 {
            mask ^= 1 << ((draw >> 40) % self.count as u64);
        }
        mask
    }

    pub(crate) fn in_use(&self, slot: usize) -> bool {
        self.mask & (1 << slot) != 0
    }

    /// The version at which slot `slot` (in use now) was last taken: what
    /// stays the same while the process runs (its pid, its start time).
    /// Looks back a bounded number of versions.
    pub(crate) fn epoch(&self, slot: usize) -> u64 {
        let mut epoch = self.version;
        while epoch > 0 && self.version - epoch < 16 && self.mask_at(epoch - 1) & (1 << slot) != 0 {
            epoch -= 1;
        }
        epoch
    }

    /// When `epoch` began, as a tick.
    pub(crate) fn epoch_start(&self, epoch: u64, tick: u64) -> u64 {
        version_start(self.phase, epoch, tick, self.share)
    }
}
