use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fleetsql_agent::{Agent, AgentConfig};
use fleetsql_apps::AppsConfig;
use fleetsql_sim::{SimConfig, SimFleet};
use fleetsql_tiers::{Listen, LocalFleet, SqlNodeEntry, SqlProcess, TlaEntry};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Simulated clusters.
    #[arg(long, default_value_t = 20)]
    clusters: usize,
    /// Simulated machines per cluster.
    #[arg(long, default_value_t = 25)]
    machines: usize,
    /// `processes` rows per simulated machine.
    #[arg(long, default_value_t = 40)]
    processes: usize,
    /// Seed of the simulated fleet (same seed, same fleet).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Time between generations, e.g. `5s`, `500ms`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    tick: Duration,
    /// Address the Postgres, HTTP and Flight SQL listeners bind to. Loopback
    /// unless --users and --tls-cert/--tls-key are given too (without them
    /// the demo answers anyone who can connect).
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Postgres wire port (0 picks one).
    #[arg(long, default_value_t = 5433)]
    pg_port: u16,
    /// HTTP port: queries, health (0 picks one).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Flight SQL port, for ADBC and JDBC Flight SQL (0 picks one).
    #[arg(long, default_value_t = 8815)]
    flightsql_port: u16,
    /// The local agent's publish API port, always on loopback (0 picks one).
    #[arg(long, default_value_t = 7070)]
    publish_port: u16,
    /// A directory whose `<table>.csv|.tsv|.jsonl` files the local agent publishes.
    #[arg(long)]
    drop_dir: Option<PathBuf>,
    /// Index of static tables the TLA adds (defaults to the demo's own).
    #[arg(long)]
    static_tables: Option<PathBuf>,
    /// Per-query time-out.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    query_timeout: Duration,
    /// Memory all running queries may hold together, in MiB.
    #[arg(long, default_value_t = 1024)]
    query_memory_mib: usize,
    /// Queries that may run at once on the SQL node.
    #[arg(long, default_value_t = fleetsql_sqlnode::DEFAULT_MAX_CONCURRENT_QUERIES)]
    max_concurrent_queries: usize,
    /// Queries that may wait for a place while the most run; one more is
    /// refused at once (SQLSTATE 53300, HTTP 503).
    #[arg(long, default_value_t = fleetsql_sqlnode::DEFAULT_MAX_QUEUED_QUERIES)]
    max_queued_queries: usize,
    /// Query History stops writing while its disk has less free than
    /// this, in MiB (`history.min_free_mib` of a topology).
    #[arg(long, default_value_t = 512)]
    history_min_free_mib: u64,
    /// A TOML file of integrations (Prometheus scrapes, MQTT, perfSONAR esmond).
    #[arg(long)]
    integrations: Option<PathBuf>,
    /// The local agent's watchdog limits.
    #[command(flatten)]
    watchdog: crate::watchdog_args::WatchdogArgs,
    #[command(flatten)]
    apps: crate::apps_args::AppArgs,
    /// Users, tokens and TLS of the demo's SQL node, as for `fleetsql sqlnode`.
    #[command(flatten)]
    security: crate::security_args::SecurityArgs,
}

/// Accepts `250ms`, `5s`, `2m`, or a plain number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    fleetsql_model::duration::parse_positive(text)
}

fn default_static_index() -> PathBuf {
    demo_path("demo/static/index.toml")
}

/// `relative` next to the sources when run from a checkout, else beside the binary.
fn demo_path(relative: &str) -> PathBuf {
    let checkout = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative);
    if checkout.exists() {
        return checkout;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(relative)))
        .unwrap_or_else(|| PathBuf::from(relative))
}

/// The demo's apps: the shipped alerts and reports, state kept under a
/// directory of this user's (printed when ready), each given flag over that.
fn apps_config(args: &DemoArgs) -> anyhow::Result<AppsConfig> {
    let mut config = AppsConfig {
        state_dir: fleetsql_apps::default_state_dir("demo"),
        alerts_dir: Some(demo_path("alerts/examples")),
        reports_dir: Some(demo_path("demo/reports")),
        views_dir: Some(demo_path("demo/views")),
        integrations: args.integrations.clone(),
        ..AppsConfig::default()
    };
    args.apps.apply(&mut config);
    if config.state_dir.is_none() {
        anyhow::bail!(
            "the demo keeps its state under $XDG_STATE_HOME or $HOME, and neither is set; pass --state-dir DIR"
        );
    }
    Ok(config)
}

/// Without users and TLS the demo answers anyone who can connect, so it
/// then serves this machine only.
fn check_loopback(
    bind: IpAddr,
    security: &crate::security_args::SecurityArgs,
) -> anyhow::Result<()> {
    if bind.is_loopback() || security.authenticates_over_tls() {
        return Ok(());
    }
    anyhow::bail!(
        "fleetsql demo binds a non-loopback address only with authentication and TLS: without them --bind {bind} would let anyone who can reach this machine query and change it; \
         use --bind 127.0.0.1 (or ::1), or give --users FILE (`fleetsql users add`) and --tls-cert/--tls-key (`fleetsql certs`)"
    )
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    check_loopback(args.bind, &args.security)?;
    let sim = SimFleet::new(SimConfig {
        clusters: args.clusters,
        machines_per_cluster: args.machines,
        seed: args.seed,
        processes_per_machine: args.processes,
        tick: args.tick,
        ..SimConfig::default()
    })
    .context("invalid simulated fleet")?;

    let apps_config = apps_config(&args)?;
    // Contradictory settings stop the demo before anything listens.
    apps_config.validate()?;
    let state_dir = apps_config.state_dir.clone().unwrap_or_default();
    let agent = Agent::start(AgentConfig {
        tick: args.tick,
        publish_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.publish_port),
        drop_dir: args.drop_dir.clone(),
        roles: vec!["demo".to_string()],
        watchdog: args.watchdog.apply(AgentConfig::default().watchdog)?,
        ..AgentConfig::default()
    })
    .context("cannot start the local agent")?;
    let agent = Arc::new(agent);

    // The demo is one configuration of a deployment: a topology with the
    // simulated clusters and this machine, planned and started by the same
    // code as `fleetsql proxy|tla|sqlnode` processes, linked in memory.
    let static_tables = args
        .static_tables
        .clone()
        .unwrap_or_else(default_static_index);
    let mut clusters = sim.machines_by_cluster();
    clusters.push(("local".to_string(), vec![agent.as_child()]));
    let (mut topology, agents) = LocalFleet::one_tla(
        args.tick,
        clusters,
        TlaEntry {
            static_tables: Some(static_tables),
            ..TlaEntry::default()
        },
    );
    topology.sqlnodes.insert(
        "sqlnode".to_string(),
        SqlNodeEntry {
            tlas: BTreeMap::from([("tla".to_string(), 0)]),
            pg: Some(SocketAddr::new(args.bind, args.pg_port)),
            http: Some(SocketAddr::new(args.bind, args.http_port)),
            flightsql: Some(SocketAddr::new(args.bind, args.flightsql_port)),
            query_timeout: Some(args.query_timeout),
            query_memory_mib: Some(args.query_memory_mib),
            max_concurrent_queries: Some(args.max_concurrent_queries),
            max_queued_queries: Some(args.max_queued_queries),
            // Query History of the seed's tables, so `history.sys` answers
            // after two ticks.
            history: Some(fleetsql_tiers::HistoryConfig {
                dir: Some(state_dir.join("history")),
                min_free_mib: args.history_min_free_mib,
                ..fleetsql_tiers::HistoryConfig::of_tables(["sys", "filesystem", "load_info"])
            }),
            ..SqlNodeEntry::default()
        },
    );
    args.security.apply(&mut topology, "sqlnode");
    let auth_on = args.security.authenticates();
    let fleet = LocalFleet::start(&topology, agents).context("cannot plan the demo's fleet")?;
    let sql = SqlProcess::start_with(
        &topology,
        "sqlnode",
        Listen::default(),
        apps_config,
        &fleet.links(),
        Some(agent.clone() as fleetsql_apps::LocalTables),
    )
    .await?;

    // First generation now rather than at the first tick, bottom up.
    let mut local = agent.subscribe();
    agent.tick_now();
    let _ = tokio::time::timeout(args.tick, local.wait_for(|g| g.meta.id > 0)).await;
    fleet.tick_now().await;
    let machines = sim.machine_count() + 1;
    let pg_addr = sql.pg_addr();
    let http_addr = sql.http_addr();
    let flightsql_addr = sql
        .flightsql_addr()
        .context("the demo's SQL node serves no Flight SQL")?;
    let tls = args.security.tls();
    println!(
        "fleetsql demo ready: pg={pg_addr} http={http_addr} flightsql={flightsql_addr} publish={} machines={machines} clusters={} auth={} tls={} state={}",
        agent.publish_addr(),
        args.clusters + 1,
        if auth_on { "on" } else { "off" },
        if tls { "on" } else { "off" },
        state_dir.display()
    );
    if !auth_on {
        println!(
            "  authentication is off: anyone on this machine can query and change the demo; it listens on loopback only"
        );
    }
    println!();
    let (scheme, sslmode) = if tls {
        ("https", " sslmode=verify-full")
    } else {
        ("http", "")
    };
    println!(
        "  psql 'host={} port={}{sslmode}' -c 'SELECT * FROM fleet_clusters'",
        pg_addr.ip(),
        pg_addr.port()
    );
    println!(
        "  fleetsql sql --url {scheme}://{http_addr} \"SELECT machineip ip_key, mountp mnt_key, (100*bavail)/blocks pct FROM filesystem a WHERE blocks > 0 and (100*bavail)/blocks < 3\""
    );
    println!(
        "  curl -s -H 'content-type: application/json' {scheme}://{http_addr}/v1/query -d '{{\"sql\": \"SELECT * FROM fleet_generation\"}}'"
    );
    println!(
        "  curl -s -H 'content-type: text/csv' --data-binary $'svc,up\\nweb,1\\n' http://{}/v1/tables/services",
        agent.publish_addr()
    );
    println!(
        "  python -c 'import adbc_driver_flightsql.dbapi as f; print(f.connect(\"grpc://{flightsql_addr}\").cursor().execute(\"SELECT count(*) FROM sys\").fetch_arrow_table())'"
    );
    println!(
        "  psql 'host={} port={}{sslmode}' -c 'SELECT _generation, _generation_time, count(*) FROM history.sys GROUP BY 1, 2 ORDER BY 1'",
        pg_addr.ip(),
        pg_addr.port()
    );
    println!("  console: {scheme}://{http_addr}/");
    println!();
    println!("  alerts console: {scheme}://{http_addr}/alerts");
    println!(
        "  state (alert state, report runs, history of sys, filesystem, load_info): {}",
        state_dir.display()
    );
    println!("generations every {:?}; Ctrl-C stops", args.tick);

    crate::signal::shutdown_signal().await;
    eprintln!("shutting down");
    // Stops accepting, drains, stops the apps and the node, then the
    // tiers below it, then the agent.
    sql.shutdown().await;
    fleet.shutdown().await;
    if let Ok(agent) = Arc::try_unwrap(agent) {
        agent.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn only_loopback_binds() {
        use crate::security_args::SecurityArgs;
        let open = SecurityArgs::default();
        assert!(check_loopback("127.0.0.1".parse().unwrap(), &open).is_ok());
        assert!(check_loopback("::1".parse().unwrap(), &open).is_ok());
        let secured = SecurityArgs::with_files("users.toml", "node.crt", "node.key");
        for bind in ["0.0.0.0", "::", "192.168.1.20"] {
            let error = check_loopback(bind.parse().unwrap(), &open)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("only with authentication and TLS"),
                "{error}"
            );
            assert!(error.contains("--users FILE"), "{error}");
            assert!(check_loopback(bind.parse().unwrap(), &secured).is_ok());
        }
    }
}
