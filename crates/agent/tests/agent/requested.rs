use std::time::Duration;

use fleetsql_aggregator::FetchRequest;

use crate::{config, fetch, post, start, tables, url};

async fn requested_over_http(agent: &fleetsql_agent::Agent) -> Vec<String> {
    let answer: serde_json::Value = reqwest::get(url(agent, "/v1/requested"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn requests_are_reported_and_expire() {
    let mut cfg = config();
    // Ticks of 50 ms and a 200 ms grace let the request lapse quickly; the
    // test waits for generations, never for time.
    cfg.tick = Duration::from_millis(50);
    cfg.request_grace = Some(Duration::from_millis(200));
    cfg.prewarm = tables(&["always"]);
    let agent = start(cfg);
    assert_eq!(post(&agent, "wanted", "text/csv", "x\n1\n").await.0, 200);

    let generation = fetch(&agent, &["wanted", "nobody_publishes"]).await;
    assert_eq!(generation.table("wanted").unwrap().num_rows(), 1);
    // A table no local publisher has: answered, empty.
    let v = &generation.meta.visibility.tables["nobody_publishes"];
    assert_eq!((v.machines_with_rows, v.machines_empty), (0, 1));
    assert!(generation.table("nobody_publishes").is_none());
    assert_eq!(
        agent.requested(),
        tables(&["always", "nobody_publishes", "wanted"])
    );
    assert_eq!(
        requested_over_http(&agent).await,
        ["always", "nobody_publishes", "wanted"]
    );
    let (_, answer) = post(&agent, "wanted", "text/csv", "x\n2\n").await;
    assert_eq!(answer["requested"], true);

    // The parent stops asking: once its grace is over, a generation is made
    // without its tables and the agent stops collecting them.
    let mut generations = agent.subscribe();
    tokio::time::timeout(
        Duration::from_secs(20),
        generations.wait_for(|g| !g.meta.visibility.tables.contains_key("wanted")),
    )
    .await
    .expect("request expired")
    .unwrap();
    assert_eq!(agent.requested(), tables(&["always"]));
    assert_eq!(requested_over_http(&agent).await, ["always"]);
    let (_, answer) = post(&agent, "wanted", "text/csv", "x\n3\n").await;
    assert_eq!(answer["requested"], false);
    agent.shutdown().await;
}

#[tokio::test]
async fn unrequested_tables_are_not_sent() {
    let agent = start(config());
    assert_eq!(post(&agent, "quiet", "text/csv", "x\n1\n").await.0, 200);
    let generation = agent
        .as_child()
        .fetch(&FetchRequest {
            requester: "p".into(),
            tables: tables(&["other"]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(generation.table("quiet").is_none());
    assert!(generation.meta.available.contains("quiet"));
    agent.shutdown().await;
}
