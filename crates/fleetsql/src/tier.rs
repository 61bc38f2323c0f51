//! `fleetsql agent|proxy|tla|sqlnode`: one tier of a distributed fleet per
//! process, described by a topology file (see `fleetsql_tiers::Topology`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use fleetsql_tiers::{AgentProcess, Listen, SqlProcess, TierProcess, Topology};

#[derive(Debug, Args)]
pub(crate) struct TierArgs {
    /// The topology file shared by every node of the fleet.
    #[arg(long, env = "FLEETSQL_TOPOLOGY")]
    config: PathBuf,
    /// This node's name in the topology.
    #[arg(long)]
    name: String,
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
    /// Agent and SQL node: a TOML file of integrations, as for `fleetsql
    /// demo`. An agent runs the table publishers (Prometheus, SNMP) and
    /// publishes `fleet_sources`; a SQL node runs the persistent-query
    /// sinks and event sources (MQTT, XMPP, esmond) and serves persistent
    /// queries on its HTTP address. Each refuses the other's kinds.
    #[arg(long)]
    integrations: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    Agent,
    Proxy,
    Tla,
    SqlNode,
}

enum Running {
    Agent(AgentProcess),
    Tier(TierProcess),
    Sql(SqlProcess),
}

pub(crate) async fn run(role: Role, args: TierArgs) -> anyhow::Result<()> {
    let topology = Topology::load(&args.config)?;
    let listen = Listen {
        flight: args.flight,
        http: args.http,
        publish: args.publish,
        pg: args.pg,
    };
    let name = &args.name;
    let integrations_config = match role {
        Role::SqlNode | Role::Agent => crate::integrations::load(args.integrations.as_deref())?,
        _ if args.integrations.is_some() => {
            anyhow::bail!("--integrations is for `fleetsql agent`, `sqlnode` and `demo`")
        }
        _ => None,
    };
    let mut persistent = None;
    let mut publishers = None;
    let running = match role {
        Role::Agent => {
            let process = AgentProcess::start(&topology, name, listen).await?;
            if let Some(config) = &integrations_config {
                publishers = Some(crate::integrations::start_on_agent(
                    config,
                    process.shared_agent(),
                )?);
            }
            Running::Agent(process)
        }
        Role::Proxy => Running::Tier(TierProcess::start_proxy(&topology, name, listen).await?),
        Role::Tla => Running::Tier(TierProcess::start_tla(&topology, name, listen).await?),
        Role::SqlNode => match &integrations_config {
            None => Running::Sql(SqlProcess::start(&topology, name, listen).await?),
            Some(config) => {
                let pqa = crate::integrations::persistent_queries();
                let routes = fleetsql_pqa::router(pqa.clone());
                let process =
                    SqlProcess::start_with_routes(&topology, name, listen, routes).await?;
                persistent = Some(crate::integrations::start_on_sqlnode(
                    config,
                    process.node().clone(),
                    pqa,
                )?);
                Running::Sql(process)
            }
        },
    };
    let ready = match &running {
        Running::Agent(p) => p.ready_line(),
        Running::Tier(p) => p.ready_line(),
        Running::Sql(p) => p.ready_line(),
    };
    // Tests and scripts wait for this line (or poll /health).
    println!("{ready}");
    crate::signal::shutdown_signal().await;
    eprintln!("shutting down {name}");
    if let Some(persistent) = persistent {
        persistent.shutdown().await;
    }
    if let Some(publishers) = publishers {
        publishers.shutdown().await;
    }
    match running {
        Running::Agent(p) => p.shutdown().await,
        Running::Tier(p) => p.shutdown().await,
        Running::Sql(p) => p.shutdown().await,
    }
    Ok(())
}
