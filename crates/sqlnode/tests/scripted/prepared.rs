//! The same SQL text again over new generations: parsed and planned once,
//! yet it reads each new generation, replans when a table's schema
//! changes, and never freezes `now()`.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use fleetsql_aggregator::WatchChild;
use fleetsql_model::Generation;
use fleetsql_sqlnode::{SqlNode, SqlNodeConfig};

/// Generation `id` with one table `t`: column `v` holds `id`; with
/// `extra_column`, a column `note` too.
fn generation(id: u64, extra_column: bool) -> Arc<Generation> {
    let mut fields = vec![Field::new("v", DataType::Int64, false)];
    let mut columns: Vec<Arc<dyn Array>> = vec![Arc::new(Int64Array::from(vec![id as i64; 3]))];
    if extra_column {
        fields.push(Field::new("note", DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from(vec!["new"; 3])));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema, columns).expect("batch");
    crate::generation_of_t(id, batch)
}

async fn node_with(first: Arc<Generation>) -> (SqlNode, Arc<WatchChild>) {
    let sender = WatchChild::new("scripted", first);
    let node = SqlNode::start(
        SqlNodeConfig::new("prepared-test", Duration::from_millis(200)),
        vec![sender.clone()],
    )
    .expect("node");
    (node, sender)
}

/// Hands out `next` and waits until the node answers from it.
async fn install(node: &SqlNode, sender: &Arc<WatchChild>, next: Arc<Generation>) {
    let id = next.meta.id;
    sender.publish(next);
    crate::installed(node, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_plan_reads_each_new_generation() {
    let (node, sender) = node_with(generation(1, false)).await;
    let sql = "SELECT sum(v) AS total FROM t WHERE v > 0";
    let first = node.query(sql).await.expect("first run");
    assert_eq!(crate::int_column(&first, 0), vec![3]);
    assert_eq!(first.generation.id, 1);
    for id in 2..=4 {
        install(&node, &sender, generation(id, false)).await;
        let again = node.query(sql).await.expect("run again");
        assert_eq!(again.generation.id, id);
        assert_eq!(crate::int_column(&again, 0), vec![3 * id as i64]);
    }
    assert_eq!(
        node.prepared_count(),
        1,
        "one SQL text, one prepared statement"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_schema_is_planned_again() {
    let (node, sender) = node_with(generation(1, false)).await;
    let sql = "SELECT * FROM t";
    let before = node.query(sql).await.expect("before");
    assert_eq!(before.schema.fields().len(), 1);
    install(&node, &sender, generation(2, true)).await;
    let after = node.query(sql).await.expect("after the schema grew");
    let names: Vec<&str> = after
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["v", "note"]);
    assert_eq!(after.batches[0].num_columns(), 2);
    // And back: the column disappears again rather than failing the scan.
    install(&node, &sender, generation(3, false)).await;
    let narrowed = node.query(sql).await.expect("after the schema shrank");
    assert_eq!(narrowed.schema.fields().len(), 1);
    assert_eq!(crate::int_column(&narrowed, 0), vec![3, 3, 3]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn now_is_read_at_each_run_not_when_planned() {
    let (node, _sender) = node_with(generation(1, false)).await;
    let sql = "SELECT now() AS at, v FROM t LIMIT 1";
    let read = |output: &fleetsql_sqlnode::QueryOutput| {
        output.batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .expect("timestamp")
            .value(0)
    };
    let first = read(&node.query(sql).await.expect("first"));
    // now() has nanosecond resolution; let the clock visibly move.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = read(&node.query(sql).await.expect("second"));
    assert!(
        second > first,
        "now() must be read at each run: {first} then {second}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_tables_are_read_fresh_and_errors_are_not_kept() {
    let (node, sender) = node_with(generation(1, false)).await;
    let sql = "SELECT id FROM fleet_generation";
    node.query("SELECT v FROM t").await.expect("collect t");
    assert_eq!(
        crate::int_column(&node.query(sql).await.expect("first"), 0),
        [1]
    );
    install(&node, &sender, generation(2, false)).await;
    assert_eq!(
        crate::int_column(&node.query(sql).await.expect("second"), 0),
        [2]
    );

    let error = node
        .query("SELECT nope FROM t")
        .await
        .expect_err("unknown column");
    assert!(error.to_string().contains("nope"), "{error}");
    let error = node
        .query("SELECT nope FROM t")
        .await
        .expect_err("still unknown");
    assert!(error.to_string().contains("nope"), "{error}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_parsed_by_a_front_end_are_kept_by_their_text() {
    let (node, sender) = node_with(generation(1, false)).await;
    let statement = node.parse("select v  from t").expect("parse");
    let first = node.prepare_statement(&statement).expect("prepare");
    let again = node
        .prepare_statement(&node.parse("select v  from t").expect("parse"))
        .expect("prepare again");
    assert!(Arc::ptr_eq(&first, &again), "one statement, kept once");
    assert_eq!(first.fleet_tables().iter().collect::<Vec<_>>(), ["t"]);
    let generation_one = node.pin_prepared(&first).await.expect("pin");
    let output = node
        .execute_prepared(&first, generation_one)
        .await
        .expect("run");
    assert_eq!(crate::int_column(&output, 0), vec![1, 1, 1]);
    install(&node, &sender, generation(2, false)).await;
    let generation_two = node.pin_prepared(&again).await.expect("pin");
    let output = node
        .execute_prepared(&again, generation_two)
        .await
        .expect("run again");
    assert_eq!(crate::int_column(&output, 0), vec![2, 2, 2]);
    let refused = node.prepare_statement(&node.parse("DROP TABLE t").expect("parse"));
    assert!(
        refused.is_err(),
        "read-only check applies to kept statements"
    );
    node.shutdown().await;
}
