//! Cost of one simulated tick: every machine of a 1,000-machine fleet
//! (40 clusters x 25, 100 processes each) answering a fetch for all five
//! tables, steady state (10% churn, caches warm) and cold (first fetch).

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fleetsql_sim::{SimConfig, SimFleet, TABLES};

const FIRST_TICK: u64 = 357_000_000;

fn config() -> SimConfig {
    SimConfig {
        clusters: 40,
        machines_per_cluster: 25,
        processes_per_machine: 100,
        churn: 0.10,
        ..SimConfig::default()
    }
}

fn tick(fleet: &SimFleet, tick: u64, tables: &BTreeSet<String>) -> usize {
    fleet
        .machines()
        .map(|m| {
            let g = m
                .generation_at(tick, tables)
                .expect("simulated tables build");
            g.tables.values().map(|t| t.num_rows()).sum::<usize>()
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let tables: BTreeSet<String> = TABLES.iter().map(|t| t.to_string()).collect();
    let fleet = SimFleet::new(config()).expect("valid config");
    let rows = tick(&fleet, FIRST_TICK, &tables);

    let mut group = c.benchmark_group("sim_tick_1k_machines");
    group.throughput(Throughput::Elements(rows as u64));
    group.measurement_time(Duration::from_secs(10));
    let mut next = FIRST_TICK;
    group.bench_function("steady_10pct_churn", |b| {
        b.iter(|| {
            next += 1;
            black_box(tick(&fleet, next, &tables))
        })
    });
    group.sample_size(10);
    group.bench_function("cold_first_tick", |b| {
        b.iter_batched(
            || SimFleet::new(config()).expect("valid config"),
            |fresh| black_box(tick(&fresh, FIRST_TICK, &tables)),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
