//! Persistent queries end to end through the real `fleetsql demo`: register
//! over HTTP, subscribe to the SSE topic, feed posted events and fleet
//! generations, share identical registrations, delete.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::TestDemo;

/// An SSE subscription read frame by frame.
struct Sse {
    response: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(demo: &TestDemo, id: &str) -> Sse {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/persistent-queries/{id}/events", demo.url()))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        // The handler subscribed before answering: nothing published from
        // here on can be missed.
        Sse {
            response,
            buf: String::new(),
        }
    }

    /// The next frame as (event, data), or `None` if none came within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let event = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("event:"))
                    .map(|e| e.trim().to_string());
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .map(|d| serde_json::from_str(d.trim()).unwrap());
                match (event, data) {
                    (Some(e), Some(d)) => return Some((e, d)),
                    _ => continue, // keep-alive comment
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn register(demo: &TestDemo, epl: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/persistent-queries", demo.url()))
        .json(&json!({ "epl": epl }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    body
}

async fn post_events(demo: &TestDemo, stream: &str, ndjson: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/events/{stream}", demo.url()))
        .header("content-type", "application/x-ndjson")
        .body(ndjson.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn delete(demo: &TestDemo, id: &str) -> Value {
    reqwest::Client::new()
        .delete(format!("{}/v1/persistent-queries/{id}", demo.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn get(demo: &TestDemo, path: &str) -> Value {
    reqwest::get(format!("{}{path}", demo.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_events_reach_an_sse_subscriber_exactly_once_and_registrations_are_shared() {
    let demo = TestDemo::start().await;
    let epl = "select host, load from Load(load > 5) where host != 'ignored'";
    let first = register(&demo, epl).await;
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["topic"], json!(format!("pqa/{id}")));
    let mut sse = Sse::open(&demo, &id).await;

    // Same statement with other layout and keyword case: the same registration.
    let second = register(
        &demo,
        "SELECT host, load\n  FROM Load(load > 5)\n WHERE host != 'ignored'",
    )
    .await;
    assert_eq!(second, first);
    let listed = get(&demo, "/v1/persistent-queries").await;
    let mine: Vec<&Value> = listed["queries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["id"] == json!(id))
        .collect();
    assert_eq!(mine.len(), 1, "{listed}");
    assert_eq!(mine[0]["refs"], json!(2));
    assert_eq!(mine[0]["subscribers"], json!(1));

    // NDJSON: filtered out, kept, excluded by where, kept.
    let (status, body) = post_events(
        &demo,
        "Load",
        "{\"host\":\"a\",\"load\":3}\n{\"host\":\"b\",\"load\":7.5}\n{\"host\":\"ignored\",\"load\":9}\n{\"host\":\"c\",\"load\":6}\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], json!(4));
    // A wrong type is refused and counted for its stream; the query goes on.
    let (status, body) = post_events(&demo, "Load", "{\"host\":\"d\",\"load\":\"high\"}").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["rejected"], json!(1));

    let mut got = Vec::new();
    for _ in 0..2 {
        let (event, data) = sse.next(WAIT).await.expect("notification");
        assert_eq!(event, "result");
        got.push((data["seq"].clone(), data["rows"].clone()));
    }
    assert_eq!(
        got,
        vec![
            (json!(1), json!([{"host": "b", "load": 7.5}])),
            (json!(2), json!([{"host": "c", "load": 6}])),
        ]
    );

    // One delete drops one reference: the shared query still runs.
    let left = delete(&demo, &id).await;
    assert_eq!(left["refs"], json!(1), "{left}");
    let (status, _) = post_events(&demo, "Load", "{\"host\":\"e\",\"load\":8}").await;
    assert_eq!(status, 200);
    let (event, data) = sse.next(WAIT).await.expect("notification after one delete");
    assert_eq!(event, "result");
    assert_eq!(data["seq"], json!(3));
    assert_eq!(data["rows"], json!([{"host": "e", "load": 8}]));

    let stats = get(&demo, "/v1/streams").await;
    let load = &stats["streams"]["Load"];
    assert_eq!(load["events"], json!(5), "{stats}");
    assert_eq!(load["wrong_type"], json!(1), "{stats}");

    // The last delete ends the subscription with its reason, and nothing
    // else was delivered before it.
    let left = delete(&demo, &id).await;
    assert_eq!(left["deleted"], json!(true), "{left}");
    let (event, data) = sse.next(WAIT).await.expect("close frame");
    assert_eq!(event, "close", "{data}");
    assert_eq!(data["reason"], json!("query deleted"));
    assert!(sse.next(Duration::from_millis(200)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_generations_feed_a_time_window_query() {
    let demo = TestDemo::start().await;
    let (status, body) = demo.query_json("SELECT ip FROM sys").await;
    assert!(status.is_success(), "{body}");
    let fleet: Vec<Value> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].clone())
        .collect();
    assert!(fleet.len() >= 6, "{body}");

    let epl = "select count(*) as n, last(ip) as ip from sys.win:time(1 hour)";
    let reg = register(&demo, epl).await;
    let id = reg["id"].as_str().unwrap().to_string();
    let mut sse = Sse::open(&demo, &id).await;
    // Every row of every generation is one event: the count goes up by
    // exactly one per notification (nothing leaves a one-hour window), and
    // each carries a machine of the fleet. (A generation fed between the
    // registration and the subscription is counted but not seen, hence
    // the offset.)
    let rows = fleet.len() * 2;
    let mut offset = None;
    for k in 1..=rows as u64 {
        let (event, data) = sse
            .next(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("notification {k} of {rows} from fleet generations"));
        assert_eq!(event, "result", "{data}");
        let row = &data["rows"][0];
        let n = row["n"].as_u64().unwrap();
        let skipped = *offset.get_or_insert(n - 1);
        assert_eq!(n, skipped + k, "{data}");
        assert_eq!(data["seq"], json!(n), "{data}");
        assert!(fleet.contains(&row["ip"]), "{row} not in {fleet:?}");
    }
    let stats = get(&demo, "/v1/streams").await;
    let sys = &stats["streams"]["sys"];
    assert!(sys["events"].as_u64().unwrap() >= rows as u64, "{stats}");
    assert_eq!(sys["wrong_type"], json!(0), "{stats}");

    // A second, identical registration is the same query and topic.
    let again = register(&demo, epl).await;
    assert_eq!(again, reg);
}
