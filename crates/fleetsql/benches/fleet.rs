//! End-to-end bench over the demo fleet: TLA merge time and the seed
//! queries' latency, each next to a baseline measured in the same run
//! (a plain copy of the same bytes; a `SELECT 1` round trip).
//!
//! `cargo bench -p fleetsql --bench fleet -- [clusters] [machines]`
//! (add `--profile dev` to skip the long release build; ratios stay
//! meaningful because the baselines run in the same profile).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fleetsql_aggregator::FetchRequest;
use fleetsql_sim::{SimConfig, SimFleet};
use fleetsql_sqlnode::{SqlNode, SqlNodeConfig};
use fleetsql_tiers::{LocalFleet, TlaEntry};

use fleetsql_bench::SEED_QUERIES as QUERIES;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn latency(node: &SqlNode, sql: &str, runs: usize) -> (f64, f64) {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let output = node.query(sql).await.expect("bench query");
        std::hint::black_box(output.num_rows());
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clusters = args.first().copied().unwrap_or(20);
    let machines = args.get(1).copied().unwrap_or(25);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(clusters, machines));
}

async fn run(clusters: usize, machines: usize) {
    let sim = SimFleet::new(SimConfig {
        clusters,
        machines_per_cluster: machines,
        tick: Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .expect("sim");
    let index = concat!(env!("CARGO_MANIFEST_DIR"), "/../../demo/static/index.toml");
    let (topology, agents) = LocalFleet::one_tla(
        Duration::from_secs(3600),
        sim.machines_by_cluster(),
        TlaEntry {
            static_tables: Some(index.into()),
            ..TlaEntry::default()
        },
    );
    let hierarchy = LocalFleet::start(&topology, agents).expect("fleet");
    let tla_aggregator = hierarchy.tla("tla").expect("tla");
    let tables: BTreeSet<String> = [
        "sys",
        "processes",
        "machinerole",
        "filesystem",
        "load_info",
        "region_data",
        "continent_data",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Ask for every table once; this collects them through all tiers.
    let tla = tla_aggregator.as_child();
    tla.fetch(&FetchRequest {
        requester: "bench".into(),
        tables: tables.clone(),
        ..Default::default()
    })
    .await
    .expect("first fetch");

    // Merge: the TLA's tick over already merged proxies, several times.
    let mut merges = Vec::new();
    for _ in 0..5 {
        hierarchy.tick_now().await;
        merges.push(tla_aggregator.stats().last_merge_ms);
    }
    merges.sort_by(|a, b| a.total_cmp(b));
    let generation = tla_aggregator.current();
    let rows: usize = generation.tables.values().map(|t| t.num_rows()).sum();
    let bytes = generation.memory_size();

    // Baseline: copying the same Arrow buffers once (the physical limit).
    let started = Instant::now();
    for table in generation.tables.values() {
        for batch in table.batches() {
            for column in batch.columns() {
                let data = column.to_data();
                for buffer in data.buffers() {
                    std::hint::black_box(buffer.as_slice().to_vec());
                }
            }
        }
    }
    let copy_ms = started.elapsed().as_secs_f64() * 1000.0;

    let node = SqlNode::start(
        SqlNodeConfig::new("bench", Duration::from_secs(3600)),
        vec![tla],
    )
    .expect("node");
    node.wait_for_generation(Duration::from_secs(30))
        .await
        .expect("generation");
    node.request_tables(&tables);
    let (base_p50, base_p99) = latency(&node, "SELECT 1", 50).await;

    println!(
        "fleet: {clusters} clusters x {machines} machines, {rows} rows, {:.1} MiB",
        bytes as f64 / 1048576.0
    );
    println!();
    println!("| measure | p50 ms | p99 ms | vs baseline |");
    println!("|---|---|---|---|");
    println!(
        "| TLA merge ({} proxies) | {:.2} | {:.2} | {:.1}x a copy of the bytes ({copy_ms:.2} ms) |",
        clusters,
        percentile(&merges, 0.5),
        percentile(&merges, 1.0),
        percentile(&merges, 0.5) / copy_ms.max(0.001)
    );
    println!("| `SELECT 1` (baseline) | {base_p50:.2} | {base_p99:.2} | 1.0x |");
    for (name, sql) in QUERIES {
        let (p50, p99) = latency(&node, sql, 30).await;
        println!(
            "| {name} | {p50:.2} | {p99:.2} | {:.1}x |",
            p50 / base_p50.max(0.001)
        );
    }
    node.shutdown().await;
    hierarchy.shutdown().await;
}
