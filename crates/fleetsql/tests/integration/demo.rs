//! The real binary, as a user runs it: `fleetsql demo`, then psql,
//! `fleetsql sql`, HTTP and the publish API against it.

use std::process::Command;

use crate::cluster::TestDemo;
use crate::tiers::publish_csv;

const DNS_RSS: &str = "SELECT sys.ip ip, procname, rss, pid
FROM sys, processes
WHERE sys.ip = processes.ip
      AND (rss*100)/sys.memtotal > 75
      AND sys.ip in
      (SELECT ip
       FROM machinerole
       WHERE role='dns');";

const CONTINENT_HITS: &str = "SELECT    c.continent_name ,
          SUM(l.hits) hits
FROM      load_info l,
          region_data r,
          continent_data c
WHERE     l.georegion=r.id AND
          r.continent=c.continent
GROUP BY c.continent_name
ORDER BY hits DESC;";

const DISK_ALERT: &str = "SELECT
    machineip      ip_key,
    mountp        mnt_key,
    bavail*bsize  free_space,
    (100*bavail)/blocks pct
FROM
    filesystem a
WHERE
    blocks > 0 and
    (100*bavail)/blocks < 3;";

fn psql(demo: &TestDemo, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args([
            "-h",
            &demo.pg.ip().to_string(),
            "-p",
            &demo.pg.port().to_string(),
        ])
        .args([
            "-U",
            "fleetsql",
            "-d",
            "fleetsql",
            "-X",
            "-A",
            "-t",
            "-F",
            "|",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-c", sql])
        .output()
        .expect("psql is installed (scripts/test installs it)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_queries_over_psql_cli_and_http() {
    // More machines, so the simulator's rare conditions (dns machines with
    // a process above 75% RSS, nearly full disks) are sure to occur.
    let demo = TestDemo::start_sized(8, 25).await;

    for sql in [DNS_RSS, CONTINENT_HITS, DISK_ALERT] {
        let out = psql(&demo, sql);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "psql failed on {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.lines().count() > 0,
            "no rows over psql for {sql}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The answer's completeness arrives as a NOTICE.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("NOTICE") && stderr.contains("clusters"),
            "no NOTICE: {stderr}"
        );

        let cli = demo.sql_cli(&[sql]);
        assert!(
            cli.status.success(),
            "fleetsql sql failed: {}",
            String::from_utf8_lossy(&cli.stderr)
        );
        let table = String::from_utf8_lossy(&cli.stdout);
        assert!(
            table.contains('+') && table.contains('|'),
            "not an aligned table: {table}"
        );
    }

    // The disk alert's percentages are whole numbers below 3.
    let out = psql(&demo, DISK_ALERT);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let pct: i64 = line
            .rsplit('|')
            .next()
            .unwrap()
            .parse()
            .expect("integer pct");
        assert!((0..3).contains(&pct), "{line}");
    }

    // Continents come ordered by hits.
    let (status, body) = demo.query_json(CONTINENT_HITS).await;
    assert!(status.is_success(), "{body}");
    let hits: Vec<i64> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_i64().unwrap())
        .collect();
    assert!(hits.len() >= 5, "{body}");
    assert!(hits.windows(2).all(|w| w[0] >= w[1]), "{hits:?}");
    let generation = &body["generation"];
    for key in [
        "id",
        "made_at",
        "age_ms",
        "clusters_seen",
        "clusters_expected",
        "machines_seen",
    ] {
        assert!(!generation[key].is_null(), "generation lacks {key}: {body}");
    }
    // 8 simulated clusters and the local machine's.
    assert_eq!(generation["clusters_expected"], 9, "{body}");
    assert_eq!(generation["machines_seen"], 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_formats_and_errors() {
    let demo = TestDemo::start().await;
    let json = demo.sql_cli(&[
        "--format",
        "json",
        "SELECT cluster, machines_seen FROM fleet_clusters ORDER BY cluster",
    ]);
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3, "{rows}");
    assert_eq!(rows[0]["machines_seen"], 3);

    let csv = demo.sql_cli(&["--format", "csv", "SELECT 1 AS one, 'x' AS two"]);
    assert_eq!(String::from_utf8_lossy(&csv.stdout), "one,two\n1,x\n");

    let bad = demo.sql_cli(&["SELEC nonsense"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("error"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let unknown = demo.sql_cli(&["SELECT * FROM nobody_publishes_this"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("nobody_publishes_this"));

    let write = demo.sql_cli(&["DROP TABLE sys"]);
    assert!(!write.status.success());
    assert!(String::from_utf8_lossy(&write.stderr).contains("read-only"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_rows_and_dropped_files_reach_sql_with_origin_columns() {
    let demo = TestDemo::start().await;
    publish_csv(demo.publish, "services", "svc,up\nweb,1\ndb,0\n").await;

    let (status, body) = demo
        .query_json(
            "SELECT svc, up, _cluster, _host IS NOT NULL AS has_host FROM services ORDER BY svc",
        )
        .await;
    assert!(status.is_success(), "{body}");
    assert_eq!(
        body["rows"],
        serde_json::json!([["db", 0, "local", true], ["web", 1, "local", true]])
    );

    // A file dropped by rename is a publisher too.
    let tmp = demo.dir.path().join("disks.csv.tmp");
    std::fs::write(&tmp, "dev,errors\nsda,3\n").unwrap();
    std::fs::rename(&tmp, demo.dir.path().join("drop/disks.csv")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = demo.query_json("SELECT dev, errors FROM disks").await;
        if status.is_success() && body["rows"] == serde_json::json!([["sda", 3]]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dropped file never queryable: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_driver_gets_typed_rows_and_a_notice() {
    let demo = TestDemo::start().await;
    let (client, mut connection) = tokio_postgres::connect(
        &format!(
            "host={} port={} user=fleetsql",
            demo.pg.ip(),
            demo.pg.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let (notices_tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        use futures::StreamExt;
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notice(notice) = message {
                let _ = notices_tx.send(notice.message().to_string());
            }
        }
    });
    let rows = client
        .query(
            "SELECT machineip, (100*bavail)/blocks AS pct FROM filesystem WHERE blocks > $1",
            &[&0i64],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    let pct: i64 = rows[0].get("pct");
    assert!((0..=100).contains(&pct));
    let notice = notices.recv().await.unwrap();
    assert!(
        notice.contains("generation") && notice.contains("machines"),
        "{notice}"
    );
}
