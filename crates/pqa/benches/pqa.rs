//! End-to-end speed figures for issue 5, printed as a table (run with
//! `cargo bench -p fleetsql-pqa`; `PQA_BENCH_SCALE=0.1` for a quick run).
//! Input is decoded before timing except in the JSON-decoding row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetsql_pqa::{Clock, Engine, EngineConfig, PqaService, Publish, ServiceConfig};
use serde_json::json;

fn scale() -> f64 {
    std::env::var("PQA_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn row(name: &str, events: usize, took: Duration, target: &str) {
    let rate = events as f64 / took.as_secs_f64();
    println!(
        "| {name} | {events} | {:.3} s | {:.0} | {target} |",
        took.as_secs_f64(),
        rate
    );
}

fn anchor() {
    let n = (4_000_000.0 * scale()) as usize;
    let mut e = Engine::new(EngineConfig::default());
    e.register("select p0, sum(p1) from SampleEvent group by p0 having sum(p1) >= 100000000")
        .unwrap();
    let h = e.stream("SampleEvent");
    let events: Vec<_> = (0..n)
        .map(|i| {
            e.prepare(
                h,
                &json!({"p0": format!("S{}", i % 1000), "p1": (i % 100) as i64}),
            )
            .unwrap()
        })
        .collect();
    let mut out = Vec::new();
    let t = Instant::now();
    for ev in events {
        e.push_prepared(h, ev, &mut out);
    }
    row(
        "Esper anchor: `select p0, sum(p1) from SampleEvent group by p0 having sum(p1) >= 100000000`",
        n,
        t.elapsed(),
        ">= 10,000,000/s",
    );
    assert!(out.is_empty());
}

fn avg_time_window() {
    let n = (2_000_000.0 * scale()) as usize;
    let mut e = Engine::new(EngineConfig {
        timestamp_field: Some("ts".into()),
        clock: Clock::Manual,
    });
    e.register("select avg(memutil) as avgMemUtil from MemUtilEvent(host != 'skip').win:time(20 sec) where avgMemUtil > 70")
        .unwrap();
    let h = e.stream("MemUtilEvent");
    // 10 events per ms of event time: about 200,000 events in the window.
    let events: Vec<_> = (0..n)
        .map(|i| e.prepare(h, &json!({"ts": (i / 10) as i64, "host": format!("h{}", i % 50), "memutil": (i % 100) as f64})).unwrap())
        .collect();
    let mut out = Vec::new();
    let t = Instant::now();
    for ev in events {
        e.push_prepared(h, ev, &mut out);
        out.clear();
    }
    row(
        "avg over `.win:time(20 sec)` with a filter (seed example 1 + stream filter)",
        n,
        t.elapsed(),
        ">= 5,000,000/s",
    );
}

fn json_decoding() {
    let n = (1_000_000.0 * scale()) as usize;
    let lines: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{\"p0\":\"S{}\",\"p1\":{},\"host\":\"h{}\"}}",
                i % 1000,
                i % 100,
                i % 50
            )
        })
        .collect();
    let mut e = Engine::new(EngineConfig::default());
    let h = e.stream("SampleEvent");
    let t = Instant::now();
    let mut k = 0usize;
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        k += e.prepare(h, &v).map(|_| 1).unwrap_or(0);
    }
    row(
        "JSON text -> typed event (serde_json parse + schema/type check)",
        k,
        t.elapsed(),
        "(reported)",
    );
}

fn many_queries() {
    let queries = (10_000.0 * scale().max(0.01)) as usize;
    let streams = 100;
    let svc = PqaService::new(ServiceConfig {
        engine: EngineConfig {
            timestamp_field: Some("seq".into()),
            clock: Clock::Manual,
        },
        topic_capacity: 4096,
        ..ServiceConfig::default()
    });
    let mut ids = Vec::new();
    for q in 0..queries {
        // Distinct thresholds keep the statements from being shared.
        let epl = format!(
            "select v, host from S{}(v > {}) where host != 'none'",
            q % streams,
            q / streams
        );
        ids.push(svc.register(&epl, Publish::All, None).unwrap().id);
    }
    let per_query_trigger = queries / streams;
    // Throughput: no subscribers; each event triggers every query of its stream.
    let n = (20_000.0 * scale()) as usize;
    let t = Instant::now();
    for i in 0..n {
        svc.push_event(
            &format!("S{}", i % streams),
            &json!({"seq": i as i64, "v": 1_000_000, "host": "h"}),
        )
        .unwrap();
    }
    let took = t.elapsed();
    println!(
        "| {queries} queries over {streams} streams, each event triggers {per_query_trigger} queries (JSON in, notifications out) | {n} | {:.3} s | {:.0} | (reported) |",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );

    // Latency: one subscriber on 100 queries (one per stream), events at a steady pace.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(i64, Instant)>();
    let _guard = rt.enter();
    for id in ids.iter().take(streams) {
        let mut sub = svc.topic(id).unwrap().subscribe();
        let tx = tx.clone();
        rt.spawn(async move {
            while let Ok(p) = sub.next().await {
                let _ = tx.send((p.notification.time, Instant::now()));
            }
        });
    }
    drop(tx);
    let m = (2_000.0 * scale().max(0.1)) as usize;
    let base = n as i64;
    let mut sent: Vec<Instant> = Vec::with_capacity(m);
    for i in 0..m {
        let start = Instant::now();
        sent.push(start);
        svc.push_event(
            &format!("S{}", i % streams),
            &json!({"seq": base + i as i64, "v": 1_000_000, "host": "h"}),
        )
        .unwrap();
        while start.elapsed() < Duration::from_micros(500) {
            std::hint::spin_loop();
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut lat: Vec<Duration> = rx
        .try_iter()
        .filter(|(t, _)| *t >= base)
        .map(|(t, at)| at - sent[(t - base) as usize])
        .collect();
    lat.sort();
    if lat.is_empty() {
        println!("| latency: no notifications received | | | | |");
        return;
    }
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "| event arrival -> subscriber received (topic = what SSE reads), {queries} queries, 2,000 events/s | {} notifications | p50 {:?} | p99 {:?} | p99 <= 10 ms |",
        lat.len(),
        p(0.5),
        p(0.99)
    );
    drop(Arc::new(()));
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    println!("| case | events | time | events/s | target |");
    println!("|---|---|---|---|---|");
    anchor();
    avg_time_window();
    json_decoding();
    many_queries();
}
