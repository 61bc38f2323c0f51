//! Full disk (issue 20 item 4): a demo whose state directory (alert state,
//! report runs, persistent queries, history) is a small tmpfs the test
//! fills with a file. Live queries keep answering; the alert, report and
//! persistent-query stores show as failing in the SQL node's `fleet_nodes`
//! row and on `/metrics`; what was committed before stays; once the file is
//! deleted all three write again.
//! Mounting needs root: as another user the test skips and says so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::TestDemo;

/// A tmpfs of `size_mib` mounted on a directory of its own; unmounted on
/// drop (panics included), lazily so a process still holding a file in it
/// cannot keep the mount behind.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size_mib: u32) -> Result<Tmpfs, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("id -u: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("mounting a tmpfs needs root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes `path` until the file system refuses (ENOSPC); returns the bytes
/// written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Small writes too, so the last partial page is used as well.
    while let Ok(n) = file.write(&[0x5a; 512]) {
        if n == 0 {
            break;
        }
        written += n as u64;
    }
    let _ = file.flush();
    written
}

const ALERT: &str = r#"
name = "nodes"
every = "1s"
fire_after = 1
min_completeness = 0.0
routes = ["console"]
sql = "SELECT name name_key, role FROM fleet_nodes"
"#;

const REPORT: &str = r#"
title = "Nodes"
sql = "SELECT role, count(*) n FROM fleet_nodes GROUP BY role"
every = "1s"
retention = "1d"
group_by = ["role"]
values = ["n"]
"#;

/// What the test watches, read over HTTP.
#[derive(Debug, Default)]
struct Seen {
    /// The SQL node's `fleet_nodes.store_error`.
    store_error: Option<String>,
    /// `fleetsql_store_failing` by store.
    failing_alerts: Option<bool>,
    failing_reports: Option<bool>,
    failing_queries: Option<bool>,
    /// `fleetsql_store_write_failures_total{store="alerts"}`.
    alert_failures: u64,
    /// The alert's committed iteration count (memory only advances on a
    /// commit that worked).
    iteration: u64,
    /// Kept runs of the report, and the oldest one's time.
    runs: usize,
    oldest_run_ms: Option<i64>,
    /// Ids of the registered persistent queries.
    queries: Vec<String>,
}

async fn look(demo: &TestDemo) -> Seen {
    let mut seen = Seen::default();
    let (_, body) = demo
        .query_json("SELECT store_error FROM fleet_nodes WHERE role = 'sqlnode'")
        .await;
    seen.store_error = body["rows"][0][0].as_str().map(str::to_string);
    let (_, body) = demo
        .query_json("SELECT iteration FROM alerts WHERE name = 'nodes'")
        .await;
    seen.iteration = body["rows"][0][0].as_u64().unwrap_or(0);
    let client = reqwest::Client::new();
    if let Ok(r) = client
        .get(format!("{}/metrics", demo.url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        && let Ok(text) = r.text().await
    {
        for line in text.lines() {
            if line.starts_with("fleetsql_store_write_failures_total{")
                && line.contains("store=\"alerts\"")
            {
                seen.alert_failures = line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            if !line.starts_with("fleetsql_store_failing{") {
                continue;
            }
            let failing = line.ends_with(" 1");
            if line.contains("store=\"alerts\"") {
                seen.failing_alerts = Some(failing);
            } else if line.contains("store=\"reports\"") {
                seen.failing_reports = Some(failing);
            } else if line.contains("store=\"persistent_queries\"") {
                seen.failing_queries = Some(failing);
            }
        }
    }
    if let Ok(r) = client
        .get(format!("{}/v1/reports/nodes/runs", demo.url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        && let Ok(body) = r.json::<Value>().await
    {
        let runs = body["runs"]
            .as_array()
            .or_else(|| body.as_array())
            .cloned()
            .unwrap_or_default();
        seen.runs = runs.len();
        seen.oldest_run_ms = runs.first().and_then(|r| r["run_at_ms"].as_i64());
    }
    if let Ok(r) = client
        .get(format!("{}/v1/persistent-queries", demo.url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        && let Ok(body) = r.json::<Value>().await
    {
        seen.queries = body["queries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|q| q["id"].as_str().map(str::to_string))
            .collect();
    }
    seen
}

/// Registers a persistent query; (status, body).
async fn register(demo: &TestDemo, epl: &str) -> (reqwest::StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/persistent-queries", demo.url()))
        .json(&serde_json::json!({ "epl": epl }))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

const QUERY_BEFORE: &str = "select count(*) as n from sys.win:time(10 sec)";
const QUERY_DURING: &str = "select count(*) as n, max(cpu_pct) as top from sys.win:time(20 sec)";

/// Polls `look` until `done` holds (at most `limit`), answering a live
/// query every round; returns what was seen last and the queries that
/// failed.
async fn until(
    demo: &TestDemo,
    limit: Duration,
    what: &str,
    done: impl Fn(&Seen) -> bool,
) -> (Seen, usize, Duration) {
    let started = Instant::now();
    let mut failed = 0;
    loop {
        let (status, body) = demo.query_json("SELECT count(*) FROM sys").await;
        if !status.is_success() || body["rows"][0][0].as_u64().unwrap_or(0) == 0 {
            failed += 1;
            eprintln!("live query failed: {status} {body}");
        }
        let seen = look(demo).await;
        if done(&seen) {
            return (seen, failed, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}; last seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_loses_nothing_and_writing_resumes() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    // 32 MiB: the alert and report stores need a few hundred KiB; the
    // demo's history keeps 512 MiB free by default, so it writes nothing
    // here and leaves the space to the stores under test.
    let tmpfs = match Tmpfs::mount(&state, 32) {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_is_reported_loses_nothing_and_writing_resumes: {why}");
            return;
        }
    };
    let alerts = work.path().join("alerts");
    let reports = work.path().join("reports");
    std::fs::create_dir_all(&alerts).unwrap();
    std::fs::create_dir_all(&reports).unwrap();
    std::fs::write(alerts.join("nodes.toml"), ALERT).unwrap();
    std::fs::write(reports.join("nodes.toml"), REPORT).unwrap();
    let arg = |p: &Path| p.as_os_str().to_os_string();
    let demo = TestDemo::start_with(
        2,
        3,
        "1s",
        &[
            "--state-dir".into(),
            arg(&state),
            "--alerts-dir".into(),
            arg(&alerts),
            "--reports-dir".into(),
            arg(&reports),
            // The demo keeps history, which by default stops under 512 MiB
            // free: more than this small tmpfs has.
            "--history-min-free-mib".into(),
            "1".into(),
        ],
    )
    .await;

    // A persistent query registered (written to its store) before.
    let (status, body) = register(&demo, QUERY_BEFORE).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let kept_query = body["id"].as_str().unwrap().to_string();

    // The stores written, and said to be fine.
    let (before, failed_before, _) = until(&demo, Duration::from_secs(60), "stores written", |s| {
        s.iteration >= 3
            && s.runs >= 3
            && s.failing_alerts == Some(false)
            && s.failing_reports == Some(false)
            && s.failing_queries == Some(false)
    })
    .await;
    assert_eq!(
        before.queries,
        std::slice::from_ref(&kept_query),
        "{before:?}"
    );
    assert_eq!(before.store_error, None, "{before:?}");

    let filler = state.join("filler");
    let filled = fill(&filler);
    let (during, failed_filling, detect) =
        until(&demo, Duration::from_secs(60), "full disk reported", |s| {
            s.failing_alerts == Some(true)
                && s.failing_reports == Some(true)
                && s.store_error
                    .as_deref()
                    .is_some_and(|e| e.contains("alerts:") && e.contains("reports:"))
        })
        .await;
    let error = during.store_error.clone().unwrap_or_default();
    assert!(error.contains("full"), "not the disk's error: {error}");
    // The persistent-query store writes only when a query is registered or
    // deleted: a registration now is refused, names the store, and leaves
    // the store failing until a write works.
    let (status, refused) = register(&demo, QUERY_DURING).await;
    assert!(
        !status.is_success(),
        "registered on a full disk: {status} {refused}"
    );
    assert!(
        refused.to_string().contains("persistent-query store"),
        "{refused}"
    );
    let (during, failed_refused, _) = until(
        &demo,
        Duration::from_secs(30),
        "persistent-query store reported",
        |s| {
            s.failing_queries == Some(true)
                && s.store_error
                    .as_deref()
                    .is_some_and(|e| e.contains("persistent_queries:") && e.contains("full"))
        },
    )
    .await;
    assert_eq!(
        during.queries,
        std::slice::from_ref(&kept_query),
        "{during:?}"
    );
    // Nothing committed is gone: every run kept before the disk filled is
    // still there, the oldest first.
    assert!(during.runs >= before.runs, "{before:?} then {during:?}");
    assert_eq!(during.oldest_run_ms, before.oldest_run_ms);
    assert!(during.iteration >= before.iteration);
    // Writes are retried every pass, not given up: three more failures
    // counted, the alert state not advanced meanwhile (memory never runs
    // ahead of the store), and queries go on.
    let retries_from = during.alert_failures;
    let (still, failed_full, _) = until(&demo, Duration::from_secs(30), "retried", |s| {
        s.alert_failures >= retries_from + 3
    })
    .await;
    assert_eq!(still.failing_alerts, Some(true), "{still:?}");
    assert_eq!(
        still.iteration, during.iteration,
        "alert state advanced on a full disk"
    );

    assert_eq!(still.failing_queries, Some(true), "{still:?}");

    std::fs::remove_file(&filler).unwrap();
    // The first registration after space returns is written and clears the
    // store's error.
    let (status, body) = register(&demo, QUERY_DURING).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    let new_query = body["id"].as_str().unwrap().to_string();
    let (after, failed_after, recover) =
        until(&demo, Duration::from_secs(60), "writing resumed", |s| {
            s.failing_alerts == Some(false)
                && s.failing_reports == Some(false)
                && s.failing_queries == Some(false)
                && s.store_error.is_none()
                && s.iteration > still.iteration
                && s.runs > during.runs
        })
        .await;
    assert_eq!(after.oldest_run_ms, before.oldest_run_ms);
    // Listed by id, not by age.
    let mut both = vec![kept_query, new_query];
    both.sort();
    assert_eq!(after.queries, both, "{after:?}");
    let failed = failed_before + failed_filling + failed_refused + failed_full + failed_after;
    assert_eq!(failed, 0, "live queries failed around the full disk");
    super::report(
        "full_disk",
        &[
            (
                "filled_mib",
                format!("{:.1}", filled as f64 / (1 << 20) as f64),
            ),
            ("reported_s", format!("{:.1}", detect.as_secs_f64())),
            ("resumed_s", format!("{:.1}", recover.as_secs_f64())),
            ("failed_queries", failed.to_string()),
            (
                "runs_lost_committed",
                (before.runs.saturating_sub(during.runs)).to_string(),
            ),
        ],
    );
    drop(demo);
    drop(tmpfs);
}

/// What the history test watches: `fleet_nodes.store_error`, the
/// `history` store's gauge, `fleet_history.writing` for `sys` and the
/// generations `history.sys` holds; and whether a live query answered.
#[derive(Debug, Default)]
struct HistorySeen {
    store_error: Option<String>,
    failing: Option<bool>,
    writing: Option<bool>,
    generations: u64,
    live_ok: bool,
}

async fn look_history(demo: &TestDemo) -> HistorySeen {
    let (status, body) = demo.query_json("SELECT count(*) FROM sys").await;
    let live_ok = status.is_success() && body["rows"][0][0].as_u64().unwrap_or(0) > 0;
    if !live_ok {
        eprintln!("live query failed: {status} {body}");
    }
    let (_, body) = demo
        .query_json("SELECT store_error FROM fleet_nodes WHERE role = 'sqlnode'")
        .await;
    let store_error = body["rows"][0][0].as_str().map(str::to_string);
    let (_, body) = demo
        .query_json("SELECT writing FROM fleet_history WHERE table_name = 'sys'")
        .await;
    let writing = body["rows"][0][0].as_bool();
    let (_, body) = demo
        .query_json("SELECT count(DISTINCT _generation_time) FROM history.sys")
        .await;
    let generations = body["rows"][0][0].as_u64().unwrap_or(0);
    let mut failing = None;
    if let Ok(r) = reqwest::Client::new()
        .get(format!("{}/metrics", demo.url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        && let Ok(text) = r.text().await
    {
        failing = text
            .lines()
            .find(|l| l.starts_with("fleetsql_store_failing{") && l.contains("store=\"history\""))
            .map(|l| l.ends_with(" 1"));
    }
    HistorySeen {
        store_error,
        failing,
        writing,
        generations,
        live_ok,
    }
}

async fn until_history(
    demo: &TestDemo,
    what: &str,
    done: impl Fn(&HistorySeen) -> bool,
) -> (HistorySeen, usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut live_failed = 0;
    loop {
        let seen = look_history(demo).await;
        live_failed += usize::from(!seen.live_ok);
        if done(&seen) {
            return (seen, live_failed);
        }
        assert!(Instant::now() < deadline, "{what}: last seen {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Issue 18 item 5 / issue 20 item 4: a full disk under Query History. The
/// demo's history writes to a small tmpfs (`--history-min-free-mib 1`);
/// filled, history stops writing and says so in `fleet_nodes.store_error`,
/// `fleetsql_store_failing{store="history"}` and `fleet_history.writing`,
/// while live queries answer throughout; emptied, it writes again (as soon
/// as the disk has room, not after a fixed wait) and the store clears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_history_not_live_answers_and_history_resumes() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let tmpfs = match Tmpfs::mount(&state, 16) {
        Ok(t) => t,
        Err(why) => {
            eprintln!(
                "SKIPPED a_full_disk_stops_history_not_live_answers_and_history_resumes: {why}"
            );
            return;
        }
    };
    let demo = TestDemo::start_with(
        2,
        3,
        "300ms",
        &[
            "--state-dir".into(),
            state.as_os_str().to_os_string(),
            "--history-min-free-mib".into(),
            "1".into(),
        ],
    )
    .await;
    let (before, failed_before) = until_history(&demo, "history written", |s| {
        s.generations >= 2 && s.failing == Some(false) && s.writing == Some(true)
    })
    .await;
    assert_eq!(before.store_error, None, "{before:?}");

    let filler = state.join("filler");
    fill(&filler);
    let (during, failed_full) = until_history(&demo, "full disk reported", |s| {
        s.failing == Some(true)
            && s.writing == Some(false)
            && s.store_error
                .as_deref()
                .is_some_and(|e| e.contains("history:"))
    })
    .await;
    // Kept generations stay readable; none is added while full.
    assert!(during.generations >= before.generations, "{during:?}");
    let (still, failed_still) = until_history(&demo, "still full", |s| {
        s.failing == Some(true) && s.live_ok
    })
    .await;
    // Three more live generations, none of them kept.
    let live_id = async || demo.query_json("SELECT 1").await.1["generation"]["id"].as_u64();
    let from = live_id().await.expect("a live generation");
    let deadline = Instant::now() + Duration::from_secs(30);
    while live_id().await.is_none_or(|id| id < from + 3) {
        assert!(
            Instant::now() < deadline,
            "the demo stopped making generations"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (later, _) = until_history(&demo, "still full", |s| s.failing == Some(true)).await;
    assert_eq!(
        later.generations, still.generations,
        "history grew on a full disk: {still:?} {later:?}"
    );

    std::fs::remove_file(&filler).unwrap();
    let (after, failed_after) = until_history(&demo, "history resumed", |s| {
        s.failing == Some(false)
            && s.writing == Some(true)
            && s.store_error.is_none()
            && s.generations > later.generations
    })
    .await;
    assert!(after.generations > during.generations);
    assert_eq!(
        failed_before + failed_full + failed_still + failed_after,
        0,
        "live queries failed around the full disk"
    );
    drop(demo);
    drop(tmpfs);
}
