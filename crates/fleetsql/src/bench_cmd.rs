//! `fleetsql bench`: a simulated fleet (in this process, behind real Flight
//! servers) feeding a real `fleetsql tla` and `fleetsql sqlnode`; see
//! `fleetsql_bench`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use fleetsql_bench::{BenchConfig, Preset, Report};

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Starting point: `smoke` (2,000 machines, under a minute) or `full`
    /// (100,000 machines, 5 s tick). The flags below override it.
    #[arg(long, default_value = "full")]
    preset: String,
    /// Machines in the simulated fleet.
    #[arg(long)]
    machines: Option<usize>,
    /// Machines per cluster (one simulated proxy each).
    #[arg(long)]
    per_cluster: Option<usize>,
    /// Rows of `processes` per machine.
    #[arg(long)]
    processes: Option<usize>,
    /// Time between generations, e.g. `5s`.
    #[arg(long, value_parser = fleetsql_model::duration::parse_positive)]
    tick: Option<Duration>,
    /// Share of machines whose process count changes per tick (processes
    /// start and exit; filesystems and membership churn at realistic
    /// rates too); default 0.05, 0 for values-only churn.
    #[arg(long)]
    churn: Option<f64>,
    /// Fraction of every table's rows whose values change per tick.
    #[arg(long)]
    value_churn: Option<f64>,
    /// How long to measure once the first complete generation arrived.
    #[arg(long, value_parser = fleetsql_model::duration::parse_positive)]
    duration: Option<Duration>,
    /// Flight compression between the tiers: lz4 (default), zstd or none.
    #[arg(long)]
    compression: Option<String>,
    /// Runs of each seed query on the quiet SQL node and in DuckDB.
    #[arg(long)]
    runs: Option<usize>,
    /// Seed of the simulated fleet.
    #[arg(long)]
    seed: Option<u64>,
    /// Run the scenario once per fleet size, e.g. `10000,30000,100000`,
    /// and report how the tiers grow.
    #[arg(long, value_delimiter = ',')]
    scaling: Vec<usize>,
    /// Skip the DuckDB comparison.
    #[arg(long)]
    no_duckdb: bool,
    /// Python with the `duckdb` package (scripts/bench installs one).
    #[arg(long, env = "FLEETSQL_BENCH_PYTHON", default_value = "python3")]
    python: PathBuf,
    /// Stop with an error when the tiers and the bench hold more memory
    /// than this many MiB.
    #[arg(long, default_value_t = 20 * 1024)]
    max_rss_mib: u64,
    /// Where the topology, logs, exports and report.json go.
    #[arg(long, default_value = "target/fleetsql-bench")]
    out: PathBuf,
    /// Write the results into this Markdown file's `fleetsql bench`
    /// section (e.g. BENCHMARKS.md).
    #[arg(long)]
    write_benchmarks: Option<PathBuf>,
    /// With --scaling: write the scaling plot here (e.g. docs/scaling.svg).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Measure what the apps add to the SQL node: the scenario twice on
    /// one simulated fleet, without apps, then with 20 alerts, 5 reports
    /// and 100 persistent queries (no DuckDB comparison).
    #[arg(long, conflicts_with = "scaling")]
    apps_cost: bool,
    /// Measure twice on one simulated fleet: every Flight link plaintext,
    /// then mutual TLS (a fleet CA made for the run); prints the ratios.
    #[arg(long, conflicts_with = "apps_cost")]
    tls_cost: bool,
    /// With --apps-cost: the tables the persistent queries read, e.g.
    /// `sys,filesystem` (default: sys, filesystem, load_info, machinerole,
    /// processes). Each named table's rows become events every generation.
    #[arg(long, value_delimiter = ',', requires = "apps_cost")]
    apps_pq_tables: Vec<String>,
    /// With --apps-cost: run only these apps in the second half, e.g.
    /// `queries` or `alerts,reports` (default: alerts, reports, queries),
    /// to tell their costs apart.
    #[arg(long, value_delimiter = ',', requires = "apps_cost")]
    apps_only: Vec<String>,
    /// Soak for this long (e.g. `30m`): 30,000 machines (unless
    /// --machines) with realistic churn, 20 alerts, 5 reports and 100
    /// persistent queries on the SQL node; reports the slope of each
    /// process's memory after the warm-up, descriptor, thread and task
    /// growth, and the seed queries' p99 per window (soak.json).
    #[arg(long, value_parser = fleetsql_model::duration::parse_positive, conflicts_with_all = ["apps_cost", "tls_cost", "scaling"])]
    soak: Option<Duration>,
    /// With --soak: how much of the start is warm-up, left out of the
    /// slopes and growth (default a sixth of the soak, at least a minute
    /// and at most half: the SQL node's memory climbs for about a minute).
    #[arg(long, value_parser = fleetsql_model::duration::parse_positive, requires = "soak")]
    soak_warmup: Option<Duration>,
}

impl BenchArgs {
    fn config(&self, machines: Option<usize>, out: PathBuf) -> anyhow::Result<BenchConfig> {
        let fleetsql = std::env::current_exe().context("finding the fleetsql binary")?;
        let mut config = BenchConfig::preset(Preset::parse(&self.preset)?, fleetsql, out);
        if let Some(m) = machines.or(self.machines) {
            config.machines = m;
        }
        if let Some(p) = self.per_cluster {
            config.machines_per_cluster = p;
        }
        if let Some(p) = self.processes {
            config.processes_per_machine = p;
        }
        if let Some(t) = self.tick {
            config.tick = t;
        }
        if let Some(c) = self.churn {
            config.process_churn = c;
        }
        if let Some(c) = self.value_churn {
            config.churn = c;
        }
        if let Some(d) = self.duration {
            config.duration = d;
        }
        if let Some(c) = &self.compression {
            config.compression = match c.as_str() {
                "lz4" => fleetsql_flight::Compression::Lz4,
                "zstd" => fleetsql_flight::Compression::Zstd,
                "none" => fleetsql_flight::Compression::None,
                other => anyhow::bail!("--compression {other}: use lz4, zstd or none"),
            };
        }
        if let Some(r) = self.runs {
            config.query_runs = r;
        }
        if let Some(s) = self.seed {
            config.seed = s;
        }
        config.duckdb = !self.no_duckdb;
        config.python = self.python.clone();
        config.max_rss_bytes = self.max_rss_mib << 20;
        config.apps = self.apps_cost;
        if !self.apps_pq_tables.is_empty() {
            config.apps_pq_tables = self.apps_pq_tables.clone();
        }
        if !self.apps_only.is_empty() {
            config.apps_only = self.apps_only.clone();
        }
        config.validate()?;
        Ok(config)
    }
}

fn write_section(path: &PathBuf, name: &str, content: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, fleetsql_bench::replace_section(&text, name, content))
        .with_context(|| format!("writing {}", path.display()))
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(duration) = args.soak {
        // The soak fleet: 30,000 machines unless told otherwise.
        let machines = args.machines.or(Some(30_000));
        let config = args.config(machines, args.out.clone())?;
        let mut soak = fleetsql_bench::SoakConfig::of(duration);
        if let Some(warmup) = args.soak_warmup {
            soak.warmup = warmup;
        }
        let report = fleetsql_bench::run_soak(&config, &soak).await?;
        let text = fleetsql_bench::soak_markdown(&report);
        println!("{text}");
        println!("report: {}", config.work_dir.join("soak.json").display());
        if let Some(path) = &args.write_benchmarks {
            write_section(path, "fleetsql bench soak", &text)?;
        }
        return Ok(());
    }
    if args.tls_cost {
        let config = args.config(None, args.out.clone())?;
        let cost = fleetsql_bench::run_tls_cost(&config).await?;
        let text = fleetsql_bench::tls_markdown(&cost);
        println!("{text}");
        println!(
            "report: {}",
            config.work_dir.join("tls-cost.json").display()
        );
        if let Some(path) = &args.write_benchmarks {
            write_section(path, "fleetsql bench tls", &text)?;
        }
        return Ok(());
    }
    if args.apps_cost {
        let config = args.config(None, args.out.clone())?;
        let cost = fleetsql_bench::run_apps_cost(&config).await?;
        let text = fleetsql_bench::apps_markdown(&cost);
        println!("{text}");
        println!(
            "report: {}",
            config.work_dir.join("apps-cost.json").display()
        );
        if let Some(path) = &args.write_benchmarks {
            write_section(path, "fleetsql bench apps", &text)?;
        }
        return Ok(());
    }
    if args.scaling.is_empty() {
        let config = args.config(None, args.out.clone())?;
        let report = fleetsql_bench::run(&config).await?;
        let text = fleetsql_bench::markdown(&report);
        println!("{text}");
        println!("report: {}", config.work_dir.join("report.json").display());
        if let Some(path) = &args.write_benchmarks {
            write_section(path, "fleetsql bench", &text)?;
        }
        return Ok(());
    }
    let mut reports: Vec<Report> = Vec::new();
    for machines in &args.scaling {
        let config = args.config(Some(*machines), args.out.join(format!("{machines}")))?;
        let report = fleetsql_bench::run(&config)
            .await
            .with_context(|| format!("the {machines}-machine run"))?;
        println!("{}", fleetsql_bench::markdown(&report));
        reports.push(report);
    }
    let table = fleetsql_bench::scaling_markdown(&reports);
    println!("{table}");
    if let Some(path) = &args.svg {
        std::fs::write(path, fleetsql_bench::scaling_svg(&reports))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.write_benchmarks {
        let mut text = table;
        if let Some(largest) = reports.last() {
            text.push_str("\nThe largest run in full:\n\n");
            text.push_str(&fleetsql_bench::markdown(largest));
        }
        write_section(path, "fleetsql bench scaling", &text)?;
    }
    Ok(())
}
