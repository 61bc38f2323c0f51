use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{AppsError, Result};

/// What a SQL node's apps read and where they keep their state. An app
/// whose directory is not given is off: no `alerts_dir`, no alerts.
/// Persistent queries and the console always run (they need no files).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppsConfig {
    /// Where state files go unless named one by one (`alerts.db`,
    /// `reports.db`) and where the registered persistent queries are kept
    /// (`persistent_queries.db`); created at start. Without it, persistent
    /// queries live in memory only and are gone after a restart.
    pub state_dir: Option<PathBuf>,
    /// The watched directory of alert definitions (`*.toml`, `routes.toml`).
    pub alerts_dir: Option<PathBuf>,
    /// The SQLite file of alert state (default `<state_dir>/alerts.db`).
    /// SQL nodes given the same file run the alerts once between them.
    pub alerts_state: Option<PathBuf>,
    /// This node's name in the alert lease (default: a name of this
    /// process); unique among the nodes sharing `alerts_state`.
    pub alerts_node: Option<String>,
    /// How often due alerts are looked for and the directory re-read.
    #[serde(with = "fleetsql_model::duration")]
    pub alerts_poll: Duration,
    /// Another node takes the alerts over this long after the holder died.
    #[serde(with = "fleetsql_model::duration")]
    pub alerts_lease: Duration,
    /// Below this fraction of machines answering for a table an alert
    /// reads, the alert is in "no data".
    pub alerts_min_completeness: f64,
    /// Directory of report definitions (`*.toml`).
    pub reports_dir: Option<PathBuf>,
    /// The watched directory of view definitions (`*.toml`, one view each:
    /// `name`, `sql`, optional `prewarm`, `description`).
    pub views_dir: Option<PathBuf>,
    /// The SQLite file of report runs (default `<state_dir>/reports.db`;
    /// without either, runs are kept in memory only).
    pub reports_db: Option<PathBuf>,
    /// A TOML file of integrations: persistent-query sinks and event
    /// sources, and table publishers where a local agent is given.
    pub integrations: Option<PathBuf>,
    /// The console's generation badge turns amber when data are older ...
    #[serde(with = "fleetsql_model::duration")]
    pub console_amber_after: Duration,
    /// ... and red when they are older than this.
    #[serde(with = "fleetsql_model::duration")]
    pub console_red_after: Duration,
}

impl Default for AppsConfig {
    fn default() -> Self {
        AppsConfig {
            state_dir: None,
            alerts_dir: None,
            alerts_state: None,
            alerts_node: None,
            alerts_poll: Duration::from_secs(1),
            alerts_lease: Duration::from_secs(10),
            alerts_min_completeness: 0.5,
            reports_dir: None,
            views_dir: None,
            reports_db: None,
            integrations: None,
            console_amber_after: Duration::from_secs(30),
            console_red_after: Duration::from_secs(120),
        }
    }
}

fn invalid(what: impl Into<String>, fix: impl Into<String>) -> AppsError {
    AppsError::Config {
        what: what.into(),
        fix: fix.into(),
    }
}

impl AppsConfig {
    /// The alert state file: `alerts_state`, else `<state_dir>/alerts.db`.
    pub fn alerts_state_path(&self) -> Option<PathBuf> {
        self.alerts_state
            .clone()
            .or_else(|| Some(self.state_dir.as_ref()?.join("alerts.db")))
    }

    /// The report store: `reports_db`, else `<state_dir>/reports.db`.
    pub fn reports_db_path(&self) -> Option<PathBuf> {
        self.reports_db
            .clone()
            .or_else(|| Some(self.state_dir.as_ref()?.join("reports.db")))
    }

    /// The store of registered persistent queries:
    /// `<state_dir>/persistent_queries.db`, none without a state directory.
    /// Per node, never shared: a node registers again what is in it.
    pub fn persistent_queries_path(&self) -> Option<PathBuf> {
        Some(self.state_dir.as_ref()?.join("persistent_queries.db"))
    }

    /// Takes every relative path as relative to `base` (the directory of
    /// the file the config came from), so a node finds its files wherever
    /// it is started.
    pub fn resolve_relative_to(&mut self, base: &Path) {
        for path in [
            &mut self.state_dir,
            &mut self.alerts_dir,
            &mut self.alerts_state,
            &mut self.reports_dir,
            &mut self.views_dir,
            &mut self.reports_db,
            &mut self.integrations,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Checks what can be checked without touching the disk.
    pub fn validate(&self) -> Result<()> {
        if self.alerts_dir.is_some() && self.alerts_state_path().is_none() {
            return Err(invalid(
                "alerts are configured (alerts_dir) but have nowhere to keep their state",
                "set state_dir (or alerts_state to a SQLite file)",
            ));
        }
        if !(0.0..=1.0).contains(&self.alerts_min_completeness) {
            return Err(invalid(
                format!(
                    "alerts_min_completeness is {}",
                    self.alerts_min_completeness
                ),
                "give a fraction between 0 and 1",
            ));
        }
        if self.alerts_poll.is_zero() || self.alerts_lease.is_zero() {
            return Err(invalid(
                "alerts_poll and alerts_lease must be positive durations",
                "write them like \"1s\" or \"500ms\"",
            ));
        }
        // The holder renews the lease once a poll; a lease shorter than
        // that would pass between nodes on every pass.
        if self.alerts_lease <= self.alerts_poll {
            return Err(invalid(
                format!(
                    "alerts_lease ({:?}) is not longer than alerts_poll ({:?})",
                    self.alerts_lease, self.alerts_poll
                ),
                "make the lease several polls long (default 10s lease, 1s poll)",
            ));
        }
        if self
            .alerts_node
            .as_ref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err(invalid(
                "alerts_node is empty",
                "leave it out or give each node sharing the alert state its own name",
            ));
        }
        if self.console_amber_after >= self.console_red_after {
            return Err(invalid(
                format!(
                    "the console badge turns amber after {:?} but red already after {:?}",
                    self.console_amber_after, self.console_red_after
                ),
                "make console_red_after longer than console_amber_after",
            ));
        }
        Ok(())
    }

    /// The console's badge thresholds.
    pub fn badge(&self) -> fleetsql_console::BadgeThresholds {
        fleetsql_console::BadgeThresholds {
            amber_age_ms: self.console_amber_after.as_millis() as u64,
            red_age_ms: self.console_red_after.as_millis() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AppsConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn state_files_default_to_the_state_directory() {
        let config = parse("state_dir = \"/var/lib/fleetsql\"\nalerts_dir = \"alerts\"");
        assert_eq!(
            config.alerts_state_path(),
            Some(PathBuf::from("/var/lib/fleetsql/alerts.db"))
        );
        assert_eq!(
            config.reports_db_path(),
            Some(PathBuf::from("/var/lib/fleetsql/reports.db"))
        );
        assert_eq!(config.alerts_poll, Duration::from_secs(1));
        config.validate().unwrap();
        let named = parse("state_dir = \"/s\"\nalerts_state = \"/elsewhere/a.db\"");
        assert_eq!(
            named.alerts_state_path(),
            Some(PathBuf::from("/elsewhere/a.db"))
        );
        assert_eq!(
            config.persistent_queries_path(),
            Some(PathBuf::from("/var/lib/fleetsql/persistent_queries.db"))
        );
        assert_eq!(AppsConfig::default().reports_db_path(), None);
        assert_eq!(AppsConfig::default().persistent_queries_path(), None);
    }

    #[test]
    fn relative_paths_are_taken_from_the_base() {
        let mut config = parse("alerts_dir = \"alerts\"\nreports_dir = \"/abs/reports\"");
        config.resolve_relative_to(Path::new("/etc/fleet"));
        assert_eq!(config.alerts_dir, Some(PathBuf::from("/etc/fleet/alerts")));
        assert_eq!(config.reports_dir, Some(PathBuf::from("/abs/reports")));
    }

    #[test]
    fn errors_say_what_is_wrong_and_what_to_do() {
        let err = |text: &str| parse(text).validate().unwrap_err().to_string();
        let e = err("alerts_dir = \"a\"");
        assert!(
            e.contains("nowhere to keep") && e.contains("set state_dir"),
            "{e}"
        );
        let e = err("alerts_min_completeness = 1.5");
        assert!(e.contains("1.5") && e.contains("between 0 and 1"), "{e}");
        let e = err("alerts_poll = \"5s\"\nalerts_lease = \"2s\"");
        assert!(e.contains("not longer than"), "{e}");
        let e = err("console_amber_after = \"5m\"");
        assert!(e.contains("console_red_after"), "{e}");
        let e = err("alerts_node = \" \"");
        assert!(e.contains("alerts_node is empty"), "{e}");
        assert!(toml::from_str::<AppsConfig>("colour = 1").is_err());
        assert!(toml::from_str::<AppsConfig>("alerts_poll = \"5 parsecs\"").is_err());
    }
}
