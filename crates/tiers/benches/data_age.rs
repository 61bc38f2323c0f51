//! Data age at first queryability across real tiers: agents, proxies, a TLA
//! and a SQL node in one process, talking Arrow Flight over loopback. A row
//! is published on an agent at a random moment within a tick; the clock
//! stops when a query on the SQL node first returns it.
//!
//! `cargo bench --workspace --profile dev --bench data_age`
//! (`FLEETSQL_BENCH_TICK=5s`, `FLEETSQL_BENCH_SAMPLES=20` to change).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use fleetsql_tiers::{
    AgentEntry, AgentProcess, Listen, ProxyEntry, SqlNodeEntry, SqlProcess, TierProcess, TlaEntry,
    Topology,
};

fn any() -> Option<SocketAddr> {
    Some("127.0.0.1:0".parse().unwrap())
}

fn listen() -> Listen {
    Listen {
        flight: any(),
        http: any(),
        publish: any(),
        pg: any(),
        flightsql: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() {
    let tick = std::env::var("FLEETSQL_BENCH_TICK")
        .ok()
        .and_then(|t| fleetsql_model::duration::parse(&t).ok())
        .unwrap_or(Duration::from_secs(1));
    let samples: usize = std::env::var("FLEETSQL_BENCH_SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(run(tick, samples));
}

async fn run(tick: Duration, samples: usize) {
    let mut topology = Topology {
        tick,
        ..Topology::default()
    };
    for (name, cluster) in [("a1", "c1"), ("a2", "c1"), ("a3", "c2"), ("a4", "c2")] {
        topology.agents.insert(
            name.into(),
            AgentEntry {
                cluster: cluster.into(),
                host: Some(name.into()),
                ip: Some(format!("10.0.0.{}", &name[1..])),
                host_collectors: Some(false),
                ..AgentEntry::default()
            },
        );
    }
    for cluster in ["c1", "c2"] {
        topology.proxies.insert(
            format!("p-{cluster}"),
            ProxyEntry {
                cluster: cluster.into(),
                ..ProxyEntry::default()
            },
        );
    }
    topology.tlas.insert("t1".into(), TlaEntry::default());
    topology.sqlnodes.insert(
        "s1".into(),
        SqlNodeEntry {
            tlas: [("t1".to_string(), 0)].into(),
            ..SqlNodeEntry::default()
        },
    );

    let mut agents = Vec::new();
    for name in ["a1", "a2", "a3", "a4"] {
        let agent = AgentProcess::start(&topology, name, listen())
            .await
            .unwrap();
        topology.agents.get_mut(name).unwrap().flight = Some(agent.flight_addr());
        agents.push(agent);
    }
    let mut tiers = Vec::new();
    for name in ["p-c1", "p-c2"] {
        let proxy = TierProcess::start_proxy(&topology, name, listen())
            .await
            .unwrap();
        topology.proxies.get_mut(name).unwrap().flight = Some(proxy.flight_addr());
        tiers.push(proxy);
    }
    let tla = TierProcess::start_tla(&topology, "t1", listen())
        .await
        .unwrap();
    topology.tlas.get_mut("t1").unwrap().flight = Some(tla.flight_addr());
    tiers.push(tla);
    let sql = SqlProcess::start(&topology, "s1", listen()).await.unwrap();
    let node = sql.node().clone();

    let probe = |marker: i64| {
        RecordBatch::try_from_iter([("marker", Arc::new(Int64Array::from(vec![marker])) as _)])
            .unwrap()
    };
    // Name the table once so every tier collects it from now on.
    agents[0]
        .agent()
        .publish("age_probe", "bench", &probe(-1))
        .unwrap();
    let deadline = Instant::now() + tick * 10 + Duration::from_secs(10);
    while let Err(e) = node.query("SELECT count(*) FROM age_probe").await {
        if Instant::now() > deadline {
            let g = node.current();
            panic!(
                "age_probe never became queryable: {e}; generation {} children {:?} tables {:?}",
                g.meta.id,
                g.meta.visibility.children,
                g.meta.visibility.tables.keys().collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut ages = Vec::new();
    for k in 0..samples {
        // Spread publish moments over the tick (golden-ratio steps).
        let phase = (k as f64 * 0.618_034).fract();
        tokio::time::sleep(tick.mul_f64(phase)).await;
        let agent = &agents[k % agents.len()];
        let marker = k as i64;
        let published = Instant::now();
        agent
            .agent()
            .publish("age_probe", "bench", &probe(marker))
            .unwrap();
        let sql = format!("SELECT count(*) FROM age_probe WHERE marker = {marker}");
        loop {
            if let Ok(out) = node.query(&sql).await {
                let rows = fleetsql_http::batches_to_rows(&out.batches).unwrap();
                if rows
                    .first()
                    .and_then(|r| r.first())
                    .and_then(|v| v.as_i64())
                    == Some(1)
                {
                    break;
                }
            }
            assert!(published.elapsed() < tick * 10, "sample {k} never arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ages.push(published.elapsed());
        eprint!("\rsample {}/{samples}", k + 1);
    }
    eprintln!();
    ages.sort();
    let target = tick * 2 + Duration::from_secs(1);
    let p50 = percentile(&ages, 0.5);
    let p99 = percentile(&ages, 0.99);
    println!(
        "| data age, publish to first query (tick {:?}, {samples} samples) | p50 {:.0} ms | p99 {:.0} ms | target <= {:.0} ms | p99/target {:.2} |",
        tick,
        p50.as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        target.as_secs_f64() * 1000.0,
        p99.as_secs_f64() / target.as_secs_f64()
    );
    sql.shutdown().await;
    for tier in tiers {
        tier.shutdown().await;
    }
    for agent in agents {
        agent.shutdown().await;
    }
}
