//! Query History's costs (issue 18, Measure), each next to a baseline from
//! the same run:
//!
//! - disk bytes per kept row (zstd Parquet) against the rows' raw Arrow
//!   size, for `sys` and `filesystem`;
//! - the write cost of one generation at `machines` machines, per table,
//!   in ms and as a share of a 5 s tick;
//! - a one-hour aggregate over `history.sys` (`generations` kept
//!   generations 5 s apart) on the `history` schema the SQL node serves,
//!   against DuckDB over the same Parquet files, run back to back.
//!
//! `cargo bench --workspace --profile dev --bench history -- [machines] [generations] [distinct]`
//!
//! Defaults: 100000 machines, 720 generations, 12 distinct ticks of the
//! simulated fleet (the kept generations cycle through them, so the files
//! compress as real consecutive ticks of the simulation do, and generating
//! them does not dominate the run). DuckDB runs under
//! `FLEETSQL_BENCH_PYTHON` (scripts/python-env); without it its column
//! says so. Nothing here asserts a time: the figures go to BENCHMARKS.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::prelude::SessionContext;
use fleetsql_history::{HistoryConfig, HistorySchema, HistoryStore};
use fleetsql_model::{Generation, Table, merge_tables};
use fleetsql_sim::{SimConfig, SimFleet};

/// The allocator the `fleetsql` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TICK_MS: i64 = 5_000;
const TABLES: [&str; 2] = ["sys", "filesystem"];

/// The aggregate: per minute of the hour, machines seen, average CPU and
/// the least free memory (the shape of a capacity question).
fn aggregate_sql(from: &str, since_ms: i64) -> String {
    format!(
        "SELECT date_trunc('minute', _generation_time) AS minute, count(DISTINCT ip) AS machines, \
         avg(cpu_pct) AS cpu, min(memfree) AS least_free, max(load1) AS load \
         FROM {from} WHERE _generation_time >= to_timestamp_millis({since_ms}) \
         GROUP BY 1 ORDER BY 1"
    )
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let machines = args.first().copied().unwrap_or(100_000);
    let generations = args.get(1).copied().unwrap_or(720);
    let distinct = args.get(2).copied().unwrap_or(12).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(machines, generations, distinct));
}

/// `distinct` ticks of a simulated fleet of `machines`, each merged into
/// one table per name, as a TLA's generation holds them.
fn simulated(machines: usize, distinct: usize) -> Vec<BTreeMap<String, Arc<Table>>> {
    let per_cluster = 1000.min(machines).max(1);
    let clusters = machines.div_ceil(per_cluster);
    let fleet = SimFleet::new(SimConfig {
        clusters,
        machines_per_cluster: per_cluster,
        ..SimConfig::default()
    })
    .expect("a simulated fleet");
    let proxies = fleet.proxies();
    let wanted: BTreeSet<String> = TABLES.iter().map(|t| t.to_string()).collect();
    (0..distinct as u64)
        .map(|tick| {
            let parts: Vec<Arc<Generation>> = proxies
                .iter()
                .map(|p| p.generation_at(tick, &wanted).expect("a cluster's tick"))
                .collect();
            TABLES
                .iter()
                .map(|&name| {
                    let tables: Vec<&Table> = parts
                        .iter()
                        .filter_map(|g| g.table(name))
                        .map(|t| &**t)
                        .collect();
                    let (merged, rejected) = merge_tables(name, &tables).expect("merged");
                    assert!(rejected.is_empty(), "{rejected:?}");
                    (name.to_string(), Arc::new(merged))
                })
                .collect()
        })
        .collect()
}

fn generation(id: u64, made_at_ms: i64, tables: &BTreeMap<String, Arc<Table>>) -> Generation {
    let mut generation = Generation::empty("bench-tla");
    generation.meta.id = id;
    generation.meta.made_at_ms = made_at_ms;
    generation.tables = tables.clone();
    generation
}

fn store(dir: &Path, table: &str) -> Arc<HistoryStore> {
    let config = HistoryConfig {
        // Nothing thinned within the run: the ladder's first rung keeps
        // every generation for two hours.
        min_free_mib: 0,
        ..HistoryConfig::of_tables([table])
    };
    HistoryStore::open(dir, config).expect("a history store")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn run(machines: usize, generations: usize, distinct: usize) {
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    println!(
        "history bench: {machines} machines, {generations} generations ({distinct} distinct ticks), profile {profile}"
    );
    let started = Instant::now();
    let ticks = simulated(machines, distinct);
    println!(
        "simulated {distinct} ticks in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let work = tempfile::tempdir().expect("tempdir");
    let base_ms = fleetsql_model::now_ms() - generations as i64 * TICK_MS;

    // Bytes per row and write cost, per table: `distinct` generations
    // written one table per store, as the writer hook writes them.
    println!();
    println!(
        "| table | rows per generation | Arrow bytes/row | Parquet bytes/row | ratio | write ms (median of {distinct}) | share of a 5 s tick |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for table in TABLES {
        let dir = work.path().join(format!("write-{table}"));
        let store = store(&dir, table);
        let mut times = Vec::new();
        let (mut rows, mut arrow, mut parquet) = (0u64, 0u64, 0u64);
        for (i, tables) in ticks.iter().enumerate() {
            let g = generation(i as u64 + 1, base_ms + i as i64 * TICK_MS, tables);
            let t = &g.tables[table];
            rows += t.num_rows() as u64;
            arrow += t
                .batches()
                .iter()
                .map(fleetsql_model::batch_data_bytes)
                .sum::<usize>() as u64;
            let started = Instant::now();
            let report = store.write_generation(&g, base_ms + i as i64 * TICK_MS);
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            assert!(report.stopped.is_none(), "{report:?}");
            parquet += report.bytes;
        }
        let ms = median(times);
        println!(
            "| {table} | {} | {:.1} | {:.1} | {:.1}x | {ms:.0} | {:.1}% |",
            rows / distinct as u64,
            arrow as f64 / rows as f64,
            parquet as f64 / rows as f64,
            arrow as f64 / parquet as f64,
            ms / TICK_MS as f64 * 100.0
        );
    }

    // `generations` kept generations of sys, 5 s apart, ending now.
    let dir = work.path().join("hour");
    let sys = store(&dir, "sys");
    let started = Instant::now();
    for g in 0..generations {
        let tables = &ticks[g % distinct];
        let made_at = base_ms + g as i64 * TICK_MS;
        let report = sys.write_generation(&generation(g as u64 + 1, made_at, tables), made_at);
        assert!(report.stopped.is_none(), "{report:?}");
    }
    let total_rows: u64 = sys.status().iter().map(|s| s.rows).sum();
    let total_bytes: u64 = sys.status().iter().map(|s| s.bytes).sum();
    println!();
    println!(
        "wrote {generations} generations of sys ({total_rows} rows, {:.1} MiB) in {:.1} s",
        total_bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    let since = base_ms + generations as i64 * TICK_MS - 3_600_000;

    let ctx = SessionContext::new();
    ctx.catalog("datafusion")
        .expect("the default catalog")
        .register_schema("history", Arc::new(HistorySchema::new(sys.clone())))
        .expect("the history schema");
    let sql = aggregate_sql("history.sys", since);
    let mut ours = Vec::new();
    let mut our_rows = 0;
    // One run to warm the file cache, as DuckDB gets.
    for run in 0..4 {
        let started = Instant::now();
        let batches = ctx
            .sql(&sql)
            .await
            .expect("planned")
            .collect()
            .await
            .expect("answered");
        if run > 0 {
            ours.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        our_rows = batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    let glob = format!("read_parquet('{}/sys/*.parquet')", dir.display());
    let duck = duckdb(&aggregate_sql(&glob, since).replace("to_timestamp_millis", "epoch_ms"));
    let ours_ms = median(ours);
    println!();
    println!(
        "| one-hour aggregate over history.sys | rows read | answer rows | fleetsql ms (median of 3) | DuckDB ms (median of 3) | fleetsql / DuckDB |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    match duck {
        Ok((duck_ms, duck_rows)) => {
            assert_eq!(duck_rows, our_rows, "both answer the same number of rows");
            println!(
                "| {generations} generations x {machines} machines | {total_rows} | {our_rows} | {ours_ms:.0} | {duck_ms:.0} | {:.2}x |",
                ours_ms / duck_ms
            );
        }
        Err(why) => println!(
            "| {generations} generations x {machines} machines | {total_rows} | {our_rows} | {ours_ms:.0} | not run: {why} | |"
        ),
    }
}

/// DuckDB's median of 3 runs of `sql` (after one to warm the file cache
/// as ours had), in its own process: (ms, rows).
fn duckdb(sql: &str) -> Result<(f64, usize), String> {
    let python = std::env::var_os("FLEETSQL_BENCH_PYTHON")
        .ok_or("FLEETSQL_BENCH_PYTHON is unset (scripts/python-env prints one)")?;
    const SCRIPT: &str = r#"
import json, sys, time, duckdb
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
# A query over a few seconds draws a progress bar on stdout otherwise.
con.execute("SET enable_progress_bar = false")
sql = sys.argv[1]
rows = len(con.execute(sql).fetchall())
times = []
for _ in range(3):
    t = time.perf_counter()
    rows = len(con.execute(sql).fetchall())
    times.append((time.perf_counter() - t) * 1000)
times.sort()
print(json.dumps({"ms": times[1], "rows": rows}))
"#;
    let output = std::process::Command::new(python)
        .args(["-c", SCRIPT, sql])
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    // The answer is the last line; anything DuckDB printed before it is
    // not ours to parse.
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let answer: serde_json::Value = serde_json::from_str(last)
        .map_err(|e| format!("{e} in DuckDB's output: {}", stdout.trim()))?;
    Ok((
        answer["ms"].as_f64().ok_or("no ms")?,
        answer["rows"].as_u64().ok_or("no rows")? as usize,
    ))
}
