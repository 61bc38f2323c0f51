//! Hash-based randomness. Every simulated value is a pure function of
//! (seed, machine, table, row, version), so any tick can be generated
//! without replaying the ticks before it, and a row that did not churn is
//! bit-for-bit what it was. SplitMix64 is used instead of `rand`'s `StdRng`
//! because its output is fixed forever: `StdRng` may change algorithm between
//! `rand` releases, which would silently change every seeded fleet.

/// One SplitMix64 step: a strong 64-bit mixer.
pub(crate) const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A key derived from a parent key and one more coordinate.
pub(crate) const fn derive(key: u64, part: u64) -> u64 {
    mix(key ^ mix(part))
}

/// A uniform number in [0, 1) from a key.
pub(crate) fn unit(key: u64) -> f64 {
    (mix(key) >> 11) as f64 / (1u64 << 53) as f64
}

/// A small sequential generator for drawing several values from one key.
#[derive(Debug, Clone)]
pub(crate) struct Draw {
    state: u64,
}

impl Draw {
    pub(crate) fn new(key: u64) -> Self {
        Draw { state: key }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [lo, hi] (hi >= lo).
    pub(crate) fn int(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo + 1).max(1) as u64;
        lo + (self.next_u64() % span) as i64
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// A row's churn phase, uniform in [0, 1), from its key.
pub(crate) fn phase(key: u64) -> f64 {
    unit(key)
}

/// The version of a row at `tick` when a fraction `churn` of rows changes
/// per tick. Each row has its own `phase` so that changes spread evenly
/// over ticks: the version is `floor(tick * churn + phase)` with `phase`
/// uniform in [0, 1), hence a row changes at a given tick with probability
/// exactly `churn`, and never twice in one tick.
pub(crate) fn row_version(phase: f64, tick: u64, churn: f64) -> u64 {
    if churn <= 0.0 {
        return 0;
    }
    ((tick as f64) * churn + phase).floor() as u64
}

/// The first tick at which `row_version` returned `version`: when the row's
/// current values were sampled. Clamped to `tick` against rounding.
pub(crate) fn version_start(phase: f64, version: u64, tick: u64, churn: f64) -> u64 {
    if churn <= 0.0 {
        return 0;
    }
    let start = ((version as f64 - phase) / churn).ceil();
    (start.max(0.0) as u64).min(tick)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_change_at_the_configured_rate() {
        let churn = 0.1;
        let rows = 10_000u64;
        let tick = 1_000_000u64;
        let changed = (0..rows)
            .map(phase)
            .filter(|p| row_version(*p, tick, churn) != row_version(*p, tick - 1, churn))
            .count();
        let fraction = changed as f64 / rows as f64;
        assert!((0.08..0.12).contains(&fraction), "{fraction}");
    }

    #[test]
    fn version_start_is_where_the_version_begins() {
        for key in 0..200u64 {
            let key = phase(key);
            let tick = 345_678_901u64;
            let v = row_version(key, tick, 0.1);
            let start = version_start(key, v, tick, 0.1);
            assert_eq!(row_version(key, start, 0.1), v);
            assert!(start == 0 || row_version(key, start - 1, 0.1) < v);
        }
    }
}
