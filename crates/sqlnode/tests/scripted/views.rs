//! Views and shared answers over scripted generations: a view is computed
//! once per generation however many queries read it, over the generation
//! each query is pinned to; bad definitions keep the previous version;
//! identical queries over one generation share one run.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use fleetsql_aggregator::WatchChild;
use fleetsql_model::Generation;
use fleetsql_sqlnode::{
    SqlNode, SqlNodeConfig, ViewDefinition, ViewFile, ViewFileError, ViewStats,
};

/// Generation `id`: table `t` with column `v` = 1..=`id`.
fn generation(id: u64) -> Arc<Generation> {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let values: Vec<i64> = (1..=id as i64).collect();
    let batch =
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).expect("batch");
    crate::generation_of_t(id, batch)
}

async fn node_with(first: Arc<Generation>) -> (Arc<SqlNode>, Arc<WatchChild>) {
    let sender = WatchChild::new("scripted", first);
    let node = SqlNode::start(
        SqlNodeConfig::new("views-test", Duration::from_millis(200)),
        vec![sender.clone()],
    )
    .expect("node");
    node.wait_for_generation(Duration::from_secs(30))
        .await
        .expect("first generation");
    (Arc::new(node), sender)
}

async fn install(node: &SqlNode, sender: &Arc<WatchChild>, id: u64) {
    sender.publish(generation(id));
    crate::installed(node, id).await;
}

fn file(name: &str, sql: &str) -> ViewFile {
    ViewFile {
        file: format!("{name}.toml"),
        definition: Ok(ViewDefinition {
            name: name.to_string(),
            sql: sql.to_string(),
            prewarm: false,
            description: None,
        }),
    }
}

fn stats(node: &SqlNode, name: &str) -> ViewStats {
    node.views_stats()
        .into_iter()
        .find(|s| s.name == name || s.file == format!("{name}.toml"))
        .unwrap_or_else(|| panic!("no view {name}: {:?}", node.views_stats()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_is_computed_once_per_generation_over_the_pinned_generation() {
    let (node, sender) = node_with(generation(1)).await;
    node.set_views(vec![
        file("peak", "SELECT max(v) AS peak, count(*) AS n FROM t"),
        // A view over a view.
        file("peak_twice", "SELECT peak * 2 AS twice FROM peak"),
    ]);
    node.check_views().await;
    for id in 2..=3u64 {
        install(&node, &sender, id).await;
        let before = stats(&node, "peak");
        // Twenty concurrent first uses, written differently so they do not
        // share one answer: the view is what they share.
        let runs = (0..20).map(|i| {
            let node = node.clone();
            async move {
                let sql = format!("SELECT peak + {i} - {i} AS peak FROM peak");
                node.query(&sql).await.expect("query over the view")
            }
        });
        let answers = futures::future::join_all(runs).await;
        for answer in &answers {
            // The view's rows are those of the generation the query read.
            assert_eq!(
                crate::int_column(answer, 0),
                vec![answer.generation.id as i64]
            );
        }
        let after = stats(&node, "peak");
        assert_eq!(after.computes - before.computes, 1, "{after:?}");
        assert_eq!(after.uses - before.uses, 20);
        assert_eq!(after.last_generation, Some(id));
        assert_eq!(after.rows, Some(1));
        assert_eq!(after.error, None);
        let twice = node
            .query("SELECT twice FROM peak_twice")
            .await
            .expect("view over view");
        assert_eq!(crate::int_column(&twice, 0), vec![2 * id as i64]);
        assert_eq!(
            stats(&node, "peak").computes,
            after.computes,
            "peak reused by peak_twice"
        );
    }
    // fleet_views says the same.
    let table = node
        .query("SELECT computes, last_generation FROM fleet_views WHERE name = 'peak'")
        .await
        .expect("fleet_views");
    assert_eq!(crate::int_column(&table, 1), vec![3]);
    assert_eq!(crate::int_column(&table, 0), vec![2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_keep_the_previous_version_and_cycles_are_refused() {
    let (node, sender) = node_with(generation(2)).await;
    node.set_views(vec![file("top", "SELECT max(v) AS top FROM t")]);
    node.check_views().await;
    let read = |node: Arc<SqlNode>| async move {
        crate::int_column(&node.query("SELECT * FROM top").await.expect("top"), 0)
    };
    assert_eq!(read(node.clone()).await, vec![2]);

    // Not TOML (the loader's error), then SQL that parses but does not plan.
    node.set_views(vec![ViewFile {
        file: "top.toml".into(),
        definition: Err(ViewFileError("not a view definition".into())),
    }]);
    node.check_views().await;
    assert_eq!(read(node.clone()).await, vec![2]);
    let s = stats(&node, "top");
    assert!(
        s.serving && s.error.as_deref() == Some("not a view definition"),
        "{s:?}"
    );
    node.set_views(vec![file("top", "SELECT max(nope) AS top FROM t")]);
    node.check_views().await;
    install(&node, &sender, 3).await;
    assert_eq!(
        read(node.clone()).await,
        vec![3],
        "the previous version serves"
    );
    let s = stats(&node, "top");
    assert!(
        s.error
            .as_deref()
            .is_some_and(|e| e.contains("does not plan") && e.contains("nope")),
        "{s:?}"
    );

    // A good change serves at once and clears the error.
    node.set_views(vec![file("top", "SELECT min(v) AS top FROM t")]);
    node.check_views().await;
    assert_eq!(read(node.clone()).await, vec![1]);
    assert_eq!(stats(&node, "top").error, None);

    // A cycle: neither new view serves, the old one is untouched.
    node.set_views(vec![
        file("top", "SELECT min(v) AS top FROM t"),
        file("a", "SELECT * FROM b"),
        file("b", "SELECT * FROM a"),
    ]);
    node.check_views().await;
    for name in ["a", "b"] {
        let s = stats(&node, name);
        assert!(!s.serving, "{s:?}");
        assert!(
            s.error
                .as_deref()
                .is_some_and(|e| e.contains("would read itself")),
            "{s:?}"
        );
    }
    assert!(node.query("SELECT * FROM a").await.is_err());
    assert_eq!(read(node.clone()).await, vec![1]);

    // A file gone: its view is gone.
    node.set_views(vec![]);
    assert!(node.query("SELECT * FROM top").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_queries_over_one_generation_share_one_run() {
    let (node, sender) = node_with(generation(4)).await;
    let sql = "SELECT sum(v) AS total FROM t";
    let runs = (0..20).map(|i| {
        let node = node.clone();
        // The same query, written differently: shared by its parsed text.
        let sql = if i % 2 == 0 {
            sql.to_string()
        } else {
            "select  sum(v)  as total  from t".to_string()
        };
        async move { node.query(&sql).await.expect("query") }
    });
    let answers = futures::future::join_all(runs).await;
    for answer in &answers {
        assert_eq!(crate::int_column(answer, 0), vec![10]);
        assert_eq!(answer.generation.id, 4, "each answer names its generation");
    }
    let shared = node.shared_answers();
    assert_eq!(shared.runs, 1, "{shared:?}");
    assert_eq!(shared.shared, 19, "{shared:?}");
    assert_eq!(shared.entries, 1);

    // The next generation runs it again, once.
    install(&node, &sender, 5).await;
    let again = node.query(sql).await.expect("again");
    assert_eq!(crate::int_column(&again, 0), vec![15]);
    assert_eq!(again.generation.id, 5);
    let _ = node.query(sql).await.expect("again");
    let shared = node.shared_answers();
    assert_eq!(
        (shared.runs, shared.shared, shared.entries),
        (2, 20, 1),
        "{shared:?}"
    );

    // now() and system tables are never shared.
    for _ in 0..3 {
        node.query("SELECT count(*) FROM t WHERE now() > now() - INTERVAL '1 hour'")
            .await
            .expect("now");
        node.query("SELECT count(*) FROM t, fleet_generation")
            .await
            .expect("system table");
    }
    assert_eq!(node.shared_answers().runs, 2);

    // A front end that plans itself (Flight SQL): shared by the plan.
    let statement = node.parse("SELECT max(v) AS m FROM t").expect("parse");
    let pinned = node.pin(&statement).await.expect("pin");
    let planned_runs = (0..5).map(|_| {
        let (node, statement, pinned) = (node.clone(), statement.clone(), pinned.clone());
        async move {
            let plan = node.plan(statement, pinned.clone()).await.expect("plan");
            node.execute_plan(plan, pinned).await.expect("execute")
        }
    });
    for answer in futures::future::join_all(planned_runs).await {
        assert_eq!(crate::int_column(&answer, 0), vec![5]);
    }
    assert_eq!(node.shared_answers().runs, 3);
}
