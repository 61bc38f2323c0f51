//! One scenario, phase by phase: build the simulated fleet, serve it over
//! Flight, start the TLA and SQL node, wait for a complete generation,
//! measure for the configured duration, then take the quiet query timings
//! and the baselines.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetsql_aggregator::Child;
use fleetsql_flight::certs::FleetCa;
use fleetsql_flight::{FlightServer, FlightServerConfig};
use fleetsql_model::{Generation, Table, now_ms};
use fleetsql_sim::{DEMO_STATIC_FILES, RowChurn, SimConfig, SimFleet, SimProxy, TABLES};
use fleetsql_tiers::{ProxyEntry, SqlNodeEntry, TlaEntry, TlsSettings, Topology};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::apps::{AppsCost, AppsFigures, AppsSetup};
use crate::duckdb::{self, DuckDbResults};
use crate::metrics::MetricsClient;
use crate::process::{Memory, TierChild};
use crate::stats::ratio;
use crate::{BenchConfig, BenchError, Latency, QueryReport, Report, Result, SEED_QUERIES};

pub(crate) mod soak;

const TLA: &str = "bench-tla";
const SQL: &str = "bench-sql";
const STATIC_TABLES: [&str; 2] = ["region_data", "continent_data"];

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Says on stderr what phase the run is in (bars, when stderr is a
/// terminal, show the progress within a phase).
fn phase(message: &str) {
    eprintln!("fleetsql bench: {message}");
}

/// A progress bar on a terminal; elsewhere (CI logs) a line naming the
/// phase and a hidden bar.
fn bar(len: u64, message: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        phase(message);
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

fn all_tables() -> BTreeSet<String> {
    TABLES.iter().map(|t| t.to_string()).collect()
}

/// Bytes the Arrow arrays of `tables` hold, counting a sliced array's
/// share only (a cluster's batches are slices of one set of columns).
fn arrow_bytes<'a>(tables: impl Iterator<Item = &'a Arc<Table>>) -> u64 {
    tables.map(|t| t.memory_size() as u64).sum()
}

async fn build_tick(
    proxies: &[Arc<SimProxy>],
    tick: u64,
    what: &str,
) -> Result<Vec<Arc<Generation>>> {
    let bar = bar(proxies.len() as u64, what);
    let tables = all_tables();
    let built: Vec<_> = futures::stream::iter(proxies.iter().cloned())
        .map(|proxy| {
            let tables = tables.clone();
            tokio::task::spawn_blocking(move || proxy.generation_at(tick, &tables))
        })
        .buffered(2)
        .inspect(|_| bar.inc(1))
        .collect()
        .await;
    bar.finish_and_clear();
    built
        .into_iter()
        .map(|joined| {
            joined
                .map_err(|e| BenchError::Sim(e.to_string()))?
                .map_err(|e| BenchError::Sim(e.to_string()))
        })
        .collect()
}

fn write_static_tables(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    for (name, content) in DEMO_STATIC_FILES {
        let path = dir.join(name);
        std::fs::write(&path, content)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
    }
    Ok(dir.join("index.toml"))
}

fn write_topology(path: &Path, topology: &Topology) -> Result<()> {
    std::fs::write(path, topology.to_toml())
        .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
}

/// The simulated fleet served over Flight: built once, measured once, or
/// twice by an apps-cost run.
struct Fleet {
    proxies: Vec<Arc<SimProxy>>,
    servers: Vec<FlightServer>,
    sizes: Sizes,
}

impl Fleet {
    async fn start(config: &BenchConfig) -> Result<Fleet> {
        let fleet = SimFleet::new(SimConfig {
            clusters: config.clusters(),
            machines_per_cluster: config.per_cluster(),
            seed: config.seed,
            churn: config.churn,
            processes_per_machine: config.processes_per_machine,
            tick: config.tick,
            rows: if config.process_churn > 0.0 {
                RowChurn::realistic(config.process_churn)
            } else {
                RowChurn::NONE
            },
        })
        .map_err(|e| BenchError::Sim(e.to_string()))?;
        let machines = fleet.machine_count();
        let proxies = fleet.proxies();
        drop(fleet);
        phase(&format!(
            "{machines} machines in {} clusters, {} processes each, tick {:?}, value churn {}, process churn {}, {} build",
            proxies.len(),
            config.processes_per_machine,
            config.tick,
            config.churn,
            config.process_churn,
            crate::build_profile()
        ));

        let started = Instant::now();
        let first_tick = proxies[0].tick_at(now_ms());
        let first = build_tick(&proxies, first_tick, "building the simulated fleet").await?;
        let sim_build_ms = started.elapsed().as_secs_f64() * 1000.0;
        let rows: u64 = first
            .iter()
            .flat_map(|g| g.tables.values())
            .map(|t| t.num_rows() as u64)
            .sum();
        let raw_arrow_bytes = arrow_bytes(first.iter().flat_map(|g| g.tables.values()));
        drop(first);
        phase(&format!(
            "{rows} rows, {:.0} MiB of Arrow per generation, built in {sim_build_ms:.0} ms",
            raw_arrow_bytes as f64 / 1048576.0
        ));

        let mut servers = Vec::with_capacity(proxies.len());
        let server_config = FlightServerConfig {
            compression: config.compression,
            ..FlightServerConfig::default()
        };
        for proxy in &proxies {
            match FlightServer::start_with(
                proxy.clone() as Arc<dyn Child>,
                any_port(),
                server_config.clone(),
            ) {
                Ok(server) => servers.push(server),
                Err(e) => {
                    for server in servers {
                        server.shutdown().await;
                    }
                    return Err(BenchError::Sim(format!("serving a simulated proxy: {e}")));
                }
            }
        }
        Ok(Fleet {
            proxies,
            servers,
            sizes: Sizes {
                machines,
                rows,
                raw_arrow_bytes,
                sim_build_ms,
            },
        })
    }

    async fn shutdown(self) {
        for server in self.servers {
            server.shutdown().await;
        }
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(|e| BenchError::Sim(e.to_string()))?;
    std::fs::write(path, json).map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))
}

/// Runs one scenario and returns what it measured. Everything it starts
/// is stopped before it returns, on success or error.
pub async fn run(config: &BenchConfig) -> Result<Report> {
    config.validate()?;
    let dir = &config.work_dir;
    create_dir(dir)?;
    let fleet = Fleet::start(config).await?;
    let outcome = measure(config, dir, &fleet, None, None).await;
    fleet.shutdown().await;
    let (report, _) = outcome?;
    write_json(&dir.join("report.json"), &report)?;
    Ok(report)
}

/// The apps' added cost: the scenario twice on one simulated fleet, the
/// SQL node first without apps, then (a fresh TLA and SQL node) with
/// [`crate::ALERTS`] alerts, [`crate::REPORTS`] reports and
/// [`crate::PERSISTENT_QUERIES`] persistent queries. DuckDB is not
/// compared: neither half changes what it would measure. Each half's
/// report goes to `no-apps/report.json` and `apps/report.json`, both with
/// what the apps did to `apps-cost.json`.
pub async fn run_apps_cost(config: &BenchConfig) -> Result<AppsCost> {
    config.validate()?;
    let config = BenchConfig {
        duckdb: false,
        ..config.clone()
    };
    let dir = &config.work_dir;
    let (without_dir, with_dir) = (dir.join("no-apps"), dir.join("apps"));
    for d in [dir, &without_dir, &with_dir] {
        create_dir(d)?;
    }
    // Before the fleet is built: a bad table list should not cost a build.
    let setup = AppsSetup::write(&with_dir, &config.apps_pq_tables, &config.apps_only)?;
    let fleet = Fleet::start(&config).await?;
    let outcome = async {
        phase("first half: the SQL node without apps");
        let (without, _) = measure(&config, &without_dir, &fleet, None, None).await?;
        // Kept even if the second half fails (say on the memory limit).
        write_json(&without_dir.join("report.json"), &without)?;
        phase(&format!(
            "second half: the SQL node with {} alerts, {} reports and {} persistent queries over {}",
            if setup.alerts_dir.is_some() { crate::ALERTS } else { 0 },
            if setup.reports_dir.is_some() { crate::REPORTS } else { 0 },
            setup.statements.len(),
            setup.tables.join(", ")
        ));
        let (with, apps) = measure(&config, &with_dir, &fleet, Some(&setup), None).await?;
        write_json(&with_dir.join("report.json"), &with)?;
        let apps = apps.ok_or_else(|| BenchError::Apps("no figures were read".to_string()))?;
        Ok::<_, BenchError>(AppsCost {
            without,
            with,
            apps,
        })
    }
    .await;
    fleet.shutdown().await;
    let cost = outcome?;
    write_json(&dir.join("apps-cost.json"), &cost)?;
    Ok(cost)
}

/// Both halves of a TLS-cost run: the same fleet with plaintext Flight
/// links, then with mutual TLS on every link.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TlsCost {
    pub plain: Report,
    pub tls: Report,
}

/// The simulated proxies served again over mutual TLS, with the fleet
/// CA and certificates (`fleetsql certs`) the topology's `[tls]` names.
struct TlsHalf {
    servers: Vec<FlightServer>,
    settings: TlsSettings,
    /// The bench's Postgres clients in this half: TLS, the SQL node's
    /// certificate checked against the run's CA and its address.
    pg: PgTls,
}

impl TlsHalf {
    fn start(dir: &Path, fleet: &Fleet, config: &BenchConfig) -> Result<TlsHalf> {
        let certs = dir.join("certs");
        let failed = |e: String| BenchError::Sim(format!("TLS set-up: {e}"));
        let ca = FleetCa::init(&certs, true).map_err(|e| failed(e.to_string()))?;
        for name in [TLA, SQL] {
            ca.issue(name, &certs, true)
                .map_err(|e| failed(e.to_string()))?;
        }
        let settings = TlsSettings {
            ca: certs.join("ca.crt"),
            certs_dir: Some(certs.clone()),
            nodes: Default::default(),
            poll: None,
        };
        let mut servers = Vec::with_capacity(fleet.proxies.len());
        for proxy in &fleet.proxies {
            let name = proxy_name(proxy);
            ca.issue(&name, &certs, true)
                .map_err(|e| failed(e.to_string()))?;
            let files = settings
                .files(&name)
                .ok_or_else(|| failed(format!("no files for {name}")))?;
            let context = fleetsql_flight::TlsContext::load("proxy", &name, files)
                .map_err(|e| failed(e.to_string()))?;
            context.set_parents([TLA.to_string()].into());
            let server = FlightServer::start_with(
                proxy.clone() as Arc<dyn Child>,
                any_port(),
                FlightServerConfig {
                    compression: config.compression,
                    tls: Some(context),
                    ..FlightServerConfig::default()
                },
            )
            .map_err(|e| failed(format!("serving a simulated proxy: {e}")))?;
            servers.push(server);
        }
        let pg = PgTls::trusting(&settings.ca).map_err(failed)?;
        Ok(TlsHalf {
            servers,
            settings,
            pg,
        })
    }

    async fn shutdown(self) {
        for server in self.servers {
            server.shutdown().await;
        }
    }
}

/// A TLS-cost run as Markdown for BENCHMARKS.md: one row per figure,
/// plaintext and mTLS, and the ratio.
pub fn tls_markdown(c: &TlsCost) -> String {
    use std::fmt::Write as _;
    let (a, b) = (&c.plain, &c.tls);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} machines in {} clusters ({} processes each), tick {} ms, churn {}, Flight compression {}, {} rows and {:.0} MiB of Arrow per generation; each half measured {:.0} s on the same simulated fleet, first plaintext, then mutual TLS on every Flight link and TLS on the Postgres port (load average {:.1} / {:.1} on {} cores at the end of each).\n",
        b.machines,
        b.clusters,
        b.processes_per_machine,
        b.tick_ms,
        b.churn,
        b.compression,
        b.rows,
        b.raw_arrow_bytes as f64 / 1_048_576.0,
        b.duration_s,
        a.load_average,
        b.load_average,
        b.cores
    );
    let _ = writeln!(out, "| figure | plaintext | mTLS | mTLS / plaintext |");
    let _ = writeln!(out, "|---|---|---|---|");
    let mut row = |figure: &str, x: f64, y: f64, unit: &str| {
        let _ = writeln!(
            out,
            "| {figure} | {x:.0} {unit} | {y:.0} {unit} | {:.2}x |",
            ratio(y, x)
        );
    };
    row(
        "TLA to SQL node: receive + install p50",
        a.sql_install.p50_ms,
        b.sql_install.p50_ms,
        "ms",
    );
    row(
        "TLA to SQL node: receive + install p99",
        a.sql_install.p99_ms,
        b.sql_install.p99_ms,
        "ms",
    );
    row(
        "proxies to TLA: fetch p50",
        a.tla_fetch.p50_ms,
        b.tla_fetch.p50_ms,
        "ms",
    );
    row(
        "proxies to TLA: fetch p99",
        a.tla_fetch.p99_ms,
        b.tla_fetch.p99_ms,
        "ms",
    );
    for (x, y) in a.queries.iter().zip(&b.queries) {
        row(
            &format!("query `{}` over pg under load, p50", x.name),
            x.under_load.p50_ms,
            y.under_load.p50_ms,
            "ms",
        );
    }
    out
}

fn proxy_name(proxy: &SimProxy) -> String {
    format!("{}-proxy", proxy.cluster())
}

/// The cost of TLS: the scenario twice on one simulated fleet, every
/// Flight link and the Postgres port plaintext, then every Flight link over
/// mTLS (the simulated proxies, the TLA and the SQL node each with a
/// certificate of a fleet CA made for the run) and the queries over pg
/// with TLS verified as `sslmode=verify-full` does. DuckDB is not compared. Each half's report
/// goes to `plain/report.json` and `tls/report.json`, both to
/// `tls-cost.json`.
pub async fn run_tls_cost(config: &BenchConfig) -> Result<TlsCost> {
    config.validate()?;
    let config = BenchConfig {
        duckdb: false,
        ..config.clone()
    };
    let dir = &config.work_dir;
    let (plain_dir, tls_dir) = (dir.join("plain"), dir.join("tls"));
    for d in [dir, &plain_dir, &tls_dir] {
        create_dir(d)?;
    }
    let fleet = Fleet::start(&config).await?;
    let half = match TlsHalf::start(&tls_dir, &fleet, &config) {
        Ok(half) => half,
        Err(e) => {
            fleet.shutdown().await;
            return Err(e);
        }
    };
    let outcome = async {
        phase("first half: plaintext Flight links");
        let (plain, _) = measure(&config, &plain_dir, &fleet, None, None).await?;
        write_json(&plain_dir.join("report.json"), &plain)?;
        phase("second half: mutual TLS on every Flight link, TLS on the Postgres port");
        let (tls, _) = measure(&config, &tls_dir, &fleet, None, Some(&half)).await?;
        write_json(&tls_dir.join("report.json"), &tls)?;
        Ok::<_, BenchError>(TlsCost { plain, tls })
    }
    .await;
    half.shutdown().await;
    fleet.shutdown().await;
    let cost = outcome?;
    write_json(&dir.join("tls-cost.json"), &cost)?;
    Ok(cost)
}

/// What the measurement loop collected.
#[derive(Debug, Default)]
struct Samples {
    tla_fetch_ms: Vec<f64>,
    tla_merge_ms: Vec<f64>,
    tla_generation_bytes: u64,
    tla_bytes_in: f64,
    tla_bytes_out: f64,
    tla_generations: f64,
    sql_install_ms: Vec<f64>,
    data_age_ms: Vec<f64>,
    sql_generation_bytes: u64,
    sql_rss: Vec<u64>,
}

async fn measure(
    config: &BenchConfig,
    dir: &Path,
    fleet: &Fleet,
    apps: Option<&AppsSetup>,
    tls: Option<&TlsHalf>,
) -> Result<(Report, Option<AppsFigures>)> {
    let (mut tiers, idle) = start_tiers(config, dir, fleet, apps, tls).await?;
    let outcome = async {
        if let Some(apps) = apps {
            // Registered before the first complete generation, so the
            // feed runs through the whole measurement.
            apps.register(tiers.sql.address("http")?).await?;
        }
        measure_tiers(
            config,
            dir,
            &fleet.proxies,
            &mut tiers,
            idle,
            fleet.sizes,
            apps,
        )
        .await
    }
    .await;
    tiers.stop().await;
    outcome
}

/// Writes the topology over `fleet` and starts the TLA and SQL node on it
/// (with `apps` and `tls` when given); both stopped again on an error.
async fn start_tiers(
    config: &BenchConfig,
    dir: &Path,
    fleet: &Fleet,
    apps: Option<&AppsSetup>,
    tls: Option<&TlsHalf>,
) -> Result<(Tiers, Idle)> {
    let proxies = &fleet.proxies[..];
    let servers = tls.map_or(&fleet.servers[..], |t| &t.servers[..]);
    let sql_tls = tls.and_then(|t| t.settings.files(SQL));
    let tables = all_tables();
    let mut wanted = tables.clone();
    wanted.extend(STATIC_TABLES.iter().map(|t| t.to_string()));
    let mut topology = Topology {
        tick: config.tick,
        compression: config.compression,
        // A generation of a large fleet can take longer than a tick to
        // cross a link on a small box; measure how long rather than have
        // every child cut off.
        fetch_timeout: Some((config.tick * 6).max(Duration::from_secs(60))),
        tls: tls.map(|t| t.settings.clone()),
        ..Topology::default()
    };
    for (proxy, server) in proxies.iter().zip(servers) {
        topology.proxies.insert(
            proxy_name(proxy),
            ProxyEntry {
                cluster: proxy.cluster().to_string(),
                flight: Some(server.local_addr()),
                machines: Some(proxy.machines() as u64),
                ..ProxyEntry::default()
            },
        );
    }
    topology.tlas.insert(
        TLA.to_string(),
        TlaEntry {
            prewarm: wanted.clone(),
            static_tables: Some(write_static_tables(&dir.join("static"))?),
            ..TlaEntry::default()
        },
    );
    topology.sqlnodes.insert(
        SQL.to_string(),
        SqlNodeEntry {
            tlas: [(TLA.to_string(), 0)].into(),
            prewarm: wanted,
            state_dir: apps.map(|a| a.state_dir.path().to_path_buf()),
            alerts_dir: apps.and_then(|a| a.alerts_dir.clone()),
            reports_dir: apps.and_then(|a| a.reports_dir.clone()),
            // The TLS half's clients speak TLS to the Postgres port too.
            tls_cert: sql_tls.as_ref().map(|f| f.cert.clone()),
            tls_key: sql_tls.as_ref().map(|f| f.key.clone()),
            ..SqlNodeEntry::default()
        },
    );
    let topology_path = dir.join("topology.toml");
    write_topology(&topology_path, &topology)?;
    let ready_timeout = Duration::from_secs(60);
    let local = any_port().to_string();
    let tla = TierChild::start(
        &config.fleetsql,
        "tla",
        &topology_path,
        TLA,
        &["--flight", &local, "--http", &local],
        dir.join("tla.log"),
        ready_timeout,
    )
    .await?;
    let tla_idle = tla.memory().map_or(0, |m| m.rss);
    if let Some(entry) = topology.tlas.get_mut(TLA) {
        entry.flight = Some(tla.address("flight")?);
    }
    write_topology(&topology_path, &topology)?;
    let sql = match TierChild::start(
        &config.fleetsql,
        "sqlnode",
        &topology_path,
        SQL,
        &["--pg", &local, "--http", &local],
        dir.join("sqlnode.log"),
        ready_timeout,
    )
    .await
    {
        Ok(sql) => sql,
        Err(e) => {
            tla.stop().await;
            return Err(e);
        }
    };
    let idle = Idle {
        tla: tla_idle,
        sql: sql.memory().map_or(0, |m| m.rss),
    };
    let tiers = Tiers {
        tla: Some(tla),
        sql,
        pg_tls: tls.map(|t| t.pg.clone()),
    };
    Ok((tiers, idle))
}

/// Resident memory of the tiers when they said they were ready.
#[derive(Debug, Clone, Copy)]
struct Idle {
    tla: u64,
    sql: u64,
}

/// The fleet as built.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    machines: usize,
    rows: u64,
    raw_arrow_bytes: u64,
    sim_build_ms: f64,
}

struct Tiers {
    /// Stopped (taken) before the quiet query timings.
    tla: Option<TierChild>,
    sql: TierChild,
    /// How the bench's clients reach the SQL node's Postgres and HTTPS
    /// ports when they speak TLS.
    pg_tls: Option<PgTls>,
}

impl Tiers {
    async fn stop(mut self) {
        if let Some(tla) = self.tla.take() {
            tla.stop().await;
        }
        self.sql.stop().await;
    }

    fn tla(&self) -> Result<&TierChild> {
        self.tla
            .as_ref()
            .ok_or_else(|| BenchError::Sim("the TLA was already stopped".to_string()))
    }

    fn check(&mut self, limit: u64) -> Result<()> {
        if let Some(tla) = self.tla.as_mut() {
            tla.check_alive()?;
        }
        self.sql.check_alive()?;
        let tla = self.tla.as_ref().and_then(TierChild::memory);
        let used: u64 = [tla, self.sql.memory(), Memory::own()]
            .iter()
            .flatten()
            .map(|m| m.rss)
            .sum();
        if used > limit {
            return Err(BenchError::Memory {
                used_mib: used >> 20,
                limit_mib: limit >> 20,
            });
        }
        Ok(())
    }
}

async fn measure_tiers(
    config: &BenchConfig,
    dir: &Path,
    proxies: &[Arc<SimProxy>],
    tiers: &mut Tiers,
    idle: Idle,
    sizes: Sizes,
    apps: Option<&AppsSetup>,
) -> Result<(Report, Option<AppsFigures>)> {
    let machines = sizes.machines;
    let pg_tls = tiers.pg_tls.clone();
    let pg_tls = pg_tls.as_ref();
    let tla_metrics = MetricsClient::new(tiers.tla()?.address("http")?);
    let sql_metrics =
        MetricsClient::over(tiers.sql.address("http")?, pg_tls.map(|t| t.config.clone()));
    let pg = tiers.sql.address("pg")?;

    wait_complete(config, tiers, &sql_metrics, machines).await?;

    // Measurement: queries over the wire while generations keep coming.
    let client = connect(pg, pg_tls).await?;
    let under_load = tokio::spawn(query_loop(client, config.duration));
    let measuring = bar(config.duration.as_secs().max(1), "measuring");
    let started = Instant::now();
    let mut samples = Samples::default();
    let (mut tla_last, mut sql_last): (Option<crate::metrics::Scrape>, f64) = (None, -1.0);
    let mut tla_first: Option<crate::metrics::Scrape> = None;
    while started.elapsed() < config.duration {
        tiers.check(config.max_rss_bytes)?;
        if let Some(s) = tla_metrics.scrape().await {
            let generations = s.or_zero("fleetsql_generations_total");
            if tla_last
                .as_ref()
                .is_some_and(|last| last.or_zero("fleetsql_generations_total") < generations)
            {
                samples
                    .tla_fetch_ms
                    .push(s.or_zero("fleetsql_fetch_seconds") * 1000.0);
                samples
                    .tla_merge_ms
                    .push(s.or_zero("fleetsql_merge_seconds") * 1000.0);
                samples.tla_generation_bytes = s.or_zero("fleetsql_generation_bytes") as u64;
            }
            if tla_first.is_none() {
                tla_first = Some(s.clone());
            }
            tla_last = Some(s);
        }
        if let Some(s) = sql_metrics.scrape().await {
            let id = s.or_zero("fleetsql_generation_id");
            if sql_last >= 0.0 && id != sql_last {
                samples
                    .sql_install_ms
                    .push(s.or_zero("fleetsql_install_seconds") * 1000.0);
                if let Some(age) = s.get("fleetsql_install_data_age_seconds") {
                    samples.data_age_ms.push(age * 1000.0);
                }
                samples.sql_generation_bytes = s.or_zero("fleetsql_generation_bytes") as u64;
            }
            sql_last = id;
        }
        if let Some(m) = tiers.sql.memory() {
            samples.sql_rss.push(m.rss);
        }
        measuring.set_position(started.elapsed().as_secs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    measuring.finish_and_clear();
    if let (Some(first), Some(last)) = (&tla_first, &tla_last) {
        let delta = |name: &str| last.or_zero(name) - first.or_zero(name);
        samples.tla_generations = delta("fleetsql_generations_total");
        samples.tla_bytes_in = delta("fleetsql_flight_bytes_received_total");
        samples.tla_bytes_out = delta("fleetsql_flight_bytes_sent_total");
    }
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    let loaded = under_load
        .await
        .map_err(|e| BenchError::Sim(format!("query loop failed: {e}")))??;
    let tla_peak = tiers.tla()?.memory().map_or(0, |m| m.peak);
    let sql_peak = tiers.sql.memory().map_or(0, |m| m.peak);
    // Read while generations still arrive, before the TLA stops below.
    let apps_figures = match apps {
        Some(setup) => {
            let client = connect(pg, pg_tls).await?;
            Some(crate::apps::figures(&client, tiers.sql.address("http")?, setup).await?)
        }
        None => None,
    };

    // Quiet: the TLA stops, the SQL node keeps answering from its last
    // generation, and the queries have the box to themselves, as DuckDB
    // will below.
    phase("timing the seed queries on a quiet SQL node");
    if let Some(tla) = tiers.tla.take() {
        tla.stop().await;
    }
    let client = connect(pg, pg_tls).await?;
    let quiet = quiet_queries(&client, config.query_runs).await?;
    let held_tick = held_tick(&client, config.tick).await;

    let (duckdb, duckdb_note) = if config.duckdb {
        phase("exporting the same rows for DuckDB");
        match export(
            dir,
            proxies,
            held_tick.unwrap_or_else(|| proxies[0].tick_at(now_ms())),
        )
        .await
        {
            Ok(export_dir) => {
                phase("timing the seed queries in DuckDB");
                match duckdb::run(&config.python, &export_dir, config.query_runs).await {
                    Ok(results) => (Ok(results), None),
                    Err(e) => (Err(e.clone()), Some(e)),
                }
            }
            Err(e) => (Err(e.to_string()), Some(e.to_string())),
        }
    } else {
        (
            Err("not asked for".to_string()),
            Some("not run (--no-duckdb)".to_string()),
        )
    };

    phase("copying the same bytes with memcpy");
    let memcpy_ms = memcpy_ms(samples.tla_generation_bytes as usize);

    let per_generation = |bytes: f64| ratio(bytes, samples.tla_generations);
    samples.sql_rss.sort_unstable();
    let sql_steady = samples
        .sql_rss
        .get(samples.sql_rss.len() / 2)
        .copied()
        .unwrap_or(0);
    let report = Report {
        machines,
        clusters: proxies.len(),
        processes_per_machine: config.processes_per_machine,
        tick_ms: config.tick.as_millis() as u64,
        churn: config.churn,
        process_churn: config.process_churn,
        profile: crate::build_profile().to_string(),
        compression: format!("{:?}", config.compression).to_lowercase(),
        duration_s: config.duration.as_secs_f64(),
        rows: sizes.rows,
        raw_arrow_bytes: sizes.raw_arrow_bytes,
        sim_build_ms: sizes.sim_build_ms,
        tla_generations: samples.tla_merge_ms.len(),
        tla_fetch: Latency::of(&samples.tla_fetch_ms),
        tla_merge: Latency::of(&samples.tla_merge_ms),
        tla_bytes_in_per_generation: per_generation(samples.tla_bytes_in),
        // Sent to the SQL node, which takes the newest generation when it
        // asks: per generation it installed, not per one the TLA made.
        tla_bytes_out_per_generation: ratio(
            samples.tla_bytes_out,
            samples.sql_install_ms.len() as f64,
        ),
        load_average,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        tla_generation_bytes: samples.tla_generation_bytes,
        tla_peak_rss_bytes: tla_peak,
        tla_idle_rss_bytes: idle.tla,
        memcpy_ms,
        sql_generations: samples.sql_install_ms.len(),
        sql_install: Latency::of(&samples.sql_install_ms),
        sql_generation_bytes: samples.sql_generation_bytes,
        sql_peak_rss_bytes: sql_peak,
        sql_steady_rss_bytes: sql_steady,
        sql_idle_rss_bytes: idle.sql,
        data_age: Latency::of(&samples.data_age_ms),
        queries: query_reports(&loaded, &quiet, &duckdb),
        bench_peak_rss_bytes: Memory::own().map_or(0, |m| m.peak),
        duckdb_note,
    };
    Ok((report, apps_figures))
}

/// Waits until the SQL node has seen every machine, then for two more
/// generations: the steady state of diffs between the tiers.
async fn wait_complete(
    config: &BenchConfig,
    tiers: &mut Tiers,
    sql_metrics: &MetricsClient,
    machines: usize,
) -> Result<()> {
    // A complete first generation on the SQL node.
    let wait_limit = (config.tick * 30).max(Duration::from_secs(300));
    let waiting = bar(
        machines as u64,
        "waiting for a complete generation and the two after it",
    );
    let deadline = Instant::now() + wait_limit;
    // The complete generation came whole through both links; the next one
    // still waits behind that transfer. Measure from the one after, the
    // steady state of diffs between the tiers.
    let mut complete_id: Option<f64> = None;
    let mut last = (0u64, 0.0f64);
    loop {
        tiers.check(config.max_rss_bytes)?;
        if let Some(s) = sql_metrics.scrape().await {
            let seen = s.or_zero("fleetsql_machines_seen") as u64;
            let id = s.or_zero("fleetsql_generation_id");
            last = (seen, id);
            waiting.set_position(seen);
            match complete_id {
                None if seen >= machines as u64 && id > 0.0 => complete_id = Some(id),
                Some(complete) if id > complete + 1.0 => break,
                _ => {}
            }
        }
        if Instant::now() > deadline {
            let (seen, id) = last;
            let state = match complete_id {
                None => format!("it saw {seen} of them, in generation {id}"),
                Some(complete) => format!(
                    "it saw them all in generation {complete}, but installed no two more after it (last {id})"
                ),
            };
            return Err(BenchError::Timeout(format!(
                "the SQL node did not see all {machines} machines and two generations after within {wait_limit:?} ({state}); see {} and {}",
                tiers.tla()?.log().display(),
                tiers.sql.log().display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    waiting.finish_and_clear();
    Ok(())
}

/// TLS for the bench's Postgres clients, as `sslmode=verify-full`: the
/// server's certificate must chain to the CA and name the address dialled.
#[derive(Clone)]
struct PgTls {
    pg: tokio_postgres_rustls::MakeRustlsConnect,
    /// The same trust for the node's HTTPS port (its metrics).
    config: tokio_rustls::rustls::ClientConfig,
}

impl PgTls {
    fn trusting(ca: &Path) -> std::result::Result<PgTls, String> {
        use tokio_rustls::rustls::pki_types::CertificateDer;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("cannot read the CA {}: {e}", ca.display()))?
        {
            let cert = cert.map_err(|e| format!("bad certificate in {}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("unusable CA certificate in {}: {e}", ca.display()))?;
        }
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(PgTls {
            pg: tokio_postgres_rustls::MakeRustlsConnect::new(config.clone()),
            config,
        })
    }
}

async fn connect(pg: SocketAddr, tls: Option<&PgTls>) -> Result<tokio_postgres::Client> {
    let failed = |e: tokio_postgres::Error| BenchError::Query {
        name: "connect".to_string(),
        reason: format!("cannot reach the SQL node's Postgres port {pg}: {e}"),
    };
    let url = format!(
        "host={} port={} user=bench dbname=fleet sslmode={}",
        pg.ip(),
        pg.port(),
        if tls.is_some() { "require" } else { "disable" }
    );
    let client = match tls {
        None => {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(failed)?;
            tokio::spawn(connection);
            client
        }
        Some(tls) => {
            let (client, connection) = tokio_postgres::connect(&url, tls.pg.clone())
                .await
                .map_err(failed)?;
            tokio::spawn(connection);
            client
        }
    };
    Ok(client)
}

/// Runs `sql` once: (milliseconds, rows).
async fn timed(client: &tokio_postgres::Client, name: &str, sql: &str) -> Result<(f64, usize)> {
    let started = Instant::now();
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| BenchError::Query {
            name: name.to_string(),
            // The client's own text is only "db error"; the server's
            // SQLSTATE and message say what went wrong (time-out, memory).
            reason: match e.as_db_error() {
                Some(db) => format!("{} ({})", db.message(), db.code().code()),
                None => e.to_string(),
            },
        })?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let rows = messages
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    Ok((elapsed, rows))
}

type Timings = Vec<(Vec<f64>, usize)>;

/// Seed queries under load: per query the timings and rows, and the
/// failures with the first one's reason.
#[derive(Debug, Default, Clone)]
struct Loaded {
    timings: Timings,
    failures: Vec<(usize, Option<String>)>,
}

/// The seed queries once a second until `duration` is over, as a dashboard
/// refreshing every second would ask (a round that takes longer starts the
/// next at once). A query that fails (say over its time-out while the
/// node's apps take the cores) is counted, not fatal: that it fails under
/// such load is a result.
async fn query_loop(client: tokio_postgres::Client, duration: Duration) -> Result<Loaded> {
    let mut loaded = Loaded {
        timings: vec![(Vec::new(), 0); SEED_QUERIES.len()],
        failures: vec![(0, None); SEED_QUERIES.len()],
    };
    let started = Instant::now();
    let mut rounds = tokio::time::interval(Duration::from_secs(1));
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while started.elapsed() < duration {
        rounds.tick().await;
        for (i, (name, sql)) in SEED_QUERIES.iter().enumerate() {
            match timed(&client, name, sql).await {
                Ok((ms, rows)) => {
                    loaded.timings[i].0.push(ms);
                    loaded.timings[i].1 = rows;
                }
                Err(e) => {
                    let failure = &mut loaded.failures[i];
                    failure.0 += 1;
                    failure.1.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    Ok(loaded)
}

async fn quiet_queries(client: &tokio_postgres::Client, runs: usize) -> Result<Timings> {
    let mut timings: Timings = Vec::new();
    for (name, sql) in SEED_QUERIES {
        let (_, rows) = timed(client, name, sql).await?;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            times.push(timed(client, name, sql).await?.0);
        }
        timings.push((times, rows));
    }
    Ok(timings)
}

/// The tick of the newest rows the SQL node holds, so DuckDB gets the very
/// same rows.
async fn held_tick(client: &tokio_postgres::Client, tick: Duration) -> Option<u64> {
    let messages = client
        .simple_query("SELECT date_part('epoch', max(_published_at)) FROM sys")
        .await
        .ok()?;
    let seconds: f64 = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
        _ => None,
    })?;
    Some((seconds * 1000.0 / tick.as_millis() as f64).round() as u64)
}

async fn export(dir: &Path, proxies: &[Arc<SimProxy>], tick: u64) -> Result<PathBuf> {
    let export_dir = dir.join("duckdb");
    std::fs::create_dir_all(&export_dir)
        .map_err(|e| BenchError::io(format!("creating {}", export_dir.display()), e))?;
    let generations = build_tick(proxies, tick, "building the rows DuckDB reads").await?;
    for table in TABLES {
        let parts: Vec<Arc<Table>> = generations
            .iter()
            .filter_map(|g| g.tables.get(table).cloned())
            .collect();
        let dir = export_dir.clone();
        tokio::task::spawn_blocking(move || duckdb::write_parquet(&dir, table, &parts))
            .await
            .map_err(|e| BenchError::DuckDb(e.to_string()))??;
    }
    // The static tables' CSVs, named after their tables (the DuckDB script
    // skips the index file beside them).
    write_static_tables(&export_dir)?;
    Ok(export_dir)
}

fn query_reports(loaded: &Loaded, quiet: &Timings, duckdb: &DuckDbResults) -> Vec<QueryReport> {
    SEED_QUERIES
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let theirs = duckdb.as_ref().ok().and_then(|d| d.get(*name));
            QueryReport {
                name: name.to_string(),
                under_load: Latency::of(&loaded.timings[i].0),
                under_load_failures: loaded.failures[i].0,
                under_load_failure: loaded.failures[i].1.clone(),
                fleetsql: Latency::of(&quiet[i].0),
                fleetsql_rows: quiet[i].1,
                duckdb: theirs.map(|(latency, _)| *latency),
                duckdb_rows: theirs.map(|(_, rows)| *rows),
            }
        })
        .collect()
}

/// Best of five copies of `bytes` bytes: the physical limit a merge of
/// that much data is compared with.
fn memcpy_ms(bytes: usize) -> f64 {
    if bytes == 0 {
        return 0.0;
    }
    let source = vec![1u8; bytes];
    let mut target = vec![0u8; bytes];
    (0..5)
        .map(|_| {
            let started = Instant::now();
            target.copy_from_slice(&source);
            std::hint::black_box(&target);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::INFINITY, f64::min)
}
