use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use fleetsql_model::duration;
use fleetsql_model::parse::ParseLimits;

use crate::{AgentError, Result, WatchdogConfig, host};

/// How one agent runs. Every field has a default, so an empty TOML table is
/// a working agent for this machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// `_host` of every row; defaults to the machine's hostname.
    pub host: String,
    /// `_ip` of every row and the `ip` column of the host tables; defaults to
    /// the first non-loopback IPv4 address, else 127.0.0.1.
    pub ip: String,
    /// `_cluster` of every row.
    pub cluster: String,
    /// Time between generations (`"5s"`, `"500ms"` or seconds as a number).
    #[serde(with = "duration")]
    pub tick: Duration,
    /// Where the publish API listens; port 0 picks a free port.
    pub publish_addr: SocketAddr,
    /// A directory of `<table>.csv|.tsv|.jsonl` files, each one publisher.
    pub drop_dir: Option<PathBuf>,
    /// How often the drop directory is scanned (it is also scanned before
    /// every generation, so a file is never a tick late).
    #[serde(with = "duration")]
    pub drop_poll: Duration,
    /// Rows of the `machinerole` table, one per role.
    pub roles: Vec<String>,
    /// Largest publish body accepted.
    pub max_body_bytes: usize,
    /// Bounds on what one publish (body or drop file) may decode to:
    /// columns, rows, NDJSON nesting, Arrow IPC decoded bytes (`[limits]`).
    pub limits: ParseLimits,
    /// Publishers (`X-Fleetsql-Publisher` names, drop files) of one table.
    pub max_publishers_per_table: usize,
    /// Tables this agent holds rows of.
    pub max_tables: usize,
    /// Collect `sys`, `processes` and `filesystem` from this machine when
    /// they are requested.
    pub host_collectors: bool,
    /// Tables collected whether or not a parent asked for them.
    pub prewarm: BTreeSet<String>,
    /// How long a parent's request lasts without being repeated; `None`
    /// keeps the aggregator's default (six ticks, at least 30 s).
    #[serde(with = "duration::option")]
    pub request_grace: Option<Duration>,
    /// Per-publisher shares and the agent's memory ceiling (`[watchdog]`).
    pub watchdog: WatchdogConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            host: host::hostname(),
            ip: host::primary_ipv4().to_string(),
            cluster: "local".to_string(),
            tick: Duration::from_secs(5),
            publish_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7070),
            drop_dir: None,
            drop_poll: Duration::from_millis(500),
            roles: Vec::new(),
            max_body_bytes: 16 * 1024 * 1024,
            limits: ParseLimits::default(),
            max_publishers_per_table: 256,
            max_tables: 4096,
            host_collectors: true,
            prewarm: BTreeSet::new(),
            request_grace: None,
            watchdog: WatchdogConfig::default(),
        }
    }
}

impl AgentConfig {
    /// Checks everything that can be checked before anything starts, so a
    /// bad config fails at once with the field it is about.
    pub fn validate(&self) -> Result<()> {
        let printable = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
        if !printable(&self.host) {
            return Err(AgentError::config(
                "host",
                "must be non-empty printable text",
            ));
        }
        if self.ip.parse::<IpAddr>().is_err() {
            return Err(AgentError::config(
                "ip",
                format!("`{}` is not an IP address", self.ip),
            ));
        }
        if !printable(&self.cluster) {
            return Err(AgentError::config(
                "cluster",
                "must be non-empty printable text",
            ));
        }
        if self.tick.is_zero() {
            return Err(AgentError::config("tick", "must be longer than zero"));
        }
        if self.drop_poll.is_zero() {
            return Err(AgentError::config("drop_poll", "must be longer than zero"));
        }
        if self.max_body_bytes == 0 {
            return Err(AgentError::config("max_body_bytes", "must be at least 1"));
        }
        for (field, value) in [
            ("max_publishers_per_table", self.max_publishers_per_table),
            ("max_tables", self.max_tables),
            ("limits.max_columns", self.limits.max_columns),
            ("limits.max_rows", self.limits.max_rows),
            ("limits.max_json_depth", self.limits.max_json_depth),
            ("limits.max_decoded_bytes", self.limits.max_decoded_bytes),
        ] {
            if value == 0 {
                return Err(AgentError::config(field, "must be at least 1"));
            }
        }
        for (field, value) in [
            ("watchdog.rows_per_tick", self.watchdog.rows_per_tick),
            ("watchdog.bytes_per_tick", self.watchdog.bytes_per_tick),
            ("watchdog.max_rss_bytes", self.watchdog.max_rss_bytes),
        ] {
            if value == 0 {
                return Err(AgentError::config(
                    field,
                    "must be at least 1 (turn the watchdog off with enabled = false)",
                ));
            }
        }
        if let Some(role) = self.roles.iter().find(|r| !printable(r)) {
            return Err(AgentError::config(
                "roles",
                format!("role {role:?} must be non-empty printable text"),
            ));
        }
        for table in &self.prewarm {
            fleetsql_model::validate_table_name(table)
                .map_err(|e| AgentError::config("prewarm", e.to_string()))?;
        }
        if let Some(dir) = &self.drop_dir
            && dir.exists()
            && !dir.is_dir()
        {
            return Err(AgentError::config(
                "drop_dir",
                format!("`{}` exists and is not a directory", dir.display()),
            ));
        }
        Ok(())
    }
}

/// Durations in config files: `"5s"`, `"500ms"`, `"2m"`, `"1h"` or a number
/// of seconds.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_durations_parse() {
        let config: AgentConfig =
            serde_json::from_str(r#"{"tick": "500ms", "cluster": "c7", "request_grace": 2}"#)
                .unwrap();
        assert_eq!(config.tick, Duration::from_millis(500));
        assert_eq!(config.request_grace, Some(Duration::from_secs(2)));
        assert_eq!(config.max_body_bytes, 16 * 1024 * 1024);
        assert_eq!(config.publish_addr.port(), 7070);
        assert!(!config.host.is_empty());
        config.validate().unwrap();
        assert!(duration::parse("5 parsecs").is_err());
        assert_eq!(duration::parse("2m").unwrap(), Duration::from_secs(120));
    }

    #[test]
    fn validate_names_the_field() {
        let config = AgentConfig {
            ip: "not-an-ip".into(),
            ..AgentConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("`ip`"), "{err}");
        let config = AgentConfig {
            prewarm: ["Bad-Name".to_string()].into(),
            ..AgentConfig::default()
        };
        assert!(config.validate().is_err());
    }
}
