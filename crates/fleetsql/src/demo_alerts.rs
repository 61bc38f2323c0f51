//! The alert service in `fleetsql demo`: flags and start-up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fleetsql_alerts::{AlertService, AlertsConfig};
use fleetsql_sqlnode::SqlNode;

use crate::demo::parse_duration;

#[derive(Debug, Args)]
pub(crate) struct AlertArgs {
    /// Directory of alert definitions (`*.toml`, plus `routes.toml`),
    /// re-read while running. Defaults to the shipped examples.
    #[arg(long)]
    alerts_dir: Option<PathBuf>,
    /// SQLite file holding alert state. SQL nodes given the same file run
    /// the alerts once between them (one holds a lease). Defaults to a
    /// file of this process only, removed at exit.
    #[arg(long)]
    alerts_state: Option<PathBuf>,
    /// This node's name in the alert lease.
    #[arg(long)]
    alerts_node: Option<String>,
    /// How often due alerts are looked for and the directory re-read.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    alerts_poll: Duration,
    /// Another node takes the alerts over this long after the holder died.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    alerts_lease: Duration,
    /// Fraction of machines that must answer for a table an alert reads;
    /// below it the alert is in "no data".
    #[arg(long, default_value_t = 0.5)]
    alerts_min_completeness: f64,
}

/// The running service plus the state file to remove at exit, if ours.
#[derive(Debug)]
pub(crate) struct DemoAlerts {
    service: AlertService,
    temporary_state: Option<PathBuf>,
}

fn default_alerts_dir() -> PathBuf {
    let checkout = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../alerts/examples");
    if checkout.exists() {
        return checkout;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("alerts/examples")))
        .unwrap_or_else(|| PathBuf::from("alerts/examples"))
}

pub(crate) fn start(args: &AlertArgs, node: Arc<SqlNode>) -> anyhow::Result<DemoAlerts> {
    let dir = args.alerts_dir.clone().unwrap_or_else(default_alerts_dir);
    let (state, temporary_state) = match &args.alerts_state {
        Some(path) => (path.clone(), None),
        None => {
            let path = std::env::temp_dir()
                .join(format!("fleetsql-demo-alerts-{}.db", std::process::id()));
            (path.clone(), Some(path))
        }
    };
    if !(0.0..=1.0).contains(&args.alerts_min_completeness) {
        anyhow::bail!("--alerts-min-completeness is a fraction between 0 and 1");
    }
    let mut config = AlertsConfig::new(&dir, &state);
    if let Some(id) = &args.alerts_node {
        config.node_id = id.clone();
    }
    config.poll = args.alerts_poll;
    config.lease_ttl = args.alerts_lease;
    config.min_completeness = args.alerts_min_completeness;
    let service = AlertService::start(node, config)
        .with_context(|| format!("cannot start alerts from {}", dir.display()))?;
    Ok(DemoAlerts {
        service,
        temporary_state,
    })
}

impl DemoAlerts {
    pub(crate) fn router(&self) -> axum::Router {
        self.service.router()
    }

    pub(crate) async fn shutdown(self) {
        self.service.shutdown().await;
        if let Some(path) = self.temporary_state {
            for suffix in ["", "-wal", "-shm"] {
                let mut name = path.clone().into_os_string();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
        }
    }
}
