//! One struct per role: start it from the topology and the node's name,
//! read its addresses, shut it down.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetsql_agent::{Agent, AgentConfig};
use fleetsql_aggregator::{Aggregator, AggregatorConfig, Child, ChildGroup, StaticTables};
use fleetsql_apps::{AppsConfig, SqlNodeApps};
use fleetsql_flight::{
    FlightChild, FlightChildOptions, FlightServer, FlightServerConfig, TransferStats,
};
use fleetsql_http::HttpServer;
use fleetsql_pgwire::PgServer;
use fleetsql_sqlnode::{SqlNode, SqlNodeConfig};

use crate::admin::{self, Observed};
use crate::topology::Topology;
use crate::{Result, TiersError};

/// Addresses given on the command line; they win over the topology file
/// (port 0 picks a free port).
#[derive(Debug, Clone, Copy, Default)]
pub struct Listen {
    pub flight: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub publish: Option<SocketAddr>,
    pub pg: Option<SocketAddr>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn unknown(role: &'static str, name: &str, known: Vec<&String>) -> TiersError {
    TiersError::UnknownNode {
        role,
        name: name.to_string(),
        known: known
            .into_iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn flight_child(
    topology: &Topology,
    name: &str,
    addr: Option<SocketAddr>,
    role: &'static str,
) -> Result<FlightChild> {
    let addr = addr.ok_or_else(|| TiersError::MissingAddress {
        role,
        name: name.to_string(),
        field: "flight",
    })?;
    let defaults = FlightChildOptions::default();
    Ok(FlightChild::new(
        name,
        format!("http://{addr}"),
        FlightChildOptions {
            request_timeout: topology.fetch_timeout.unwrap_or(defaults.request_timeout),
            ..defaults
        },
    )?)
}

/// How every Flight server of the tree sends: the topology's compression.
fn server_config(topology: &Topology) -> FlightServerConfig {
    FlightServerConfig {
        compression: topology.compression,
        // The link to the parent gets its own thread, so collecting from
        // many children cannot starve it (see `own_threads`).
        own_threads: Some(1),
        ..FlightServerConfig::default()
    }
}

/// Tiers tick one after the other within a tick: agents at its start,
/// proxies a fifth later, TLAs two fifths, so each merges its children's
/// fresh generations and a row waits at most about one tick per hop.
fn offset(tick: Duration, tier: u32) -> Duration {
    tick * tier / 5
}

/// An agent: this machine's tables, served to its proxies over Flight.
#[derive(Debug)]
pub struct AgentProcess {
    name: String,
    agent: Arc<Agent>,
    flight: FlightServer,
    admin: HttpServer,
}

impl AgentProcess {
    pub async fn start(topology: &Topology, name: &str, listen: Listen) -> Result<AgentProcess> {
        let entry = topology
            .agents
            .get(name)
            .ok_or_else(|| unknown("agent", name, topology.agents.keys().collect()))?;
        let defaults = AgentConfig::default();
        let config = AgentConfig {
            host: entry.host.clone().unwrap_or(defaults.host),
            ip: entry.ip.clone().unwrap_or(defaults.ip),
            cluster: entry.cluster.clone(),
            tick: topology.tick,
            publish_addr: listen
                .publish
                .or(entry.publish)
                .unwrap_or(defaults.publish_addr),
            drop_dir: entry.drop_dir.clone(),
            roles: entry.roles.clone(),
            prewarm: entry.prewarm.clone(),
            host_collectors: entry.host_collectors.unwrap_or(defaults.host_collectors),
            ..defaults
        };
        let agent = Arc::new(Agent::start(config)?);
        let flight_addr =
            listen
                .flight
                .or(entry.flight)
                .ok_or_else(|| TiersError::MissingAddress {
                    role: "agent",
                    name: name.to_string(),
                    field: "flight",
                })?;
        let flight =
            FlightServer::start_with(agent.as_child(), flight_addr, server_config(topology))?;
        let observed = Arc::new(Observed {
            role: "agent",
            name: name.to_string(),
            generation: agent.subscribe(),
            aggregator: None,
            sqlnode: None,
            server: Some(flight.stats()),
            clients: Vec::new(),
            started: Instant::now(),
        });
        let admin = HttpServer::start(
            admin::router(observed),
            listen.http.or(entry.http).unwrap_or(loopback(0)),
        )
        .await?;
        Ok(AgentProcess {
            name: name.to_string(),
            agent,
            flight,
            admin,
        })
    }

    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The agent, for in-process publishers (integrations) that outlive a borrow.
    pub fn shared_agent(&self) -> Arc<Agent> {
        self.agent.clone()
    }

    pub fn flight_addr(&self) -> SocketAddr {
        self.flight.local_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    pub fn ready_line(&self) -> String {
        format!(
            "fleetsql agent ready: name={} flight={} http={} publish={}",
            self.name,
            self.flight_addr(),
            self.http_addr(),
            self.agent.publish_addr()
        )
    }

    pub async fn shutdown(self) {
        self.admin.shutdown().await;
        self.flight.shutdown().await;
        // Holders of `shared_agent` are stopped first by the caller.
        if let Ok(agent) = Arc::try_unwrap(self.agent) {
            agent.shutdown().await;
        }
    }
}

/// A cluster proxy or a TLA: an aggregator over remote children, served
/// to its parents over Flight.
#[derive(Debug)]
pub struct TierProcess {
    role: &'static str,
    name: String,
    aggregator: Arc<Aggregator>,
    flight: FlightServer,
    admin: HttpServer,
}

impl TierProcess {
    /// A cluster proxy: one child per agent of its cluster.
    pub async fn start_proxy(
        topology: &Topology,
        name: &str,
        listen: Listen,
    ) -> Result<TierProcess> {
        let entry = topology
            .proxies
            .get(name)
            .ok_or_else(|| unknown("proxy", name, topology.proxies.keys().collect()))?;
        let clusters = topology.clusters();
        let agents = clusters.get(&entry.cluster).cloned().unwrap_or_default();
        if agents.is_empty() {
            return Err(TiersError::Config {
                path: "topology".into(),
                reason: format!(
                    "proxy `{name}` has no agents in this file to collect from; list cluster `{}`'s agents under [agents.NAME]",
                    entry.cluster
                ),
            });
        }
        let mut groups = Vec::new();
        let mut clients = Vec::new();
        for agent_name in &agents {
            let agent = &topology.agents[agent_name];
            let child = flight_child(topology, agent_name, agent.flight, "agent")?;
            clients.push((agent_name.clone(), child.stats()));
            groups.push(ChildGroup::single(Arc::new(child)).expecting(entry.cluster.clone(), 1));
        }
        let mut config = AggregatorConfig::new(name, topology.tick);
        if let Some(timeout) = topology.fetch_timeout {
            config.fetch_timeout = timeout;
        }
        config.role = "proxy".to_string();
        config.offset = offset(topology.tick, 1);
        config.stale_after = topology.stale_after();
        let listen = Listen {
            flight: listen.flight.or(entry.flight),
            http: listen.http.or(entry.http),
            ..listen
        };
        Self::serve(
            "proxy",
            name,
            config,
            groups,
            clients,
            listen,
            server_config(topology),
        )
        .await
    }

    /// A TLA: one child group per cluster it spans, whose members are that
    /// cluster's proxies (tried in turn), plus its static tables.
    pub async fn start_tla(topology: &Topology, name: &str, listen: Listen) -> Result<TierProcess> {
        let entry = topology
            .tlas
            .get(name)
            .ok_or_else(|| unknown("tla", name, topology.tlas.keys().collect()))?;
        let mut groups = Vec::new();
        let mut clients = Vec::new();
        for (cluster, machines) in topology.cluster_sizes() {
            if entry
                .clusters
                .as_ref()
                .is_some_and(|c| !c.contains(&cluster))
            {
                continue;
            }
            let proxies = topology.proxies_of(&cluster);
            if proxies.is_empty() {
                return Err(TiersError::Config {
                    path: "topology".into(),
                    reason: format!(
                        "cluster `{cluster}` has no proxy for TLA `{name}`; add a [proxies.NAME] with cluster = \"{cluster}\""
                    ),
                });
            }
            let mut members: Vec<Arc<dyn Child>> = Vec::new();
            for (proxy_name, proxy) in proxies {
                let child = flight_child(topology, proxy_name, proxy.flight, "proxy")?;
                clients.push((proxy_name.clone(), child.stats()));
                members.push(Arc::new(child));
            }
            groups.push(ChildGroup {
                name: cluster.clone(),
                members,
                expected: Some((cluster, machines)),
            });
        }
        if let Some(index) = &entry.static_tables {
            let tables = StaticTables::open(index)?;
            groups.push(ChildGroup::single(Arc::new(tables)));
        }
        let mut config = AggregatorConfig::new(name, topology.tick);
        if let Some(timeout) = topology.fetch_timeout {
            config.fetch_timeout = timeout;
        }
        config.role = "tla".to_string();
        config.offset = offset(topology.tick, 2);
        config.stale_after = topology.stale_after();
        config.prewarm = entry.prewarm.clone();
        let listen = Listen {
            flight: listen.flight.or(entry.flight),
            http: listen.http.or(entry.http),
            ..listen
        };
        Self::serve(
            "tla",
            name,
            config,
            groups,
            clients,
            listen,
            server_config(topology),
        )
        .await
    }

    async fn serve(
        role: &'static str,
        name: &str,
        config: AggregatorConfig,
        groups: Vec<ChildGroup>,
        clients: Vec<(String, Arc<TransferStats>)>,
        listen: Listen,
        server: FlightServerConfig,
    ) -> Result<TierProcess> {
        let http_addr = listen.http;
        let flight_addr = listen.flight.ok_or_else(|| TiersError::MissingAddress {
            role,
            name: name.to_string(),
            field: "flight",
        })?;
        let aggregator = Arc::new(Aggregator::start(config, groups));
        let flight = FlightServer::start_with(aggregator.as_child(), flight_addr, server)?;
        let observed = Arc::new(Observed {
            role,
            name: name.to_string(),
            generation: aggregator.subscribe(),
            aggregator: Some(aggregator.clone()),
            sqlnode: None,
            server: Some(flight.stats()),
            clients,
            started: Instant::now(),
        });
        let admin =
            HttpServer::start(admin::router(observed), http_addr.unwrap_or(loopback(0))).await?;
        Ok(TierProcess {
            role,
            name: name.to_string(),
            aggregator,
            flight,
            admin,
        })
    }

    pub fn aggregator(&self) -> &Aggregator {
        &self.aggregator
    }

    pub fn flight_addr(&self) -> SocketAddr {
        self.flight.local_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    pub fn ready_line(&self) -> String {
        format!(
            "fleetsql {} ready: name={} flight={} http={}",
            self.role,
            self.name,
            self.flight_addr(),
            self.http_addr()
        )
    }

    pub async fn shutdown(self) {
        self.admin.shutdown().await;
        self.flight.shutdown().await;
        // The admin router held the other handle; dropping ours stops the loop.
        drop(self.aggregator);
    }
}

/// A SQL node reading from its TLAs over Flight, answering over the
/// Postgres wire and HTTP, with its apps (persistent queries, alerts,
/// reports, the console, integrations) on the same HTTP address.
#[derive(Debug)]
pub struct SqlProcess {
    name: String,
    node: Arc<SqlNode>,
    apps: SqlNodeApps,
    pg: PgServer,
    http: HttpServer,
}

impl SqlProcess {
    /// Starts the node and the apps its topology entry configures.
    pub async fn start(topology: &Topology, name: &str, listen: Listen) -> Result<SqlProcess> {
        let entry = topology.sqlnode(name)?;
        Self::start_with_apps(topology, name, listen, entry.apps(name)).await
    }

    /// [`SqlProcess::start`] with `apps` instead of the entry's own (the
    /// entry's, with command-line flags over them).
    pub async fn start_with_apps(
        topology: &Topology,
        name: &str,
        listen: Listen,
        apps: AppsConfig,
    ) -> Result<SqlProcess> {
        let entry = topology.sqlnode(name)?;
        let mut sources: Vec<Arc<dyn Child>> = Vec::new();
        let mut clients = Vec::new();
        for tla_name in entry.tlas.keys() {
            let child = flight_child(topology, tla_name, topology.tlas[tla_name].flight, "tla")?;
            clients.push((tla_name.clone(), child.stats()));
            sources.push(Arc::new(child));
        }
        let mut config = SqlNodeConfig::new(name, topology.tick);
        config.locality_bonus = entry.tlas.clone();
        config.prewarm = entry.prewarm.clone();
        config.request_idle_expiry = topology.table_expiry;
        if let Some(timeout) = entry.query_timeout {
            config.query_timeout = timeout;
        }
        let node = Arc::new(SqlNode::start(config, sources)?);
        let observed = Arc::new(Observed {
            role: "sqlnode",
            name: name.to_string(),
            generation: node.subscribe(),
            aggregator: None,
            sqlnode: Some(node.clone()),
            server: None,
            clients,
            started: Instant::now(),
        });
        let apps = SqlNodeApps::start(node.clone(), apps).map_err(|source| TiersError::Apps {
            name: name.to_string(),
            source: Box::new(source),
        })?;
        let pg = PgServer::start(
            node.clone(),
            listen.pg.or(entry.pg).unwrap_or(loopback(5433)),
        )
        .await?;
        let app = fleetsql_http::router(node.clone())
            .merge(admin::metrics_router(observed))
            .merge(apps.router());
        let http =
            HttpServer::start(app, listen.http.or(entry.http).unwrap_or(loopback(8080))).await?;
        Ok(SqlProcess {
            name: name.to_string(),
            node,
            apps,
            pg,
            http,
        })
    }

    /// The running apps (e.g. to see which are on).
    pub fn apps(&self) -> &SqlNodeApps {
        &self.apps
    }

    pub fn node(&self) -> &Arc<SqlNode> {
        &self.node
    }

    pub fn pg_addr(&self) -> SocketAddr {
        self.pg.local_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    pub fn ready_line(&self) -> String {
        format!(
            "fleetsql sqlnode ready: name={} pg={} http={}",
            self.name,
            self.pg_addr(),
            self.http_addr()
        )
    }

    /// Stops accepting (HTTP, then Postgres), stops the apps (alerts write
    /// their checkpoint and hand the lease on), then the node.
    pub async fn shutdown(self) {
        self.http.shutdown().await;
        self.pg.shutdown().await;
        self.apps.shutdown().await;
        if let Ok(node) = Arc::try_unwrap(self.node) {
            node.shutdown().await;
        }
    }
}
