//! The whole tree in one TOML file; each process finds itself by name.
//!
//! ```toml
//! tick = "5s"
//!
//! [agents.web-1]
//! cluster = "fra"
//! flight = "10.0.0.1:7101"      # where its proxies reach it
//!
//! [proxies.fra-a]
//! cluster = "fra"
//! flight = "10.0.1.1:7201"
//!
//! [tlas.tla-eu]
//! flight = "10.0.2.1:7301"
//! prewarm = ["sys"]
//!
//! [sqlnodes.sql-eu]
//! tlas = { tla-eu = 5, tla-us = 0 }   # TLA name = locality bonus
//! state_dir = "/var/lib/fleetsql"     # its apps' state (alerts.db, reports.db)
//! alerts_dir = "alerts"               # relative to this file; no alerts without it
//! alerts_state = "/shared/alerts.db"  # one file per set of SQL nodes: one lease
//! reports_dir = "reports"
//! views_dir = "views"                 # views computed once per generation
//! ```
//!
//! A cluster is the set of agents naming it, plus the agents that join it
//! by themselves (`fleetsql agent --cluster fra --proxy ADDR`, announcing
//! themselves to its proxies; see `membership.rs`); its proxies are the
//! proxies naming it. A cluster whose agents all join by themselves is
//! declared, optionally with the members or the count it is expected to
//! have:
//!
//! ```toml
//! member_expiry = "10m"   # a member not heard from this long leaves
//! [clusters.fra]
//! members = ["web-1", "web-2"]   # expected even before they announce
//! machines = 40                  # expected at least this many
//! ```
//! Aggregator sets (seed 3.5-3.7) split the TLAs and SQL nodes: each set
//! collects only its *span* and serves only its *domain*, under limits of
//! its own, so a heavy or runaway user of one set cannot slow another.
//! Without `[sets]` there is one implicit set spanning every cluster.
//!
//! ```toml
//! [clusters.fra]
//! labels = { region = "eu" }
//! [sets.eu]
//! select = { region = "eu" }        # or: clusters = ["fra", "ams"]
//! tlas = ["tla-eu"]
//! sqlnodes = ["sql-eu"]             # their `tlas` default to the set's
//! prewarm = ["sys"]
//! domain = ["reader", "operator", "admin"]   # roles it answers; [] none
//! query_timeout = "10s"
//! query_memory_mib = 512
//! max_concurrent_queries = 16
//! ```
//!
//! A `[tlas.X]` and a `[sqlnodes.X]` of the same name are one
//! combined node (seed 3.6), run by `fleetsql tla-sql --name X`: its SQL
//! node reads its own TLA in the process, without a Flight hop, and the
//! other TLAs it names over Flight. Parents read their children's `flight` addresses from here,
//! so children start first (agents, proxies, TLAs, SQL nodes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetsql_model::duration;
use serde::{Deserialize, Serialize};

use crate::{Result, TiersError};

fn default_tick() -> Duration {
    Duration::from_secs(5)
}

fn default_table_expiry() -> Duration {
    Duration::from_secs(600)
}

fn default_member_expiry() -> Duration {
    Duration::from_secs(600)
}

fn default_max_members() -> usize {
    1000
}

/// The fleet's tree of tiers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Time between generations at every tier.
    #[serde(default = "default_tick", with = "duration_text")]
    pub tick: Duration,
    /// A child whose data are older than this is left out of a merge
    /// (default three ticks).
    #[serde(default, with = "duration_text::option")]
    pub stale_after: Option<Duration>,
    /// A table no query names for this long stops being collected.
    #[serde(default = "default_table_expiry", with = "duration_text")]
    pub table_expiry: Duration,
    /// How long a tier waits for one child's answer, transfer included
    /// (default: one tick, at least 2 s; a SQL node's fetch, 10 s past its
    /// long poll). Raise it where a generation takes longer than that to
    /// cross one link; a child that does not answer in time is left out of
    /// that generation.
    #[serde(default, with = "duration_text::option")]
    pub fetch_timeout: Option<Duration>,
    /// How tables are compressed on the wire between tiers: `lz4` (the
    /// default), `zstd` for thin links between sites, or `none` where the
    /// network is faster than the CPU compressing for it (loopback, 25G+).
    #[serde(default)]
    pub compression: fleetsql_flight::Compression,
    /// An agent that joined its cluster by announcing itself and has not
    /// announced itself for this long leaves the cluster's expected set
    /// (it is counted missing until then).
    #[serde(default = "default_member_expiry", with = "duration_text")]
    pub member_expiry: Duration,
    /// The most members one proxy accepts announcements from; more are
    /// refused (each member is a child the proxy fetches every tick).
    #[serde(default = "default_max_members")]
    pub max_members: usize,
    /// Clusters whose agents join by themselves, with what they are
    /// expected to have; clusters of listed agents need no entry.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterEntry>,
    /// Mutual TLS on every Flight link; without it, links are plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    #[serde(default)]
    pub agents: BTreeMap<String, AgentEntry>,
    #[serde(default)]
    pub proxies: BTreeMap<String, ProxyEntry>,
    #[serde(default)]
    pub tlas: BTreeMap<String, TlaEntry>,
    #[serde(default)]
    pub sqlnodes: BTreeMap<String, SqlNodeEntry>,
    /// Aggregator sets; none: one set of every TLA spanning every cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sets: BTreeMap<String, SetEntry>,
}

/// `[sets.NAME]`: TLAs that collect one span of clusters and the SQL nodes
/// that answer from them, for one domain of users, under their own limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetEntry {
    /// The span as a list of clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<BTreeSet<String>>,
    /// The span as a selector: every cluster whose `[clusters.C] labels`
    /// have all these values. Neither this nor `clusters`: every cluster.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub select: BTreeMap<String, String>,
    /// Its TLAs (each in one set at most); they collect only the span.
    pub tlas: BTreeSet<String>,
    /// Its SQL nodes (each in one set at most); they read only its TLAs.
    #[serde(default)]
    pub sqlnodes: BTreeSet<String>,
    /// Tables its TLAs and SQL nodes collect whether or not anyone asked.
    #[serde(default)]
    pub prewarm: BTreeSet<String>,
    /// Roles whose ad-hoc queries its SQL nodes answer (default: every
    /// role); `[]` answers none, leaving the nodes to their own alerts and
    /// reports (an alerts set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<BTreeSet<fleetsql_auth::Role>>,
    /// Each query's time limit on its SQL nodes (a node's own
    /// `query_timeout` wins).
    #[serde(
        default,
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub query_timeout: Option<Duration>,
    /// Memory all running queries of one SQL node may hold, in MiB (a
    /// node's own `query_memory_mib` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_memory_mib: Option<usize>,
    /// Queries one SQL node runs at once; more are refused, not queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_queries: Option<usize>,
    /// Table partitioning (seed 6.3.3): SQL nodes of the set that serve
    /// only some tables. A query sent to a node of one subset that only
    /// another serves is redirected (HTTP) or forwarded (pg) there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subsets: BTreeMap<String, SubsetEntry>,
}

/// `[sets.S.subsets.NAME]`: SQL nodes of set S serving only `tables`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetEntry {
    pub sqlnodes: BTreeSet<String>,
    pub tables: BTreeSet<String>,
}

impl Default for Topology {
    /// The same defaults as an empty topology file.
    fn default() -> Self {
        Topology {
            tick: default_tick(),
            stale_after: None,
            table_expiry: default_table_expiry(),
            fetch_timeout: None,
            compression: fleetsql_flight::Compression::default(),
            tls: None,
            member_expiry: default_member_expiry(),
            max_members: default_max_members(),
            clusters: BTreeMap::new(),
            agents: BTreeMap::new(),
            proxies: BTreeMap::new(),
            tlas: BTreeMap::new(),
            sqlnodes: BTreeMap::new(),
            sets: BTreeMap::new(),
        }
    }
}

/// A cluster whose agents join by themselves: what its proxies expect of
/// it before (and besides) the announcements they receive.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterEntry {
    /// Agents expected in this cluster: counted missing until they
    /// announce themselves (and after they stop, until `member_expiry`).
    #[serde(default)]
    pub members: BTreeSet<String>,
    /// The cluster is expected to have at least this many machines: the
    /// ones not yet known by name are counted missing.
    pub machines: Option<u64>,
    /// What a set's `select` matches (`region = "eu"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `[tls]`: mutual TLS between tiers. Every node presents a certificate
/// of the fleet CA whose DNS name is its node name; a child's Flight
/// server accepts only its parents in this file, a parent reads only the
/// child it dialled. Paths are relative to the topology file.
///
/// ```toml
/// [tls]
/// ca = "certs/ca.crt"            # the fleet CA (PEM)
/// certs_dir = "certs"            # NAME.crt and NAME.key per node
/// [tls.nodes.web-1]              # a node whose files are elsewhere
/// cert = "/etc/fleetsql/web-1.pem"
/// key = "/etc/fleetsql/web-1.key"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub ca: PathBuf,
    pub certs_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, TlsNodeFiles>,
    /// How often each process checks its certificate, key and CA files
    /// for a change (default 1 s).
    #[serde(
        default,
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub poll: Option<Duration>,
}

/// One node's certificate chain and key (PEM).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsNodeFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsSettings {
    /// Node `name`'s files: its own entry, else `certs_dir/NAME.crt|key`.
    pub fn files(&self, name: &str) -> Option<fleetsql_flight::TlsFiles> {
        let (cert, key) = match (self.nodes.get(name), &self.certs_dir) {
            (Some(own), _) => (own.cert.clone(), own.key.clone()),
            (None, Some(dir)) => (
                dir.join(format!("{name}.crt")),
                dir.join(format!("{name}.key")),
            ),
            (None, None) => return None,
        };
        Some(fleetsql_flight::TlsFiles {
            ca: self.ca.clone(),
            cert,
            key,
        })
    }

    pub fn poll(&self) -> Duration {
        self.poll.unwrap_or(Duration::from_secs(1))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    pub cluster: String,
    /// Flight address its proxies fetch from (and it listens on).
    pub flight: Option<SocketAddr>,
    /// `/health` and `/metrics`.
    pub http: Option<SocketAddr>,
    /// The loopback publish API.
    pub publish: Option<SocketAddr>,
    /// `_host` of its rows (default: the machine's host name).
    pub host: Option<String>,
    /// `_ip` of its rows (default: the machine's first IPv4 address).
    pub ip: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub drop_dir: Option<PathBuf>,
    #[serde(default)]
    pub prewarm: BTreeSet<String>,
    /// Collect `sys`, `processes` and `filesystem` from the host (default on).
    pub host_collectors: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyEntry {
    pub cluster: String,
    pub flight: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// How many machines the cluster has when its agents are not listed in
    /// this file (a TLA's own file, or a simulated cluster): the count a TLA
    /// expects from the cluster. Left out, it is the number of agents.
    pub machines: Option<u64>,
    /// Where the proxy keeps its cluster's members (agents that announced
    /// themselves), so a restart forgets none that is down; relative to
    /// this file. Without it members are kept in memory only.
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlaEntry {
    pub flight: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// Clusters this TLA spans (default: every cluster).
    pub clusters: Option<BTreeSet<String>>,
    /// Tables collected whether or not anyone asked.
    #[serde(default)]
    pub prewarm: BTreeSet<String>,
    /// Index of static tables this TLA adds (relative to the topology file).
    pub static_tables: Option<PathBuf>,
    /// Query History: tables whose old generations this TLA keeps, and
    /// for how long (see `fleetsql_history::HistoryConfig`), under
    /// `history.dir`: written as each generation is made, and served to
    /// its SQL nodes over Flight (they fetch what they lack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<fleetsql_history::HistoryConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlNodeEntry {
    /// The TLAs it may read from, each with its locality bonus (added to
    /// the clusters the TLA sees when the node chooses). A node of a set
    /// may leave it out: it reads every TLA of its set.
    #[serde(default)]
    pub tlas: BTreeMap<String, i64>,
    pub pg: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// Flight SQL (ADBC, JDBC Flight SQL); without it, not served.
    pub flightsql: Option<SocketAddr>,
    #[serde(default)]
    pub prewarm: BTreeSet<String>,
    #[serde(default, with = "duration_text::option")]
    pub query_timeout: Option<Duration>,
    /// How long a query naming a table not yet collected waits for a
    /// generation that has it (default two ticks plus 2 s, at least 5 s).
    #[serde(default, with = "duration_text::option")]
    pub table_wait: Option<Duration>,
    /// Memory all running queries may hold together, in MiB (default 1024).
    pub query_memory_mib: Option<usize>,
    /// Queries that may run at once (default: its set's, else 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_queries: Option<usize>,
    /// Queries that may wait for a place while `max_concurrent_queries`
    /// run, each at most its `query_timeout` (default 64); one more is
    /// refused at once (SQLSTATE 53300, HTTP 503 with `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued_queries: Option<usize>,
    /// Tables the node requests from its TLA at once (default 4096).
    pub max_requested_tables: Option<usize>,
    /// New table names no machine publishes that one client (IP address)
    /// may name in a minute (default 64).
    pub max_new_tables_per_client_minute: Option<usize>,
    /// Names clients reach the HTTP port by besides its address, `localhost`
    /// and loopback addresses (a `Host` header naming anything else is
    /// refused: DNS rebinding).
    #[serde(default)]
    pub http_hosts: Vec<String>,
    /// Web origins (`https://dash.example.com`) whose pages may send
    /// state-changing requests besides the node's own.
    #[serde(default)]
    pub http_origins: Vec<String>,
    /// Where this node keeps its apps' state (alert state, report runs)
    /// unless a file is named below; relative to the topology file.
    pub state_dir: Option<PathBuf>,
    /// Alert definitions (`*.toml`, `routes.toml`); without it, no alerts.
    pub alerts_dir: Option<PathBuf>,
    /// Alert state (default `<state_dir>/alerts.db`). The SQL nodes of one
    /// set given the same file run the alerts once between them.
    pub alerts_state: Option<PathBuf>,
    /// How often due alerts are looked for (default 1 s).
    #[serde(default, with = "duration_text::option")]
    pub alerts_poll: Option<Duration>,
    /// How long after the alert lease holder died another node takes over
    /// (default 10 s).
    #[serde(default, with = "duration_text::option")]
    pub alerts_lease: Option<Duration>,
    /// Report definitions; without it, no reports.
    pub reports_dir: Option<PathBuf>,
    /// Report runs (default `<state_dir>/reports.db`).
    pub reports_db: Option<PathBuf>,
    /// View definitions (`*.toml`), re-read while running; without it, no
    /// views.
    pub views_dir: Option<PathBuf>,
    /// Persistent-query sinks and event sources (MQTT, XMPP, esmond).
    pub integrations: Option<PathBuf>,
    /// Users, their roles and SCRAM verifiers (`fleetsql users add`):
    /// Postgres clients log in with SCRAM-SHA-256. Without it,
    /// authentication is off. Re-read when it changes.
    pub users: Option<PathBuf>,
    /// Bearer tokens for HTTP (`fleetsql tokens create`).
    pub tokens: Option<PathBuf>,
    /// The certificate chain (PEM) of the node's client-facing ports
    /// (Postgres wire, HTTP); with users, plaintext pg clients are refused.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// A CA (PEM) whose client certificates log in on the Postgres wire
    /// as the user their CN names (who must be in `users`).
    pub client_ca: Option<PathBuf>,
    /// Query History: tables whose old generations this node keeps (under
    /// `<state_dir>/history` or `history.dir`), queryable as
    /// `history.<table>` and by time travel:
    /// `[sqlnodes.X.history] tables = ["sys"]`, `keep = [{ every =
    /// "generation", for = "2h" }, { every = "1m", for = "2d" }]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<fleetsql_history::HistoryConfig>,
}

impl SqlNodeEntry {
    /// The apps this node runs: its paths, and its own name in the alert
    /// lease (names are unique in a topology).
    pub fn apps(&self, name: &str) -> fleetsql_apps::AppsConfig {
        let defaults = fleetsql_apps::AppsConfig::default();
        fleetsql_apps::AppsConfig {
            state_dir: self.state_dir.clone(),
            alerts_dir: self.alerts_dir.clone(),
            alerts_state: self.alerts_state.clone(),
            alerts_node: Some(name.to_string()),
            alerts_poll: self.alerts_poll.unwrap_or(defaults.alerts_poll),
            alerts_lease: self.alerts_lease.unwrap_or(defaults.alerts_lease),
            reports_dir: self.reports_dir.clone(),
            reports_db: self.reports_db.clone(),
            views_dir: self.views_dir.clone(),
            integrations: self.integrations.clone(),
            ..defaults
        }
    }
}

/// `history.dir` relative to the topology file.
fn relative_history_dir(history: &mut Option<fleetsql_history::HistoryConfig>, dir: &Path) {
    if let Some(history) = history
        && let Some(path) = &history.dir
        && path.is_relative()
    {
        history.dir = Some(dir.join(path));
    }
}

impl Topology {
    /// Each node's `history`: its settings, and a directory to keep it in.
    fn validate_history(&self) -> Result<()> {
        let invalid = |reason: String| TiersError::Config {
            path: "topology".to_string(),
            reason,
        };
        let sqlnodes = self
            .sqlnodes
            .iter()
            .map(|(n, e)| ("sqlnodes", n, e.history.as_ref(), e.state_dir.is_some()));
        let tlas = self
            .tlas
            .iter()
            .map(|(n, e)| ("tlas", n, e.history.as_ref(), false));
        for (role, name, history, has_state_dir) in sqlnodes.chain(tlas) {
            let Some(history) = history else { continue };
            history
                .validate()
                .map_err(|e| invalid(format!("[{role}.{name}] {e}")))?;
            if history.dir.is_none() && !has_state_dir {
                return Err(invalid(format!(
                    "[{role}.{name}] keeps history but has no directory for it; set `history.dir`{}",
                    if role == "sqlnodes" {
                        " or `state_dir` (history then goes to <state_dir>/history)"
                    } else {
                        ""
                    }
                )));
            }
        }
        Ok(())
    }
}

/// Durations written as text (`"5s"`), read as text or seconds.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::duration::deserialize(d)
    }

    pub(super) mod option {
        use super::*;

        pub(in super::super) fn serialize<S: Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            super::super::duration::option::deserialize(d)
        }
    }
}

impl Topology {
    /// Reads and checks a topology file; relative paths in it are taken
    /// relative to the file.
    pub fn load(path: &Path) -> Result<Topology> {
        let text = std::fs::read_to_string(path).map_err(|source| TiersError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut topology = Topology::parse(&text).map_err(|e| match e {
            TiersError::Config { reason, .. } => TiersError::Config {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })?;
        if let Some(dir) = path.parent() {
            for proxy in topology.proxies.values_mut() {
                if let Some(state) = &proxy.state_dir
                    && state.is_relative()
                {
                    proxy.state_dir = Some(dir.join(state));
                }
            }
            for tla in topology.tlas.values_mut() {
                if let Some(index) = &tla.static_tables
                    && index.is_relative()
                {
                    tla.static_tables = Some(dir.join(index));
                }
                relative_history_dir(&mut tla.history, dir);
            }
            for node in topology.sqlnodes.values_mut() {
                for path in [
                    &mut node.state_dir,
                    &mut node.alerts_dir,
                    &mut node.alerts_state,
                    &mut node.reports_dir,
                    &mut node.reports_db,
                    &mut node.views_dir,
                    &mut node.integrations,
                    &mut node.users,
                    &mut node.tokens,
                    &mut node.tls_cert,
                    &mut node.tls_key,
                    &mut node.client_ca,
                ]
                .into_iter()
                .flatten()
                {
                    if path.is_relative() {
                        *path = dir.join(&*path);
                    }
                }
                relative_history_dir(&mut node.history, dir);
            }
            if let Some(tls) = &mut topology.tls {
                for path in [Some(&mut tls.ca), tls.certs_dir.as_mut()]
                    .into_iter()
                    .flatten()
                    .chain(
                        tls.nodes
                            .values_mut()
                            .flat_map(|files| [&mut files.cert, &mut files.key]),
                    )
                {
                    if path.is_relative() {
                        *path = dir.join(&*path);
                    }
                }
            }
            for agent in topology.agents.values_mut() {
                if let Some(drop_dir) = &agent.drop_dir
                    && drop_dir.is_relative()
                {
                    agent.drop_dir = Some(dir.join(drop_dir));
                }
            }
        }
        Ok(topology)
    }

    pub fn parse(text: &str) -> Result<Topology> {
        let topology: Topology = toml::from_str(text).map_err(|e| TiersError::Config {
            path: "topology".to_string(),
            reason: e.to_string(),
        })?;
        topology.validate()?;
        Ok(topology)
    }

    pub fn to_toml(&self) -> String {
        // Every field serializes to a TOML value; this cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// Cross-references: every proxy's cluster has agents, every SQL
    /// node's TLA exists, every name is unique across roles.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| TiersError::Config {
            path: "topology".to_string(),
            reason,
        };
        if self.tick.is_zero()
            || self.table_expiry.is_zero()
            || self.member_expiry.is_zero()
            || self.fetch_timeout.is_some_and(|t| t.is_zero())
        {
            return Err(invalid(
                "`tick`, `table_expiry`, `member_expiry` and `fetch_timeout` must be positive durations".into(),
            ));
        }
        if self.max_members == 0 {
            return Err(invalid(
                "`max_members = 0` would refuse every agent that announces itself; leave it out for the default (1000) or give a positive number".into(),
            ));
        }
        for (cluster, entry) in &self.clusters {
            if entry.machines == Some(0) {
                return Err(invalid(format!(
                    "cluster `{cluster}`: `machines` must be at least 1 (leave it out to expect only the members that announce themselves)"
                )));
            }
            if !self.proxies.values().any(|p| &p.cluster == cluster) {
                return Err(invalid(format!(
                    "cluster `{cluster}` has no proxy to announce to; add a [proxies.NAME] with cluster = \"{cluster}\""
                )));
            }
        }
        let mut names = BTreeSet::new();
        // A SQL node may share its name with a TLA: that is one process
        // doing both (`fleetsql tla-sql`), so it is counted once.
        for name in self
            .agents
            .keys()
            .chain(self.proxies.keys())
            .chain(self.tlas.keys())
            .chain(self.sqlnodes.keys().filter(|n| !self.tlas.contains_key(*n)))
        {
            if !names.insert(name) {
                return Err(invalid(format!(
                    "the name `{name}` is used twice; every node needs its own (only a TLA and a SQL node may share one: they run as one `fleetsql tla-sql` process)"
                )));
            }
        }
        if let Some(tls) = &self.tls {
            for name in &names {
                if !fleetsql_flight::is_dns_name(name) {
                    return Err(invalid(format!(
                        "with [tls], node names are their certificates' DNS names; `{name}` is not one (use letters, digits, `-` and `.`)"
                    )));
                }
                if tls.files(name).is_none() {
                    return Err(invalid(format!(
                        "[tls] gives node `{name}` no certificate; set `certs_dir` or add [tls.nodes.{name}] with `cert` and `key`"
                    )));
                }
            }
            for name in tls.nodes.keys() {
                if !names.contains(name) {
                    return Err(invalid(format!(
                        "[tls.nodes.{name}] names no node of this topology"
                    )));
                }
            }
        }
        self.validate_history()?;
        let clusters = self.clusters();
        for (name, proxy) in &self.proxies {
            let agents = clusters.get(&proxy.cluster).map_or(0, Vec::len) as u64;
            match proxy.machines {
                None if agents == 0 && !self.clusters.contains_key(&proxy.cluster) => {
                    return Err(invalid(format!(
                        "proxy `{name}` serves cluster `{}`, which no agent belongs to; list its agents, give the proxy `machines = N`, or declare [clusters.{}] for agents that join by themselves",
                        proxy.cluster, proxy.cluster
                    )));
                }
                Some(0) => {
                    return Err(invalid(format!(
                        "proxy `{name}`: `machines` must be at least 1"
                    )));
                }
                Some(machines) if agents > 0 && machines != agents => {
                    return Err(invalid(format!(
                        "proxy `{name}` says cluster `{}` has {machines} machines but {agents} agents are listed for it; drop `machines` or make them agree",
                        proxy.cluster
                    )));
                }
                _ => {}
            }
        }
        let sizes = self.cluster_sizes();
        for (name, tla) in &self.tlas {
            for cluster in tla.clusters.iter().flatten() {
                if !sizes.contains_key(cluster) {
                    return Err(invalid(format!(
                        "TLA `{name}` spans cluster `{cluster}`, which no agent belongs to"
                    )));
                }
            }
        }
        self.validate_sets()?;
        for (name, node) in &self.sqlnodes {
            if node.tlas.is_empty() && self.set_of_sqlnode(name).is_none() {
                return Err(invalid(format!(
                    "SQL node `{name}` names no `tlas`; give it `tlas = {{ NAME = 0 }}` or put it in a [sets.NAME] whose TLAs it reads"
                )));
            }
            for (setting, value) in [
                ("max_requested_tables", node.max_requested_tables),
                (
                    "max_new_tables_per_client_minute",
                    node.max_new_tables_per_client_minute,
                ),
            ] {
                if value == Some(0) {
                    return Err(invalid(format!(
                        "SQL node `{name}`: `{setting} = 0` would refuse every query naming a table; leave it out for the default or give a positive number"
                    )));
                }
            }
            for tla in node.tlas.keys() {
                if !self.tlas.contains_key(tla) {
                    return Err(invalid(format!(
                        "SQL node `{name}` reads from TLA `{tla}`, which is not in [tlas]"
                    )));
                }
            }
        }
        Ok(())
    }

    fn validate_sets(&self) -> Result<()> {
        let invalid = |reason: String| TiersError::Config {
            path: "topology".to_string(),
            reason,
        };
        let sizes = self.cluster_sizes();
        let mut tla_set: BTreeMap<&String, &String> = BTreeMap::new();
        let mut sql_set: BTreeMap<&String, &String> = BTreeMap::new();
        for (set, entry) in &self.sets {
            if entry.tlas.is_empty() {
                return Err(invalid(format!(
                    "set `{set}` has no TLAs; list the TLAs that collect its span in `tlas = [...]`"
                )));
            }
            for tla in &entry.tlas {
                let Some(tla_entry) = self.tlas.get(tla) else {
                    return Err(invalid(format!(
                        "set `{set}` names TLA `{tla}`, which is not in [tlas]"
                    )));
                };
                if let Some(other) = tla_set.insert(tla, set) {
                    return Err(invalid(format!(
                        "TLA `{tla}` is in sets `{other}` and `{set}`; a TLA collects one span, so it belongs to one set"
                    )));
                }
                if tla_entry.clusters.is_some() {
                    return Err(invalid(format!(
                        "TLA `{tla}` gives its own `clusters`, but set `{set}` gives its span; drop the TLA's `clusters`"
                    )));
                }
            }
            for node in &entry.sqlnodes {
                let Some(node_entry) = self.sqlnodes.get(node) else {
                    return Err(invalid(format!(
                        "set `{set}` names SQL node `{node}`, which is not in [sqlnodes]"
                    )));
                };
                if let Some(other) = sql_set.insert(node, set) {
                    return Err(invalid(format!(
                        "SQL node `{node}` is in sets `{other}` and `{set}`; a SQL node serves one set"
                    )));
                }
                if let Some(tla) = node_entry.tlas.keys().find(|t| !entry.tlas.contains(*t)) {
                    return Err(invalid(format!(
                        "SQL node `{node}` of set `{set}` reads TLA `{tla}`, which is not one of the set's TLAs ({}); a set's nodes read only its span",
                        entry.tlas.iter().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            let mut subset_of: BTreeMap<&String, &String> = BTreeMap::new();
            for (subset, sub) in &entry.subsets {
                if sub.tables.is_empty() || sub.sqlnodes.is_empty() {
                    return Err(invalid(format!(
                        "subset `{subset}` of set `{set}` needs `sqlnodes` and the `tables` they serve"
                    )));
                }
                for node in &sub.sqlnodes {
                    if !entry.sqlnodes.contains(node) {
                        return Err(invalid(format!(
                            "subset `{subset}` of set `{set}` names SQL node `{node}`, which is not in the set's `sqlnodes`"
                        )));
                    }
                    if let Some(other) = subset_of.insert(node, subset) {
                        return Err(invalid(format!(
                            "SQL node `{node}` is in subsets `{other}` and `{subset}` of set `{set}`; a node serves one subset"
                        )));
                    }
                }
            }
            if entry.clusters.is_some() && !entry.select.is_empty() {
                return Err(invalid(format!(
                    "set `{set}` gives both `clusters` and `select`; its span is one or the other"
                )));
            }
            for cluster in entry.clusters.iter().flatten() {
                if !sizes.contains_key(cluster) {
                    return Err(invalid(format!(
                        "set `{set}` spans cluster `{cluster}`, which no agent or proxy belongs to"
                    )));
                }
            }
            if !entry.select.is_empty() && self.set_span(entry).is_empty() {
                let wanted: Vec<String> = entry
                    .select
                    .iter()
                    .map(|(k, v)| format!("{k} = \"{v}\""))
                    .collect();
                return Err(invalid(format!(
                    "set `{set}` selects clusters labelled {}, and no cluster has those labels; label clusters under [clusters.NAME] labels = {{ ... }}",
                    wanted.join(", ")
                )));
            }
            if entry.clusters.as_ref().is_some_and(BTreeSet::is_empty) {
                return Err(invalid(format!(
                    "set `{set}` spans no cluster (`clusters = []`); list its clusters, or leave `clusters` out to span every one"
                )));
            }
            for (setting, value) in [
                ("query_memory_mib", entry.query_memory_mib),
                ("max_concurrent_queries", entry.max_concurrent_queries),
            ] {
                if value == Some(0) {
                    return Err(invalid(format!(
                        "set `{set}`: `{setting} = 0` would refuse every query; leave it out or give a positive number"
                    )));
                }
            }
            if entry.query_timeout.is_some_and(|t| t.is_zero()) {
                return Err(invalid(format!(
                    "set `{set}`: `query_timeout` must be a positive duration"
                )));
            }
        }
        for (name, node) in &self.sqlnodes {
            if node.max_concurrent_queries == Some(0) {
                return Err(invalid(format!(
                    "SQL node `{name}`: `max_concurrent_queries = 0` would refuse every query; leave it out or give a positive number"
                )));
            }
        }
        Ok(())
    }

    /// The set TLA `name` belongs to.
    pub fn set_of_tla(&self, name: &str) -> Option<(&String, &SetEntry)> {
        self.sets.iter().find(|(_, s)| s.tlas.contains(name))
    }

    /// The set SQL node `name` belongs to.
    pub fn set_of_sqlnode(&self, name: &str) -> Option<(&String, &SetEntry)> {
        self.sets.iter().find(|(_, s)| s.sqlnodes.contains(name))
    }

    /// The clusters a set spans: its list, the clusters its selector
    /// matches, or every cluster.
    pub fn set_span(&self, set: &SetEntry) -> BTreeSet<String> {
        let all = self.cluster_sizes().into_keys();
        if let Some(clusters) = &set.clusters {
            return clusters.clone();
        }
        all.filter(|cluster| {
            let labels = self.clusters.get(cluster).map(|c| &c.labels);
            set.select
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .collect()
    }

    /// The clusters TLA `name` collects: its set's span, its own
    /// `clusters`, or (`None`) every cluster.
    pub fn tla_span(&self, name: &str) -> Option<BTreeSet<String>> {
        if let Some((_, set)) = self.set_of_tla(name) {
            return Some(self.set_span(set));
        }
        self.tlas.get(name).and_then(|t| t.clusters.clone())
    }

    /// The SQL node `name`, or an error listing the ones there are.
    pub fn sqlnode(&self, name: &str) -> Result<&SqlNodeEntry> {
        self.sqlnodes
            .get(name)
            .ok_or_else(|| TiersError::UnknownNode {
                role: "sqlnode",
                name: name.to_string(),
                known: self.sqlnodes.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Cluster name → its agents' names.
    pub fn clusters(&self) -> BTreeMap<String, Vec<String>> {
        let mut clusters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, agent) in &self.agents {
            clusters
                .entry(agent.cluster.clone())
                .or_default()
                .push(name.clone());
        }
        clusters
    }

    /// Cluster name → how many machines it is expected to have, as far as
    /// this file knows: its listed agents, or the `machines` its proxies
    /// declare when no agent is listed; for a declared cluster, its listed
    /// agents and expected members, at least its `machines` (0 when its
    /// members are known only from announcements: the proxies report them).
    pub fn cluster_sizes(&self) -> BTreeMap<String, u64> {
        let listed = self.clusters();
        let mut sizes: BTreeMap<String, u64> = listed
            .iter()
            .map(|(cluster, agents)| (cluster.clone(), agents.len() as u64))
            .collect();
        for (cluster, entry) in &self.clusters {
            let mut names: BTreeSet<&String> = entry.members.iter().collect();
            names.extend(listed.get(cluster).into_iter().flatten());
            let size = (names.len() as u64).max(entry.machines.unwrap_or(0));
            let into = sizes.entry(cluster.clone()).or_default();
            *into = (*into).max(size);
        }
        for proxy in self.proxies.values() {
            if let Some(machines) = proxy.machines {
                let size = sizes.entry(proxy.cluster.clone()).or_default();
                *size = (*size).max(machines);
            }
        }
        sizes
    }

    /// The proxies serving `cluster`, in name order (the failover order).
    pub fn proxies_of(&self, cluster: &str) -> Vec<(&String, &ProxyEntry)> {
        self.proxies
            .iter()
            .filter(|(_, p)| p.cluster == cluster)
            .collect()
    }

    /// The nodes whose Flight clients node `name`'s server accepts under
    /// TLS: an agent's cluster's proxies, a proxy's TLAs (those spanning
    /// its cluster), a TLA's SQL nodes. A SQL node serves no one.
    pub fn parents_of(&self, name: &str) -> BTreeSet<String> {
        if let Some(agent) = self.agents.get(name) {
            return self
                .proxies_of(&agent.cluster)
                .into_iter()
                .map(|(n, _)| n.clone())
                .collect();
        }
        if let Some(proxy) = self.proxies.get(name) {
            return self
                .tlas
                .keys()
                .filter(|t| self.tla_span(t).is_none_or(|c| c.contains(&proxy.cluster)))
                .cloned()
                .collect();
        }
        if self.tlas.contains_key(name) {
            return self
                .sqlnodes
                .keys()
                .filter(|s| self.sqlnode_tlas(s).contains_key(name))
                .cloned()
                .collect();
        }
        BTreeSet::new()
    }

    /// The TLAs SQL node `name` reads, with their locality bonus: its own
    /// `tlas`, or every TLA of its set.
    pub fn sqlnode_tlas(&self, name: &str) -> BTreeMap<String, i64> {
        let Some(entry) = self.sqlnodes.get(name) else {
            return BTreeMap::new();
        };
        if !entry.tlas.is_empty() {
            return entry.tlas.clone();
        }
        self.set_of_sqlnode(name)
            .map(|(_, set)| set.tlas.iter().map(|t| (t.clone(), 0)).collect())
            .unwrap_or_default()
    }

    pub fn stale_after(&self) -> Duration {
        self.stale_after.unwrap_or(self.tick * 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        tick = "1s"
        [agents.a1]
        cluster = "c1"
        flight = "127.0.0.1:7101"
        [agents.a2]
        cluster = "c1"
        [proxies.p1]
        cluster = "c1"
        [tlas.t1]
        prewarm = ["sys"]
        [sqlnodes.s1]
        tlas = { t1 = 3 }
    "#;

    #[test]
    fn parses_and_derives_clusters() {
        let t = Topology::parse(EXAMPLE).unwrap();
        assert_eq!(t.tick, Duration::from_secs(1));
        assert_eq!(t.stale_after(), Duration::from_secs(3));
        assert_eq!(t.clusters()["c1"], ["a1", "a2"]);
        assert_eq!(t.proxies_of("c1").len(), 1);
        assert_eq!(t.sqlnodes["s1"].tlas["t1"], 3);
        let back = Topology::parse(&t.to_toml()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn a_sql_nodes_app_paths_are_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("topology.toml");
        std::fs::write(
            &file,
            "[tlas.t1]\n[sqlnodes.s1]\ntlas = { t1 = 0 }\nstate_dir = \"state\"\n\
             alerts_dir = \"alerts\"\nreports_db = \"/abs/runs.db\"\nalerts_lease = \"3s\"\n",
        )
        .unwrap();
        let t = Topology::load(&file).unwrap();
        let apps = t.sqlnodes["s1"].apps("s1");
        assert_eq!(apps.state_dir, Some(dir.path().join("state")));
        assert_eq!(apps.alerts_dir, Some(dir.path().join("alerts")));
        assert_eq!(
            apps.alerts_state_path(),
            Some(dir.path().join("state/alerts.db"))
        );
        assert_eq!(apps.reports_db_path(), Some(PathBuf::from("/abs/runs.db")));
        assert_eq!(apps.alerts_node.as_deref(), Some("s1"));
        assert_eq!(apps.alerts_lease, Duration::from_secs(3));
        assert_eq!(apps.alerts_poll, Duration::from_secs(1));
        apps.validate().unwrap();
    }

    #[test]
    fn tls_files_resolve_against_the_file_and_parents_follow_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("topology.toml");
        std::fs::write(
            &file,
            format!(
                "{EXAMPLE}\n[tlas.t2]\nclusters = [\"c9\"]\n[agents.z1]\ncluster = \"c9\"\n[proxies.p9]\ncluster = \"c9\"\n\
                 [tls]\nca = \"certs/ca.crt\"\ncerts_dir = \"certs\"\npoll = \"250ms\"\n\
                 [tls.nodes.a2]\ncert = \"/etc/a2.pem\"\nkey = \"a2.key\"\n"
            ),
        )
        .unwrap();
        let t = Topology::load(&file).unwrap();
        let tls = t.tls.as_ref().unwrap();
        assert_eq!(tls.poll(), Duration::from_millis(250));
        let p1 = tls.files("p1").unwrap();
        assert_eq!(p1.ca, dir.path().join("certs/ca.crt"));
        assert_eq!(p1.cert, dir.path().join("certs/p1.crt"));
        assert_eq!(p1.key, dir.path().join("certs/p1.key"));
        let a2 = tls.files("a2").unwrap();
        assert_eq!(a2.cert, PathBuf::from("/etc/a2.pem"));
        assert_eq!(a2.key, dir.path().join("a2.key"));

        let names = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>();
        assert_eq!(names(t.parents_of("a1")), ["p1"]);
        assert_eq!(names(t.parents_of("p1")), ["t1"], "t2 spans c9 only");
        assert_eq!(names(t.parents_of("p9")), ["t1", "t2"]);
        assert_eq!(names(t.parents_of("t1")), ["s1"]);
        assert!(t.parents_of("t2").is_empty(), "no SQL node reads t2");
        assert!(t.parents_of("s1").is_empty());
        assert!(t.parents_of("stranger").is_empty());
        let back = Topology::parse(&t.to_toml()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn tls_needs_a_certificate_and_a_dns_name_for_every_node() {
        let err = |text: &str| Topology::parse(text).unwrap_err().to_string();
        let tree = "[agents.a1]\ncluster = \"c\"\n[proxies.p1]\ncluster = \"c\"\n";
        let e = err(&format!("{tree}[tls]\nca = \"ca.crt\"\n"));
        assert!(e.contains("certs_dir") && e.contains("a1"), "{e}");
        let e = err(&format!(
            "{tree}[tls]\nca = \"ca.crt\"\ncerts_dir = \"d\"\n[tls.nodes.nobody]\ncert = \"x\"\nkey = \"y\""
        ));
        assert!(e.contains("[tls.nodes.nobody] names no node"), "{e}");
        let e = err(
            "[agents.\"a 1\"]\ncluster = \"c\"\n[proxies.p1]\ncluster = \"c\"\n[tls]\nca = \"ca.crt\"\ncerts_dir = \"d\"",
        );
        assert!(e.contains("`a 1` is not one"), "{e}");
        Topology::parse(&format!("{tree}[tls]\nca = \"ca.crt\"\ncerts_dir = \"d\"")).unwrap();
    }

    const SETS: &str = r#"
        [agents.a1]
        cluster = "c1"
        [agents.a2]
        cluster = "c2"
        [agents.a3]
        cluster = "c3"
        [proxies.p1]
        cluster = "c1"
        [proxies.p2]
        cluster = "c2"
        [proxies.p3]
        cluster = "c3"
        [clusters.c1]
        labels = { region = "eu" }
        [clusters.c2]
        labels = { region = "eu" }
        [tlas.ta]
        [tlas.tb]
        [tlas.tc]
        clusters = ["c3"]
        [sqlnodes.sa]
        [sqlnodes.sb]
        tlas = { tb = 2 }
        [sets.a]
        select = { region = "eu" }
        tlas = ["ta"]
        sqlnodes = ["sa"]
        domain = ["reader"]
        [sets.b]
        tlas = ["tb"]
        sqlnodes = ["sb"]
    "#;

    #[test]
    fn a_set_gives_its_tlas_their_span_and_its_nodes_their_tlas() {
        let t = Topology::parse(SETS).unwrap();
        let span = |tla: &str| t.tla_span(tla).map(|s| s.into_iter().collect::<Vec<_>>());
        assert_eq!(span("ta"), Some(vec!["c1".to_string(), "c2".to_string()]));
        assert_eq!(
            span("tb"),
            Some(vec!["c1".into(), "c2".into(), "c3".into()])
        );
        assert_eq!(span("tc"), Some(vec!["c3".to_string()]), "no set: its own");
        assert_eq!(
            t.sqlnode_tlas("sa"),
            BTreeMap::from([("ta".to_string(), 0)])
        );
        assert_eq!(
            t.sqlnode_tlas("sb"),
            BTreeMap::from([("tb".to_string(), 2)])
        );
        let names = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>();
        assert_eq!(
            names(t.parents_of("p3")),
            ["tb", "tc"],
            "c3 is outside a's span"
        );
        assert_eq!(names(t.parents_of("ta")), ["sa"]);
        assert_eq!(Topology::parse(&t.to_toml()).unwrap(), t);
    }

    #[test]
    fn set_errors_name_the_set_and_what_to_do() {
        let err = |edit: &str, with: &str| {
            Topology::parse(&SETS.replace(edit, with))
                .unwrap_err()
                .to_string()
        };
        let e = err("tlas = [\"tb\"]", "tlas = [\"tb\", \"ta\"]");
        assert!(e.contains("`ta` is in sets `a` and `b`"), "{e}");
        let e = err("tlas = [\"tb\"]", "tlas = [\"tb\", \"tc\"]");
        assert!(e.contains("drop the TLA's `clusters`"), "{e}");
        let e = err("tlas = [\"tb\"]", "tlas = [\"nowhere\"]");
        assert!(e.contains("`nowhere`, which is not in [tlas]"), "{e}");
        let e = err("tlas = [\"tb\"]", "tlas = []");
        assert!(e.contains("set `b` has no TLAs"), "{e}");
        let e = err("tlas = { tb = 2 }", "tlas = { ta = 2 }");
        assert!(e.contains("not one of the set's TLAs"), "{e}");
        let e = err(
            "region = \"eu\" }\n        tlas",
            "region = \"us\" }\n        tlas",
        );
        assert!(e.contains("no cluster has those labels"), "{e}");
        let e = err("domain = [\"reader\"]", "domain = [\"king\"]");
        assert!(e.contains("king"), "{e}");
        let e = err(
            "sqlnodes = [\"sb\"]",
            "sqlnodes = [\"sb\"]\nmax_concurrent_queries = 0",
        );
        assert!(e.contains("max_concurrent_queries = 0"), "{e}");
        let e = err(
            "sqlnodes = [\"sb\"]",
            "sqlnodes = [\"sb\"]\nclusters = [\"c9\"]",
        );
        assert!(e.contains("cluster `c9`"), "{e}");
        let e = err("[sets.a]", "[sets.a]\nclusters = [\"c1\"]");
        assert!(e.contains("both `clusters` and `select`"), "{e}");
        // A SQL node outside every set still needs its TLAs.
        let e = err("[sqlnodes.sa]", "[sqlnodes.lone]\n[sqlnodes.sa]");
        assert!(e.contains("`lone` names no `tlas`"), "{e}");
    }

    #[test]
    fn default_is_an_empty_file() {
        assert_eq!(Topology::default(), Topology::parse("").unwrap());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let err = |text: &str| Topology::parse(text).unwrap_err().to_string();
        assert!(err("[proxies.p]\ncluster = \"nowhere\"").contains("nowhere"));
        assert!(err("[sqlnodes.s]\ntlas = { t9 = 0 }").contains("t9"));
        assert!(err("[agents.x]\ncluster = \"c\"\n[tlas.x]\n").contains("twice"));
        assert!(err("tick = \"5 parsecs\"").contains("parsecs"));
        assert!(err("[agents.a]\ncluster = \"c\"\ncolour = 1").contains("colour"));
        assert!(
            err("[agents.a]\ncluster = \"c\"\n[proxies.p]\ncluster = \"c\"\nmachines = 3")
                .contains("1 agents are listed")
        );
        assert!(err("[proxies.p]\ncluster = \"c\"\nmachines = 0").contains("at least 1"));
    }

    #[test]
    fn a_declared_cluster_needs_no_listed_agents() {
        let t = Topology::parse(
            "member_expiry = \"30s\"\n[clusters.c1]\nmembers = [\"a\", \"b\"]\n\
             [clusters.c2]\nmachines = 5\n[proxies.p1]\ncluster = \"c1\"\n\
             [proxies.p2]\ncluster = \"c2\"\n[tlas.t]\nclusters = [\"c1\", \"c2\"]",
        )
        .unwrap();
        assert_eq!(t.member_expiry, Duration::from_secs(30));
        assert_eq!(t.max_members, 1000);
        assert_eq!(t.cluster_sizes()["c1"], 2);
        assert_eq!(t.cluster_sizes()["c2"], 5);
        assert_eq!(Topology::parse(&t.to_toml()).unwrap(), t);
        let err = |text: &str| Topology::parse(text).unwrap_err().to_string();
        assert!(err("[clusters.c9]").contains("no proxy"));
        assert!(
            err("[clusters.c]\nmachines = 0\n[proxies.p]\ncluster = \"c\"").contains("at least 1")
        );
        assert!(err("max_members = 0").contains("max_members"));
        assert!(err("member_expiry = \"0s\"").contains("member_expiry"));
        assert!(err("[proxies.p]\ncluster = \"c\"").contains("[clusters.c]"));
    }

    #[test]
    fn a_cluster_without_listed_agents_takes_its_size_from_its_proxy() {
        let t = Topology::parse(
            "[proxies.p1]\ncluster = \"far\"\nmachines = 1000\n[proxies.p2]\ncluster = \"far\"\nmachines = 1000\n[tlas.t]\nclusters = [\"far\"]",
        )
        .unwrap();
        assert_eq!(t.cluster_sizes()["far"], 1000);
        assert!(t.clusters().is_empty());
        let listed = Topology::parse(EXAMPLE).unwrap();
        assert_eq!(listed.cluster_sizes()["c1"], 2);
    }

    #[test]
    fn history_is_read_checked_and_named_in_errors() {
        let base = "[agents.a]\ncluster = \"c\"\n[proxies.p]\ncluster = \"c\"\n[tlas.t]\n[sqlnodes.s]\ntlas = { t = 0 }\nstate_dir = \"/var/lib/f\"\n";
        let t = Topology::parse(&format!(
            "{base}[sqlnodes.s.history]\ntables = [\"sys\", \"filesystem\"]\nkeep = [{{ every = \"generation\", for = \"2h\" }}, {{ every = \"1m\", for = \"2d\" }}]\n"
        ))
        .unwrap();
        let history = t.sqlnodes["s"].history.as_ref().expect("history");
        assert_eq!(history.tables.len(), 2);
        assert_eq!(history.keep.len(), 2);
        assert_eq!(Topology::parse(&t.to_toml()).unwrap(), t);

        let err = |text: &str| Topology::parse(text).unwrap_err().to_string();
        // 90s is not a multiple of 1m, so the ladder would not nest. (The
        // test had 7m, which is a multiple of 1m and rightly accepted.)
        let e = err(&format!(
            "{base}[sqlnodes.s.history]\ntables = [\"sys\"]\nkeep = [{{ every = \"1m\", for = \"2h\" }}, {{ every = \"90s\", for = \"2d\" }}]\n"
        ));
        assert!(
            e.contains("[sqlnodes.s]") && e.contains("`history.keep[1].every`"),
            "{e}"
        );
        let e = err(&format!("{base}[sqlnodes.s.history]\ntables = []\n"));
        assert!(e.contains("`history.tables`"), "{e}");
        let e =
            err(&format!("{base}[tlas.t.history]\ntables = [\"sys\"]\n").replace("[tlas.t]\n", ""));
        assert!(e.contains("[tlas.t]") && e.contains("history.dir"), "{e}");
    }
}
