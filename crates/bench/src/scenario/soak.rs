//! `fleetsql bench --soak 30m` (issue 20 item 6): the simulated fleet with
//! realistic row churn feeding a real TLA and SQL node that runs 20
//! alerts, 5 reports and 100 persistent queries, for a long time, while a
//! client asks the seed queries once a second. Sampled every few seconds
//! per process (the TLA, the SQL node, and this process, which serves the
//! simulated proxies): resident memory and thread count from
//! `/proc/PID/status`, open descriptors from `/proc/PID/fd`, tokio tasks
//! from `/metrics` (`fleetsql_tasks`). Reported: the slope of resident
//! memory after the warm-up (least squares), descriptor, thread and task
//! growth over the same span, and the query latency's p99 per window.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{
    Fleet, SQL, Tiers, connect, create_dir, phase, start_tiers, timed, wait_complete, write_json,
};
use crate::apps::AppsSetup;
use crate::metrics::MetricsClient;
use crate::{BenchConfig, BenchError, Latency, Result, SEED_QUERIES};

/// How long and how finely a soak looks.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakConfig {
    pub duration: Duration,
    /// Samples before this are shown but left out of the slopes and growth
    /// (caches fill, the first full generations settle).
    pub warmup: Duration,
    /// The span of each p99.
    pub window: Duration,
    /// Time between process samples.
    pub sample_every: Duration,
}

impl SoakConfig {
    /// A soak of `duration`: a sixth of it warm-up but at least a minute
    /// (at most half the soak), twenty windows (at least 10 s each), a
    /// sample every 5 s (every 2 s for a short soak).
    ///
    /// The minute: the SQL node's memory climbs for its first 60 s or so
    /// (the persistent queries' 30 s windows fill, the allocator reaches
    /// its working set) and is flat after it (8-minute soak at 2,000
    /// machines: 333 MiB at the start, 782 MiB at 60 s, 774-795 MiB for
    /// the 7 minutes after). A 2-minute soak with a sixth (20 s) as warm-up
    /// fitted that climb as a +920 MiB/h slope.
    pub fn of(duration: Duration) -> SoakConfig {
        SoakConfig {
            duration,
            warmup: (duration / 6).max(Duration::from_secs(60).min(duration / 2)),
            window: (duration / 20).max(Duration::from_secs(10)),
            sample_every: if duration < Duration::from_secs(600) {
                Duration::from_secs(2)
            } else {
                Duration::from_secs(5)
            },
        }
    }
}

/// One sample of one process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcessSample {
    /// Seconds since the soak began.
    pub t_s: f64,
    pub rss_bytes: u64,
    pub fds: u64,
    pub threads: u64,
    /// Tokio tasks alive (`None` when the process did not say).
    pub tasks: Option<u64>,
}

/// What one process did over the soak.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessSoak {
    /// `tla`, `sqlnode`, or `bench` (this process: the simulated proxies).
    pub process: String,
    /// Least-squares slope of resident memory after the warm-up, MiB/hour.
    pub rss_slope_mib_per_hour: f64,
    pub rss_after_warmup_bytes: u64,
    pub rss_last_bytes: u64,
    pub rss_max_bytes: u64,
    /// Last minus first sample after the warm-up (may be negative).
    pub fd_growth: i64,
    pub fd_max_growth: i64,
    pub thread_growth: i64,
    pub task_growth: Option<i64>,
    pub samples: Vec<ProcessSample>,
}

/// The seed queries over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SoakWindow {
    pub start_s: f64,
    pub queries: usize,
    pub failed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SoakReport {
    pub machines: usize,
    pub clusters: usize,
    pub tick_ms: u64,
    pub process_churn: f64,
    pub profile: String,
    pub alerts: usize,
    pub reports: usize,
    pub persistent_queries: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub window_s: f64,
    /// Generations the SQL node installed during the soak.
    pub sql_generations: u64,
    pub queries: usize,
    pub failed_queries: usize,
    /// The first failure's reason, if any.
    pub first_failure: Option<String>,
    /// Highest over lowest window p99 after the warm-up.
    pub p99_spread: f64,
    pub processes: Vec<ProcessSoak>,
    pub windows: Vec<SoakWindow>,
}

/// Least-squares slope of `points` (x, y); 0 for fewer than two.
pub fn least_squares_slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in points {
        num += (x - mean_x) * (y - mean_y);
        den += (x - mean_x) * (x - mean_x);
    }
    if den == 0.0 { 0.0 } else { num / den }
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `/proc/PID` (or `self`): (resident bytes, threads, open descriptors).
fn proc_sample(pid: &str) -> Option<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status_field(&status, "VmRSS:")? * 1024;
    let threads = status_field(&status, "Threads:")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, threads, fds))
}

/// Sums a process's samples after `warmup_s` into its figures.
fn summarise(process: &str, samples: Vec<ProcessSample>, warmup_s: f64) -> ProcessSoak {
    let steady: Vec<&ProcessSample> = samples.iter().filter(|s| s.t_s >= warmup_s).collect();
    let slope_bytes_per_s = least_squares_slope(
        &steady
            .iter()
            .map(|s| (s.t_s, s.rss_bytes as f64))
            .collect::<Vec<_>>(),
    );
    let first = steady.first().copied();
    let last = steady.last().copied();
    let growth = |f: fn(&ProcessSample) -> u64| -> i64 {
        match (first, last) {
            (Some(a), Some(b)) => f(b) as i64 - f(a) as i64,
            _ => 0,
        }
    };
    let fd_max_growth = match first {
        Some(a) => steady
            .iter()
            .map(|s| s.fds as i64 - a.fds as i64)
            .max()
            .unwrap_or(0),
        None => 0,
    };
    let task_growth = match (first.and_then(|s| s.tasks), last.and_then(|s| s.tasks)) {
        (Some(a), Some(b)) => Some(b as i64 - a as i64),
        _ => None,
    };
    ProcessSoak {
        process: process.to_string(),
        rss_slope_mib_per_hour: slope_bytes_per_s * 3600.0 / 1048576.0,
        rss_after_warmup_bytes: first.map_or(0, |s| s.rss_bytes),
        rss_last_bytes: last.map_or(0, |s| s.rss_bytes),
        rss_max_bytes: steady.iter().map(|s| s.rss_bytes).max().unwrap_or(0),
        fd_growth: growth(|s| s.fds),
        fd_max_growth,
        thread_growth: growth(|s| s.threads),
        task_growth,
        samples,
    }
}

/// One query's outcome: when it started (s since the soak began), how
/// long it took, and the error if it failed.
type Outcome = (f64, f64, Option<String>);

/// The seed queries once a second until `until`, as a dashboard would ask.
async fn query_load(
    client: tokio_postgres::Client,
    started: Instant,
    until: Duration,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
) {
    let mut rounds = tokio::time::interval(Duration::from_secs(1));
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while started.elapsed() < until {
        rounds.tick().await;
        for (name, sql) in SEED_QUERIES {
            let at = started.elapsed().as_secs_f64();
            let outcome = match timed(&client, name, sql).await {
                Ok((ms, _)) => (at, ms, None),
                Err(e) => (at, 0.0, Some(e.to_string())),
            };
            if let Ok(mut all) = outcomes.lock() {
                all.push(outcome);
            }
        }
    }
}

fn windows(outcomes: &[Outcome], window: Duration, duration: Duration) -> Vec<SoakWindow> {
    let width = window.as_secs_f64();
    let count = (duration.as_secs_f64() / width).ceil().max(1.0) as usize;
    (0..count)
        .map(|i| {
            let start = i as f64 * width;
            let inside: Vec<&Outcome> = outcomes
                .iter()
                .filter(|o| o.0 >= start && o.0 < start + width)
                .collect();
            let ok: Vec<f64> = inside
                .iter()
                .filter(|o| o.2.is_none())
                .map(|o| o.1)
                .collect();
            let latency = Latency::of(&ok);
            SoakWindow {
                start_s: start,
                queries: inside.len(),
                failed: inside.iter().filter(|o| o.2.is_some()).count(),
                p50_ms: latency.p50_ms,
                p99_ms: latency.p99_ms,
            }
        })
        .collect()
}

/// Runs the soak: builds the fleet, starts the tiers with the apps, waits
/// for a complete generation, then samples for `soak.duration`. Writes
/// `soak.json` into the work directory.
pub async fn run_soak(config: &BenchConfig, soak: &SoakConfig) -> Result<SoakReport> {
    config.validate()?;
    if soak.warmup >= soak.duration {
        return Err(BenchError::Config(
            "the soak's warm-up must be shorter than the soak".to_string(),
        ));
    }
    let config = BenchConfig {
        duckdb: false,
        ..config.clone()
    };
    let dir = &config.work_dir;
    create_dir(dir)?;
    let all_apps: Vec<String> = crate::APPS.iter().map(|a| a.to_string()).collect();
    let setup = AppsSetup::write(dir, &crate::pq_tables(), &all_apps)?;
    let fleet = Fleet::start(&config).await?;
    let outcome = async {
        let (mut tiers, _) = start_tiers(&config, dir, &fleet, Some(&setup), None).await?;
        let outcome = soak_tiers(&config, soak, &mut tiers, &fleet, &setup).await;
        tiers.stop().await;
        outcome
    }
    .await;
    fleet.shutdown().await;
    let report = outcome?;
    write_json(&dir.join("soak.json"), &report)?;
    Ok(report)
}

async fn soak_tiers(
    config: &BenchConfig,
    soak: &SoakConfig,
    tiers: &mut Tiers,
    fleet: &Fleet,
    setup: &AppsSetup,
) -> Result<SoakReport> {
    let sql_http = tiers.sql.address("http")?;
    setup.register(sql_http).await?;
    let sql_metrics = MetricsClient::new(sql_http);
    let tla_metrics = MetricsClient::new(tiers.tla()?.address("http")?);
    wait_complete(config, tiers, &sql_metrics, fleet.sizes.machines).await?;
    phase(&format!(
        "soaking for {:?} ({} alerts, {} reports, {} persistent queries on {SQL}), a sample every {:?}",
        soak.duration,
        crate::ALERTS,
        crate::REPORTS,
        setup.statements.len(),
        soak.sample_every
    ));

    let started = Instant::now();
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let client = connect(tiers.sql.address("pg")?, None).await?;
    let load = tokio::spawn(query_load(client, started, soak.duration, outcomes.clone()));
    let pids = [
        ("tla", tiers.tla()?.pid().to_string()),
        ("sqlnode", tiers.sql.pid().to_string()),
        ("bench", "self".to_string()),
    ];
    let mut samples: Vec<Vec<ProcessSample>> = vec![Vec::new(); pids.len()];
    let first_generation = sql_metrics
        .scrape()
        .await
        .map_or(0.0, |s| s.or_zero("fleetsql_generation_id"));
    let mut last_generation = first_generation;
    let progress = super::bar(soak.duration.as_secs().max(1), "soaking");
    while started.elapsed() < soak.duration {
        tiers.check(config.max_rss_bytes)?;
        let t_s = started.elapsed().as_secs_f64();
        let tla = tla_metrics.scrape().await;
        let sql = sql_metrics.scrape().await;
        if let Some(s) = &sql {
            last_generation = s.or_zero("fleetsql_generation_id");
        }
        let own_tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks() as u64;
        let tasks = [
            tla.and_then(|s| s.get("fleetsql_tasks")).map(|t| t as u64),
            sql.and_then(|s| s.get("fleetsql_tasks")).map(|t| t as u64),
            Some(own_tasks),
        ];
        for (i, (_, pid)) in pids.iter().enumerate() {
            if let Some((rss_bytes, threads, fds)) = proc_sample(pid) {
                samples[i].push(ProcessSample {
                    t_s,
                    rss_bytes,
                    fds,
                    threads,
                    tasks: tasks[i],
                });
            }
        }
        progress.set_position(started.elapsed().as_secs());
        tokio::time::sleep(soak.sample_every).await;
    }
    progress.finish_and_clear();
    let _ = load.await;
    let outcomes = outcomes.lock().map(|o| o.clone()).unwrap_or_default();
    let warmup_s = soak.warmup.as_secs_f64();
    let windows = windows(&outcomes, soak.window, soak.duration);
    let steady_p99: Vec<f64> = windows
        .iter()
        .filter(|w| w.start_s >= warmup_s && w.queries > w.failed)
        .map(|w| w.p99_ms)
        .collect();
    let p99_spread = match (
        steady_p99.iter().copied().reduce(f64::max),
        steady_p99.iter().copied().reduce(f64::min),
    ) {
        (Some(max), Some(min)) if min > 0.0 => max / min,
        _ => f64::NAN,
    };
    let processes = pids
        .iter()
        .zip(samples)
        .map(|((name, _), samples)| summarise(name, samples, warmup_s))
        .collect();
    Ok(SoakReport {
        machines: fleet.sizes.machines,
        clusters: fleet.proxies.len(),
        tick_ms: config.tick.as_millis() as u64,
        process_churn: config.process_churn,
        profile: crate::build_profile().to_string(),
        alerts: if setup.alerts_dir.is_some() {
            crate::ALERTS
        } else {
            0
        },
        reports: if setup.reports_dir.is_some() {
            crate::REPORTS
        } else {
            0
        },
        persistent_queries: setup.statements.len(),
        duration_s: soak.duration.as_secs_f64(),
        warmup_s,
        window_s: soak.window.as_secs_f64(),
        sql_generations: (last_generation - first_generation).max(0.0) as u64,
        queries: outcomes.len(),
        failed_queries: outcomes.iter().filter(|o| o.2.is_some()).count(),
        first_failure: outcomes.iter().find_map(|o| o.2.clone()),
        p99_spread,
        processes,
        windows,
    })
}

/// The soak as Markdown: one row per process, then the p99 per window.
pub fn soak_markdown(r: &SoakReport) -> String {
    use std::fmt::Write as _;
    let mib = |b: u64| b as f64 / 1048576.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Soak: {} machines in {} clusters, tick {} ms, process churn {}, {} alerts, {} reports, {} persistent queries, {:.0} s ({:.0} s warm-up), {} build; {} generations installed, {} seed queries ({} failed).\n",
        r.machines,
        r.clusters,
        r.tick_ms,
        r.process_churn,
        r.alerts,
        r.reports,
        r.persistent_queries,
        r.duration_s,
        r.warmup_s,
        r.profile,
        r.sql_generations,
        r.queries,
        r.failed_queries
    );
    let _ = writeln!(
        out,
        "| process | RSS after warm-up (MiB) | RSS last (MiB) | RSS slope (MiB/h) | fd growth (max) | thread growth | task growth |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for p in &r.processes {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:+.1} | {:+} ({:+}) | {:+} | {} |",
            p.process,
            mib(p.rss_after_warmup_bytes),
            mib(p.rss_last_bytes),
            p.rss_slope_mib_per_hour,
            p.fd_growth,
            p.fd_max_growth,
            p.thread_growth,
            p.task_growth
                .map_or("n/a".to_string(), |g| format!("{g:+}"))
        );
    }
    let _ = writeln!(
        out,
        "\nSeed-query p99 per {:.0} s window (ms): {}; highest over lowest after warm-up: {:.2}",
        r.window_s,
        r.windows
            .iter()
            .map(|w| format!("{:.0}", w.p99_ms))
            .collect::<Vec<_>>()
            .join(", "),
        r.p99_spread
    );
    if let Some(reason) = &r.first_failure {
        let _ = writeln!(out, "\nFirst failed query: {reason}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_the_least_squares_fit() {
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 7.0)).collect();
        assert!((least_squares_slope(&line) - 3.0).abs() < 1e-9);
        let flat_noise = [(0.0, 5.0), (1.0, 7.0), (2.0, 5.0), (3.0, 7.0)];
        assert!(least_squares_slope(&flat_noise).abs() < 1.0);
        assert_eq!(least_squares_slope(&[(1.0, 1.0)]), 0.0);
    }

    #[test]
    fn the_warm_up_covers_the_first_minute_of_a_short_soak() {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(SoakConfig::of(minutes(2)).warmup, minutes(1));
        assert_eq!(SoakConfig::of(minutes(30)).warmup, minutes(5));
        assert_eq!(
            SoakConfig::of(Duration::from_secs(40)).warmup,
            Duration::from_secs(20)
        );
    }

    #[test]
    fn growth_counts_only_after_the_warm_up() {
        let sample = |t_s: f64, fds: u64| ProcessSample {
            t_s,
            rss_bytes: 1 << 20,
            fds,
            threads: 4,
            tasks: Some(10),
        };
        let samples = vec![
            sample(0.0, 5),
            sample(10.0, 40),
            sample(20.0, 42),
            sample(30.0, 41),
        ];
        let p = summarise("x", samples, 10.0);
        assert_eq!(p.fd_growth, 1);
        assert_eq!(p.fd_max_growth, 2);
        assert_eq!(p.task_growth, Some(0));
        assert_eq!(p.rss_slope_mib_per_hour, 0.0);
    }

    #[test]
    fn windows_take_the_p99_of_the_queries_that_worked() {
        let mut outcomes: Vec<Outcome> = (0..100).map(|i| (1.0, i as f64, None)).collect();
        outcomes.push((12.0, 5.0, None));
        outcomes.push((13.0, 0.0, Some("time-out".into())));
        let w = windows(&outcomes, Duration::from_secs(10), Duration::from_secs(20));
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].queries, 100);
        assert!(w[0].p99_ms >= 98.0);
        assert_eq!((w[1].queries, w[1].failed), (2, 1));
        assert_eq!(w[1].p99_ms, 5.0);
    }
}
