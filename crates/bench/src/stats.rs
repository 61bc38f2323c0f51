use serde::Serialize;

/// Percentiles of a set of samples, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(samples_ms: &[f64]) -> Latency {
        if samples_ms.is_empty() {
            return Latency::default();
        }
        let mut sorted = samples_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
        Latency {
            samples: sorted.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: sorted[sorted.len() - 1],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryReport {
    pub name: String,
    /// Over the Postgres wire to the SQL node while generations arrive and
    /// the simulated fleet, TLA and SQL node share the box.
    pub under_load: Latency,
    /// Runs under load that failed, and the first failure's reason.
    pub under_load_failures: usize,
    pub under_load_failure: Option<String>,
    /// Over the Postgres wire to the SQL node with the TLA stopped: the
    /// query alone, as DuckDB is timed.
    pub fleetsql: Latency,
    pub fleetsql_rows: usize,
    /// In-process DuckDB over the same tables (one tick's rows), when run.
    pub duckdb: Option<Latency>,
    pub duckdb_rows: Option<usize>,
}

impl QueryReport {
    /// fleetsql p50 / DuckDB p50: below 1 means fleetsql is faster.
    pub fn duckdb_ratio(&self) -> Option<f64> {
        let duckdb = self.duckdb?;
        (duckdb.p50_ms > 0.0).then(|| self.fleetsql.p50_ms / duckdb.p50_ms)
    }
}

/// Everything one scenario measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub machines: usize,
    pub clusters: usize,
    pub processes_per_machine: usize,
    pub tick_ms: u64,
    /// Fraction of rows whose values change per tick.
    pub churn: f64,
    /// Share of machines whose process count changes per tick.
    #[serde(default)]
    pub process_churn: f64,
    /// Cargo profile the tiers under test were built with (`dev` or
    /// `release`): the bench starts its own binary.
    #[serde(default)]
    pub profile: String,
    /// Flight compression between the tiers.
    pub compression: String,
    pub duration_s: f64,
    /// Rows of one generation, all tables.
    pub rows: u64,
    /// Arrow bytes of one generation as the simulated proxies hold it.
    pub raw_arrow_bytes: u64,
    /// Building the fleet's first generation in the simulator.
    pub sim_build_ms: f64,
    /// Generations the TLA made while measured.
    pub tla_generations: usize,
    /// The TLA collecting its children's answers (Flight receive, plus the
    /// long poll of a timer tick waiting for newer data).
    pub tla_fetch: Latency,
    /// The TLA merging those answers.
    pub tla_merge: Latency,
    /// Flight bytes per generation into and out of the TLA.
    pub tla_bytes_in_per_generation: f64,
    pub tla_bytes_out_per_generation: f64,
    /// The box's 1-minute load average at the end of the measurement:
    /// figures taken on a busy machine say so.
    pub load_average: f64,
    pub cores: usize,
    pub tla_generation_bytes: u64,
    pub tla_peak_rss_bytes: u64,
    /// Resident memory when it said it was ready, before any data.
    pub tla_idle_rss_bytes: u64,
    /// Copying `tla_generation_bytes` with `copy_from_slice`, best of five.
    pub memcpy_ms: f64,
    /// Generations the SQL node installed while measured.
    pub sql_generations: usize,
    /// From the TLA making a generation to the SQL node answering from it.
    pub sql_install: Latency,
    pub sql_generation_bytes: u64,
    pub sql_peak_rss_bytes: u64,
    /// Median of the VmRSS samples taken while measured: what the node
    /// holds from one generation to the next, rather than at its peak.
    pub sql_steady_rss_bytes: u64,
    pub sql_idle_rss_bytes: u64,
    /// Age of a generation's oldest data when the SQL node began answering
    /// from it.
    pub data_age: Latency,
    pub queries: Vec<QueryReport>,
    pub bench_peak_rss_bytes: u64,
    /// Why DuckDB was not compared, when it was not.
    pub duckdb_note: Option<String>,
}

impl Report {
    /// TLA merge p50 / memcpy of the same bytes.
    pub fn merge_vs_memcpy(&self) -> f64 {
        ratio(self.tla_merge.p50_ms, self.memcpy_ms)
    }

    /// SQL node peak RSS / raw Arrow bytes of a generation.
    pub fn sql_rss_vs_raw(&self) -> f64 {
        ratio(self.sql_peak_rss_bytes as f64, self.raw_arrow_bytes as f64)
    }

    /// What the data cost the SQL node: peak RSS above its idle RSS, per
    /// raw Arrow byte of a generation.
    pub fn sql_data_rss_vs_raw(&self) -> f64 {
        ratio(
            self.sql_peak_rss_bytes
                .saturating_sub(self.sql_idle_rss_bytes) as f64,
            self.raw_arrow_bytes as f64,
        )
    }
}

pub(crate) fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_set() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::of(&samples);
        assert_eq!(l.samples, 100);
        assert_eq!(l.p50_ms, 51.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(Latency::of(&[]).samples, 0);
    }
}
