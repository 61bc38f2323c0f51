//! The catalogs list every table the span publishes, collected or not,
//! with the columns last seen, and looking at them collects nothing.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use fleetsql_aggregator::{Child, WatchChild};
use fleetsql_model::{Generation, Table, TableVisibility, now_ms};
use fleetsql_sqlnode::{SqlNode, SqlNodeConfig};

fn table(name: &str, columns: &[&str]) -> Arc<Table> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(*c, DataType::Utf8, true))
        .collect();
    let arrays: Vec<Arc<dyn Array>> = columns
        .iter()
        .map(|_| Arc::new(StringArray::from(vec!["x"])) as Arc<dyn Array>)
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), arrays).expect("batch");
    Arc::new(Table::new(name, schema, vec![batch]).expect("table"))
}

/// Generation `id`: the span publishes `t` and `u`; `collected` of them
/// are in it (`t` with column `a`, `u` with `b` and `c`).
fn generation(id: u64, collected: &[&str]) -> Arc<Generation> {
    let mut generation = Generation::empty("scripted");
    generation.meta.id = id;
    generation.meta.made_at_ms = now_ms();
    generation.meta.available = ["t".to_string(), "u".to_string()].into();
    for name in collected {
        let columns: &[&str] = if *name == "t" { &["a"] } else { &["b", "c"] };
        generation
            .tables
            .insert(name.to_string(), table(name, columns));
        generation.meta.visibility.tables.insert(
            name.to_string(),
            TableVisibility {
                machines_with_rows: 1,
                rows: 1,
                ..Default::default()
            },
        );
    }
    Arc::new(generation)
}

fn strings(batches: &[RecordBatch], column: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let array = arrow::compute::cast(b.column(column), &DataType::Utf8).expect("cast");
            let array = array
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("strings")
                .clone();
            (0..array.len())
                .map(|i| array.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn column_names(node: &SqlNode, table: &str) -> Vec<String> {
    let output = node
        .query(&format!(
            "SELECT column_name FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = '{table}' ORDER BY ordinal_position"
        ))
        .await
        .expect("columns");
    strings(&output.batches, 0)
}

async fn installed(node: &SqlNode, id: u64) {
    let mut receiver = node.subscribe();
    tokio::time::timeout(
        Duration::from_secs(10),
        receiver.wait_for(|g| g.meta.id >= id),
    )
    .await
    .unwrap_or_else(|_| panic!("generation {id} never installed"))
    .expect("node running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_not_collected_are_listed_with_the_columns_last_seen() {
    let source = WatchChild::new("scripted", generation(1, &["t"]));
    let node = SqlNode::start(
        SqlNodeConfig::new("catalog-test", Duration::from_millis(200)),
        vec![source.clone() as Arc<dyn Child>],
    )
    .expect("node");
    installed(&node, 1).await;

    // `u` was never collected: listed, with no columns yet.
    let output = node
        .query(
            "SELECT table_name, table_type FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name IN ('t', 'u') ORDER BY table_name",
        )
        .await
        .expect("tables");
    assert_eq!(strings(&output.batches, 0), ["t", "u"]);
    assert_eq!(strings(&output.batches, 1), ["BASE TABLE", "BASE TABLE"]);
    assert_eq!(column_names(&node, "t").await, ["a"]);
    assert!(column_names(&node, "u").await.is_empty());
    // Looking at the catalogs asked the fleet for nothing.
    assert!(!source.asked().contains("u"), "a catalog query requested u");

    // Collected once, then no longer (its requests expired): the columns
    // it had stay in the catalogs.
    source.publish(generation(2, &["t", "u"]));
    installed(&node, 2).await;
    source.publish(generation(3, &["t"]));
    installed(&node, 3).await;
    assert!(!node.current().tables.contains_key("u"));
    assert_eq!(column_names(&node, "u").await, ["b", "c"]);
    node.shutdown().await;
}
