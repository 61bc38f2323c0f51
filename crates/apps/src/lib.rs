//! The applications of a SQL node, as one composition: `fleetsql demo` and
//! `fleetsql sqlnode` both run [`SqlNodeApps`], so what the demo does, every
//! SQL node of a real fleet does.
//!
//! Over any [`SqlNode`] it starts persistent queries (the `PqaService`, fed
//! each new generation, with its wall clock), alerts (`fleetsql-alerts`,
//! when an alerts directory is given), reports (when a reports directory is
//! given), the integrations of an integrations file, and the web console,
//! whose [`ConsoleOptions`] say which of them are on. [`SqlNodeApps::router`]
//! has all their routes; [`SqlNodeApps::shutdown`] stops them in one order.

mod config;
mod error;
mod feed;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleetsql_alerts::{AlertService, AlertsConfig};
use fleetsql_console::ConsoleOptions;
use fleetsql_integrations::{FLEET_SOURCES, Integrations, IntegrationsConfig, TableTarget};
use fleetsql_pqa::{Clock, ClockTask, EngineConfig, PqaService, ServiceConfig};
use fleetsql_reports::{Reports, ReportsConfig};
use fleetsql_sqlnode::{GenerationHookHandle, SqlNode};
use fleetsql_views::{ViewsConfig, ViewsService};
use tokio::task::JoinHandle;

pub use config::AppsConfig;
pub use error::{AppsError, Result};
pub use feed::PersistentQueryFeed;

/// The running apps of one SQL node.
#[derive(Debug)]
pub struct SqlNodeApps {
    node: Arc<SqlNode>,
    pqa: PqaService,
    /// The persistent queries' generation hook; dropping it unregisters.
    feed: Option<GenerationHookHandle>,
    /// Runs until aborted: on a node without a local agent, its
    /// `fleet_sources`.
    sources: Option<JoinHandle<()>>,
    clock: Option<ClockTask>,
    views: Option<ViewsService>,
    alerts: Option<AlertService>,
    reports: Option<Reports>,
    integrations: Option<Integrations>,
    console: ConsoleOptions,
}

impl Drop for SqlNodeApps {
    /// A start that failed half-way, or apps dropped without `shutdown`,
    /// leave no task running (alerts and reports abort their own).
    fn drop(&mut self) {
        if let Some(task) = self.sources.take() {
            task.abort();
        }
    }
}

/// Where the integrations started with a table target send tables.
pub type LocalTables = Arc<dyn TableTarget>;

impl SqlNodeApps {
    /// Starts the configured apps over `node`: a SQL node without a local
    /// agent (integrations that publish tables are refused with the
    /// reason; the node serves its own `fleet_sources`).
    pub fn start(node: Arc<SqlNode>, config: AppsConfig) -> Result<SqlNodeApps> {
        Self::start_with_tables(node, config, None)
    }

    /// [`SqlNodeApps::start`] in a process that also runs an agent (the
    /// demo): table publishers publish into `tables`, and `fleet_sources`
    /// travels through it like any table.
    pub fn start_with_tables(
        node: Arc<SqlNode>,
        config: AppsConfig,
        tables: Option<LocalTables>,
    ) -> Result<SqlNodeApps> {
        config.validate()?;
        // Everything that can fail on a file is read before anything runs.
        let integrations_config = config
            .integrations
            .as_deref()
            .map(|file| {
                IntegrationsConfig::load(file).map_err(|source| AppsError::IntegrationsFile {
                    file: file.to_path_buf(),
                    source,
                })
            })
            .transpose()?;
        if let Some(dir) = &config.state_dir {
            std::fs::create_dir_all(dir).map_err(|source| AppsError::StateDir {
                dir: dir.clone(),
                source,
            })?;
        }

        let pqa = persistent_queries(config.persistent_queries_path().as_deref())?;
        if let Some(path) = pqa.store_path() {
            node.stores()
                .register(PQ_STORE, &path.display().to_string());
            pqa.observe_store(Arc::new(PqStoreHealth { node: node.clone() }));
        }
        let mut apps = SqlNodeApps {
            node: node.clone(),
            clock: pqa.start_clock(),
            feed: Some(node.add_generation_hook(Arc::new(PersistentQueryFeed::new(pqa.clone())))),
            pqa,
            sources: None,
            views: None,
            alerts: None,
            reports: None,
            integrations: None,
            console: ConsoleOptions {
                alerts: false,
                reports: false,
                persistent_queries: true,
                badge: config.badge(),
            },
        };

        // Before alerts and reports, which may read the views.
        if let Some(dir) = &config.views_dir {
            let views = ViewsService::start(node.clone(), ViewsConfig::new(dir))
                .map_err(|source| AppsError::Views { source })?;
            tracing::info!(dir = %dir.display(), "views on");
            apps.views = Some(views);
        }

        if let (Some(dir), Some(state)) = (&config.alerts_dir, config.alerts_state_path()) {
            if let Some(parent) = state.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| AppsError::StateDir {
                    dir: parent.to_path_buf(),
                    source,
                })?;
            }
            let mut alerts = AlertsConfig::new(dir, &state);
            if let Some(id) = &config.alerts_node {
                alerts.node_id = id.clone();
            }
            alerts.poll = config.alerts_poll;
            alerts.lease_ttl = config.alerts_lease;
            alerts.min_completeness = config.alerts_min_completeness;
            let service =
                AlertService::start(node.clone(), alerts).map_err(|source| AppsError::Alerts {
                    dir: dir.clone(),
                    source,
                })?;
            tracing::info!(dir = %dir.display(), state = %state.display(), "alerts on");
            apps.alerts = Some(service);
            apps.console.alerts = true;
        }

        if let Some(dir) = &config.reports_dir {
            let database = config.reports_db_path();
            if database.is_none() {
                tracing::warn!(
                    "report runs are kept in memory only; set state_dir or reports_db to keep them"
                );
            }
            let reports = Reports::start(
                node.clone(),
                &ReportsConfig {
                    dir: dir.clone(),
                    database,
                },
            )
            .map_err(|source| AppsError::Reports {
                dir: dir.clone(),
                source,
            })?;
            apps.reports = Some(reports);
            apps.console.reports = true;
        }

        if let Some(integrations_config) = &integrations_config {
            let hint = if tables.is_some() {
                "see the integrations file"
            } else {
                "table publishers run under `fleetsql agent` or `fleetsql demo`"
            };
            let serves_own_sources = tables.is_none();
            let integrations =
                Integrations::start(integrations_config, tables, Some(apps.pqa.clone()))
                    .map_err(|source| AppsError::Integrations { hint, source })?;
            if serves_own_sources {
                apps.sources = Some(tokio::spawn(serve_fleet_sources(
                    node.clone(),
                    integrations.health_view(),
                )));
            }
            apps.integrations = Some(integrations);
        }
        Ok(apps)
    }

    /// The persistent-query service (for in-process event sources and tests).
    pub fn persistent_queries(&self) -> &PqaService {
        &self.pqa
    }

    /// Which optional views the console has a back end for.
    pub fn console_options(&self) -> &ConsoleOptions {
        &self.console
    }

    /// The alert service, when alerts are configured.
    pub fn alerts(&self) -> Option<&AlertService> {
        self.alerts.as_ref()
    }

    /// Every app's routes: the console at `/`, persistent queries, reports
    /// and alerts, to be merged beside the node's `/v1/query`.
    pub fn router(&self) -> axum::Router {
        let mut router = fleetsql_console::router(self.node.clone(), self.console.clone())
            .merge(fleetsql_pqa::router(self.pqa.clone()));
        if let Some(reports) = &self.reports {
            router = router.merge(reports.router());
        }
        if let Some(alerts) = &self.alerts {
            router = router.merge(alerts.router());
        }
        router
    }

    /// Stops the apps outside in: integrations first (no more events or
    /// notifications from outside), then alerts (which write their
    /// checkpoint and release the lease, so a standby takes over at once),
    /// reports (a run in progress is abandoned whole), and last the
    /// persistent queries' feed and clock. Every task is awaited.
    pub async fn shutdown(mut self) {
        if let Some(integrations) = self.integrations.take() {
            integrations.shutdown().await;
        }
        if let Some(sources) = self.sources.take() {
            sources.abort();
            let _ = sources.await;
        }
        if let Some(alerts) = self.alerts.take() {
            alerts.shutdown().await;
        }
        if let Some(reports) = self.reports.take() {
            reports.shutdown().await;
        }
        if let Some(views) = self.views.take() {
            views.shutdown().await;
        }
        if let Some(feed) = self.feed.take() {
            feed.remove().await;
        }
        drop(self.clock.take());
    }
}

/// The persistent-query store's name in `fleet_nodes.store_error` and on
/// `/metrics` (`fleetsql_store_failing{store="persistent_queries"}`).
pub const PQ_STORE: &str = "persistent_queries";

/// Reports the persistent-query store's writes to the node's store health,
/// logging each change once: a registration refused for a full disk shows
/// beside the alert and report stores, and clears on the next write that
/// works.
struct PqStoreHealth {
    node: Arc<SqlNode>,
}

impl fleetsql_pqa::StoreObserver for PqStoreHealth {
    fn write_ok(&self, path: &std::path::Path) {
        let path = path.display().to_string();
        if self.node.stores().write_ok(PQ_STORE, &path) == fleetsql_sqlnode::StoreChange::Recovered
        {
            tracing::info!(path = %path, "persistent-query store written again");
        }
    }

    fn write_failed(&self, path: &std::path::Path, error: &fleetsql_pqa::PqaError) {
        let shown = path.display().to_string();
        // The store's own message names the file and the fix; the health
        // line keeps the cause (e.g. "database or disk is full").
        let reason = match error {
            fleetsql_pqa::PqaError::Store { problem, .. } => problem.clone(),
            other => other.to_string(),
        };
        match self.node.stores().write_failed(PQ_STORE, &shown, &reason) {
            fleetsql_sqlnode::StoreChange::Failing => tracing::error!(
                path = %shown,
                error = %error,
                "cannot write the persistent-query store; registrations and deletions are refused until it can"
            ),
            _ => tracing::debug!(error = %error, "persistent-query store still not written"),
        }
    }
}

/// The persistent-query service as every SQL node runs it: fleet rows carry
/// their publish time, so windows over fleet tables run on event time;
/// posted events on arrival time. With a store, the queries registered
/// before a restart are registered again; an unreadable store stops the
/// start (see `PqaService::with_store`).
fn persistent_queries(store: Option<&std::path::Path>) -> Result<PqaService> {
    let config = ServiceConfig {
        engine: EngineConfig {
            timestamp_field: Some("_published_at".to_string()),
            clock: Clock::Wall,
        },
        ..ServiceConfig::default()
    };
    match store {
        Some(path) => PqaService::with_store(config, path)
            .map_err(|source| AppsError::PersistentQueries { source }),
        None => Ok(PqaService::new(config)),
    }
}

/// Keeps the SQL node's own `fleet_sources` table current: on an agent the
/// table travels with the fleet's data, but a SQL node's sinks and sources
/// have no agent, so the node answers for them itself.
async fn serve_fleet_sources(node: Arc<SqlNode>, health: fleetsql_integrations::HealthView) {
    loop {
        let batch = fleetsql_integrations::health::fleet_sources_batch(&health.snapshot());
        match datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]]) {
            Ok(table) => node.register_system_table(FLEET_SOURCES, Arc::new(table)),
            Err(e) => tracing::warn!(error = %e, "cannot serve fleet_sources"),
        }
        // Counters move on every success; a second's staleness is fine,
        // a change of status shows at once.
        tokio::select! {
            _ = health.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The directory a program keeps per-user state in when none is given:
/// `$XDG_STATE_HOME/fleetsql/<name>`, else `~/.local/state/fleetsql/<name>`.
pub fn default_state_dir(name: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|home| home.join(".local/state"))
        })?;
    Some(base.join("fleetsql").join(name))
}
