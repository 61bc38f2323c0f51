//! The apps a SQL node runs (alerts, reports, persistent queries), as a
//! load for `fleetsql bench --apps-cost`: definitions written into
//! directories the topology names, statements registered over the node's
//! HTTP API, and afterwards what the apps did, so a run can show they ran.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::{BenchError, Result};

/// Alert definitions the apps half runs (the 20).
pub const ALERTS: usize = 20;
/// Persistent queries it registers (the 100).
pub const PERSISTENT_QUERIES: usize = 100;
/// Report definitions it runs (the 5).
pub const REPORTS: usize = 5;

/// The fleet tables persistent queries may read, in the proportions the
/// statements are spread over them: `sys` and `filesystem` most (small
/// per machine, what dashboards watch), `processes` least (a hundred rows
/// per machine, so every one of its generations is ~10M events).
const PQ_SLOTS: [&str; 10] = [
    "sys",
    "sys",
    "sys",
    "sys",
    "filesystem",
    "filesystem",
    "filesystem",
    "load_info",
    "machinerole",
    "processes",
];

/// The apps `--apps-only` may name; all of them run unless it does.
pub const APPS: [&str; 3] = ["alerts", "reports", "queries"];

/// Tables persistent queries may read unless told otherwise.
pub fn pq_tables() -> Vec<String> {
    let mut tables: Vec<String> = PQ_SLOTS.iter().map(|t| t.to_string()).collect();
    tables.dedup();
    tables
}

/// Where the apps' definitions and state live for one run.
#[derive(Debug)]
pub(crate) struct AppsSetup {
    /// `None` when the alerts (reports) are left out of the run.
    pub(crate) alerts_dir: Option<PathBuf>,
    pub(crate) reports_dir: Option<PathBuf>,
    /// Removed when the setup is dropped: a state directory kept from an
    /// earlier run would restore its persistent queries and alert state
    /// into this one.
    pub(crate) state_dir: tempfile::TempDir,
    pub(crate) statements: Vec<String>,
    pub(crate) tables: Vec<String>,
}

impl AppsSetup {
    /// Writes the alert and report definitions under `dir` and picks the
    /// persistent queries' statements over `tables`, for the apps of
    /// [`APPS`] that `only` names.
    pub(crate) fn write(dir: &Path, tables: &[String], only: &[String]) -> Result<AppsSetup> {
        if let Some(bad) = only.iter().find(|a| !APPS.contains(&a.as_str())) {
            return Err(BenchError::Config(format!(
                "--apps-only: `{bad}` is not an app; use some of {}",
                APPS.join(",")
            )));
        }
        let runs = |app: &str| only.iter().any(|a| a == app);
        let known = pq_tables();
        if let Some(bad) = tables.iter().find(|t| !known.contains(t)) {
            return Err(BenchError::Config(format!(
                "--apps-pq-tables: `{bad}` is not a simulated fleet table; use some of {}",
                known.join(",")
            )));
        }
        let slots: Vec<&str> = PQ_SLOTS
            .iter()
            .copied()
            .filter(|t| tables.iter().any(|w| w == t))
            .collect();
        if slots.is_empty() {
            return Err(BenchError::Config(
                "--apps-pq-tables names no table".to_string(),
            ));
        }
        let alerts_dir = dir.join("alerts");
        let reports_dir = dir.join("reports");
        for d in [&alerts_dir, &reports_dir] {
            // Definitions of an earlier run with other counts must not stay.
            if d.exists() {
                std::fs::remove_dir_all(d)
                    .map_err(|e| BenchError::io(format!("clearing {}", d.display()), e))?;
            }
            std::fs::create_dir_all(d)
                .map_err(|e| BenchError::io(format!("creating {}", d.display()), e))?;
        }
        if runs("alerts") {
            for (i, text) in alert_definitions().iter().enumerate() {
                write(&alerts_dir.join(format!("bench_{i:02}.toml")), text)?;
            }
        }
        if runs("reports") {
            for (name, text) in report_definitions() {
                write(&reports_dir.join(format!("{name}.toml")), &text)?;
            }
        }
        let state_dir = tempfile::Builder::new()
            .prefix("apps-state-")
            .tempdir_in(dir)
            .map_err(|e| {
                BenchError::io(
                    format!("creating a state directory in {}", dir.display()),
                    e,
                )
            })?;
        let statements = if runs("queries") {
            (0..PERSISTENT_QUERIES)
                .map(|i| statement(slots[i % slots.len()], i))
                .collect()
        } else {
            Vec::new()
        };
        let mut tables: Vec<String> = if runs("queries") {
            slots.iter().map(|t| t.to_string()).collect()
        } else {
            Vec::new()
        };
        tables.sort();
        tables.dedup();
        Ok(AppsSetup {
            alerts_dir: runs("alerts").then_some(alerts_dir),
            reports_dir: runs("reports").then_some(reports_dir),
            state_dir,
            statements,
            tables,
        })
    }

    /// Registers every statement on the node; one refused stops the run.
    pub(crate) async fn register(&self, http: SocketAddr) -> Result<()> {
        let client = client();
        let url = format!("http://{http}/v1/persistent-queries");
        for epl in &self.statements {
            let failed =
                |reason: String| BenchError::Apps(format!("registering `{epl}`: {reason}"));
            let response = client
                .post(&url)
                .json(&json!({ "epl": epl }))
                .send()
                .await
                .map_err(|e| failed(e.to_string()))?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                return Err(failed(format!("{status}: {body}")));
            }
        }
        Ok(())
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

/// Twenty alerts: the seed's disk alert and its relatives over
/// `filesystem`, `sys` and `processes`, with thresholds that differ per
/// copy, so no two share an SQL text (shared texts are run once per pass
/// and would hide the cost), and `every` between 2 and 5 s, so each runs
/// about once per generation.
fn alert_definitions() -> Vec<String> {
    (0..ALERTS)
        .map(|i| {
            let step = i / 5;
            let (what, sql) = match i % 5 {
                0 => (
                    "disk space low",
                    format!(
                        "SELECT machineip ip_key, mountp mnt_key, bavail*bsize free_space, (100*bavail)/blocks pct FROM filesystem a WHERE blocks > 0 and (100*bavail)/blocks < {}",
                        3 + step
                    ),
                ),
                1 => (
                    "inodes low",
                    format!(
                        "SELECT machineip ip_key, mountp mnt_key, ffree FROM filesystem WHERE files > 0 AND (100*ffree)/files < {}",
                        2 + step
                    ),
                ),
                2 => (
                    "high cpu",
                    format!(
                        "SELECT ip ip_key, hostname, cpu_pct FROM sys WHERE cpu_pct > {}",
                        98 - step
                    ),
                ),
                3 => (
                    "memory low",
                    format!(
                        "SELECT ip ip_key, hostname, memavail FROM sys WHERE memtotal > 0 AND (100*memavail)/memtotal < {}",
                        5 + step
                    ),
                ),
                _ => (
                    "process hog",
                    format!(
                        "SELECT p.ip ip_key, p.pid pid_key, p.procname, p.rss FROM processes p, sys s WHERE p.ip = s.ip AND (p.rss*100)/s.memtotal > {}",
                        75 + step
                    ),
                ),
            };
            format!(
                "name = \"bench {what} {i:02}\"\nseverity = \"warning\"\nevery = \"{}s\"\nfire_after = 1\nclear_after = \"0s\"\nroutes = [\"console\"]\nsql = \"\"\"\n{sql}\n\"\"\"\n",
                2 + i % 4
            )
        })
        .collect()
}

/// Five reports: the seed's continent hits and summaries of the other
/// tables, every 10 s (two generations).
fn report_definitions() -> Vec<(&'static str, String)> {
    let reports: [(&str, &str, &str, &str); REPORTS] = [
        (
            "continent_hits",
            "SELECT c.continent_name, SUM(l.hits) hits FROM load_info l, region_data r, continent_data c WHERE l.georegion = r.id AND r.continent = c.continent GROUP BY c.continent_name ORDER BY hits DESC",
            "continent_name",
            "hits",
        ),
        (
            "cpu_by_os",
            "SELECT os, count(*) machines, avg(cpu_pct) cpu FROM sys GROUP BY os",
            "os",
            "cpu",
        ),
        (
            "free_by_fstype",
            "SELECT fstype, sum(bavail*bsize) free_bytes FROM filesystem GROUP BY fstype",
            "fstype",
            "free_bytes",
        ),
        (
            "machines_by_role",
            "SELECT role, count(*) machines FROM machinerole GROUP BY role",
            "role",
            "machines",
        ),
        (
            "rss_by_state",
            "SELECT state, count(*) processes, sum(rss) rss FROM processes GROUP BY state",
            "state",
            "rss",
        ),
    ];
    reports
        .into_iter()
        .map(|(name, sql, group, value)| {
            (
                name,
                format!(
                    "title = \"{name}\"\nevery = \"10s\"\nretention = \"1h\"\ngroup_by = [\"{group}\"]\nvalues = [\"{value}\"]\nsql = \"\"\"\n{sql}\n\"\"\"\n"
                ),
            )
        })
        .collect()
}

/// Statement `i` over `table`: a 30 s time window with a filter whose
/// literal carries `i`, so every statement is a registration of its own
/// (identical texts would share one).
fn statement(table: &str, i: usize) -> String {
    match table {
        "sys" => format!(
            "select count(*) as n, avg(cpu_pct) as cpu from sys(cpu_pct > {i}.5)#time(30 sec)"
        ),
        "filesystem" => format!(
            "select count(*) as n, sum(bavail) as free from filesystem(bavail > {})#time(30 sec)",
            i * 1000
        ),
        "load_info" => format!(
            "select georegion, sum(hits) as hits from load_info(hits > {i})#time(30 sec) group by georegion"
        ),
        "machinerole" => {
            format!(
                "select role, count(*) as n from machinerole(role != 'r{i}')#time(30 sec) group by role"
            )
        }
        _ => format!(
            "select count(*) as n, sum(rss) as rss from processes(rss > {})#time(30 sec)",
            i * 1000
        ),
    }
}

/// What the apps did in the apps half, read from the node at the end of
/// the measurement.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppsFigures {
    /// Rows of the `alerts` table.
    pub alerts: u64,
    /// Iterations of all alerts together.
    pub alert_iterations: u64,
    pub alert_active_instances: u64,
    /// Alerts whose last iteration failed.
    pub alert_errors: u64,
    /// Registrations `GET /v1/persistent-queries` lists.
    pub persistent_queries: u64,
    pub pq_notifications: u64,
    /// Registrations listed with an error.
    pub pq_errors: u64,
    /// Tables the persistent queries read (the feed converts each one's rows).
    pub pq_tables: Vec<String>,
    /// Generations offered to the persistent-query feed, and how many it
    /// skipped because it was still busy with an older one.
    pub feed_offered: u64,
    pub feed_skipped: u64,
    /// Reports `GET /v1/reports` lists, their kept runs, and how many have
    /// a last error.
    pub reports: u64,
    pub report_runs: u64,
    pub report_errors: u64,
}

/// Reads what the apps did: the `alerts` and `fleet_generation_hooks`
/// tables over Postgres, the persistent queries and reports over HTTP.
pub(crate) async fn figures(
    pg: &tokio_postgres::Client,
    http: SocketAddr,
    setup: &AppsSetup,
) -> Result<AppsFigures> {
    let mut f = AppsFigures {
        pq_tables: setup.tables.clone(),
        ..AppsFigures::default()
    };
    // Without an alerts directory the node has no `alerts` table.
    let alerts = match setup.alerts_dir {
        Some(_) => numbers(
            pg,
            "SELECT count(*), sum(iteration), sum(active_instances), count(last_error) FROM alerts",
        )
        .await?,
        None => Vec::new(),
    };
    if let [n, iterations, active, errors] = alerts[..] {
        (
            f.alerts,
            f.alert_iterations,
            f.alert_active_instances,
            f.alert_errors,
        ) = (n, iterations, active, errors);
    }
    let hooks = numbers(
        pg,
        "SELECT sum(offered), sum(skipped) FROM fleet_generation_hooks WHERE hook = 'persistent-queries'",
    )
    .await?;
    if let [offered, skipped] = hooks[..] {
        (f.feed_offered, f.feed_skipped) = (offered, skipped);
    }
    let client = client();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let failed = |reason: String| BenchError::Apps(format!("GET {path}: {reason}"));
            let response = client
                .get(format!("http://{http}{path}"))
                .send()
                .await
                .map_err(|e| failed(e.to_string()))?;
            let status = response.status();
            if !status.is_success() {
                return Err(failed(status.to_string()));
            }
            response
                .json::<Value>()
                .await
                .map_err(|e| failed(e.to_string()))
        }
    };
    let listed = get("/v1/persistent-queries").await?;
    let queries = listed["queries"].as_array().map_or(&[][..], Vec::as_slice);
    f.persistent_queries = queries.len() as u64;
    f.pq_notifications = queries
        .iter()
        .filter_map(|q| q["notifications"].as_u64())
        .sum();
    f.pq_errors = queries.iter().filter(|q| !q["error"].is_null()).count() as u64;
    let listed = match setup.reports_dir {
        Some(_) => get("/v1/reports").await?,
        None => Value::Null,
    };
    let reports = listed["reports"].as_array().map_or(&[][..], Vec::as_slice);
    f.reports = reports.len() as u64;
    f.report_runs = reports.iter().filter_map(|r| r["runs_kept"].as_u64()).sum();
    f.report_errors = reports
        .iter()
        .filter(|r| !r["last_error"].is_null())
        .count() as u64;
    Ok(f)
}

/// The first row of `sql` as whole numbers (NULL, as `sum` over no rows
/// gives, is 0).
async fn numbers(pg: &tokio_postgres::Client, sql: &str) -> Result<Vec<u64>> {
    let failed = |reason: String| BenchError::Query {
        name: sql.to_string(),
        reason,
    };
    let messages = pg
        .simple_query(sql)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let row = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .ok_or_else(|| failed("no row".to_string()))?;
    (0..row.len())
        .map(|i| match row.get(i) {
            None => Ok(0),
            Some(text) => text
                .parse::<f64>()
                .map(|v| v as u64)
                .map_err(|e| failed(format!("column {i} `{text}`: {e}"))),
        })
        .collect()
}

/// Both halves of an apps-cost run and what the apps did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppsCost {
    pub without: crate::Report,
    pub with: crate::Report,
    pub apps: AppsFigures,
}

impl AppsCost {
    /// Steady resident memory: the median of the SQL node's VmRSS samples
    /// taken while measured.
    pub fn steady_ratio(&self) -> f64 {
        crate::stats::ratio(
            self.with.sql_steady_rss_bytes as f64,
            self.without.sql_steady_rss_bytes as f64,
        )
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// An apps-cost run as Markdown for BENCHMARKS.md: one row per figure,
/// without and with the apps, and the ratio.
pub fn apps_markdown(c: &AppsCost) -> String {
    let (a, b) = (&c.without, &c.with);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} machines in {} clusters ({} processes each), tick {} ms, churn {}, Flight compression {}, {} rows and {:.0} MiB of Arrow per generation; each half measured {:.0} s on the same simulated fleet, first without apps, then with (load average {:.1} / {:.1} on {} cores at the end of each).\n",
        b.machines,
        b.clusters,
        b.processes_per_machine,
        b.tick_ms,
        b.churn,
        b.compression,
        b.rows,
        mib(b.raw_arrow_bytes),
        b.duration_s,
        a.load_average,
        b.load_average,
        b.cores
    );
    let _ = writeln!(
        out,
        "| SQL node figure | without apps | with apps | with / without |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let mut row = |figure: &str, x: f64, y: f64, unit: &str| {
        let _ = writeln!(
            out,
            "| {figure} | {x:.0} {unit} | {y:.0} {unit} | {:.2}x |",
            crate::stats::ratio(y, x)
        );
    };
    row(
        "receive + install p50",
        a.sql_install.p50_ms,
        b.sql_install.p50_ms,
        "ms",
    );
    row(
        "receive + install p99",
        a.sql_install.p99_ms,
        b.sql_install.p99_ms,
        "ms",
    );
    row(
        "peak RSS",
        mib(a.sql_peak_rss_bytes),
        mib(b.sql_peak_rss_bytes),
        "MiB",
    );
    row(
        "steady RSS (median while measured)",
        mib(a.sql_steady_rss_bytes),
        mib(b.sql_steady_rss_bytes),
        "MiB",
    );
    row(
        "idle RSS (at ready, before data)",
        mib(a.sql_idle_rss_bytes),
        mib(b.sql_idle_rss_bytes),
        "MiB",
    );
    row("data age p50", a.data_age.p50_ms, b.data_age.p50_ms, "ms");
    let _ = writeln!(
        out,
        "| generations installed | {} | {} | |",
        a.sql_generations, b.sql_generations
    );
    for (x, y) in a.queries.iter().zip(&b.queries) {
        let _ = writeln!(
            out,
            "| query `{}` under load, p50 | {:.1} ms | {:.1} ms | {:.2}x |",
            x.name,
            x.under_load.p50_ms,
            y.under_load.p50_ms,
            crate::stats::ratio(y.under_load.p50_ms, x.under_load.p50_ms)
        );
    }
    for (x, y) in a.queries.iter().zip(&b.queries) {
        if x.under_load_failures + y.under_load_failures > 0 {
            let _ = writeln!(
                out,
                "| query `{}` under load, failed runs | {} | {} | {} |",
                x.name,
                x.under_load_failures,
                y.under_load_failures,
                y.under_load_failure
                    .as_deref()
                    .or(x.under_load_failure.as_deref())
                    .unwrap_or_default()
                    .replace('|', "/")
            );
        }
    }
    let f = &c.apps;
    let _ = writeln!(
        out,
        "\nWhat the apps did in their half: {} alerts ({} iterations, {} active instances, {} with an error), {} persistent queries over {} ({} notifications, {} with an error; the feed was offered {} generations and skipped {} while busy), {} reports ({} runs kept, {} with an error).",
        f.alerts,
        f.alert_iterations,
        f.alert_active_instances,
        f.alert_errors,
        f.persistent_queries,
        f.pq_tables.join(", "),
        f.pq_notifications,
        f.pq_errors,
        f.feed_offered,
        f.feed_skipped,
        f.reports,
        f.report_runs,
        f.report_errors
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_alerts_five_reports_and_a_hundred_distinct_statements() {
        let alerts = alert_definitions();
        assert_eq!(alerts.len(), ALERTS);
        let names: std::collections::BTreeSet<&str> =
            alerts.iter().filter_map(|a| a.lines().next()).collect();
        assert_eq!(names.len(), ALERTS);
        assert_eq!(report_definitions().len(), REPORTS);
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<String> = APPS.iter().map(|a| a.to_string()).collect();
        let setup = AppsSetup::write(dir.path(), &pq_tables(), &all).unwrap();
        assert!(setup.alerts_dir.is_some() && setup.reports_dir.is_some());
        let distinct: std::collections::BTreeSet<&String> = setup.statements.iter().collect();
        assert_eq!(distinct.len(), PERSISTENT_QUERIES);
        assert_eq!(setup.tables.len(), 5);
        let only_sys = AppsSetup::write(dir.path(), &["sys".to_string()], &all).unwrap();
        assert!(only_sys.statements.iter().all(|s| s.contains("from sys(")));
        assert!(AppsSetup::write(dir.path(), &["nope".to_string()], &all).is_err());
        let alerts = AppsSetup::write(dir.path(), &pq_tables(), &["alerts".to_string()]).unwrap();
        assert!(alerts.statements.is_empty() && alerts.reports_dir.is_none());
        assert!(alerts.alerts_dir.is_some());
        assert!(AppsSetup::write(dir.path(), &pq_tables(), &["console".to_string()]).is_err());
    }
}
