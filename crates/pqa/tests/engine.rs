//! Engine behaviour with an explicit clock: windows, joins, patterns,
//! grouping, insert-into chains, output rate, the seed's examples.

use fleetsql_pqa::{Clock, Engine, EngineConfig, Output, Value};
use serde_json::json;

fn engine() -> Engine {
    Engine::new(EngineConfig {
        timestamp_field: Some("ts".into()),
        clock: Clock::Manual,
    })
}

/// Pushes `{ts, ...fields}` and returns the rows (as JSON) it triggered.
fn push(e: &mut Engine, stream: &str, v: serde_json::Value) -> Vec<serde_json::Value> {
    rows(e.push_json(stream, &v).expect("event accepted"))
}

fn rows(out: Vec<Output>) -> Vec<serde_json::Value> {
    out.into_iter()
        .flat_map(|o| o.rows)
        .map(|r| serde_json::Value::Object(r.to_json()))
        .collect()
}

#[test]
fn seed_example_average_memory_over_time_window() {
    let mut e = engine();
    e.register("select avg(memutil) as avgMemUtil\nfrom MemUtilEvent.win:time(20 sec)\nwhere avgMemUtil > 70")
        .unwrap();
    assert!(push(&mut e, "MemUtilEvent", json!({"ts": 0, "memutil": 60})).is_empty());
    // avg(60, 90) = 75 > 70: triggers.
    assert_eq!(
        push(&mut e, "MemUtilEvent", json!({"ts": 5000, "memutil": 90})),
        vec![json!({"avgMemUtil": 75.0})]
    );
    // avg(60, 90, 30) = 60: nothing.
    assert!(push(&mut e, "MemUtilEvent", json!({"ts": 10000, "memutil": 30})).is_empty());
    // At 20 s the 60 leaves: avg(90, 30) = 60, still nothing; at 25 s the 90 leaves: 30.
    assert!(rows(e.advance_time(26_000)).is_empty());
    // 30 and 100 -> 65; then 100, 100 (30 left at 30 s) -> 100.
    assert!(push(&mut e, "MemUtilEvent", json!({"ts": 27000, "memutil": 100})).is_empty());
    assert_eq!(
        rows(e.advance_time(30_000)),
        vec![json!({"avgMemUtil": 100.0})]
    );
}

#[test]
fn seed_example_join_of_two_length_windows() {
    for epl in [
        "select\nb.metricName as metricName1, b.metricValue as metricValue1,\nm.metricName as metricName2, m.metricValue as metricValue2\nfrom\nBWUtilization.win:length(1) as b,\nMemoryUtilization.win:length(1) as m\nwhere b.metricValue > 1.40012E9 and m.metricValue > 70",
        "select * from BWUtilization.win:length(1) as b, MemoryUtilization.win:length(1) as m where b.metricValue > 1.40012E9 and m.metricValue > 70",
    ] {
        let mut e = engine();
        e.register(epl).unwrap();
        assert!(
            push(
                &mut e,
                "BWUtilization",
                json!({"metricName": "bw", "metricValue": 1.5e9})
            )
            .is_empty()
        );
        assert!(
            push(
                &mut e,
                "MemoryUtilization",
                json!({"metricName": "mem", "metricValue": 60})
            )
            .is_empty()
        );
        let out = push(
            &mut e,
            "MemoryUtilization",
            json!({"metricName": "mem", "metricValue": 80}),
        );
        assert_eq!(out.len(), 1, "{epl}");
        if epl.contains('*') {
            assert_eq!(out[0]["b"]["metricValue"], json!(1.5e9));
            assert_eq!(out[0]["m"]["metricValue"], json!(80));
        } else {
            assert_eq!(
                out[0],
                json!({"metricName1": "bw", "metricValue1": 1.5e9, "metricName2": "mem", "metricValue2": 80})
            );
        }
        // The bandwidth drops: the length(1) window replaces it, no trigger.
        assert!(
            push(
                &mut e,
                "BWUtilization",
                json!({"metricName": "bw", "metricValue": 1.0e9})
            )
            .is_empty()
        );
        assert!(
            push(
                &mut e,
                "MemoryUtilization",
                json!({"metricName": "mem", "metricValue": 95})
            )
            .is_empty()
        );
    }
}

#[test]
fn length_window_sliding_sum() {
    let mut e = engine();
    e.register("select sum(x) as s from S.win:length(2)")
        .unwrap();
    let got: Vec<_> = (1..=4)
        .map(|x| push(&mut e, "S", json!({"x": x}))[0]["s"].clone())
        .collect();
    assert_eq!(got, vec![json!(1), json!(3), json!(5), json!(7)]);
    let mut e = engine();
    e.register("select count(*) as n from S#length(2)").unwrap();
    let got: Vec<_> = (1..=3)
        .map(|x| push(&mut e, "S", json!({"x": x}))[0]["n"].clone())
        .collect();
    assert_eq!(got, vec![json!(1), json!(2), json!(2)]);
}

#[test]
fn time_batch_releases_per_batch() {
    let mut e = engine();
    e.register("select x from S.win:time_batch(10 sec)")
        .unwrap();
    assert!(push(&mut e, "S", json!({"ts": 1000, "x": 1})).is_empty());
    assert!(push(&mut e, "S", json!({"ts": 5000, "x": 2})).is_empty());
    assert!(rows(e.advance_time(10_999)).is_empty());
    assert_eq!(
        rows(e.advance_time(11_000)),
        vec![json!({"x": 1}), json!({"x": 2})]
    );
    let mut e = engine();
    e.register("select count(*) as n, sum(x) as s from S.win:time_batch(10 sec)")
        .unwrap();
    push(&mut e, "S", json!({"ts": 0, "x": 1}));
    push(&mut e, "S", json!({"ts": 1, "x": 2}));
    assert_eq!(rows(e.advance_time(10_000)), vec![json!({"n": 2, "s": 3})]);
    push(&mut e, "S", json!({"ts": 15_000, "x": 5}));
    assert_eq!(rows(e.advance_time(20_000)), vec![json!({"n": 1, "s": 5})]);
}

#[test]
fn length_batch_keepall_lastevent_unique() {
    let mut e = engine();
    e.register("select x from S.win:length_batch(3)").unwrap();
    assert!(push(&mut e, "S", json!({"x": 1})).is_empty());
    assert!(push(&mut e, "S", json!({"x": 2})).is_empty());
    assert_eq!(push(&mut e, "S", json!({"x": 3})).len(), 3);

    let mut e = engine();
    e.register("select max(x) as m, count(*) as n from S.win:keepall()")
        .unwrap();
    push(&mut e, "S", json!({"ts": 0, "x": 9}));
    let out = push(&mut e, "S", json!({"ts": 1_000_000, "x": 1}));
    assert_eq!(out, vec![json!({"m": 9, "n": 2})]);

    let mut e = engine();
    e.register("select sum(x) as s from S.std:lastevent()")
        .unwrap();
    push(&mut e, "S", json!({"x": 4}));
    assert_eq!(push(&mut e, "S", json!({"x": 6})), vec![json!({"s": 6})]);

    let mut e = engine();
    e.register("select sum(load) as total from S.std:unique(host)")
        .unwrap();
    push(&mut e, "S", json!({"host": "a", "load": 1}));
    push(&mut e, "S", json!({"host": "b", "load": 2}));
    // a's new value replaces its old one.
    assert_eq!(
        push(&mut e, "S", json!({"host": "a", "load": 5})),
        vec![json!({"total": 7})]
    );
}

#[test]
fn stream_filter_where_and_time_units() {
    let mut e = engine();
    e.register("select host, cpu from Sys(cpu > 3)#time(1 min) where host != 'skip'")
        .unwrap();
    assert!(push(&mut e, "Sys", json!({"host": "a", "cpu": 2})).is_empty());
    assert!(push(&mut e, "Sys", json!({"host": "skip", "cpu": 9})).is_empty());
    assert_eq!(
        push(&mut e, "Sys", json!({"host": "a", "cpu": 4})),
        vec![json!({"host": "a", "cpu": 4})]
    );
}

#[test]
fn group_by_having_and_order() {
    let mut e = engine();
    e.register(
        "select host, avg(cpu) as c from Sys.win:length(10) group by host having avg(cpu) > 50",
    )
    .unwrap();
    assert!(push(&mut e, "Sys", json!({"host": "a", "cpu": 40})).is_empty());
    assert_eq!(
        push(&mut e, "Sys", json!({"host": "b", "cpu": 80})),
        vec![json!({"host": "b", "c": 80.0})]
    );
    assert_eq!(
        push(&mut e, "Sys", json!({"host": "a", "cpu": 70})),
        vec![json!({"host": "a", "c": 55.0})]
    );

    let mut e = engine();
    e.register("select host, count(*) as n from Sys.win:length_batch(4) group by host order by n desc, host").unwrap();
    for h in ["x", "y", "y", "z"] {
        push(&mut e, "Sys", json!({"host": h}));
    }
    // The 4th event released the batch: groups in order of count desc then host.
    let mut e2 = engine();
    e2.register("select host, count(*) as n from Sys.win:length_batch(4) group by host order by n desc, host").unwrap();
    let mut last = Vec::new();
    for h in ["x", "y", "y", "z"] {
        last = push(&mut e2, "Sys", json!({"host": h}));
    }
    assert_eq!(
        last,
        vec![
            json!({"host": "y", "n": 2}),
            json!({"host": "x", "n": 1}),
            json!({"host": "z", "n": 1})
        ]
    );
}

#[test]
fn aggregates_stddev_first_last_min_distinct() {
    let mut e = engine();
    e.register("select stddev(x) as sd, first(x) as f, last(x) as l, min(x) as mn, count(distinct x) as d from S.win:length(3)").unwrap();
    push(&mut e, "S", json!({"x": 2}));
    push(&mut e, "S", json!({"x": 4}));
    let out = push(&mut e, "S", json!({"x": 4}));
    assert_eq!(out[0]["f"], json!(2));
    assert_eq!(out[0]["l"], json!(4));
    assert_eq!(out[0]["mn"], json!(2));
    assert_eq!(out[0]["d"], json!(2));
    let sd = out[0]["sd"].as_f64().unwrap();
    assert!((sd - 1.1547005383792515).abs() < 1e-9, "{sd}");
    let out = push(&mut e, "S", json!({"x": 8}));
    assert_eq!(
        (out[0]["f"].clone(), out[0]["mn"].clone()),
        (json!(4), json!(4))
    );

    let mut e = engine();
    e.register("select distinct host from S.win:length_batch(3)")
        .unwrap();
    push(&mut e, "S", json!({"host": "a"}));
    push(&mut e, "S", json!({"host": "a"}));
    assert_eq!(
        push(&mut e, "S", json!({"host": "b"})),
        vec![json!({"host": "a"}), json!({"host": "b"})]
    );
}

#[test]
fn pattern_every_followed_by_within() {
    let mut e = engine();
    e.register("select a.x as ax, b.x as bx from pattern [every a=A -> b=B(b.x > a.x) where timer:within(30 sec)]").unwrap();
    assert!(push(&mut e, "A", json!({"ts": 0, "x": 5})).is_empty());
    assert!(push(&mut e, "A", json!({"ts": 1000, "x": 7})).is_empty());
    // 6 > 5 only: the first A matches; the second keeps waiting.
    assert_eq!(
        push(&mut e, "B", json!({"ts": 2000, "x": 6})),
        vec![json!({"ax": 5, "bx": 6})]
    );
    // The second A's 30 s run out at 31 s.
    assert!(push(&mut e, "B", json!({"ts": 31_000, "x": 10})).is_empty());
    assert!(push(&mut e, "A", json!({"ts": 40_000, "x": 1})).is_empty());
    assert_eq!(
        push(&mut e, "B", json!({"ts": 41_000, "x": 2})),
        vec![json!({"ax": 1, "bx": 2})]
    );
    // A match is consumed: another B does not match the same A again.
    assert!(push(&mut e, "B", json!({"ts": 42_000, "x": 3})).is_empty());
}

#[test]
fn pattern_without_every_fires_once_and_timer_interval() {
    let mut e = engine();
    e.register("select * from pattern [a=A -> b=B]").unwrap();
    push(&mut e, "A", json!({"x": 1}));
    assert_eq!(
        push(&mut e, "B", json!({"y": 2})),
        vec![json!({"a": {"x": 1}, "b": {"y": 2}})]
    );
    push(&mut e, "A", json!({"x": 3}));
    assert!(push(&mut e, "B", json!({"y": 4})).is_empty());

    // Alert when an A is not followed by a B within 10 s.
    let mut e = engine();
    e.register("select a.id as id from pattern [every a=A -> (timer:interval(10 sec) and not B(id = a.id))]").unwrap();
    push(&mut e, "A", json!({"ts": 0, "id": 1}));
    push(&mut e, "A", json!({"ts": 1000, "id": 2}));
    push(&mut e, "B", json!({"ts": 5000, "id": 2}));
    assert_eq!(rows(e.advance_time(20_000)), vec![json!({"id": 1})]);
}

#[test]
fn insert_into_chain() {
    let mut e = engine();
    e.register("insert into Hot select host, cpu from Sys where cpu > 90")
        .unwrap();
    e.register(
        "select host, count(*) as n from Hot.win:length(100) group by host having count(*) >= 2",
    )
    .unwrap();
    push(&mut e, "Sys", json!({"host": "a", "cpu": 95}));
    push(&mut e, "Sys", json!({"host": "a", "cpu": 10}));
    let out = e
        .push_json("Sys", &json!({"host": "a", "cpu": 99}))
        .unwrap();
    // The first statement's row and the second statement's trigger.
    assert_eq!(out.len(), 2);
    assert_eq!(
        serde_json::Value::Object(out[1].rows[0].to_json()),
        json!({"host": "a", "n": 2})
    );
}

#[test]
fn output_rate_events_and_time() {
    let mut e = engine();
    e.register("select x from S output every 3 events").unwrap();
    assert!(push(&mut e, "S", json!({"x": 1})).is_empty());
    assert!(push(&mut e, "S", json!({"x": 2})).is_empty());
    assert_eq!(push(&mut e, "S", json!({"x": 3})).len(), 3);

    let mut e = engine();
    e.register("select x from S output last every 5 seconds")
        .unwrap();
    push(&mut e, "S", json!({"ts": 1000, "x": 1}));
    push(&mut e, "S", json!({"ts": 2000, "x": 2}));
    // As in Esper, the interval starts with the first event (1000), not
    // with the statement (0): nothing at 5000, the last row at 6000.
    assert!(e.advance_time(5999).is_empty());
    let out = e.advance_time(6000);
    assert_eq!(out[0].time, 6000);
    assert_eq!(rows(out), vec![json!({"x": 2})]);
    assert!(rows(e.advance_time(11_000)).is_empty());
}

#[test]
fn create_schema_and_bad_events_are_counted() {
    let mut e = engine();
    assert!(
        e.register("create schema Mem (host string, memutil double)")
            .unwrap()
            .is_none()
    );
    e.register("select avg(memutil) as a from Mem.win:length(5)")
        .unwrap();
    assert!(
        e.push_json("Mem", &json!({"host": "a", "memutil": "high"}))
            .is_err()
    );
    assert!(e.push_json("Mem", &json!([1, 2])).is_err());
    // Missing field: skipped by the statement, counted, not fatal.
    assert!(
        e.push_json("Mem", &json!({"host": "a"}))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        push(&mut e, "Mem", json!({"host": "a", "memutil": 50})),
        vec![json!({"a": 50.0})]
    );
    let stats = e
        .stream_stats()
        .into_iter()
        .find(|(n, _)| n == "Mem")
        .unwrap()
        .1;
    assert_eq!(
        (
            stats.wrong_type,
            stats.not_object,
            stats.missing_field,
            stats.events
        ),
        (1, 1, 1, 2)
    );
}

#[test]
fn compile_errors_carry_positions() {
    let mut e = engine();
    let err = e
        .register("select avg(x) from S.win:time(20 sec) where avg(x) > 3")
        .unwrap_err();
    assert!(err.to_string().contains("use having"), "{err}");
    let err = e.register("select q.x from S as s").unwrap_err();
    assert!(err.to_string().contains("line 1, column 8"), "{err}");
    let err = e.register("select x from S.win:bogus(3)").unwrap_err();
    assert!(err.to_string().contains("unknown view"), "{err}");
    assert_eq!(e.statement_count(), 0);
    let v = Value::from(1.5);
    assert_eq!(v.as_f64(), Some(1.5));
}
