//! Issue 17 item 7 against the real `fleetsql demo` process: inputs that
//! used to overflow the stack (and abort SQL node, TLA, agent and alerts
//! with it) answer a clear 4xx, and the process answers the next request.

use serde_json::{Value, json};

use crate::cluster::TestDemo;

async fn post_json(url: String, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("the demo answers (it did not die)");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn still_answers(demo: &TestDemo) {
    let (status, body) = demo.query_json("SELECT 1 AS one").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_json(
        format!("{}/v1/persistent-queries", demo.url()),
        json!({"epl": "select x from StillUp"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_deep_epl_and_sql_answer_400_and_the_demo_keeps_answering() {
    let demo = TestDemo::start().await;

    // The reproduction: 200,000 nested parentheses.
    let epl = format!(
        "select {}x{} from S",
        "(".repeat(200_000),
        ")".repeat(200_000)
    );
    let (status, body) = post_json(
        format!("{}/v1/persistent-queries", demo.url()),
        json!({ "epl": epl }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["setting"], json!("limits.max_epl_depth"), "{body}");
    still_answers(&demo).await;

    // SQL nested 100,000 deep: refused on its tokens by the HTTP front end.
    let sql = format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000));
    let (status, body) = demo.query_json(&sql).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["setting"], json!("max_sql_expression_depth"), "{body}");
    still_answers(&demo).await;
    // Under that bound, DataFusion's parser (sqlparser) stops nesting at 50
    // levels of its own (`datafusion.sql_parser.recursion_limit`).
    let sql = format!("SELECT {}1{}", "(".repeat(60), ")".repeat(60));
    let (status, body) = demo.query_json(&sql).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("RecursionLimitExceeded"), "{error}");
    still_answers(&demo).await;

    // A long flat chain parses without recursion but makes a tree as deep
    // as it is long: 2,000 terms overflowed a worker's stack and aborted
    // the demo before the HTTP front end bounded it.
    let sql = format!("SELECT {} AS n", vec!["1"; 2_000].join(" + "));
    let (status, body) = demo.query_json(&sql).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["setting"], json!("max_sql_expression_depth"), "{body}");
    still_answers(&demo).await;
    // Just under the limit still answers.
    let sql = format!("SELECT {} AS n", vec!["1"; 257].join(" + "));
    let (status, body) = demo.query_json(&sql).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"][0][0], json!(257), "{body}");
}
