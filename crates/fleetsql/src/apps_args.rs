//! The flags of a SQL node's apps, shared by `fleetsql demo` and
//! `fleetsql sqlnode`: each given flag overrides the demo's defaults or the
//! node's topology entry.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use fleetsql_apps::AppsConfig;

use crate::demo::parse_duration;

#[derive(Debug, Args, Default)]
pub(crate) struct AppArgs {
    /// Directory of the apps' state (`alerts.db`, `reports.db`, and
    /// `persistent_queries.db`, which keeps registered persistent queries
    /// across restarts), created if missing. Demo default: `$XDG_STATE_HOME/fleetsql/demo` (or
    /// `~/.local/state/fleetsql/demo`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Directory of alert definitions (`*.toml`, plus `routes.toml`),
    /// re-read while running. Demo default: the shipped examples.
    #[arg(long)]
    alerts_dir: Option<PathBuf>,
    /// SQLite file holding alert state (default `<state-dir>/alerts.db`).
    /// SQL nodes given the same file run the alerts once between them
    /// (one holds a lease).
    #[arg(long)]
    alerts_state: Option<PathBuf>,
    /// This node's name in the alert lease (sqlnode default: its name).
    #[arg(long)]
    alerts_node: Option<String>,
    /// How often due alerts are looked for and the directory re-read (default 1s).
    #[arg(long, value_parser = parse_duration)]
    alerts_poll: Option<Duration>,
    /// Another node takes the alerts over this long after the holder died (default 10s).
    #[arg(long, value_parser = parse_duration)]
    alerts_lease: Option<Duration>,
    /// Fraction of machines that must answer for a table an alert reads;
    /// below it the alert is in "no data" (default 0.5).
    #[arg(long)]
    alerts_min_completeness: Option<f64>,
    /// Directory of report definitions (`*.toml`). Demo default: the demo's own.
    #[arg(long)]
    reports_dir: Option<PathBuf>,
    /// SQLite file keeping report runs (default `<state-dir>/reports.db`).
    #[arg(long)]
    reports_db: Option<PathBuf>,
    /// Directory of view definitions (`*.toml`: name, sql, optional
    /// prewarm), re-read while running. Demo default: the shipped examples.
    #[arg(long)]
    views_dir: Option<PathBuf>,
    /// The console's generation badge turns amber when data are older (default 30s).
    #[arg(long, value_parser = parse_duration)]
    console_amber_after: Option<Duration>,
    /// ... and red when they are older than this (default 2m).
    #[arg(long, value_parser = parse_duration)]
    console_red_after: Option<Duration>,
}

impl AppArgs {
    /// Whether any of these flags was given (they mean nothing to an
    /// agent, a proxy or a TLA).
    pub(crate) fn any(&self) -> bool {
        let AppArgs {
            state_dir,
            alerts_dir,
            alerts_state,
            alerts_node,
            alerts_poll,
            alerts_lease,
            alerts_min_completeness,
            reports_dir,
            reports_db,
            views_dir,
            console_amber_after,
            console_red_after,
        } = self;
        state_dir.is_some()
            || alerts_dir.is_some()
            || alerts_state.is_some()
            || alerts_node.is_some()
            || alerts_poll.is_some()
            || alerts_lease.is_some()
            || alerts_min_completeness.is_some()
            || reports_dir.is_some()
            || reports_db.is_some()
            || views_dir.is_some()
            || console_amber_after.is_some()
            || console_red_after.is_some()
    }

    /// `config` with every given flag put over it.
    pub(crate) fn apply(&self, config: &mut AppsConfig) {
        let set = |target: &mut Option<PathBuf>, flag: &Option<PathBuf>| {
            if flag.is_some() {
                target.clone_from(flag);
            }
        };
        set(&mut config.state_dir, &self.state_dir);
        set(&mut config.alerts_dir, &self.alerts_dir);
        set(&mut config.alerts_state, &self.alerts_state);
        set(&mut config.reports_dir, &self.reports_dir);
        set(&mut config.reports_db, &self.reports_db);
        set(&mut config.views_dir, &self.views_dir);
        if let Some(node) = &self.alerts_node {
            config.alerts_node = Some(node.clone());
        }
        config.alerts_poll = self.alerts_poll.unwrap_or(config.alerts_poll);
        config.alerts_lease = self.alerts_lease.unwrap_or(config.alerts_lease);
        config.alerts_min_completeness = self
            .alerts_min_completeness
            .unwrap_or(config.alerts_min_completeness);
        config.console_amber_after = self
            .console_amber_after
            .unwrap_or(config.console_amber_after);
        config.console_red_after = self.console_red_after.unwrap_or(config.console_red_after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_flags_win_and_others_keep_the_config() {
        let mut config = AppsConfig {
            alerts_dir: Some("/topology/alerts".into()),
            reports_dir: Some("/topology/reports".into()),
            ..AppsConfig::default()
        };
        let args = AppArgs {
            alerts_dir: Some("/cli/alerts".into()),
            alerts_lease: Some(Duration::from_secs(3)),
            ..AppArgs::default()
        };
        assert!(args.any());
        assert!(!AppArgs::default().any());
        args.apply(&mut config);
        assert_eq!(config.alerts_dir, Some("/cli/alerts".into()));
        assert_eq!(config.reports_dir, Some("/topology/reports".into()));
        assert_eq!(config.alerts_lease, Duration::from_secs(3));
        assert_eq!(config.alerts_poll, AppsConfig::default().alerts_poll);
    }
}
