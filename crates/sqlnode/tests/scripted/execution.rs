//! How queries run on a node: a CPU-bound join stops at its time-out even
//! when it holds the only worker, answers stream batch by batch, and the
//! concurrency limit queues a bounded number of queries and refuses the
//! next with SQLSTATE 53300.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use fleetsql_aggregator::WatchChild;
use fleetsql_model::Generation;
use fleetsql_sqlnode::{SqlError, SqlNode, SqlNodeConfig};
use futures::StreamExt;

/// Generation 1: table `t` with column `v` = 1..=100.
fn generation() -> Arc<Generation> {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from((1..=100).collect::<Vec<i64>>()))],
    )
    .expect("batch");
    crate::generation_of_t(1, batch)
}

async fn node(config: SqlNodeConfig) -> Arc<SqlNode> {
    let node = SqlNode::start(config, vec![WatchChild::new("fixed", generation())]).expect("node");
    node.wait_for_generation(Duration::from_secs(30))
        .await
        .expect("first generation");
    Arc::new(node)
}

/// 10^10 combinations, none matching: never finishes on its own, and its
/// nested-loop joins work over batches they already hold.
fn endless(variant: u32) -> String {
    format!(
        "SELECT count(*) + {variant} FROM t a, t b, t c, t d, t e WHERE a.v + b.v + c.v + d.v + e.v = -1"
    )
}

#[test]
fn a_cpu_bound_join_stops_at_its_time_out_on_the_only_worker() {
    // One worker: the query's time-out can only fire if the join yields.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (sender, answers) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let mut config = SqlNodeConfig::new("exec-timeout", Duration::from_millis(200));
        config.query_timeout = Duration::from_millis(500);
        let node = node(config).await;
        let _ = sender.send(node.query(&endless(0)).await.map(|_| 0));
        let _ = sender.send(
            node.query("SELECT count(*) FROM t")
                .await
                .map(|o| o.num_rows()),
        );
    });
    // Bounded waits on a thread of its own: without yielding, the worker
    // never comes back and neither answer arrives.
    let stopped = answers.recv_timeout(Duration::from_secs(60));
    let next = answers.recv_timeout(Duration::from_secs(60));
    runtime.shutdown_background();
    let stopped = stopped.expect("the 500 ms time-out fired within 60 s");
    assert!(
        matches!(stopped, Err(SqlError::Timeout { timeout_ms: 500 })),
        "{stopped:?}"
    );
    assert_eq!(next.expect("the next query answered").expect("ok"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_streams_its_first_batch_before_the_query_ends() {
    let mut config = SqlNodeConfig::new("exec-stream", Duration::from_millis(200));
    config.query_timeout = Duration::from_secs(1);
    let node = node(config).await;
    // 10^10 rows: collected first, it could only end in the time-out.
    let prepared = node
        .prepare("SELECT a.v FROM t a, t b, t c, t d, t e")
        .expect("prepared");
    let generation = node.pin_prepared(&prepared).await.expect("pinned");
    let mut batches = node
        .stream_prepared(&prepared, generation)
        .await
        .expect("started")
        .into_batches();
    let first = batches.next().await.expect("a first item");
    assert!(first.expect("a batch, not an error").num_rows() > 0);
    // Then it goes on until the time-out ends it.
    let mut rows = 0usize;
    let end = loop {
        match batches.next().await {
            Some(Ok(batch)) => rows += batch.num_rows(),
            Some(Err(e)) => break e,
            None => panic!("10^10 rows ended after {rows}"),
        }
    };
    assert!(matches!(end, SqlError::Timeout { .. }), "{end:?}");
    assert!(rows > 0);
}

/// Polls `ready` until it holds, for at most 30 s.
async fn until(what: &str, ready: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_the_running_and_the_queued_are_refused_with_53300() {
    let mut config = SqlNodeConfig::new("exec-limit", Duration::from_millis(200));
    config.query_timeout = Duration::from_secs(3);
    config.max_concurrent_queries = Some(1);
    config.max_queued_queries = 1;
    let node = node(config).await;
    let run = |variant| {
        let node = node.clone();
        tokio::spawn(async move { node.query(&endless(variant)).await.map(|_| ()) })
    };
    let running = run(1);
    until("one query running", || node.query_load() == Some((1, 0))).await;
    let queued = run(2);
    until("one running, one waiting", || {
        node.query_load() == Some((1, 1))
    })
    .await;
    let refused = node.query("SELECT count(*) FROM t").await;
    let Err(SqlError::Limit {
        sqlstate, setting, ..
    }) = &refused
    else {
        panic!("not refused: {refused:?}");
    };
    assert_eq!((*sqlstate, *setting), ("53300", "max_concurrent_queries"));
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("max_queued_queries"), "{message}");
    // The two end (at their time-out, or the second's wait), and the node
    // answers again.
    assert!(running.await.expect("task").is_err());
    assert!(queued.await.expect("task").is_err());
    let answer = node.query("SELECT count(*) FROM t").await.expect("answers");
    assert_eq!(answer.num_rows(), 1);
    assert_eq!(node.query_load(), Some((0, 0)));
}
