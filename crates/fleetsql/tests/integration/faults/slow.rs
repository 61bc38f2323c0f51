//! One cluster behind a slow, lossy, thin link (200 ms +- 50 ms, 2% loss,
//! 1 Mbit/s through the fault proxy, as `netem` would give): the other
//! cluster's data age does not change, the slow cluster's rows arrive late
//! or are left out as stale, and no generation waits for it. Then the link
//! is cut outright for a while and restored. No root needed: the proxy is
//! an ordinary TCP listener on loopback.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::fleet::{FaultFleet, Place, fixture_topology};
use super::proxy::{FaultProxy, LinkFaults};
use super::report;

const TICK: Duration = Duration::from_secs(1);

/// Every agent publishes `beat` (one row: the wall-clock time it was
/// written) through its drop directory every 200 ms, for at most
/// `length`; a cluster's data age is how old its oldest beat is when the
/// SQL node answers, measured by the test's one clock.
fn beat(fleet: &FaultFleet, length: Duration) -> tokio::task::JoinHandle<()> {
    let dirs: Vec<std::path::PathBuf> = fleet
        .topology
        .agents
        .values()
        .filter_map(|a| a.drop_dir.clone())
        .collect();
    tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() < length {
            let now = fleetsql_model::now_ms();
            for dir in &dirs {
                // Written aside and renamed: the agent never reads half a file.
                let part = dir.join("beat.part");
                std::fs::write(&part, format!("t\n{now}\n")).unwrap();
                std::fs::rename(&part, dir.join("beat.csv")).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Samples for `length`: each cluster's data age (ms) on the SQL node per
/// answer (`None`: the cluster was left out), and the longest time the
/// TLA went without a new generation.
async fn sample(
    fleet: &FaultFleet,
    length: Duration,
) -> (BTreeMap<String, Vec<Option<i64>>>, Duration) {
    let start = Instant::now();
    let mut ages: BTreeMap<String, Vec<Option<i64>>> = BTreeMap::new();
    let mut last_id = fleet.generation_id("t1").await;
    let mut last_change = Instant::now();
    let mut gap = Duration::ZERO;
    while start.elapsed() < length {
        let (status, body) = fleet
            .query("sql", "SELECT _cluster, min(t) FROM beat GROUP BY _cluster")
            .await;
        assert_eq!(status, 200, "{body}");
        let now = fleetsql_model::now_ms();
        let mut seen = BTreeMap::new();
        for row in body["rows"].as_array().into_iter().flatten() {
            let cluster = row[0].as_str().unwrap_or_default().to_string();
            seen.insert(cluster, row[1].as_i64().map(|t| now - t));
        }
        for cluster in ["c1", "c2"] {
            ages.entry(cluster.to_string())
                .or_default()
                .push(seen.get(cluster).copied().flatten());
        }
        let id = fleet.generation_id("t1").await;
        if id > last_id {
            gap = gap.max(last_change.elapsed());
            last_id = id;
            last_change = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (ages, gap.max(last_change.elapsed()))
}

fn max_age(ages: &[Option<i64>]) -> i64 {
    ages.iter().flatten().copied().max().unwrap_or(i64::MAX)
}

fn median_age(ages: &[Option<i64>]) -> i64 {
    let mut v: Vec<i64> = ages.iter().flatten().copied().collect();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(i64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_lossy_cluster_link_delays_only_that_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let topology = fixture_topology(dir.path(), TICK, 1, &["t1"], &["sql"]);
    let mut fleet = FaultFleet::new(dir, topology);
    let agents: Vec<String> = fleet.topology.agents.keys().cloned().collect();
    for name in agents {
        fleet.start("agent", &name, Place::root()).await;
    }
    fleet.start("proxy", "c1-p1", Place::root()).await;
    fleet.start("proxy", "c2-p1", Place::root()).await;
    // The TLA reaches c2's proxy only through the fault proxy.
    let link = FaultProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        fleet.addr("c2-p1", "flight"),
    )
    .await;
    fleet.advertise("c2-p1", link.addr);
    fleet.start("tla", "t1", Place::root()).await;
    fleet.start("sqlnode", "sql", Place::root()).await;
    let beats = beat(&fleet, Duration::from_secs(90));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = fleet
            .query("sql", "SELECT count(DISTINCT _cluster) FROM beat")
            .await;
        if body["generation"]["clusters_seen"] == 2 && body["rows"][0][0] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never complete: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        link.bytes() > 0,
        "the TLA does not read c2 through the fault proxy"
    );

    let (base, base_gap) = sample(&fleet, Duration::from_secs(5)).await;
    link.set(LinkFaults::slow_lossy());
    // Connections made before keep running through the faults; give the
    // link a tick to fill.
    tokio::time::sleep(TICK).await;
    let (slow, slow_gap) = sample(&fleet, Duration::from_secs(10)).await;
    let check = |ages: &BTreeMap<String, Vec<Option<i64>>>, gap: Duration, phase: &str| {
        let c1 = &ages["c1"];
        assert!(
            c1.iter().all(Option::is_some),
            "{phase}: c1 left out: {c1:?}"
        );
        // c1's age stays within one tick of what it was on a clean link.
        assert!(
            max_age(c1) <= max_age(&base["c1"]) + TICK.as_millis() as i64 + 500,
            "{phase}: c1's data aged: {c1:?} (before: {:?})",
            base["c1"]
        );
        assert!(
            gap <= 2 * TICK + Duration::from_secs(1),
            "{phase}: the TLA went {gap:?} without a generation"
        );
    };
    // Cut outright: c2 drops out (stale), c1 and the ticks carry on.
    link.cut(true);
    let (cut, cut_gap) = sample(&fleet, Duration::from_secs(7)).await;
    link.cut(false);
    let restored = Instant::now();
    loop {
        let (_, body) = fleet
            .query(
                "sql",
                "SELECT machines_seen FROM fleet_clusters WHERE cluster = 'c2'",
            )
            .await;
        if body["rows"][0][0].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(15),
            "c2 never came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = restored.elapsed();
    let c2_slow_present = slow["c2"].iter().filter(|a| a.is_some()).count();
    report(
        "slow_lossy_link",
        &[
            ("c1_age_p50_clean_ms", median_age(&base["c1"]).to_string()),
            ("c1_age_p50_slow_ms", median_age(&slow["c1"]).to_string()),
            ("c1_age_max_slow_ms", max_age(&slow["c1"]).to_string()),
            ("c2_age_p50_clean_ms", median_age(&base["c2"]).to_string()),
            ("c2_age_p50_slow_ms", median_age(&slow["c2"]).to_string()),
            (
                "c2_present_slow",
                format!("{c2_slow_present}/{}", slow["c2"].len()),
            ),
            ("tla_gap_clean_ms", base_gap.as_millis().to_string()),
            ("tla_gap_slow_ms", slow_gap.as_millis().to_string()),
            ("tla_gap_cut_ms", cut_gap.as_millis().to_string()),
            ("c2_recovered_ms", recovered.as_millis().to_string()),
        ],
    );
    beats.abort();
    check(&slow, slow_gap, "slow link");
    check(&cut, cut_gap, "cut link");
    assert!(
        cut["c2"].iter().rev().take(5).all(Option::is_none),
        "c2 still in the answers with its link cut: {:?}",
        cut["c2"]
    );
}
