//! One struct per role: start it from the topology and the node's name,
//! read its addresses, shut it down.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetsql_agent::{Agent, AgentConfig};
use fleetsql_aggregator::Aggregator;
use fleetsql_apps::{AppsConfig, LocalTables, SqlNodeApps};
use fleetsql_flight::{FlightServer, FlightServerConfig, TlsContext, TlsWatch};
use fleetsql_flightsql::FlightSqlServer;
use fleetsql_http::HttpServer;
use fleetsql_pgwire::PgServer;
use fleetsql_sqlnode::SqlNode;

use crate::admin::{self, Observed};
use crate::membership::{
    Announcement, Announcer, JoinError, Membership, MembershipRules, Registry,
};
use crate::plan::{self, Linked, Links, Role, SqlPlan, TierPlan};
use crate::reload::TopologyWatch;
use crate::security::ClientSecurity;
use crate::topology::{AgentEntry, TlsNodeFiles, TlsSettings, Topology};
use crate::{Result, TiersError};

/// Addresses given on the command line; they win over the topology file
/// (port 0 picks a free port).
#[derive(Debug, Clone, Copy, Default)]
pub struct Listen {
    pub flight: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub publish: Option<SocketAddr>,
    pub pg: Option<SocketAddr>,
    /// A SQL node's Flight SQL address.
    pub flightsql: Option<SocketAddr>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// How every Flight server of the tree sends: the topology's compression,
/// over mutual TLS when the topology has `[tls]`.
fn server_config(topology: &Topology, tls: Option<&NodeTls>) -> FlightServerConfig {
    FlightServerConfig {
        compression: topology.compression,
        // The link to the parent gets its own thread, so collecting from
        // many children cannot starve it (see `own_threads`).
        own_threads: Some(1),
        tls: tls.map(|t| t.context.clone()),
        ..FlightServerConfig::default()
    }
}

/// A node's mTLS identity (`[tls]`), its files polled for a change while
/// this lives.
#[derive(Debug)]
struct NodeTls {
    context: Arc<TlsContext>,
    _watch: TlsWatch,
}

/// The identity of node `name` when the topology has `[tls]`, serving the
/// parents the topology gives it.
fn node_tls(topology: &Topology, role: &'static str, name: &str) -> Result<Option<NodeTls>> {
    let Some(settings) = &topology.tls else {
        return Ok(None);
    };
    let files = settings.files(name).ok_or_else(|| TiersError::Config {
        path: "topology".into(),
        reason: format!(
            "[tls] gives node `{name}` no certificate; set `certs_dir` or add [tls.nodes.{name}] with `cert` and `key`"
        ),
    })?;
    let context = TlsContext::load(role, name, files)?;
    let parents = topology.parents_of(name);
    tracing::info!(node = %name, parents = ?parents, cert = %context.files().cert.display(), "Flight links over mutual TLS");
    context.set_parents(parents);
    let watch = context.watch(settings.poll());
    Ok(Some(NodeTls {
        context,
        _watch: watch,
    }))
}

fn context_of(tls: &Option<NodeTls>) -> Option<Arc<TlsContext>> {
    tls.as_ref().map(|t| t.context.clone())
}

/// An agent: this machine's tables, served to its proxies over Flight.
#[derive(Debug)]
pub struct AgentProcess {
    name: String,
    agent: Arc<Agent>,
    flight: FlightServer,
    tls: Option<NodeTls>,
    admin: HttpServer,
    cli: Listen,
    started_with: Topology,
    watch: Option<TopologyWatch>,
    announcer: Option<Announcer>,
}

/// An agent that joins its cluster by itself: no topology file lists it.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// Its name in the cluster (default: the host name).
    pub name: String,
    /// Its cluster and settings, as a topology entry would give them
    /// (`flight`: where it listens).
    pub entry: AgentEntry,
    /// Its cluster's proxies (HTTP address, and the name on each one's
    /// certificate where pinned).
    pub proxies: Vec<crate::membership::ProxyAddress>,
    /// The Flight address proxies reach it at (default: where it listens).
    pub advertise: Option<SocketAddr>,
    /// Its tick; the proxies' should be the same (their answer says).
    pub tick: Duration,
    /// Its fleet CA, certificate and key: its Flight server then speaks
    /// mutual TLS and serves only the proxies that answered its
    /// announcements (by the names they gave). `None`: plaintext.
    pub tls: Option<fleetsql_flight::TlsFiles>,
}

impl AgentProcess {
    /// An agent known only by its cluster and its proxies' addresses: it
    /// starts as a listed agent would and announces itself to each proxy,
    /// again as often as the proxy asks (`membership.rs`).
    pub async fn start_joining(join: &JoinConfig, listen: Listen) -> Result<AgentProcess> {
        if join.proxies.is_empty() {
            return Err(JoinError::NoProxy.into());
        }
        // A topology of this agent alone: it has no parent until a proxy
        // answers, so its Flight server under TLS admits no one before.
        let topology = Topology {
            tick: join.tick,
            agents: [(join.name.clone(), join.entry.clone())].into(),
            tls: join.tls.as_ref().map(|files| TlsSettings {
                ca: files.ca.clone(),
                certs_dir: None,
                nodes: [(
                    join.name.clone(),
                    TlsNodeFiles {
                        cert: files.cert.clone(),
                        key: files.key.clone(),
                    },
                )]
                .into(),
                poll: None,
            }),
            ..Topology::default()
        };
        let mut process = AgentProcess::start(&topology, &join.name, listen).await?;
        let bound = process.flight_addr();
        let advertise = join.advertise.unwrap_or(bound);
        if advertise.ip().is_unspecified() {
            let name = join.name.clone();
            process.shutdown().await;
            return Err(JoinError::Unreachable { name, bound }.into());
        }
        let announcement = Announcement {
            format: crate::membership::ANNOUNCE_FORMAT,
            name: join.name.clone(),
            cluster: join.entry.cluster.clone(),
            flight: advertise.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        match Announcer::start(announcement, &join.proxies, context_of(&process.tls)) {
            Ok(announcer) => process.announcer = Some(announcer),
            Err(e) => {
                process.shutdown().await;
                return Err(e.into());
            }
        }
        Ok(process)
    }

    pub async fn start(topology: &Topology, name: &str, listen: Listen) -> Result<AgentProcess> {
        let entry = topology
            .agents
            .get(name)
            .ok_or_else(|| plan::unknown("agent", name, topology.agents.keys().collect()))?;
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
        let tls = node_tls(topology, "agent", name)?;
        let flight = FlightServer::start_with(
            agent.as_child(),
            flight_addr,
            server_config(topology, tls.as_ref()),
        )?;
        let observed = Arc::new(Observed {
            role: "agent",
            tls: context_of(&tls),
            members: None,
            name: name.to_string(),
            generation: agent.subscribe(),
            aggregator: None,
            sqlnode: None,
            server: Some(flight.stats()),
            clients: std::sync::Mutex::new(Vec::new()),
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
            tls,
            admin,
            cli: listen,
            started_with: topology.clone(),
            watch: None,
            announcer: None,
        })
    }

    /// Re-reads `path` whenever it changes: a new prewarm list is applied;
    /// what only a restart applies (addresses from the file, cluster,
    /// origin, roles, drop directory, collectors, tick) is logged and shown
    /// in `fleet_nodes.pending_restart`.
    pub fn watch_topology(&mut self, path: PathBuf, every: Duration) {
        let agent = self.agent.clone();
        let name = self.name.clone();
        let cli = self.cli;
        let bound = Listen {
            flight: Some(self.flight_addr()),
            http: Some(self.http_addr()),
            publish: Some(self.agent.publish_addr()),
            pg: None,
            flightsql: None,
        };
        let started_with = self.started_with.clone();
        let tls = context_of(&self.tls);
        self.watch = Some(TopologyWatch::start(path, every, move |topology| {
            let entry = topology
                .agents
                .get(&name)
                .ok_or_else(|| plan::unknown("agent", &name, topology.agents.keys().collect()))?;
            let mut pending = moved_addresses(
                cli,
                bound,
                Listen {
                    flight: entry.flight,
                    http: entry.http,
                    publish: entry.publish,
                    pg: None,
                    flightsql: None,
                },
            );
            if let Some(was) = started_with.agents.get(&name) {
                let unchanged = AgentEntry {
                    flight: entry.flight,
                    http: entry.http,
                    publish: entry.publish,
                    prewarm: entry.prewarm.clone(),
                    ..was.clone()
                };
                if &unchanged != entry {
                    pending.push("cluster, host, ip, roles, drop_dir or host_collectors".into());
                }
            }
            if topology.tick != started_with.tick {
                pending.push(format!(
                    "tick {:?} (running with {:?})",
                    topology.tick, started_with.tick
                ));
            }
            if topology.tls != started_with.tls {
                pending.push("[tls] settings".into());
            }
            if let Some(tls) = &tls {
                tls.set_parents(topology.parents_of(&name));
            }
            agent.set_prewarm(entry.prewarm.clone());
            agent.set_pending_restart(restart_note(&name, pending));
            Ok(())
        }));
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
        drop(self.announcer);
        if let Some(watch) = self.watch {
            watch.shutdown().await;
        }
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
    tls: Option<NodeTls>,
    admin: HttpServer,
    live: Arc<LiveTier>,
    watch: Option<TopologyWatch>,
    /// A proxy's: expires members and re-plans when they change.
    members_task: Option<tokio::task::JoinHandle<()>>,
    /// A TLA's Query History writer, when its entry keeps history.
    history: Option<crate::history::TlaHistory>,
}

impl TierProcess {
    /// A cluster proxy: one child per agent of its cluster (listed in the
    /// topology or announced on its HTTP address), over Flight.
    pub async fn start_proxy(
        topology: &Topology,
        name: &str,
        listen: Listen,
    ) -> Result<TierProcess> {
        let rules = MembershipRules::of(topology, name)
            .ok_or_else(|| plan::unknown("proxy", name, topology.proxies.keys().collect()))?;
        let membership = match &topology.proxies[name].state_dir {
            Some(dir) => Membership::with_state_dir(rules, dir),
            None => {
                tracing::info!(proxy = %name, "no state_dir: agents that announced themselves are kept in memory only, so a restart forgets those that are down");
                Membership::new(rules)
            }
        };
        let tls = node_tls(topology, "proxy", name)?;
        let registry = Registry::new(membership).with_tls(context_of(&tls));
        registry.sweep();
        let announced = registry.membership.lock().announced();
        let links = Links::remote_with(context_of(&tls));
        let plan = plan::proxy_with(topology, name, &announced, &links)?;
        let mut process = Self::serve(
            Role::Proxy,
            name,
            plan,
            topology,
            listen,
            Some(registry.clone()),
            tls,
        )
        .await?;
        let live = process.live.clone();
        process.members_task = Some(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = registry.changed.notified() => {}
                    _ = every.tick() => {
                        if !registry.sweep() {
                            continue;
                        }
                    }
                }
                let topology = live.topology.lock().map(|t| t.clone());
                if let Ok(topology) = topology
                    && let Err(e) = live.replan(&topology, false)
                {
                    tracing::error!(node = %live.name, error = %e, "cluster members changed but the proxy could not re-plan its children");
                }
            }
        }));
        Ok(process)
    }

    /// A TLA: one child group per cluster it spans, whose members are that
    /// cluster's proxies (tried in turn), plus its static tables.
    pub async fn start_tla(topology: &Topology, name: &str, listen: Listen) -> Result<TierProcess> {
        let tls = node_tls(topology, "tla", name)?;
        let plan = plan::tla(topology, name, &Links::remote_with(context_of(&tls)))?;
        Self::serve(Role::Tla, name, plan, topology, listen, None, tls).await
    }

    /// `cli`: the addresses the command line gave, which win over the
    /// topology's (and are not reported when the file disagrees later).
    async fn serve(
        kind: Role,
        name: &str,
        plan: TierPlan,
        topology: &Topology,
        cli: Listen,
        registry: Option<Registry>,
        tls: Option<NodeTls>,
    ) -> Result<TierProcess> {
        let role = kind.as_str();
        let TierPlan {
            config,
            groups,
            children,
        } = plan;
        let (entry_flight, entry_http) = own_addresses(topology, kind, name);
        let flight_addr =
            cli.flight
                .or(entry_flight)
                .ok_or_else(|| TiersError::MissingAddress {
                    role,
                    name: name.to_string(),
                    field: "flight",
                })?;
        let history = match kind {
            Role::Tla => crate::history::open_for_tla(topology, name)?,
            _ => None,
        };
        let aggregator = Arc::new(Aggregator::start(config, groups));
        if let Some(registry) = &registry {
            aggregator.set_own_tables(Some(Arc::new(registry.clone())));
        }
        let mut flight_config = server_config(topology, tls.as_ref());
        flight_config.history = history.as_ref().map(|store| {
            Arc::new(crate::history::Served(store.clone()))
                as Arc<dyn fleetsql_flight::HistoryFiles>
        });
        let flight = FlightServer::start_with(aggregator.as_child(), flight_addr, flight_config)?;
        let history = history
            .map(|store| crate::history::TlaHistory::start(store, aggregator.subscribe(), name));
        let observed = Arc::new(Observed {
            role,
            tls: context_of(&tls),
            members: registry.clone(),
            name: name.to_string(),
            generation: aggregator.subscribe(),
            aggregator: Some(aggregator.clone()),
            sqlnode: None,
            server: Some(flight.stats()),
            clients: std::sync::Mutex::new(plan::clients(&children)),
            started: Instant::now(),
        });
        let mut routes = admin::router(observed.clone());
        if let Some(registry) = &registry {
            routes = routes.merge(registry.router());
        }
        let admin =
            HttpServer::start(routes, cli.http.or(entry_http).unwrap_or(loopback(0))).await?;
        let live = Arc::new(LiveTier {
            kind,
            name: name.to_string(),
            aggregator: aggregator.clone(),
            observed,
            children: std::sync::Mutex::new(children),
            cli,
            bound: Listen {
                flight: Some(flight.local_addr()),
                http: Some(admin.local_addr()),
                ..Listen::default()
            },
            started_with: topology.clone(),
            topology: std::sync::Mutex::new(topology.clone()),
            registry,
            tls: context_of(&tls),
            replanning: std::sync::Mutex::new(()),
        });
        Ok(TierProcess {
            role,
            name: name.to_string(),
            aggregator,
            flight,
            tls,
            admin,
            live,
            watch: None,
            members_task: None,
            history,
        })
    }

    /// Re-reads `path` whenever it changes (checked every `every`) and
    /// applies what can change live: children (agents joining or leaving a
    /// cluster, proxies of a cluster, a TLA's span) and prewarm lists.
    /// What needs a restart (its own listen addresses, tick, stale and
    /// fetch limits) is logged and shown in `fleet_nodes.pending_restart`.
    pub fn watch_topology(&mut self, path: PathBuf, every: Duration) {
        let live = self.live.clone();
        self.watch = Some(TopologyWatch::start(path, every, move |topology| {
            live.apply(topology)
        }));
    }

    /// A proxy's cluster members (listed, announced, expected), for tests.
    pub fn members(&self) -> Option<&Registry> {
        self.live.registry.as_ref()
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
        if let Some(task) = self.members_task {
            task.abort();
            let _ = task.await;
        }
        if let Some(registry) = &self.live.registry {
            registry.membership.lock().flush(fleetsql_model::now_ms());
        }
        if let Some(watch) = self.watch {
            watch.shutdown().await;
        }
        self.admin.shutdown().await;
        self.flight.shutdown().await;
        // The admin router held the other handle; dropping ours stops the loop.
        drop(self.live);
        drop(self.aggregator);
    }
}

/// What a re-read topology asked of `node` that only a restart applies,
/// as one note for `fleet_nodes.pending_restart` (logged), or `None` when
/// the file and the running node agree again.
fn restart_note(node: &str, pending: Vec<String>) -> Option<String> {
    if pending.is_empty() {
        return None;
    }
    let what = pending.join("; ");
    tracing::warn!(%node, needs_restart = %what, "topology changed what only a restart applies; the rest is applied");
    Some(what)
}

/// The addresses a re-read file gives a running node that differ from
/// where it listens: only a restart moves a listener. Addresses the command
/// line gave win over the file, so the file's are not compared then.
fn moved_addresses(cli: Listen, bound: Listen, file: Listen) -> Vec<String> {
    let mut moved = Vec::new();
    for (field, cli, file, bound) in [
        ("flight", cli.flight, file.flight, bound.flight),
        ("http", cli.http, file.http, bound.http),
        ("publish", cli.publish, file.publish, bound.publish),
        ("pg", cli.pg, file.pg, bound.pg),
        ("flightsql", cli.flightsql, file.flightsql, bound.flightsql),
    ] {
        if let (None, Some(file), Some(bound)) = (cli, file, bound)
            && file != bound
            && file.port() != 0
        {
            moved.push(format!("{field} address {file} (listening on {bound})"));
        }
    }
    moved
}

/// What a running SQL node needs to re-plan itself.
#[derive(Debug)]
struct LiveSql {
    name: String,
    node: Arc<SqlNode>,
    observed: Arc<Observed>,
    children: std::sync::Mutex<Vec<Linked>>,
    /// In-process links given at start (a combined node's own TLA), kept,
    /// and the mTLS identity remote TLAs are dialled with.
    links_at_start: Links,
    cli: Listen,
    bound: Listen,
    apps: RunningApps,
    /// The history settings it started with (a change needs a restart).
    history: Option<fleetsql_history::HistoryConfig>,
    /// The security files it started with (a change needs a restart),
    /// and those the command line gave, which a re-read file does not
    /// change.
    security: crate::SecurityFiles,
    security_flags: std::sync::Mutex<crate::SecurityFiles>,
    /// What `fleet_sets` shows, and the task probing the other nodes.
    sets: crate::sets::SetsState,
    _sets_prober: crate::sets::Prober,
}

/// The apps of a SQL node, restarted in place when a re-read topology
/// changes their directories or settings.
#[derive(Debug, Clone)]
struct RunningApps {
    apps: Arc<tokio::sync::Mutex<Option<SqlNodeApps>>>,
    /// Their routes, served behind the node's own: swapped with the apps.
    routes: Arc<std::sync::RwLock<axum::Router>>,
    config: Arc<std::sync::Mutex<AppsConfig>>,
    /// The apps came from the topology entry alone; when command-line
    /// flags set them, the file does not change them live.
    from_file: bool,
    tables: Option<LocalTables>,
}

impl RunningApps {
    /// Stops the running apps and starts them with `wanted`; when those do
    /// not start (a missing directory, a bad definition) the previous
    /// configuration is started again and the reason logged.
    fn restart(&self, node: Arc<SqlNode>, name: String, wanted: AppsConfig) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut slot = this.apps.lock().await;
            // No request reaches the old apps while they stop (a query
            // registered then would miss the new apps' state).
            if let Ok(mut routes) = this.routes.write() {
                *routes = axum::Router::new().fallback(|| async {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "the apps are restarting with a changed topology; try again in a moment",
                    )
                });
            }
            if let Some(old) = slot.take() {
                old.shutdown().await;
            }
            let previous = this.config.lock().map(|c| c.clone()).unwrap_or_default();
            let started = match SqlNodeApps::start_with_tables(
                node.clone(),
                wanted.clone(),
                this.tables.clone(),
            ) {
                Ok(apps) => {
                    tracing::info!(node = %name, "apps restarted with the topology's new settings");
                    if let Ok(mut config) = this.config.lock() {
                        *config = wanted;
                    }
                    Some(apps)
                }
                Err(e) => {
                    tracing::error!(node = %name, error = %e, "the topology's new app settings do not start; running the previous ones. Fix the file and save it again");
                    SqlNodeApps::start_with_tables(node, previous, this.tables.clone())
                        .map_err(|e| tracing::error!(node = %name, error = %e, "the previous app settings do not start either; the node answers queries without its apps"))
                        .ok()
                }
            };
            if let Ok(mut routes) = this.routes.write() {
                *routes = started
                    .as_ref()
                    .map_or_else(axum::Router::new, SqlNodeApps::router);
            }
            *slot = started;
        });
    }

    async fn shutdown(&self) {
        if let Some(apps) = self.apps.lock().await.take() {
            apps.shutdown().await;
        }
    }
}

impl LiveSql {
    fn apply(&self, topology: &Topology) -> Result<()> {
        let entry = topology.sqlnode(&self.name)?;
        let children = self.children.lock().map(|c| c.clone()).unwrap_or_default();
        let mut links = plan::links_reusing(
            &children,
            |t| topology.tlas.get(t).and_then(|e| e.flight),
            self.links_at_start.tls().cloned(),
        );
        links.keep_local_of(&self.links_at_start);
        let plan = plan::sqlnode(topology, &self.name, &links)?;
        let mut pending = moved_addresses(
            self.cli,
            self.bound,
            Listen {
                pg: entry.pg,
                http: entry.http,
                flightsql: entry.flightsql,
                ..Listen::default()
            },
        );
        let running = self.node.config();
        for (what, changed) in [
            ("tick", plan.config.tick != running.tick),
            (
                "table_expiry",
                plan.config.request_idle_expiry != running.request_idle_expiry,
            ),
            (
                "query_timeout",
                plan.config.query_timeout != running.query_timeout,
            ),
            ("table_wait", plan.config.table_wait != running.table_wait),
            ("history", entry.history != self.history),
            (
                "query_memory_mib",
                plan.config.memory_limit != running.memory_limit,
            ),
            (
                "max_requested_tables or max_new_tables_per_client_minute",
                plan.config.request_limits != running.request_limits,
            ),
            ("its set", plan.config.set != running.set),
            ("its set's domain", plan.config.domain != running.domain),
            (
                "max_concurrent_queries",
                plan.config.max_concurrent_queries != running.max_concurrent_queries,
            ),
            (
                "max_queued_queries",
                plan.config.max_queued_queries != running.max_queued_queries,
            ),
        ] {
            if changed {
                pending.push(what.to_string());
            }
        }
        let mut wanted_security = entry.clone();
        if let Ok(flags) = self.security_flags.lock() {
            flags.write_over(&mut wanted_security);
        }
        for file in crate::SecurityFiles::of(&wanted_security).differences(&self.security) {
            pending.push(file.to_string());
        }
        let wanted = entry.apps(&self.name);
        let running_apps = self
            .apps
            .config
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        if wanted != running_apps {
            if self.apps.from_file {
                self.apps
                    .restart(self.node.clone(), self.name.clone(), wanted);
            } else {
                pending.push("its apps' settings (set on the command line)".to_string());
            }
        }
        self.sets.set_topology(topology);
        self.node.set_partition(plan.config.partition.clone());
        self.node
            .set_sources(plan.sources, &plan.config.locality_bonus);
        self.node.set_prewarm(plan.config.prewarm.clone());
        if let Ok(mut clients) = self.observed.clients.lock() {
            *clients = plan::clients(&plan.children);
        }
        if let Ok(mut kept) = self.children.lock() {
            *kept = plan.children;
        }
        let pending = restart_note(&self.name, pending);
        tracing::info!(node = %self.name, tlas = plan.config.locality_bonus.len(), "topology re-read and applied");
        self.node.set_pending_restart(pending);
        Ok(())
    }
}

/// Serves a request the node's own routes do not know with the apps'
/// routes of the moment (the console, persistent queries, alerts,
/// reports), which a re-read topology may replace.
fn apps_fallback(
    routes: Arc<std::sync::RwLock<axum::Router>>,
) -> impl Fn(
    axum::extract::Request,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = axum::response::Response> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    move |request| {
        let router = routes
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|_| axum::Router::new());
        Box::pin(async move {
            use tower::ServiceExt;
            match router.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        })
    }
}

/// The topology's own addresses of proxy or TLA `name`.
fn own_addresses(
    topology: &Topology,
    kind: Role,
    name: &str,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    match kind {
        Role::Proxy => topology
            .proxies
            .get(name)
            .map_or((None, None), |e| (e.flight, e.http)),
        Role::Tla => topology
            .tlas
            .get(name)
            .map_or((None, None), |e| (e.flight, e.http)),
        Role::Agent => topology
            .agents
            .get(name)
            .map_or((None, None), |e| (e.flight, e.http)),
    }
}

/// What a running proxy or TLA needs to re-plan itself.
#[derive(Debug)]
struct LiveTier {
    kind: Role,
    name: String,
    aggregator: Arc<Aggregator>,
    observed: Arc<Observed>,
    children: std::sync::Mutex<Vec<Linked>>,
    cli: Listen,
    bound: Listen,
    started_with: Topology,
    /// The topology applied last (a proxy re-plans from it when its
    /// cluster's members change).
    topology: std::sync::Mutex<Topology>,
    /// A proxy's cluster members.
    registry: Option<Registry>,
    /// Its mTLS identity: dials children with it, serves the parents the
    /// topology gives.
    tls: Option<Arc<TlsContext>>,
    /// One re-plan at a time (a re-read file and a member joining).
    replanning: std::sync::Mutex<()>,
}

impl LiveTier {
    /// A re-read topology file.
    fn apply(&self, topology: &Topology) -> Result<()> {
        if let Some(registry) = &self.registry {
            let rules = MembershipRules::of(topology, &self.name).ok_or_else(|| {
                plan::unknown("proxy", &self.name, topology.proxies.keys().collect())
            })?;
            registry.membership.lock().set_rules(rules);
        }
        self.replan(topology, true)?;
        if let Ok(mut applied) = self.topology.lock() {
            *applied = topology.clone();
        }
        Ok(())
    }

    /// Plans the children again from `topology` and the cluster's members
    /// now; `reread`: the file changed (logged as such).
    fn replan(&self, topology: &Topology, reread: bool) -> Result<()> {
        let _one_at_a_time = self.replanning.lock();
        let announced = self
            .registry
            .as_ref()
            .map(|r| r.membership.lock().announced())
            .unwrap_or_default();
        let children = self.children.lock().map(|c| c.clone()).unwrap_or_default();
        let address_now = |child: &str| match self.kind {
            Role::Proxy => topology
                .agents
                .get(child)
                .and_then(|a| a.flight)
                .or_else(|| announced.get(child).copied()),
            _ => topology.proxies.get(child).and_then(|p| p.flight),
        };
        let links = plan::links_reusing(&children, address_now, self.tls.clone());
        let plan = match self.kind {
            Role::Proxy => plan::proxy_with(topology, &self.name, &announced, &links)?,
            _ => plan::tla(topology, &self.name, &links)?,
        };
        let (flight, http) = own_addresses(topology, self.kind, &self.name);
        let mut pending = moved_addresses(
            self.cli,
            self.bound,
            Listen {
                flight,
                http,
                ..Listen::default()
            },
        );
        let before = self.aggregator.config();
        let now = &plan.config;
        for (what, was, is) in [
            ("tick", before.tick, now.tick),
            ("stale_after", before.stale_after, now.stale_after),
            ("fetch_timeout", before.fetch_timeout, now.fetch_timeout),
        ] {
            if was != is {
                pending.push(format!("{what} {is:?} (running with {was:?})"));
            }
        }
        if before.span != now.span {
            pending.push(format!(
                "its set {:?} (running as {:?})",
                now.span, before.span
            ));
        }
        if let Some(tls) = &self.tls {
            tls.set_parents(topology.parents_of(&self.name));
        }
        if topology.tls != self.started_with.tls {
            pending.push("[tls] settings".to_string());
        }
        if topology.compression != self.started_with.compression {
            pending.push(format!(
                "compression {:?} (running with {:?})",
                topology.compression, self.started_with.compression
            ));
        }
        // The history store and its writer are opened once, at start.
        let history_of = |t: &Topology| t.tlas.get(&self.name).and_then(|e| e.history.clone());
        if self.kind == Role::Tla && history_of(topology) != history_of(&self.started_with) {
            pending.push("history".to_string());
        }
        let groups = plan.groups.len();
        self.aggregator
            .reconfigure(plan.groups, plan.config.prewarm);
        if let Ok(mut clients) = self.observed.clients.lock() {
            *clients = plan::clients(&plan.children);
        }
        if let Ok(mut kept) = self.children.lock() {
            *kept = plan.children;
        }
        if reread {
            let pending = restart_note(&self.name, pending);
            tracing::info!(node = %self.name, groups, "topology re-read and applied");
            self.aggregator.set_pending_restart(pending);
        } else {
            tracing::info!(node = %self.name, groups, "cluster members changed; children re-planned");
        }
        Ok(())
    }
}

/// A SQL node reading from its TLAs over Flight, answering over the
/// Postgres wire and HTTP, with its apps (persistent queries, alerts,
/// reports, the console, integrations) on the same HTTP address.
#[derive(Debug)]
pub struct SqlProcess {
    name: String,
    node: Arc<SqlNode>,
    pg: PgServer,
    http: HttpServer,
    /// Only when the entry or the command line gives an address.
    flightsql: Option<FlightSqlServer>,
    live: Arc<LiveSql>,
    watch: Option<TopologyWatch>,
    /// Its own mTLS identity (a combined node's is its TLA's).
    tls: Option<NodeTls>,
    /// Users, tokens and client-facing TLS, their files polled while it
    /// lives.
    security: ClientSecurity,
    /// Its Query History writer, when the entry keeps one (kept for its
    /// lifetime: dropping it stops the writer).
    _history: Option<fleetsql_history::History>,
    /// Fetches from its TLAs the history it lacks.
    _history_sync: Option<crate::history::TlaSync>,
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
        let tls = node_tls(topology, "sqlnode", name)?;
        let links = Links::remote_with(context_of(&tls));
        let mut process = Self::start_with(topology, name, listen, apps, &links, None).await?;
        process.tls = tls;
        Ok(process)
    }

    /// The general start: TLAs reached through `links` (in this process
    /// for the demo and a combined TLA/SQL node), and `tables`, when this
    /// process also runs an agent, for integrations that publish tables.
    pub async fn start_with(
        topology: &Topology,
        name: &str,
        listen: Listen,
        apps: AppsConfig,
        links: &Links,
        tables: Option<LocalTables>,
    ) -> Result<SqlProcess> {
        let entry = topology.sqlnode(name)?;
        let SqlPlan {
            config,
            sources,
            children,
        } = plan::sqlnode(topology, name, links)?;
        let clients = plan::clients(&children);
        let node = Arc::new(SqlNode::start(config, sources)?);
        let history = crate::history::attach(
            &node,
            name,
            entry.history.as_ref(),
            apps.state_dir.as_deref(),
        )?;
        let history_sync = history.as_ref().and_then(|h| {
            crate::history::TlaSync::start(
                h.store().clone(),
                name,
                &children,
                links.history(),
                links.tls(),
                crate::history::sync_interval(topology.tick),
            )
        });
        let observed = Arc::new(Observed {
            role: "sqlnode",
            tls: links.tls().cloned(),
            members: None,
            name: name.to_string(),
            generation: node.subscribe(),
            aggregator: None,
            sqlnode: Some(node.clone()),
            server: None,
            clients: std::sync::Mutex::new(clients),
            started: Instant::now(),
        });
        let from_file = apps == entry.apps(name);
        let running = SqlNodeApps::start_with_tables(node.clone(), apps.clone(), tables.clone())
            .map_err(|source| TiersError::Apps {
                name: name.to_string(),
                source: Box::new(source),
            })?;
        let apps = RunningApps {
            routes: Arc::new(std::sync::RwLock::new(running.router())),
            apps: Arc::new(tokio::sync::Mutex::new(Some(running))),
            config: Arc::new(std::sync::Mutex::new(apps)),
            from_file,
            tables,
        };
        let security = ClientSecurity::load(name, entry)?;
        let pg = PgServer::start_secure(
            node.clone(),
            listen.pg.or(entry.pg).unwrap_or(loopback(5433)),
            security.pg(),
        )
        .await?;
        let app = fleetsql_http::router(node.clone())
            .merge(admin::metrics_router(observed.clone()))
            .fallback(apps_fallback(apps.routes.clone()));
        let access = fleetsql_http::HttpAccess {
            hosts: entry.http_hosts.clone(),
            origins: entry.http_origins.clone(),
        };
        let http = HttpServer::start_secure(
            app,
            listen.http.or(entry.http).unwrap_or(loopback(8080)),
            &access,
            security.http(node.audit().clone()),
        )
        .await?;
        let flightsql = listen
            .flightsql
            .or(entry.flightsql)
            .map(|addr| {
                FlightSqlServer::start_secure(
                    node.clone(),
                    addr,
                    security.flightsql(node.audit().clone()),
                )
            })
            .transpose()?;
        let sets = crate::sets::SetsState::new(name, topology);
        node.register_node_table(crate::sets::SETS_TABLE, sets.clone());
        let sets_prober = sets.spawn_prober(topology.tick.clamp(
            std::time::Duration::from_millis(500),
            std::time::Duration::from_secs(5),
        ));
        let live = Arc::new(LiveSql {
            sets,
            _sets_prober: sets_prober,
            name: name.to_string(),
            node: node.clone(),
            observed,
            children: std::sync::Mutex::new(children),
            links_at_start: links.clone(),
            cli: listen,
            bound: Listen {
                pg: Some(pg.local_addr()),
                http: Some(http.local_addr()),
                flightsql: flightsql.as_ref().map(FlightSqlServer::local_addr),
                ..Listen::default()
            },
            apps,
            history: entry.history.clone(),
            security: crate::SecurityFiles::of(entry),
            security_flags: std::sync::Mutex::default(),
        });
        Ok(SqlProcess {
            _history: history,
            _history_sync: history_sync,
            name: name.to_string(),
            node,
            pg,
            http,
            flightsql,
            live,
            watch: None,
            tls: None,
            security,
        })
    }

    /// Re-reads `path` whenever it changes and applies what can change
    /// live: the TLAs the node reads from, their locality bonus, its
    /// prewarm list, its apps' directories and settings (the apps restart
    /// in place). What needs a restart (its listen addresses from the file,
    /// query limits, tick, apps set on the command line, which users,
    /// tokens, certificate or client CA files it reads) is logged and
    /// shown in `fleet_nodes.pending_restart`. Alert and report definitions
    /// are watched by the apps themselves.
    pub fn watch_topology(&mut self, path: PathBuf, every: Duration) {
        let live = self.live.clone();
        self.watch = Some(TopologyWatch::start(path, every, move |topology| {
            live.apply(topology)
        }));
    }

    /// The security files the command line gave over the entry's: a
    /// re-read topology naming others for them is not a change.
    pub fn keep_security_flags(&self, flags: crate::SecurityFiles) {
        if let Ok(mut kept) = self.live.security_flags.lock() {
            *kept = flags;
        }
    }

    pub fn node(&self) -> &Arc<SqlNode> {
        &self.node
    }

    /// The users, tokens and certificate its front ends authenticate with.
    pub fn security(&self) -> &ClientSecurity {
        &self.security
    }

    pub fn pg_addr(&self) -> SocketAddr {
        self.pg.local_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Where Flight SQL is served, when it is.
    pub fn flightsql_addr(&self) -> Option<SocketAddr> {
        self.flightsql.as_ref().map(FlightSqlServer::local_addr)
    }

    pub fn ready_line(&self) -> String {
        format!(
            "fleetsql sqlnode ready: name={} pg={} http={}{}",
            self.name,
            self.pg_addr(),
            self.http_addr(),
            self.flightsql_field()
        )
    }

    /// ` flightsql=ADDR` for a ready line, or nothing when it is off.
    fn flightsql_field(&self) -> String {
        self.flightsql_addr()
            .map(|addr| format!(" flightsql={addr}"))
            .unwrap_or_default()
    }

    /// Stops watching the topology, stops accepting (HTTP, then Postgres),
    /// stops the apps (alerts write their checkpoint and hand the lease
    /// on), then the node.
    pub async fn shutdown(self) {
        if let Some(watch) = self.watch {
            watch.shutdown().await;
        }
        self.http.shutdown().await;
        self.pg.shutdown().await;
        if let Some(flightsql) = self.flightsql {
            flightsql.shutdown().await;
        }
        // Waits for an apps restart under way, then stops what it started.
        self.live.apps.shutdown().await;
        drop(self.live);
        if let Ok(node) = Arc::try_unwrap(self.node) {
            node.shutdown().await;
        }
    }
}

/// A TLA and a SQL node in one process (seed 3.6): the `[tlas.NAME]` and
/// `[sqlnodes.NAME]` entries of one name. The SQL node reads this TLA
/// without a Flight hop (the other TLAs its entry names, over Flight);
/// parents and other SQL nodes still reach the TLA at its Flight address.
#[derive(Debug)]
pub struct TlaSqlProcess {
    tla: TierProcess,
    sql: SqlProcess,
}

impl TlaSqlProcess {
    /// `listen.flight` is the TLA's; `listen.http` and `listen.pg` the SQL
    /// node's (the TLA's own `/health` and `/metrics` stay on its entry's
    /// `http`, or a free port).
    pub async fn start(
        topology: &Topology,
        name: &str,
        listen: Listen,
        apps: AppsConfig,
    ) -> Result<TlaSqlProcess> {
        if !topology.tlas.contains_key(name) || !topology.sqlnodes.contains_key(name) {
            return Err(TiersError::Config {
                path: "topology".into(),
                reason: format!(
                    "`fleetsql tla-sql --name {name}` needs both a [tlas.{name}] and a [sqlnodes.{name}] entry"
                ),
            });
        }
        let tla = TierProcess::start_tla(
            topology,
            name,
            Listen {
                flight: listen.flight,
                ..Listen::default()
            },
        )
        .await?;
        let mut links =
            Links::remote_with(context_of(&tla.tls)).with(name, tla.aggregator().as_child());
        if let Some(history) = &tla.history {
            links = links.with_history(name, history.store().clone());
        }
        let sql = SqlProcess::start_with(
            topology,
            name,
            Listen {
                flight: None,
                ..listen
            },
            apps,
            &links,
            None,
        )
        .await;
        let sql = match sql {
            Ok(sql) => sql,
            Err(e) => {
                tla.shutdown().await;
                return Err(e);
            }
        };
        Ok(TlaSqlProcess { tla, sql })
    }

    pub fn tla(&self) -> &TierProcess {
        &self.tla
    }

    /// Both halves re-read the topology ([`TierProcess::watch_topology`],
    /// [`SqlProcess::watch_topology`]).
    pub fn watch_topology(&mut self, path: PathBuf, every: Duration) {
        self.tla.watch_topology(path.clone(), every);
        self.sql.watch_topology(path, every);
    }

    /// [`SqlProcess::keep_security_flags`].
    pub fn keep_security_flags(&self, flags: crate::SecurityFiles) {
        self.sql.keep_security_flags(flags);
    }

    pub fn sql(&self) -> &SqlProcess {
        &self.sql
    }

    pub fn ready_line(&self) -> String {
        format!(
            "fleetsql tla-sql ready: name={} flight={} pg={} http={} tla_http={}{}",
            self.sql.name,
            self.tla.flight_addr(),
            self.sql.pg_addr(),
            self.sql.http_addr(),
            self.tla.http_addr(),
            self.sql.flightsql_field()
        )
    }

    /// The SQL node first (it stops accepting and drains), then the TLA.
    pub async fn shutdown(self) {
        self.sql.shutdown().await;
        self.tla.shutdown().await;
    }
}
