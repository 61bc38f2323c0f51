//! Scheduled reports: SQL run on a schedule over the SQL node, each run's
//! rows kept with their time in SQLite for a retention period, drawn as a
//! time series (one line per group) and downloadable as CSV.
//!
//! A report is a TOML file in a reports directory (see
//! [`ReportDefinition`]). [`Reports::start`] loads the directory, opens the
//! store and runs each report every `every`, pruning runs older than its
//! `retention` after each run. [`Reports::router`] serves:
//!
//! - `GET /v1/reports`: the definitions with their last run and error
//! - `GET /v1/reports/{name}/runs?since_ms=&until_ms=`: runs and rows as JSON;
//!   with `history=true`, times before the oldest kept run in the range are
//!   drawn from Query History (the SQL as of each kept generation, one per
//!   `every` or per `step_ms`), so a graph reaches back before the report
//!   existed; the same for `data.csv` and `chart.svg`
//! - `GET /v1/reports/{name}/data.csv?since_ms=&until_ms=`: the same as CSV
//! - `GET /v1/reports/{name}/chart.svg?since_ms=&until_ms=`: the graph
//! - `POST /v1/reports/{name}/run`: run now, outside the schedule

mod chart;
mod definition;
mod error;
mod history;
mod http;
mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleetsql_model::now_ms;
use fleetsql_sqlnode::{SqlNode, StoreChange};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

pub use chart::{Series, csv, series, svg};
pub use definition::{DEFAULT_EVERY, DEFAULT_RETENTION, ReportDefinition, parse_duration};
pub use error::{ReportsError, Result};
pub use history::MAX_HISTORY_POINTS;
pub use store::{Store, StoredColumn, StoredRun};

/// The report store's name among the node's stores (`fleet_nodes.store_error`,
/// `fleetsql_store_failing{store="reports"}`).
pub const STORE: &str = "reports";

/// Where definitions are read from and runs are kept.
#[derive(Debug, Clone)]
pub struct ReportsConfig {
    /// Directory of `*.toml` report definitions.
    pub dir: PathBuf,
    /// SQLite file for the runs; `None` keeps them in memory only.
    pub database: Option<PathBuf>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) node: Arc<SqlNode>,
    pub(crate) reports: BTreeMap<String, ReportDefinition>,
    pub(crate) store: Store,
}

/// Running reports; [`Reports::shutdown`] stops the schedules.
#[derive(Debug)]
pub struct Reports {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Reports {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Reports {
    /// Loads the definitions in `config.dir`, opens the store and starts
    /// one schedule per report. The first run is as soon as the node has a
    /// generation.
    pub fn start(node: Arc<SqlNode>, config: &ReportsConfig) -> Result<Reports> {
        let definitions = ReportDefinition::load_dir(&config.dir)?;
        let store = Store::open(config.database.as_deref())?;
        node.stores().register(STORE, store.path());
        let reports = definitions
            .into_iter()
            .map(|r| (r.name.clone(), r))
            .collect();
        let inner = Arc::new(Inner {
            node,
            reports,
            store,
        });
        let tasks = inner
            .reports
            .values()
            .map(|report| tokio::spawn(schedule(inner.clone(), report.name.clone())))
            .collect();
        Ok(Reports { inner, tasks })
    }

    pub fn definitions(&self) -> impl Iterator<Item = &ReportDefinition> {
        self.inner.reports.values()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Runs `name` now, stores the run and prunes by retention.
    pub async fn run_now(&self, name: &str) -> Result<StoredRun> {
        run_report(&self.inner, name).await
    }

    /// The report `name` as it would have answered at the kept history
    /// generations in `since_ms..=until_ms`, at most one per `step_ms`
    /// (its `every` by default), oldest first.
    pub async fn runs_from_history(
        &self,
        name: &str,
        since_ms: i64,
        until_ms: i64,
        step_ms: Option<i64>,
    ) -> Result<Vec<StoredRun>> {
        history::history_runs(&self.inner, name, since_ms, until_ms, step_ms).await
    }

    /// The HTTP routes, to be merged into the SQL node's router.
    pub fn router(&self) -> axum::Router {
        http::router(self.inner.clone())
    }

    /// Stops every schedule; a run in progress is abandoned, not half stored
    /// (each run is written in one transaction).
    pub async fn shutdown(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn schedule(inner: Arc<Inner>, name: String) {
    let Some(every) = inner.reports.get(&name).map(|r| r.every) else {
        return;
    };
    let tick = inner.node.config().tick;
    // A report run before the first generation would only record that
    // there was none.
    let _ = inner
        .node
        .wait_for_generation(tick * 10 + Duration::from_secs(10))
        .await;
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match run_report(&inner, &name).await {
            Ok(run) => match &run.error {
                None => tracing::debug!(report = %name, rows = run.rows.len(), "report ran"),
                Some(e) => tracing::warn!(report = %name, error = %e, "report query failed"),
            },
            // Store errors are logged by `run_report` once per outage.
            Err(ReportsError::Store(_)) => {}
            Err(e) => tracing::warn!(report = %name, error = %e, "report run not stored"),
        }
    }
}

/// One run: the query (a failure is stored as the run's error, so gaps in
/// a graph are explained), then pruning by retention.
pub(crate) async fn run_report(inner: &Inner, name: &str) -> Result<StoredRun> {
    let report = inner
        .reports
        .get(name)
        .ok_or_else(|| ReportsError::UnknownReport(name.to_string()))?;
    let run_at_ms = now_ms();
    let run = match inner.node.query(&report.sql).await {
        Ok(output) => match fleetsql_model::json::batches_to_rows(&output.batches) {
            Ok(rows) => StoredRun {
                run_at_ms,
                generation_id: Some(output.generation.id),
                machines_seen: Some(output.generation.machines_seen),
                machines_expected: Some(output.generation.machines_expected),
                error: None,
                columns: StoredColumn::of(&output),
                rows,
            },
            Err(e) => failed(run_at_ms, e.to_string()),
        },
        Err(e) => failed(run_at_ms, e.to_string()),
    };
    // Pruning first means no reader ever sees more than the retention.
    let keep_from = run_at_ms - report.retention.as_millis() as i64;
    let written = inner.store.prune(name, keep_from).and_then(|pruned| {
        if pruned > 0 {
            tracing::debug!(report = %name, pruned, "old report runs pruned");
        }
        inner.store.insert(name, &run)
    });
    let stores = inner.node.stores();
    let path = inner.store.path();
    match written {
        Ok(()) => {
            if stores.write_ok(STORE, path) == StoreChange::Recovered {
                tracing::info!(report = %name, path, "report runs written again");
            }
            Ok(run)
        }
        // The store is SQLite: a failed write is rolled back, runs already
        // kept stay. This run is lost; the next one is tried as usual.
        Err(e) => {
            if stores.write_failed(STORE, path, &e.to_string()) == StoreChange::Failing {
                tracing::error!(report = %name, path, error = %e, "cannot write report runs; runs are lost until it can, retried at each run");
            } else {
                tracing::debug!(report = %name, error = %e, "report run still not stored");
            }
            Err(e)
        }
    }
}

fn failed(run_at_ms: i64, error: String) -> StoredRun {
    StoredRun {
        run_at_ms,
        generation_id: None,
        machines_seen: None,
        machines_expected: None,
        error: Some(error),
        columns: Vec::new(),
        rows: Vec::new(),
    }
}
