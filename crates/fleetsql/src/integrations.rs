//! `--integrations FILE`: loads the file before anything starts (so a bad
//! file fails fast) and starts the integrations once the agent and the
//! persistent-query service run.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use fleetsql_agent::Agent;
use fleetsql_integrations::{FLEET_SOURCES, Integrations, IntegrationsConfig, TableTarget};
use fleetsql_pqa::{Clock, EngineConfig, PqaService, ServiceConfig};
use fleetsql_sqlnode::SqlNode;

pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Option<IntegrationsConfig>> {
    path.map(|p| {
        IntegrationsConfig::load(p)
            .with_context(|| format!("cannot use --integrations {}", p.display()))
    })
    .transpose()
}

pub(crate) fn start(
    config: Option<&IntegrationsConfig>,
    agent: Arc<Agent>,
    pqa: PqaService,
) -> anyhow::Result<Option<Integrations>> {
    let Some(config) = config else {
        return Ok(None);
    };
    let tables: Arc<dyn TableTarget> = agent;
    let integrations = Integrations::start(config, Some(tables), Some(pqa))
        .context("cannot start the integrations")?;
    Ok(Some(integrations))
}

/// The persistent-query service as the demo and the SQL node run it: fleet
/// rows carry their publish time, so windows over fleet tables run on event
/// time; posted events on arrival time.
pub(crate) fn persistent_queries() -> PqaService {
    PqaService::new(ServiceConfig {
        engine: EngineConfig {
            timestamp_field: Some("_published_at".to_string()),
            clock: Clock::Wall,
        },
        ..ServiceConfig::default()
    })
}

/// Persistent queries fed by a distributed SQL node, with the sinks and
/// sources of `config`.
pub(crate) struct SqlNodeIntegrations {
    integrations: Integrations,
    feed: tokio::task::JoinHandle<()>,
    sources: tokio::task::JoinHandle<()>,
    _clock: Option<fleetsql_pqa::ClockTask>,
}

impl SqlNodeIntegrations {
    pub(crate) async fn shutdown(self) {
        self.integrations.shutdown().await;
        self.feed.abort();
        self.sources.abort();
    }
}

/// Starts `config`'s sinks and sources on a SQL node (no local agent: a
/// publisher is refused with the reason).
pub(crate) fn start_on_sqlnode(
    config: &IntegrationsConfig,
    node: Arc<SqlNode>,
    pqa: PqaService,
) -> anyhow::Result<SqlNodeIntegrations> {
    let integrations = Integrations::start(config, None, Some(pqa.clone()))
        .context("cannot start the integrations (table publishers run under `fleetsql demo`)")?;
    let sources = tokio::spawn(serve_fleet_sources(
        node.clone(),
        integrations.health_view(),
    ));
    Ok(SqlNodeIntegrations {
        integrations,
        _clock: pqa.start_clock(),
        feed: fleetsql_http::feed_persistent_queries(node, pqa),
        sources,
    })
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
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// Starts `config`'s table publishers on a distributed agent, which also
/// publishes their `fleet_sources` (sinks and sources are refused with the
/// reason: they run on a SQL node).
pub(crate) fn start_on_agent(
    config: &IntegrationsConfig,
    agent: Arc<Agent>,
) -> anyhow::Result<Integrations> {
    let tables: Arc<dyn TableTarget> = agent;
    Integrations::start(config, Some(tables), None).context(
        "cannot start the integrations (sinks and event sources run under `fleetsql sqlnode`)",
    )
}
