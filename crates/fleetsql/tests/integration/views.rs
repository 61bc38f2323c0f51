//! Views in the real binary (issue 18 items 8-9): a view from the views
//! directory is computed once per generation however many queries read it,
//! over the generation each query is pinned to; it answers over HTTP and
//! pg and feeds an alert; a changed file reloads without a restart; a bad
//! file, or SQL that does not plan, keeps the previous version serving.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::TestDemo;
use crate::tiers::eventually;

/// Written elsewhere and renamed, so the watcher never reads half a file.
fn write(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!("{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(file)).unwrap();
}

fn hosts_view(pattern: &str) -> String {
    format!(
        "name = \"hosts\"\ndescription = \"watched machines\"\n\
         sql = \"SELECT ip, hostname FROM sys WHERE hostname LIKE '{pattern}'\"\n"
    )
}

async fn rows(demo: &TestDemo, sql: &str) -> Value {
    let (status, body) = demo.query_json(sql).await;
    assert!(status.is_success(), "{sql}: {body}");
    body["rows"].clone()
}

/// (computes, uses, last_generation, error) of view `name`.
async fn view_row(demo: &TestDemo, name: &str) -> (u64, u64, u64, Option<String>) {
    let row = rows(
        demo,
        &format!(
            "SELECT computes, uses, last_generation, error, serving FROM fleet_views WHERE name = '{name}'"
        ),
    )
    .await[0]
        .clone();
    assert_eq!(row[4], Value::Bool(true), "view {name} not serving: {row}");
    (
        row[0].as_u64().unwrap(),
        row[1].as_u64().unwrap(),
        row[2].as_u64().unwrap_or(0),
        row[3].as_str().map(str::to_string),
    )
}

async fn generation(demo: &TestDemo) -> u64 {
    rows(demo, "SELECT id FROM fleet_generation").await[0][0]
        .as_u64()
        .unwrap()
}

async fn hostnames(demo: &TestDemo) -> Vec<String> {
    let rows = rows(demo, "SELECT hostname FROM hosts ORDER BY hostname").await;
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_is_computed_once_per_generation_and_reloads_on_change() {
    let views = tempfile::tempdir().unwrap();
    let alerts = tempfile::tempdir().unwrap();
    write(views.path(), "hosts.toml", &hosts_view("%-m000"));
    write(
        views.path(),
        "gen_seen.toml",
        "name = \"gen_seen\"\nprewarm = true\n\
         sql = \"SELECT g.id AS generation, count(*) AS machines FROM sys, fleet_generation g GROUP BY g.id\"\n",
    );
    write(
        alerts.path(),
        "watched.toml",
        "name = \"watched via view\"\nevery = \"200ms\"\nroutes = [\"console\"]\n\
         sql = \"SELECT ip ip_key, hostname FROM hosts\"\n",
    );
    let args: Vec<std::ffi::OsString> = vec![
        "--views-dir".into(),
        views.path().into(),
        "--alerts-dir".into(),
        alerts.path().into(),
        "--alerts-poll".into(),
        "200ms".into(),
    ];
    let demo = TestDemo::start_with(2, 3, "1s", &args).await;

    // The alert reads the view: one instance per watched machine.
    eventually(Duration::from_secs(30), "the alert over the view fires", || async {
        let n = rows(
            &demo,
            "SELECT count(*) FROM alert_instances WHERE alert = 'watched via view' AND status = 'active'",
        )
        .await[0][0]
            .as_u64();
        (n == Some(2)).then_some(())
    })
    .await;

    // Twenty concurrent queries (each text different, so they share the
    // view, not one answer) cost at most one computation per generation.
    let (computes_before, uses_before, _, _) = view_row(&demo, "hosts").await;
    let first = generation(&demo).await;
    let queries = (0..20).map(|i| {
        let demo = &demo;
        async move { rows(demo, &format!("SELECT count(*) + {i} FROM hosts")).await }
    });
    for (i, answer) in futures::future::join_all(queries).await.iter().enumerate() {
        assert_eq!(answer[0][0].as_u64(), Some(2 + i as u64));
    }
    let last = generation(&demo).await;
    let (computes_after, uses_after, last_computed, error) = view_row(&demo, "hosts").await;
    assert_eq!(error, None);
    assert!(
        uses_after - uses_before >= 20,
        "{uses_before} -> {uses_after}"
    );
    assert!(
        computes_after - computes_before <= last - first + 1,
        "{} computations over generations {first}..={last}",
        computes_after - computes_before
    );

    // Invalidated by the next generation: computed again over it.
    let (_, _, newer, _) = eventually(Duration::from_secs(20), "a newer generation", || async {
        let _ = hostnames(&demo).await;
        let row = view_row(&demo, "hosts").await;
        (row.2 > last_computed).then_some(row)
    })
    .await;
    assert!(newer > last_computed);

    // A query pinned to generation N reads the view over N (HTTP), and
    // the view answers over pg too.
    for _ in 0..3 {
        let (status, body) = demo
            .query_json("SELECT generation, machines FROM gen_seen")
            .await;
        assert!(status.is_success(), "{body}");
        assert_eq!(body["rows"][0][0], body["generation"]["id"], "{body}");
    }
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host={} port={} user=fleetsql",
            demo.pg.ip(),
            demo.pg.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let pg_rows = client
        .simple_query("SELECT hostname FROM hosts ORDER BY hostname")
        .await
        .unwrap();
    let pg_hosts: Vec<String> = pg_rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(pg_hosts.len(), 2, "{pg_hosts:?}");
    assert!(
        pg_hosts.iter().all(|h| h.ends_with("-m000")),
        "{pg_hosts:?}"
    );

    // A changed file reloads without a restart.
    write(views.path(), "hosts.toml", &hosts_view("%-m001"));
    eventually(Duration::from_secs(20), "the changed view", || async {
        let names = hostnames(&demo).await;
        (names.len() == 2 && names.iter().all(|h| h.ends_with("-m001"))).then_some(())
    })
    .await;

    // Not TOML: reported, the previous version keeps serving.
    write(views.path(), "hosts.toml", "name = \"hosts\"\nsql = ");
    let error = eventually(Duration::from_secs(20), "the bad file reported", || async {
        view_row(&demo, "hosts").await.3
    })
    .await;
    assert!(error.contains("not a view definition"), "{error}");
    assert!(hostnames(&demo).await.iter().all(|h| h.ends_with("-m001")));

    // SQL that parses but does not plan: reported, previous version serves.
    write(
        views.path(),
        "hosts.toml",
        "name = \"hosts\"\nsql = \"SELECT ip, no_such_column FROM sys\"\n",
    );
    let error = eventually(
        Duration::from_secs(20),
        "the unplannable view reported",
        || async {
            view_row(&demo, "hosts")
                .await
                .3
                .filter(|e| e.contains("does not plan"))
        },
    )
    .await;
    assert!(error.contains("no_such_column"), "{error}");
    let names = hostnames(&demo).await;
    assert!(
        names.len() == 2 && names.iter().all(|h| h.ends_with("-m001")),
        "{names:?}"
    );
}
