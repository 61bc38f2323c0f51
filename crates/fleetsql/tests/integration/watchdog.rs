//! The agent's watchdog (issue 21 item 4) through the real binary: a
//! publisher over its rows-per-tick share is shed (429 naming the limit),
//! another publisher of the same table keeps flowing, `fleet_sources`
//! shows which one is shed and why, and the shed one recovers once it
//! keeps within its share.

use std::time::{Duration, Instant};

use crate::cluster::TestDemo;

/// `n` NDJSON rows of publisher `who`, each carrying `v`.
fn rows(who: &str, v: u64, n: usize) -> String {
    (0..n)
        .map(|k| format!("{{\"who\":\"{who}\",\"k\":{k},\"v\":{v}}}\n"))
        .collect()
}

async fn post(
    client: &reqwest::Client,
    demo: &TestDemo,
    who: &str,
    body: String,
) -> (reqwest::StatusCode, String) {
    let response = client
        .post(format!("http://{}/v1/tables/wd_events", demo.publish))
        .header("Content-Type", "application/x-ndjson")
        .header("X-Fleetsql-Publisher", who)
        .body(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_publisher_is_shed_and_a_quiet_one_keeps_flowing() {
    let demo = TestDemo::start_with(
        1,
        1,
        "1s",
        &["--watchdog-rows-per-tick".into(), "50".into()],
    )
    .await;
    let client = reqwest::Client::new();

    let (status, body) = post(&client, &demo, "quiet", rows("quiet", 1, 5)).await;
    assert!(status.is_success(), "{status} {body}");
    // 200 rows in one tick is four times its share of 50.
    let (status, body) = post(&client, &demo, "noisy", rows("noisy", 1, 200)).await;
    assert_eq!(status, reqwest::StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body.contains("noisy") && body.contains("watchdog.rows_per_tick"),
        "{body}"
    );

    // The quiet one keeps flowing while the noisy one is still refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut v = 1;
    loop {
        v += 1;
        let (status, body) = post(&client, &demo, "quiet", rows("quiet", v, 5)).await;
        assert!(status.is_success(), "quiet refused: {status} {body}");
        let (status, body) = post(&client, &demo, "noisy", rows("noisy", v, 200)).await;
        assert_eq!(status, reqwest::StatusCode::TOO_MANY_REQUESTS, "{body}");
        let (status, answer) = demo
            .query_json("SELECT who, count(*), max(v) FROM wd_events GROUP BY who ORDER BY who")
            .await;
        let (_, sources) = demo
            .query_json(
                "SELECT name, status, last_error FROM fleet_sources \
                 WHERE kind = 'publisher' ORDER BY name",
            )
            .await;
        let quiet_seen = status.is_success()
            && answer["rows"].as_array().is_some_and(|r| r.len() == 1)
            && answer["rows"][0][0] == "quiet"
            && answer["rows"][0][1] == 5
            && answer["rows"][0][2].as_u64().is_some_and(|seen| seen >= 2);
        let shed_seen = sources["rows"][0][0] == "wd_events/noisy"
            && sources["rows"][0][1] == "shed"
            && sources["rows"][0][2]
                .as_str()
                .is_some_and(|e| e.contains("watchdog.rows_per_tick"))
            && sources["rows"][1][0] == "wd_events/quiet"
            && sources["rows"][1][1] == "ok";
        if quiet_seen && shed_seen {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never saw the quiet rows and the noisy publisher shed: {answer} {sources}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Behaving (10 rows per half second, 20 per tick) for a whole tick
    // lifts the shedding.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = post(&client, &demo, "noisy", rows("noisy", 99, 10)).await;
        if status.is_success() {
            break;
        }
        assert_eq!(status, reqwest::StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(
            Instant::now() < deadline,
            "the noisy publisher never recovered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, sources) = demo
            .query_json("SELECT status FROM fleet_sources WHERE name = 'wd_events/noisy'")
            .await;
        let (_, answer) = demo
            .query_json("SELECT count(*) FROM wd_events WHERE who = 'noisy'")
            .await;
        if sources["rows"] == serde_json::json!([["ok"]])
            && answer["rows"] == serde_json::json!([[10]])
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "recovery never reached fleet_sources and the table: {sources} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
