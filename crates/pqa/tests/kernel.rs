//! The compiled fast path (kernels) and typed batches give exactly the rows
//! of the general path: every statement runs three ways over the same
//! events and the outputs are compared.

use fleetsql_pqa::{Clock, Engine, EngineConfig, Output, Row, StatementId};
use serde_json::json;

fn engine(kernels: bool) -> Engine {
    let mut e = Engine::new(EngineConfig {
        timestamp_field: Some("ts".into()),
        clock: Clock::Manual,
    });
    e.set_kernels(kernels);
    e
}

/// A deterministic mix of events: string and integer keys, ints and floats,
/// missing fields, a string where numbers are expected in another stream.
fn events(n: usize) -> Vec<serde_json::Value> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let r = next();
            let mut ev = json!({
                "ts": (i as i64) * 137,
                "host": format!("h{}", r % 7),
                "rack": (r >> 8) % 3,
                "cpu": ((r >> 16) % 100) as f64 + 0.5,
                "mem": (r >> 24) % 100,
            });
            if r % 11 == 0 {
                ev.as_object_mut().unwrap().remove("mem");
            }
            if r % 13 == 0 {
                ev["host"] = json!("skip");
            }
            ev
        })
        .collect()
}

const STATEMENTS: &[&str] = &[
    "select p0, sum(p1) from SampleEvent group by p0 having sum(p1) >= 100000000",
    "select host, sum(mem) as s, count(*) as n from M group by host having sum(mem) >= 300",
    "select avg(cpu) as avgCpu from M(host != 'skip').win:time(20 sec) where avgCpu > 50",
    "select host, avg(cpu) as a, count(mem) as c from M.win:time(5 sec) where mem > 20 group by host",
    "select rack, sum(cpu), sum(mem) from M.win:length(10) where host != 'h3' group by rack having count(*) > 2 or sum(mem) < 50",
    "select count(host) as hosts, sum(mem) * 2 as twice from M.win:length(4)",
    "insert into Busy select host, avg(cpu) as a from M.win:time(3 sec) group by host having avg(cpu) > 60",
    "select host, count(*) as n from Busy.win:length(5) group by host",
];

/// (statement, time, rows) of every output, in order.
type Outputs = Vec<(u64, i64, Vec<Row>)>;

fn run(mode: &str, evs: &[serde_json::Value]) -> (Outputs, Vec<bool>) {
    let mut e = engine(mode != "general");
    let ids: Vec<StatementId> = STATEMENTS
        .iter()
        .map(|s| e.register(s).unwrap().unwrap())
        .collect();
    let kernels = ids.iter().map(|id| e.uses_kernel(*id)).collect();
    let mut out: Vec<Output> = Vec::new();
    match mode {
        "batch" => {
            let h = e.stream("M");
            for (i, chunk) in evs.chunks(37).enumerate() {
                let (batch, errors) = e.prepare_batch(h, chunk);
                assert!(errors.is_empty(), "{errors:?}");
                e.push_batch(&batch, &mut out);
                if i % 5 == 4 {
                    let to = e.now() + 2_500;
                    e.advance_time_into(to, &mut out);
                }
            }
        }
        _ => {
            for (i, chunk) in evs.chunks(37).enumerate() {
                for ev in chunk {
                    e.push_json_into("M", ev, &mut out).unwrap();
                }
                if i % 5 == 4 {
                    let to = e.now() + 2_500;
                    e.advance_time_into(to, &mut out);
                }
            }
        }
    }
    let rows = out
        .into_iter()
        .map(|o| (o.statement.0, o.time, o.rows))
        .collect();
    (rows, kernels)
}

#[test]
fn kernels_and_batches_give_the_rows_of_the_general_path() {
    let evs = events(3_000);
    let (general, none) = run("general", &evs);
    let (kernel, used) = run("kernel", &evs);
    let (batch, _) = run("batch", &evs);
    assert!(none.iter().all(|k| !k), "kernels were off: {none:?}");
    // All but the insert-into target read plain fields of one stream.
    assert_eq!(
        used,
        vec![true, true, true, true, true, true, true, true],
        "which statements compiled to kernels"
    );
    assert!(general.len() > 1_000, "only {} outputs", general.len());
    for sid in 1..STATEMENTS.len() as u64 {
        assert!(
            general.iter().any(|(s, _, _)| *s == sid),
            "statement {sid} never produced a row"
        );
    }
    assert_eq!(general.len(), kernel.len());
    for (i, (g, k)) in general.iter().zip(&kernel).enumerate() {
        assert_eq!(g, k, "output {i} differs between general path and kernel");
    }
    assert_eq!(general.len(), batch.len());
    for (i, (g, b)) in general.iter().zip(&batch).enumerate() {
        assert_eq!(g, b, "output {i} differs between general path and batch");
    }
}

#[test]
fn statements_outside_the_kernel_shape_use_the_general_path() {
    let mut e = engine(true);
    for epl in [
        "select host, cpu, avg(cpu) from M.win:time(5 sec)",
        "select host, max(cpu) from M group by host",
        "select host, sum(cpu) from M.win:length_batch(3) group by host",
        "select host, sum(cpu) from M group by host order by sum(cpu) desc",
        "select upper(host), count(*) from M group by upper(host)",
        "select count(*) from M(cpu * 2 > 10)",
    ] {
        let id = e.register(epl).unwrap().unwrap();
        assert!(!e.uses_kernel(id), "{epl}");
    }
    let id = e
        .register("select count(*) as n from M(cpu > 10).win:time(1 min)")
        .unwrap()
        .unwrap();
    assert!(e.uses_kernel(id));
}

#[test]
fn batches_count_bad_events_and_keep_the_good_ones() {
    let mut e = engine(true);
    e.register("select host, count(*) as n from M group by host")
        .unwrap();
    let h = e.stream("M");
    let input = vec![
        json!({"ts": 1, "host": "a", "cpu": 1}),
        json!([1, 2]),
        json!({"ts": 2, "host": 7, "cpu": 2}),
        json!({"ts": 3, "host": "a", "cpu": 3}),
    ];
    let (batch, errors) = e.prepare_batch(h, &input);
    assert_eq!(batch.len(), 2);
    assert_eq!(
        errors.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let mut out = Vec::new();
    e.push_batch(&batch, &mut out);
    let counts: Vec<_> = out
        .iter()
        .flat_map(|o| &o.rows)
        .map(|r| r.get("n").cloned())
        .collect();
    assert_eq!(counts, vec![Some(1i64.into()), Some(2i64.into())]);
    let stats = e.stream_stats();
    let m = &stats.iter().find(|(n, _)| n == "M").unwrap().1;
    assert_eq!((m.events, m.not_object, m.wrong_type), (2, 1, 1));
}
