//! Speed figures for issue 5, printed as Markdown tables for BENCHMARKS.md.
//!
//! Run: `cargo bench --workspace --profile dev --bench pqa` (fleetsql-pqa is
//! built with opt-level 3 in the dev profile, see the root Cargo.toml).
//! `PQA_BENCH_SCALE=0.1` for a quick run, `PQA_BENCH_ONLY=anchor,avg,json,many`
//! to pick cases, `PQA_BENCH_REPEAT=N` to repeat the timed loops (profiling).
//!
//! Every engine figure comes with a baseline measured in the same run over
//! the same decoded input: a plain Rust loop doing the statement's
//! arithmetic with nothing else (no windows API, no output rows, no
//! generality). The ratio says how far the engine is from that floor;
//! events/s depend on the machine, the ratio much less.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetsql_pqa::{
    Clock, Engine, EngineConfig, EventBatch, Limits, Output, PqaService, Publish, ServiceConfig,
    router,
};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::json;

fn scale() -> f64 {
    std::env::var("PQA_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn repeat() -> usize {
    std::env::var("PQA_BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Events per typed batch (the size of a modest NDJSON POST).
const BATCH: usize = 1024;

fn rate(events: usize, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64()
}

fn print_row(case: &str, events: usize, took: Duration, baseline: Duration, target: &str) {
    println!(
        "| {case} | {events} | {:.3} s | {:.2} M | {:.2} M | {:.2}x | {target} |",
        took.as_secs_f64(),
        rate(events, took) / 1e6,
        rate(events, baseline) / 1e6,
        took.as_secs_f64() / baseline.as_secs_f64(),
    );
}

/// Best of `repeat()` runs of `f` (the first run also warms caches and allocators).
fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..repeat().max(1)).map(|_| f()).min().unwrap_or_default()
}

fn batches(e: &mut Engine, stream: &str, events: &[serde_json::Value]) -> Vec<EventBatch> {
    let h = e.stream(stream);
    events
        .chunks(BATCH)
        .map(|c| {
            let (b, errors) = e.prepare_batch(h, c);
            assert!(errors.is_empty());
            b
        })
        .collect()
}

fn anchor() {
    let n = (4_000_000.0 * scale()) as usize;
    let epl = "select p0, sum(p1) from SampleEvent group by p0 having sum(p1) >= 100000000";
    // 1,000 groups; p1 in 0..100, so sums pass 10^8 only after ~2 million events per group:
    // the having clause is evaluated on every event and never passes, as in Esper's run.
    let input: Vec<serde_json::Value> = (0..n)
        .map(|i| json!({"p0": format!("S{}", i % 1000), "p1": (i % 100) as i64}))
        .collect();

    // Baseline: the same sums in a plain loop over the same decoded values
    // (group index = p0's number, so no hashing at all).
    let keys: Vec<usize> = (0..n).map(|i| i % 1000).collect();
    let vals: Vec<i64> = (0..n).map(|i| (i % 100) as i64).collect();
    let baseline = best(|| {
        let mut sums = vec![0i64; 1000];
        let mut hits = 0usize;
        let t = Instant::now();
        for i in 0..n {
            let s = &mut sums[black_box(keys[i])];
            *s += black_box(vals[i]);
            if *s >= 100_000_000 {
                hits += 1;
            }
        }
        let took = t.elapsed();
        black_box((hits, &sums));
        took
    });

    // Engine, typed batches (what POST /v1/events and fleet generations use).
    let mut outs = 0;
    let batch_time = best(|| {
        let mut e = Engine::new(EngineConfig::default());
        let id = e.register(epl).unwrap().unwrap();
        assert!(e.uses_kernel(id));
        let bs = batches(&mut e, "SampleEvent", &input);
        let mut out: Vec<Output> = Vec::new();
        let t = Instant::now();
        for b in &bs {
            e.push_batch(b, &mut out);
        }
        let took = t.elapsed();
        outs = out.len();
        took
    });
    assert_eq!(outs, 0);
    print_row(
        &format!("Esper anchor `{epl}`, 1,000 groups, typed batches of {BATCH}"),
        n,
        batch_time,
        baseline,
        ">= 10 M/s",
    );

    // Engine, one prepared event at a time (`Engine::push_prepared`).
    let event_time = best(|| {
        let mut e = Engine::new(EngineConfig::default());
        e.register(epl).unwrap();
        let h = e.stream("SampleEvent");
        let events: Vec<_> = input.iter().map(|v| e.prepare(h, v).unwrap()).collect();
        let mut out = Vec::new();
        let t = Instant::now();
        for ev in events {
            e.push_prepared(h, ev, &mut out);
        }
        t.elapsed()
    });
    print_row(
        "same, one `Arc<Event>` at a time (`push_prepared`, event freed by the engine)",
        n,
        event_time,
        baseline,
        "",
    );

    // The general path (kernels off) for comparison.
    let general = best(|| {
        let mut e = Engine::new(EngineConfig::default());
        e.set_kernels(false);
        e.register(epl).unwrap();
        let bs = batches(&mut e, "SampleEvent", &input);
        let mut out = Vec::new();
        let t = Instant::now();
        for b in &bs {
            e.push_batch(b, &mut out);
        }
        t.elapsed()
    });
    print_row(
        "same, typed batches, kernels off (general path)",
        n,
        general,
        baseline,
        "",
    );
}

fn avg_time_window() {
    let n = (2_000_000.0 * scale()) as usize;
    let epl = "select avg(memutil) as avgMemUtil from MemUtilEvent(host != 'skip').win:time(20 sec) where avgMemUtil > 70";
    // 10 events per ms of event time: ~200,000 events in the window; every
    // 13th event is filtered out; the average stays near 49.5, so no row.
    let input: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let host = if i % 13 == 0 {
                "skip".to_string()
            } else {
                format!("h{}", i % 50)
            };
            json!({"ts": (i / 10) as i64, "host": host, "memutil": (i % 100) as f64})
        })
        .collect();

    // Baseline: the filter, a deque of (time, value), a running sum and count.
    let ts: Vec<i64> = (0..n).map(|i| (i / 10) as i64).collect();
    let skip: Vec<bool> = (0..n).map(|i| i % 13 == 0).collect();
    let mem: Vec<f64> = (0..n).map(|i| (i % 100) as f64).collect();
    let baseline = best(|| {
        let mut win: VecDeque<(i64, f64)> = VecDeque::new();
        let (mut sum, mut count, mut hits) = (0.0f64, 0i64, 0usize);
        let t = Instant::now();
        for i in 0..n {
            let now = black_box(ts[i]);
            while let Some(&(t0, v)) = win.front() {
                if t0 + 20_000 > now {
                    break;
                }
                win.pop_front();
                sum -= v;
                count -= 1;
            }
            if black_box(skip[i]) {
                continue;
            }
            win.push_back((now, mem[i]));
            sum += mem[i];
            count += 1;
            if sum / count as f64 > 70.0 {
                hits += 1;
            }
        }
        let took = t.elapsed();
        black_box((hits, sum));
        took
    });

    let config = || EngineConfig {
        timestamp_field: Some("ts".into()),
        clock: Clock::Manual,
    };
    let mut outs = 0;
    let batch_time = best(|| {
        let mut e = Engine::new(config());
        let id = e.register(epl).unwrap().unwrap();
        assert!(e.uses_kernel(id));
        let bs = batches(&mut e, "MemUtilEvent", &input);
        let mut out: Vec<Output> = Vec::new();
        let t = Instant::now();
        for b in &bs {
            e.push_batch(b, &mut out);
            outs += out.len();
            out.clear();
        }
        t.elapsed()
    });
    assert_eq!(outs, 0);
    print_row(
        &format!(
            "`{epl}` (seed example 1 + a stream filter), ~200,000 events in the window, typed batches of {BATCH}"
        ),
        n,
        batch_time,
        baseline,
        ">= 5 M/s",
    );
    let event_time = best(|| {
        let mut e = Engine::new(config());
        e.register(epl).unwrap();
        let h = e.stream("MemUtilEvent");
        let events: Vec<_> = input.iter().map(|v| e.prepare(h, v).unwrap()).collect();
        let mut out = Vec::new();
        let t = Instant::now();
        for ev in events {
            e.push_prepared(h, ev, &mut out);
            out.clear();
        }
        t.elapsed()
    });
    print_row(
        "same, one `Arc<Event>` at a time",
        n,
        event_time,
        baseline,
        "",
    );
    let general = best(|| {
        let mut e = Engine::new(config());
        e.set_kernels(false);
        e.register(epl).unwrap();
        let bs = batches(&mut e, "MemUtilEvent", &input);
        let mut out = Vec::new();
        let t = Instant::now();
        for b in &bs {
            e.push_batch(b, &mut out);
            out.clear();
        }
        t.elapsed()
    });
    print_row(
        "same, typed batches, kernels off (general path)",
        n,
        general,
        baseline,
        "",
    );
    // Issue 23: `irstream` runs on the kernel too (the remove stream is each
    // touched group as it was before the update).
    let irstream = [
        (
            "select irstream avg(memutil) as avgMemUtil from MemUtilEvent(host != 'skip').win:time(20 sec) where avgMemUtil > 70",
            "same with `irstream` (no row passes)",
        ),
        (
            "select irstream avg(memutil) as avgMemUtil from MemUtilEvent(host != 'skip').win:time(20 sec)",
            "`select irstream avg(memutil) as avgMemUtil from MemUtilEvent(host != 'skip').win:time(20 sec)`: an insert and a remove row per event",
        ),
    ];
    for (epl, label) in irstream {
        let mut rows = 0usize;
        let took = best(|| {
            let mut e = Engine::new(config());
            let id = e.register(epl).unwrap().unwrap();
            assert!(e.uses_kernel(id));
            let bs = batches(&mut e, "MemUtilEvent", &input);
            let mut out: Vec<Output> = Vec::new();
            rows = 0;
            let t = Instant::now();
            for b in &bs {
                e.push_batch(b, &mut out);
                rows += out
                    .iter()
                    .map(|o| o.rows.len() + o.old.len())
                    .sum::<usize>();
                out.clear();
            }
            t.elapsed()
        });
        black_box(rows);
        print_row(label, n, took, baseline, ">= 1 M/s");
    }
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
    let text = lines.join("\n");
    // Baseline: serde_json parsing alone.
    let baseline = best(|| {
        let t = Instant::now();
        let mut k = 0usize;
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            k += v.as_object().map_or(0, |o| o.len());
        }
        black_box(k);
        t.elapsed()
    });
    let batch_time = best(|| {
        let mut e = Engine::new(EngineConfig::default());
        let h = e.stream("SampleEvent");
        let t = Instant::now();
        let mut k = 0usize;
        let mut chunk = Vec::with_capacity(BATCH);
        for l in text.lines() {
            chunk.push(serde_json::from_str::<serde_json::Value>(l).unwrap());
            if chunk.len() == BATCH {
                k += e.prepare_batch(h, &chunk).0.len();
                chunk.clear();
            }
        }
        k += e.prepare_batch(h, &chunk).0.len();
        assert_eq!(k, n);
        t.elapsed()
    });
    print_row(
        "NDJSON line -> typed batch row (serde_json parse + schema learning, type check, interning)",
        n,
        batch_time,
        baseline,
        "(reported)",
    );
    let event_time = best(|| {
        let mut e = Engine::new(EngineConfig::default());
        let h = e.stream("SampleEvent");
        let t = Instant::now();
        let mut k = 0usize;
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            k += e.prepare(h, &v).map(|_| 1).unwrap_or(0);
        }
        assert_eq!(k, n);
        t.elapsed()
    });
    print_row(
        "NDJSON line -> `Arc<Event>` (`prepare`)",
        n,
        event_time,
        baseline,
        "(reported)",
    );
}

/// The `i`-th event's `v` for [`many_service`]'s statements: with
/// `selective` ones it cycles through a stream's constants, so exactly
/// one statement of the stream matches; otherwise it is above every
/// threshold, so all of them match.
fn many_value(selective: bool, i: usize, per_stream: usize) -> i64 {
    if selective {
        (i % per_stream) as i64
    } else {
        1_000_000
    }
}

/// Registers `queries` statements over `streams` streams. `selective`:
/// statement k of a stream filters `v = k`, so an event whose `v` is k
/// matches one statement of its stream (Esper's benchmark shape: many
/// statements, each on its own key); otherwise `v > k`, which every event
/// of the bench matches (see [`many_value`]).
fn many_service(queries: usize, streams: usize, selective: bool) -> (PqaService, Vec<String>) {
    let svc = PqaService::new(ServiceConfig {
        engine: EngineConfig {
            timestamp_field: Some("seq".into()),
            clock: Clock::Manual,
        },
        topic_capacity: 4096,
        // A subscriber on every one of the 10,000 topics, plus the SSE
        // clients: above the node's default of 4,096.
        limits: Limits {
            max_subscribers: 2 * queries + 1_000,
            ..Limits::default()
        },
        ..ServiceConfig::default()
    });
    let mut ids = Vec::new();
    for q in 0..queries {
        // Distinct constants keep the statements from being shared.
        let op = if selective { "=" } else { ">" };
        let epl = format!(
            "select v, host, seq from S{}(v {op} {}) where host != 'none'",
            q % streams,
            q / streams
        );
        ids.push(svc.register(&epl, Publish::All, None).unwrap().id);
    }
    (svc, ids)
}

fn many_queries() {
    let queries = (10_000.0 * scale().max(0.01)) as usize;
    let streams = 100;
    let per_event = queries / streams;
    println!();
    println!(
        "| {queries} queries over {streams} streams ({per_event} per stream) | events | time | events/s | notifications/s |"
    );
    println!("|---|---|---|---|---|");
    let n = (20_000.0 * scale()) as usize;
    let input = |selective: bool| -> Vec<Vec<serde_json::Value>> {
        (0..streams)
            .map(|s| {
                (0..n / streams)
                    .map(|i| {
                        let v = many_value(selective, i, per_event);
                        json!({"seq": (i * streams + s) as i64, "v": v, "host": "h"})
                    })
                    .collect()
            })
            .collect()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    for (label, subscribed, selective) in [
        (
            "`S{k}(v > N)`, a subscriber on every topic (every notification built and serialized)",
            queries,
            false,
        ),
        (
            "`S{k}(v > N)`, subscribers on 1 query per stream (the others only counted)",
            streams,
            false,
        ),
        (
            "`S{k}(v = N)`, a subscriber on every topic, one statement of the stream matches each event",
            queries,
            true,
        ),
    ] {
        let (svc, ids) = many_service(queries, streams, selective);
        let input = input(selective);
        let matched = if selective { 1 } else { per_event };
        // Idle subscriptions: publishing never waits for them.
        let subs: Vec<_> = ids
            .iter()
            .take(subscribed)
            .map(|id| svc.topic(id).unwrap().subscribe())
            .collect();
        let t = Instant::now();
        // One JSON event per call, streams interleaved: the worst case for batching.
        let names: Vec<String> = (0..streams).map(|s| format!("S{s}")).collect();
        for i in 0..n / streams {
            for (name, events) in names.iter().zip(&input) {
                svc.push_event(name, &events[i]).unwrap();
            }
        }
        let took = t.elapsed();
        let events = (n / streams) * streams;
        println!(
            "| one JSON event per call, {label} | {events} | {:.3} s | {:.0} | {:.0} |",
            took.as_secs_f64(),
            rate(events, took),
            rate(events * matched, took)
        );
        drop(subs);
    }
    drop(_guard);
    drop(rt);
    many_engine(queries, streams);
    latency(queries, streams);
}

/// The engine alone (no topics): the same 10,000 statements and the
/// same kind of statements on equality filters, routed through the shared
/// filter index and, for comparison, handed to every statement of the
/// stream (`Engine::set_filter_index(false)`, the dispatch before the index).
fn many_engine(queries: usize, streams: usize) {
    let n = (20_000.0 * scale()) as usize;
    let per_stream = queries / streams;
    println!();
    println!(
        "| engine only, {queries} statements over {streams} streams, one prepared event per call | events | index on | index off | on / off | outputs per event |"
    );
    println!("|---|---|---|---|---|---|");
    // (label, statement k of stream s, value of v in the i-th event of a stream)
    type Case = (
        &'static str,
        fn(usize, usize) -> String,
        fn(usize, usize) -> i64,
    );
    let cases: [Case; 3] = [
        (
            "`S{k}(v > N) where host != 'none'`, every statement of the stream matches",
            |k, n| format!("select v, host, seq from S{k}(v > {n}) where host != 'none'"),
            |_, _| 1_000_000,
        ),
        (
            "`S{k}(v > N) where host != 'none'`, v spread: half of the stream's statements match",
            |k, n| format!("select v, host, seq from S{k}(v > {n}) where host != 'none'"),
            |i, per| (i % per) as i64,
        ),
        (
            "`S{k}(v = N) where host != 'none'`: one statement of the stream matches",
            |k, n| format!("select v, host, seq from S{k}(v = {n}) where host != 'none'"),
            |i, per| (i % per) as i64,
        ),
    ];
    for (label, epl, value) in cases {
        let outputs = std::cell::Cell::new(0usize);
        let time = |index: bool| {
            best(|| {
                let mut e = Engine::new(EngineConfig {
                    timestamp_field: Some("seq".into()),
                    clock: Clock::Manual,
                });
                e.set_filter_index(index);
                for q in 0..queries {
                    e.register(&epl(q % streams, q / streams)).unwrap();
                }
                let handles: Vec<_> = (0..streams).map(|s| e.stream(&format!("S{s}"))).collect();
                let events: Vec<_> = (0..n)
                    .map(|i| {
                        let s = i % streams;
                        let v = value(i / streams, per_stream);
                        let ev = json!({"seq": i as i64, "v": v, "host": "h"});
                        (handles[s], e.prepare(handles[s], &ev).unwrap())
                    })
                    .collect();
                let mut out = Vec::new();
                let mut count = 0;
                let t = Instant::now();
                for (h, ev) in events {
                    e.push_prepared(h, ev, &mut out);
                    count += out.len();
                    out.clear();
                }
                let took = t.elapsed();
                outputs.set(count);
                took
            })
        };
        let on = time(true);
        let on_outputs = outputs.get();
        let off = time(false);
        assert_eq!(on_outputs, outputs.get(), "index on and off disagree");
        println!(
            "| {label} | {n} | {:.0} events/s | {:.0} events/s | {:.1}x | {:.1} |",
            rate(n, on),
            rate(n, off),
            off.as_secs_f64() / on.as_secs_f64(),
            outputs.get() as f64 / n as f64
        );
    }
}

/// How the latency case offers its events.
struct Offered {
    label: &'static str,
    /// `S{k}(v = N)` statements, one matching each event; else `v > N`,
    /// all of the stream's matching.
    selective: bool,
    /// Events per `POST /v1/events/S{k}` (a JSON array when more than
    /// one); successive POSTs go to successive streams.
    per_post: usize,
    posts_per_s: u32,
    events: usize,
}

/// Event arrival (client sends `POST /v1/events/S{k}`) to the SSE frame
/// read by a client on the other end of a loopback connection.
fn latency(queries: usize, streams: usize) {
    println!();
    println!(
        "| latency, {queries} queries, {streams} SSE clients | offered | notifications | p50 | p99 | max | target |"
    );
    println!("|---|---|---|---|---|---|---|");
    let cases = [
        Offered {
            label: "`S{k}(v > N)`, one event per POST",
            selective: false,
            per_post: 1,
            // Below what this case sustains (about 2,000 events/s above,
            // 100 notifications each): latency, not queueing.
            posts_per_s: 1_000,
            events: (4_000.0 * scale().max(0.1)) as usize,
        },
        Offered {
            label: "`S{k}(v = N)`, a subscriber on every topic, 100 events per POST (each of the stream's statements matched once)",
            selective: true,
            per_post: streams,
            posts_per_s: 1_000,
            events: (400_000.0 * scale().max(0.01)) as usize,
        },
    ];
    for case in cases {
        latency_case(queries, streams, &case);
    }
}

fn latency_case(queries: usize, streams: usize, case: &Offered) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let per_stream = queries / streams;
        let (svc, ids) = many_service(queries, streams, case.selective);
        // Idle in-process subscriptions on every topic: each notification
        // is built and serialized, as with a subscriber per query.
        let idle: Vec<_> = if case.selective {
            ids.iter().map(|id| svc.topic(id).unwrap().subscribe()).collect()
        } else {
            Vec::new()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router(svc)).await;
        });
        let base = format!("http://{addr}");
        let client = reqwest::Client::new();
        let m = case.events - case.events % case.per_post.max(1);
        // Event i goes with its POST to stream (i / per_post) % streams.
        let value = |i: usize| many_value(case.selective, i, per_stream);
        let stream_of = |i: usize| (i / case.per_post) % streams;
        let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; m]));
        let lat: Arc<Mutex<Vec<Duration>>> = Arc::new(Mutex::new(Vec::with_capacity(m)));
        // One SSE client per stream, on the first query of each stream
        // (selective: `v = 0`); as many of its notifications per stream.
        let wanted = (0..m)
            .filter(|&i| stream_of(i) == 0 && (!case.selective || value(i) == 0))
            .count();
        let mut readers = Vec::new();
        for id in ids.iter().take(streams) {
            let resp = client
                .get(format!("{base}/v1/persistent-queries/{id}/events"))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
            let (sent, lat) = (sent.clone(), lat.clone());
            readers.push(tokio::spawn(async move {
                let mut body = resp.bytes_stream();
                let mut buf = String::new();
                let mut seen = 0usize;
                while seen < wanted {
                    let Some(Ok(chunk)) = body.next().await else {
                        return;
                    };
                    let at = Instant::now();
                    buf.push_str(std::str::from_utf8(&chunk).unwrap_or(""));
                    while let Some(end) = buf.find("\n\n") {
                        let frame: String = buf.drain(..end + 2).collect();
                        let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) else {
                            continue;
                        };
                        let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) else {
                            continue;
                        };
                        let Some(seq) = v["time"].as_i64() else {
                            continue;
                        };
                        if let Some(Some(t0)) = sent.lock().get(seq as usize) {
                            lat.lock().push(at - *t0);
                            seen += 1;
                        }
                    }
                }
            }));
        }
        // Offered load at a steady pace; each POST its own task, so a slow
        // answer does not lower the rate offered.
        let pace = Duration::from_secs(1) / case.posts_per_s;
        let start = Instant::now();
        let mut next = tokio::time::Instant::now();
        let mut posts = Vec::with_capacity(m / case.per_post);
        for first in (0..m).step_by(case.per_post) {
            next += pace;
            tokio::time::sleep_until(next).await;
            let idx = first..first + case.per_post;
            let body = if case.per_post == 1 {
                json!({"seq": first as i64, "v": value(first), "host": "h"}).to_string()
            } else {
                let events: Vec<_> = idx
                    .clone()
                    .map(|i| json!({"seq": i as i64, "v": value(i), "host": "h"}))
                    .collect();
                serde_json::Value::Array(events).to_string()
            };
            let now = Instant::now();
            for i in idx.clone() {
                sent.lock()[i] = Some(now);
            }
            let url = format!("{base}/v1/events/S{}", stream_of(first));
            let client = client.clone();
            posts.push(tokio::spawn(async move {
                let r = client.post(url).body(body).send().await.unwrap();
                assert!(r.status().is_success());
            }));
        }
        for p in posts {
            p.await.unwrap();
        }
        let offered = start.elapsed();
        for r in readers {
            let _ = tokio::time::timeout(Duration::from_secs(10), r).await;
        }
        server.abort();
        drop(idle);
        let mut lat = lat.lock().clone();
        lat.sort();
        if lat.is_empty() {
            println!("| {} | | none received | | | | |", case.label);
            return;
        }
        let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
        println!(
            "| {}: POST sent -> SSE frame read by the client, loopback | {:.0} events/s | {} of {} | {:.2?} | {:.2?} | {:.2?} | p99 <= 10 ms |",
            case.label,
            rate(m, offered),
            lat.len(),
            wanted * streams,
            p(0.5),
            p(0.99),
            lat[lat.len() - 1]
        );
    });
}

fn main() {
    // `cargo bench` passes --bench; nothing else is accepted.
    let only = std::env::var("PQA_BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|x| x == name);
    println!("| case | events | time | events/s | baseline events/s | time / baseline | target |");
    println!("|---|---|---|---|---|---|---|");
    if run("anchor") {
        anchor();
    }
    if run("avg") {
        avg_time_window();
    }
    if run("json") {
        json_decoding();
    }
    if run("many") {
        many_queries();
    }
}
