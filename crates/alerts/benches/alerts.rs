//! Alert iterations per minute one SQL node sustains with the seed's disk
//! alert, next to a baseline measured in the same run: the same SQL run
//! directly on the node, back to back.
//!
//! `cargo bench --workspace --profile dev --bench alerts -- [clusters] [machines] [alerts]`
//!
//! Every alert is a copy of the disk alert with its own SQL text, so each
//! iteration runs its own query (answers are not reused across passes);
//! a last row shows the same number of alerts sharing one SQL text. It
//! also prints where the query's time goes and, for each kind of pass,
//! where an alert iteration's time goes (query, state machine, SQLite).
//! Last, a view used by the alerts (seed 6.2, 7.2): the same alerts over
//! a common per-machine aggregate, inlined as a subquery in each, then
//! read from a view the node computes once per generation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetsql_aggregator::FetchRequest;
use fleetsql_alerts::{AlertService, AlertsConfig};
use fleetsql_sim::{SimConfig, SimFleet};
use fleetsql_sqlnode::{SqlNode, SqlNodeConfig};
use fleetsql_tiers::{LocalFleet, TlaEntry};

/// The allocator the `fleetsql` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DISK_SQL: &str = "SELECT machineip ip_key, mountp mnt_key, bavail*bsize free_space, (100*bavail)/blocks pct FROM filesystem a WHERE blocks > 0 and (100*bavail)/blocks < 3";

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clusters = args.first().copied().unwrap_or(100);
    let machines = args.get(1).copied().unwrap_or(100);
    let alerts = args.get(2).copied().unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(clusters, machines, alerts));
}

/// The common subquery: per machine, its free space and its fullest
/// filesystem (what several disk alerts of a fleet start from).
const PER_MACHINE_SQL: &str = "SELECT machineip, sum(bavail*bsize) AS free_space, min((100*bavail)/blocks) AS pct, count(*) AS mounts FROM filesystem WHERE blocks > 0 GROUP BY machineip";

/// Alert `i` over `source` (the view's name, or the subquery inlined):
/// its own threshold, so each alert's SQL text is its own.
fn over_per_machine(source: &str, i: usize) -> String {
    format!(
        "SELECT machineip ip_key, free_space, pct FROM {source} WHERE pct < {}",
        3 + i % 7
    )
}

fn write_alerts(dir: &std::path::Path, alerts: usize, shared: bool) {
    write_alert_sql(dir, alerts, |i| {
        // A comment makes each copy's SQL text distinct unless shared.
        if shared {
            DISK_SQL.to_string()
        } else {
            format!("{DISK_SQL} -- copy {i}")
        }
    });
}

fn write_alert_sql(dir: &std::path::Path, alerts: usize, sql_of: impl Fn(usize) -> String) {
    for entry in std::fs::read_dir(dir).expect("dir") {
        let _ = std::fs::remove_file(entry.expect("entry").path());
    }
    for i in 0..alerts {
        let sql = sql_of(i);
        std::fs::write(
            dir.join(format!("disk{i}.toml")),
            format!("name = \"disk {i}\"\nevery = \"1s\"\nsql = \"{sql}\"\n"),
        )
        .expect("write alert");
    }
}

/// What a run of passes did.
struct Run {
    per_minute: f64,
    iterations: usize,
    queries: usize,
    /// Wall time of the passes' phases, summed.
    query: Duration,
    step: Duration,
    commit: Duration,
}

/// Runs passes (each making every alert due) for at least `budget`.
async fn iterations_per_minute(service: &AlertService, budget: Duration) -> Run {
    let mut now = 1_000_000_000i64;
    // Warm-up pass: first iteration fires the instances.
    service.run_pass(now).await.expect("pass");
    let started = Instant::now();
    let mut run = Run {
        per_minute: 0.0,
        iterations: 0,
        queries: 0,
        query: Duration::ZERO,
        step: Duration::ZERO,
        commit: Duration::ZERO,
    };
    while started.elapsed() < budget {
        now += 1_000;
        let report = service.run_pass(now).await.expect("pass");
        run.iterations += report.iterations;
        run.queries += report.queries;
        run.query += report.query_time;
        run.step += report.step_time;
        run.commit += report.commit_time;
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    run.per_minute = run.iterations as f64 / minutes;
    run
}

async fn run(clusters: usize, machines: usize, alerts: usize) {
    let tick = Duration::from_secs(3600);
    let built = Instant::now();
    let sim = SimFleet::new(SimConfig {
        clusters,
        machines_per_cluster: machines,
        processes_per_machine: 1,
        tick,
        ..SimConfig::default()
    })
    .expect("sim");
    let (topology, agents) =
        LocalFleet::one_tla(tick, sim.machines_by_cluster(), TlaEntry::default());
    let hierarchy = LocalFleet::start(&topology, agents).expect("fleet");
    let tla = hierarchy.tla("tla").expect("tla").as_child();
    tla.fetch(&FetchRequest {
        requester: "bench".into(),
        tables: ["filesystem".to_string()].into_iter().collect(),
        ..Default::default()
    })
    .await
    .expect("first fetch");
    // The generation never changes during the passes: with the node's
    // shared answers every repeated alert query would be a memory read
    // (a few microseconds), which is not what alerting costs on a fleet
    // whose generation changes every tick.
    let node_config = SqlNodeConfig {
        shared_answers_bytes: 0,
        ..SqlNodeConfig::new("bench", tick)
    };
    let node = Arc::new(SqlNode::start(node_config, vec![tla]).expect("node"));
    node.wait_for_generation(Duration::from_secs(600))
        .await
        .expect("generation");
    let wanted = ["filesystem".to_string()].into_iter().collect();
    node.request_tables(&wanted);
    let mut generations = node.subscribe();
    tokio::time::timeout(
        Duration::from_secs(600),
        generations.wait_for(|g| g.tables.contains_key("filesystem")),
    )
    .await
    .expect("filesystem collected in time")
    .expect("node running");
    let rows = node
        .query("SELECT count(*) FROM filesystem")
        .await
        .expect("count");
    let rows = fleetsql_model::json::batches_to_rows(&rows.batches).expect("rows")[0][0].clone();
    let fired = node.query(DISK_SQL).await.expect("disk").num_rows();
    println!(
        "fleet: {clusters} clusters x {machines} machines = {} machines, filesystem {rows} rows, disk alert {fired} instances; built in {:.1} s",
        clusters * machines,
        built.elapsed().as_secs_f64()
    );

    // Baseline: the disk alert's SQL straight on the node, back to back.
    let budget = Duration::from_secs(10);
    let started = Instant::now();
    let mut runs = 0usize;
    while started.elapsed() < budget {
        std::hint::black_box(node.query(DISK_SQL).await.expect("query").num_rows());
        runs += 1;
    }
    let baseline = runs as f64 / (started.elapsed().as_secs_f64() / 60.0);

    // The alerts' own SQL texts straight on the node, in turn: what the
    // distinct-SQL passes could reach if alerting cost nothing.
    let texts: Vec<String> = (0..alerts)
        .map(|i| format!("{DISK_SQL} -- copy {i}"))
        .collect();
    let started = Instant::now();
    let mut distinct_runs = 0usize;
    while started.elapsed() < budget {
        for sql in &texts {
            std::hint::black_box(node.query(sql).await.expect("query").num_rows());
            distinct_runs += 1;
        }
    }
    let distinct = distinct_runs as f64 / (started.elapsed().as_secs_f64() / 60.0);

    query_phases(&node).await;
    println!("| measure | per minute | vs baseline |");
    println!("|---|---|---|");
    println!("| disk alert SQL run directly, one at a time (baseline) | {baseline:.0} | 1.00x |");
    println!(
        "| the {alerts} alerts' distinct SQL texts run directly, in turn | {distinct:.0} | {:.2}x |",
        distinct / baseline
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let alerts_dir = dir.path().join("alerts");
    std::fs::create_dir_all(&alerts_dir).expect("dir");
    let mut phases = Vec::new();
    for (shared, parallel) in [(false, 1), (false, 4), (true, 4)] {
        write_alerts(&alerts_dir, alerts, shared);
        let mut config = AlertsConfig::new(
            &alerts_dir,
            dir.path().join(format!("state-{shared}-{parallel}.db")),
        );
        config.parallel_queries = parallel;
        config.reuse_answers = false;
        let service = AlertService::open(node.clone(), config).expect("service");
        let run = iterations_per_minute(&service, budget).await;
        let Run {
            per_minute,
            iterations,
            queries,
            ..
        } = run;
        let label = if shared {
            format!("{alerts} alerts with identical SQL (one query per pass), {parallel} at once")
        } else {
            format!(
                "{alerts} disk alerts, distinct SQL, {parallel} quer{} at once",
                if parallel == 1 { "y" } else { "ies" }
            )
        };
        println!(
            "| alert iterations: {label} ({iterations} iterations, {queries} queries) | {per_minute:.0} | {:.2}x |",
            per_minute / baseline
        );
        let ms = |d: Duration| d.as_secs_f64() * 1000.0 / iterations.max(1) as f64;
        phases.push(format!(
            "| {label} | {:.2} | {:.2} | {:.2} |",
            ms(run.query),
            ms(run.step),
            ms(run.commit)
        ));
        service.shutdown().await;
    }
    println!();
    println!("Where an iteration's time goes (ms of wall time per alert iteration):");
    println!();
    println!("| passes | queries (and rows) | state machine | SQLite commit |");
    println!("|---|---|---|---|");
    for line in phases {
        println!("{line}");
    }

    // A view used by the alerts: the common subquery inlined in each
    // alert, then read from a view. The generation does not change during
    // the passes, so the view is computed once for the whole run; on a
    // fleet it is computed once per generation (tick) instead of once per
    // alert iteration.
    println!();
    println!(
        "| {alerts} alerts over a per-machine aggregate of `filesystem`, 4 queries at once | alert iterations per minute | vs inlined | ms of query per alert query | vs inlined |"
    );
    println!("|---|---|---|---|---|");
    node.set_views(vec![fleetsql_sqlnode::ViewFile {
        file: "bench/per_machine.toml".into(),
        definition: Ok(fleetsql_sqlnode::ViewDefinition {
            name: "per_machine".into(),
            sql: PER_MACHINE_SQL.into(),
            prewarm: false,
            description: None,
        }),
    }]);
    node.check_views().await;
    let mut inlined = (0.0, 0.0);
    for via_view in [false, true] {
        write_alert_sql(&alerts_dir, alerts, |i| {
            if via_view {
                over_per_machine("per_machine", i)
            } else {
                over_per_machine(&format!("({PER_MACHINE_SQL}) m"), i)
            }
        });
        let mut config = AlertsConfig::new(
            &alerts_dir,
            dir.path().join(format!("state-view-{via_view}.db")),
        );
        config.parallel_queries = 4;
        config.reuse_answers = false;
        let service = AlertService::open(node.clone(), config).expect("service");
        let run = iterations_per_minute(&service, budget).await;
        service.shutdown().await;
        let query_ms = run.query.as_secs_f64() * 1000.0 / run.queries.max(1) as f64;
        if via_view {
            println!(
                "| each alert reads the view `per_machine` (computed once per generation) | {:.0} | {:.2}x | {query_ms:.2} | {:.2}x |",
                run.per_minute,
                run.per_minute / inlined.0,
                query_ms / inlined.1
            );
        } else {
            inlined = (run.per_minute, query_ms);
            println!(
                "| each alert computes the aggregate itself (subquery inlined) | {:.0} | 1.00x | {query_ms:.2} | 1.00x |",
                run.per_minute
            );
        }
    }
    hierarchy.shutdown().await;
}

/// Where the disk alert's query spends its time on the node (ms per run).
async fn query_phases(node: &SqlNode) {
    let runs = 50;
    let ctx = node.session_context();
    let mut phases = [Duration::ZERO; 6];
    for _ in 0..runs {
        let t = Instant::now();
        let statement = node.parse(DISK_SQL).expect("parse");
        phases[0] += t.elapsed();
        let t = Instant::now();
        let generation = node.pin(&statement).await.expect("pin");
        phases[1] += t.elapsed();
        let t = Instant::now();
        let logical = node.plan(statement, generation).await.expect("plan");
        phases[2] += t.elapsed();
        // The bench's generation never changes, so the node's current one
        // is the pinned one.
        let t = Instant::now();
        let plan = ctx
            .state()
            .create_physical_plan(&logical)
            .await
            .expect("physical plan");
        phases[3] += t.elapsed();
        let t = Instant::now();
        let batches = datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx())
            .await
            .expect("collect");
        phases[4] += t.elapsed();
        let t = Instant::now();
        std::hint::black_box(
            fleetsql_alerts::rows_from_batches(&batches, &plan.schema()).expect("rows"),
        );
        phases[5] += t.elapsed();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / runs as f64;
    println!();
    println!(
        "disk alert query phases (ms per run): parse {:.2}, pin {:.2}, logical plan {:.2}, optimise + physical plan {:.2}, execute {:.2}, answer to rows {:.2}",
        ms(phases[0]),
        ms(phases[1]),
        ms(phases[2]),
        ms(phases[3]),
        ms(phases[4]),
        ms(phases[5])
    );
    println!();
}
