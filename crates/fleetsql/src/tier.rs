//! `fleetsql agent|proxy|tla|sqlnode|tla-sql`: one tier of a distributed fleet per
//! process, described by a topology file (see `fleetsql_tiers::Topology`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use fleetsql_flight::TlsFiles;
use fleetsql_tiers::{
    AgentEntry, AgentProcess, JoinConfig, Listen, SqlProcess, TierProcess, TlaSqlProcess, Topology,
};

#[derive(Debug, Args)]
pub(crate) struct TierArgs {
    /// The topology file shared by every node of the fleet (an agent that
    /// joins by itself, with --cluster and --proxy, needs none).
    #[arg(long, env = "FLEETSQL_TOPOLOGY", required_unless_present = "cluster")]
    config: Option<PathBuf>,
    /// This node's name in the topology (an agent joining by itself:
    /// its name in its cluster, by default the host name).
    #[arg(long)]
    name: Option<String>,
    /// Agent only: join this cluster by announcing itself to its proxies
    /// (--proxy), instead of being listed in a topology file.
    #[arg(long, conflicts_with = "config")]
    cluster: Option<String>,
    /// Agent only, with --cluster: the HTTP address (`ip:port`) of one of
    /// the cluster's proxies; repeat for each. With mutual TLS, give it as
    /// `NAME@ip:port` to pin the name on the proxy's certificate: only
    /// that name is then served (otherwise it is learned from the proxy's
    /// plain-HTTP answer).
    #[arg(long = "proxy", requires = "cluster")]
    proxies: Vec<fleetsql_tiers::membership::ProxyAddress>,
    /// Agent only, with --cluster: the Flight address proxies reach this
    /// agent at (default: the --flight address; needed when it is 0.0.0.0).
    #[arg(long, requires = "cluster")]
    advertise: Option<SocketAddr>,
    /// Agent only, with --cluster: time between generations; the proxies'
    /// tick (the topology's `tick`) should be the same.
    #[arg(long, requires = "cluster", default_value = "5s", value_parser = crate::demo::parse_duration)]
    tick: std::time::Duration,
    /// Agent only, with --cluster: the fleet CA (PEM) of mutual TLS between
    /// tiers, given with --tls-cert and --tls-key (a certificate for this
    /// agent's --name: `fleetsql certs issue NAME`). Its Flight port then
    /// speaks mutual TLS and serves only the proxies that answered its
    /// announcements, by the names they gave; a proxy whose topology has
    /// `[tls]` takes it only so. All three or none.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Flight address to listen on (overrides the topology; port 0 picks one).
    #[arg(long)]
    flight: Option<SocketAddr>,
    /// Address of `/health` and `/metrics` (SQL node: also `/v1/query`).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Agent only: the loopback publish API.
    #[arg(long)]
    publish: Option<SocketAddr>,
    /// SQL node only: the Postgres wire address.
    #[arg(long)]
    pg: Option<SocketAddr>,
    /// SQL node only: serve Flight SQL (ADBC, JDBC Flight SQL) here (over
    /// the entry's `flightsql`; neither: not served).
    #[arg(long)]
    flightsql: Option<SocketAddr>,
    /// Agent and SQL node: a TOML file of integrations, as for `fleetsql
    /// demo`. An agent runs the table publishers (Prometheus, SNMP) and
    /// publishes `fleet_sources`; a SQL node runs the persistent-query
    /// sinks and event sources (MQTT, XMPP, esmond), over its entry's
    /// `integrations`. Each refuses the other's kinds.
    #[arg(long)]
    integrations: Option<PathBuf>,
    /// How often the topology file is checked for changes, which every
    /// node applies without a restart where it can (children, spans, a SQL
    /// node's TLAs, prewarm lists).
    #[arg(long, default_value = "1s", value_parser = crate::demo::parse_duration)]
    topology_poll: std::time::Duration,
    /// SQL node only: its apps' paths and settings, over its topology entry.
    #[command(flatten)]
    apps: crate::apps_args::AppArgs,
    /// SQL node: users, tokens and TLS over its topology entry; an agent
    /// joining by itself: its certificate (--tls-cert, --tls-key).
    #[command(flatten)]
    security: crate::security_args::SecurityArgs,
    /// Agent only: the watchdog's limits.
    #[command(flatten)]
    watchdog: crate::watchdog_args::WatchdogArgs,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    Agent,
    Proxy,
    Tla,
    SqlNode,
    TlaSql,
}

enum Running {
    Agent(AgentProcess),
    Tier(TierProcess),
    Sql(SqlProcess),
    TlaSql(TlaSqlProcess),
}

pub(crate) async fn run(role: Role, args: TierArgs) -> anyhow::Result<()> {
    let listen = Listen {
        flight: args.flight,
        http: args.http,
        publish: args.publish,
        pg: args.pg,
        flightsql: args.flightsql,
    };
    if let Some(cluster) = &args.cluster {
        if !matches!(role, Role::Agent) {
            anyhow::bail!(
                "--cluster and --proxy are for `fleetsql agent`; other roles read the topology file (--config)"
            );
        }
        return run_joining(cluster, &args, listen).await;
    }
    if args.tls_ca.is_some() {
        anyhow::bail!(
            "--tls-ca is for an agent joining by itself (--cluster); nodes of a topology read their certificates from its [tls]"
        );
    }
    let Some(config) = &args.config else {
        anyhow::bail!(
            "give the topology file with --config (or, for an agent joining by itself, --cluster and --proxy)"
        );
    };
    let mut topology = Topology::load(config)?;
    let Some(name) = &args.name else {
        anyhow::bail!("give this node's name in the topology with --name");
    };
    if args.security.any() && !matches!(role, Role::SqlNode | Role::TlaSql) {
        anyhow::bail!(
            "--users, --tokens, --tls-cert, --tls-key and --client-ca are for `fleetsql sqlnode` and `tla-sql`"
        );
    }
    args.security.apply(&mut topology, name);
    if args.apps.any() && !matches!(role, Role::SqlNode | Role::TlaSql) {
        anyhow::bail!(
            "--state-dir, --alerts-* , --reports-* and --console-* are for `fleetsql sqlnode`, `tla-sql` and `demo`"
        );
    }
    if args.flightsql.is_some() && !matches!(role, Role::SqlNode | Role::TlaSql) {
        anyhow::bail!("--flightsql is for `fleetsql sqlnode` and `tla-sql`");
    }
    if args.publish.is_some() && !matches!(role, Role::Agent) {
        anyhow::bail!("--publish is for `fleetsql agent`");
    }
    if args.watchdog.any() && !matches!(role, Role::Agent) {
        anyhow::bail!("--watchdog-* and --no-watchdog are for `fleetsql agent`");
    }
    let agent_integrations = match role {
        Role::Agent => crate::integrations::load(args.integrations.as_deref())?,
        Role::SqlNode | Role::TlaSql => None,
        _ if args.integrations.is_some() => {
            anyhow::bail!("--integrations is for `fleetsql agent`, `sqlnode` and `demo`")
        }
        _ => None,
    };
    let mut publishers = None;
    let running = match role {
        Role::Agent => {
            let mut process = AgentProcess::start(&topology, name, listen).await?;
            let agent = process.shared_agent();
            agent.set_watchdog(args.watchdog.apply(agent.watchdog())?);
            process.watch_topology(config.clone(), args.topology_poll);
            if let Some(config) = &agent_integrations {
                publishers = Some(crate::integrations::start_on_agent(
                    config,
                    process.shared_agent(),
                )?);
            }
            Running::Agent(process)
        }
        Role::Proxy | Role::Tla => {
            let mut process = if matches!(role, Role::Proxy) {
                TierProcess::start_proxy(&topology, name, listen).await?
            } else {
                TierProcess::start_tla(&topology, name, listen).await?
            };
            process.watch_topology(config.clone(), args.topology_poll);
            Running::Tier(process)
        }
        Role::SqlNode | Role::TlaSql => {
            // Flags win over the node's entry; the entry keeps what they
            // do not name.
            let mut apps = topology.sqlnode(name)?.apps(name);
            args.apps.apply(&mut apps);
            if args.integrations.is_some() {
                apps.integrations.clone_from(&args.integrations);
            }
            if matches!(role, Role::TlaSql) {
                let mut process = TlaSqlProcess::start(&topology, name, listen, apps).await?;
                process.keep_security_flags(args.security.files());
                process.watch_topology(config.clone(), args.topology_poll);
                Running::TlaSql(process)
            } else {
                let mut process =
                    SqlProcess::start_with_apps(&topology, name, listen, apps).await?;
                process.keep_security_flags(args.security.files());
                process.watch_topology(config.clone(), args.topology_poll);
                Running::Sql(process)
            }
        }
    };
    let ready = match &running {
        Running::Agent(p) => p.ready_line(),
        Running::Tier(p) => p.ready_line(),
        Running::Sql(p) => p.ready_line(),
        Running::TlaSql(p) => p.ready_line(),
    };
    // Tests and scripts wait for this line (or poll /health).
    println!("{ready}");
    crate::signal::shutdown_signal().await;
    eprintln!("shutting down {name}");
    if let Some(publishers) = publishers {
        publishers.shutdown().await;
    }
    match running {
        Running::Agent(p) => p.shutdown().await,
        Running::Tier(p) => p.shutdown().await,
        Running::Sql(p) => p.shutdown().await,
        Running::TlaSql(p) => p.shutdown().await,
    }
    Ok(())
}

/// `fleetsql agent --cluster C --proxy ADDR...`: an agent no topology file
/// lists, announcing itself to its cluster's proxies.
async fn run_joining(cluster: &str, args: &TierArgs, listen: Listen) -> anyhow::Result<()> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => fleetsql_aggregator::host_name(),
    };
    let security = args.security.files();
    if security.users.is_some() || security.tokens.is_some() || security.client_ca.is_some() {
        anyhow::bail!(
            "--users, --tokens and --client-ca are for `fleetsql sqlnode` and `tla-sql`; an agent joining by itself takes --tls-ca, --tls-cert and --tls-key"
        );
    }
    let tls = match (&args.tls_ca, &security.tls_cert, &security.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None, None) => None,
        _ => anyhow::bail!(
            "give all of --tls-ca, --tls-cert and --tls-key (mutual TLS with the cluster's proxies), or none of them (plaintext Flight)"
        ),
    };
    let join = JoinConfig {
        name: name.clone(),
        entry: AgentEntry {
            cluster: cluster.to_string(),
            flight: Some(
                listen
                    .flight
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 7101))),
            ),
            ..AgentEntry::default()
        },
        proxies: args.proxies.clone(),
        advertise: args.advertise,
        tick: args.tick,
        tls,
    };
    let process = AgentProcess::start_joining(&join, listen).await?;
    let agent = process.shared_agent();
    agent.set_watchdog(args.watchdog.apply(agent.watchdog())?);
    let publishers = match crate::integrations::load(args.integrations.as_deref())? {
        Some(config) => Some(crate::integrations::start_on_agent(
            &config,
            process.shared_agent(),
        )?),
        None => None,
    };
    println!("{}", process.ready_line());
    crate::signal::shutdown_signal().await;
    eprintln!("shutting down {name}");
    if let Some(publishers) = publishers {
        publishers.shutdown().await;
    }
    process.shutdown().await;
    Ok(())
}
