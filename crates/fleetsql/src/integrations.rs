//! `fleetsql agent --integrations FILE`: the table publishers of a
//! distributed agent. A SQL node's and the demo's integrations are started
//! by `fleetsql_apps::SqlNodeApps`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use fleetsql_agent::Agent;
use fleetsql_integrations::{Integrations, IntegrationsConfig, TableTarget};

/// Reads the file before anything starts, so a bad file fails fast.
pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Option<IntegrationsConfig>> {
    path.map(|p| {
        IntegrationsConfig::load(p)
            .with_context(|| format!("cannot use --integrations {}", p.display()))
    })
    .transpose()
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
