//! `--integrations FILE`: loads the file before anything starts (so a bad
//! file fails fast) and starts the integrations once the agent and the
//! persistent-query service run.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use fleetsql_agent::Agent;
use fleetsql_integrations::{Integrations, IntegrationsConfig, TableTarget};
use fleetsql_pqa::PqaService;

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
