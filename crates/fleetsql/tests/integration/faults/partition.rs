//! Partitions: a TLA that loses its link to one cluster, and an agent cut
//! from its proxy. Links are veth pairs into namespaces the test creates,
//! cut with `ip link set ... down` (packets dropped, no reset: a failed
//! router, not a closed port).

use std::time::{Duration, Instant};

use super::fleet::{FaultFleet, Place, fixture_topology};
use super::netns::{Dialer, Link};
use super::{lab_or_skip, report};

const TICK: Duration = Duration::from_secs(1);
/// The topology's default: three ticks.
const STALE_AFTER: Duration = Duration::from_secs(3);
/// The SQL node probes its TLAs every tick (at most 5 s).
const PROBE: Duration = TICK;
/// What a loaded two-core CI box adds to any deadline below.
const SLACK: Duration = Duration::from_secs(3);

/// Polls `check` every 50 ms for at most `limit`; the time it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tla_cut_from_one_cluster_drops_it_and_its_sql_node_switches() {
    let Some(mut lab) = lab_or_skip("partition") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let topology = fixture_topology(dir.path(), TICK, 1, &["t1", "t2"], &["sql"]);
    // Each cluster's proxy listens on an address of its own; each TLA runs
    // in a namespace with one link per cluster, so one TLA's way to one
    // cluster can be cut while the other TLA still sees it.
    let service: Vec<_> = (0..2).map(|_| lab.service_address()).collect();
    let mut tla_links: Vec<(String, Link, [Link; 2])> = Vec::new();
    for tla in ["t1", "t2"] {
        let ns = lab.namespace(tla);
        let uplink = lab.link(&ns);
        let to_cluster = [lab.link(&ns), lab.link(&ns)];
        for (link, addr) in to_cluster.iter().zip(&service) {
            lab.route(link, *addr);
        }
        tla_links.push((tla.to_string(), uplink, to_cluster));
    }
    let mut fleet = FaultFleet::new(dir, topology);
    let agents: Vec<String> = fleet.topology.agents.keys().cloned().collect();
    for name in agents {
        fleet.start("agent", &name, Place::root()).await;
    }
    for (k, proxy) in ["c1-p1", "c2-p1"].iter().enumerate() {
        let place = Place {
            ns: None,
            ip: service[k],
        };
        fleet.start("proxy", proxy, place).await;
    }
    for (tla, uplink, _) in &tla_links {
        let place = Place {
            ns: Some(uplink.ns.clone()),
            ip: uplink.ns_ip.into(),
        };
        fleet.start("tla", tla, place).await;
    }
    fleet.start("sqlnode", "sql", Place::root()).await;

    let sql = "SELECT count(*) n FROM sys";
    let producer = std::sync::Mutex::new(String::new());
    within(
        Duration::from_secs(30),
        "a complete first answer",
        || async {
            let (_, body) = fleet.query("sql", sql).await;
            let g = &body["generation"];
            *producer.lock().unwrap() = g["producer"].as_str().unwrap_or_default().to_string();
            g["clusters_seen"] == 2 && body["rows"][0][0] == 4
        },
    )
    .await;
    let producer = producer.into_inner().unwrap();
    let other = if producer == "t1" { "t2" } else { "t1" };
    let (_, _, to_cluster) = tla_links.iter().find(|(t, _, _)| *t == producer).unwrap();
    let cut = to_cluster[0].clone();

    // Cut the SQL node's TLA from c1.
    lab.set_link(&cut, false, Dialer::Namespace);
    let cut_at = Instant::now();
    within(
        STALE_AFTER + TICK + SLACK,
        "the cut TLA drops c1",
        || async {
            let h = fleet.health(&producer).await.unwrap_or_default();
            h["clusters_seen"] == 1 && h["clusters_expected"] == 2
        },
    )
    .await;
    let dropped = cut_at.elapsed();
    // The SQL node answers complete from the other TLA; never an error.
    let failed = std::sync::atomic::AtomicU32::new(0);
    within(
        STALE_AFTER + PROBE + SLACK,
        "the SQL node reads the TLA that still sees c1",
        || async {
            let (status, body) = fleet.query("sql", sql).await;
            if status != 200 {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let g = &body["generation"];
            g["producer"] == other && g["clusters_seen"] == 2 && body["rows"][0][0] == 4
        },
    )
    .await;
    let switched = cut_at.elapsed();
    let failed = failed.into_inner();
    assert_eq!(failed, 0, "queries failed during the switch");
    assert!(
        switched.saturating_sub(dropped) <= PROBE + SLACK,
        "switched {switched:?} after the cut, the TLA dropped c1 after {dropped:?}"
    );
    // fleet_clusters on the cut TLA's generation would show one fewer; the
    // node's answers name the TLA they came from and its coverage.
    let (_, body) = fleet
        .query(
            "sql",
            "SELECT cluster, complete FROM fleet_clusters ORDER BY cluster",
        )
        .await;
    assert_eq!(body["rows"].as_array().map(Vec::len), Some(2), "{body}");

    // The link comes back: the TLA sees both clusters within two ticks.
    lab.set_link(&cut, true, Dialer::Namespace);
    let back = within(2 * TICK + SLACK, "c1 back on the cut TLA", || async {
        let h = fleet.health(&producer).await.unwrap_or_default();
        h["clusters_seen"] == 2
    })
    .await;
    report(
        "partition_tla_cluster",
        &[
            ("dropped_ms", ms(dropped)),
            ("switched_ms", ms(switched)),
            ("failed_queries", failed.to_string()),
            ("recovered_ms", ms(back)),
        ],
    );
    drop(fleet);
    drop(lab);
}

/// Each tick of the proxy used to wait for every child's fetch, and the
/// cut agent's ran into `fetch_timeout` (one tick, at least 2 s): one
/// generation per ~3 s, the TLA's `stale_after`. A tick now closes at its
/// deadline (`tick_deadline`, 3/4 of a tick) with the children that
/// answered; the cut agent's previous answer is merged again until it is
/// stale, then the agent is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_from_its_proxy_never_blocks_the_proxys_ticks() {
    let Some(mut lab) = lab_or_skip("agent partition") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let topology = fixture_topology(dir.path(), TICK, 1, &["t1"], &["sql"]);
    let ns = lab.namespace("agent");
    let link = lab.link(&ns);
    let mut fleet = FaultFleet::new(dir, topology);
    fleet
        .start(
            "agent",
            "c1-m1",
            Place {
                ns: Some(ns.clone()),
                ip: link.ns_ip.into(),
            },
        )
        .await;
    fleet.start_rest().await;
    let sql = "SELECT count(*) n FROM sys";
    let complete = |body: &serde_json::Value| body["generation"]["machines_seen"] == 4;
    within(Duration::from_secs(30), "a complete answer", || async {
        complete(&fleet.query("sql", sql).await.1)
    })
    .await;

    lab.set_link(&link, false, Dialer::Root);
    let cut_at = Instant::now();
    // The proxy keeps making a generation every tick; the longest gap
    // between two of its generations while the agent is cut is measured.
    let mut last_id = fleet.generation_id("c1-p1").await;
    let mut last_change = Instant::now();
    let mut longest_gap = Duration::ZERO;
    let mut generations = 0;
    let watch = STALE_AFTER + 4 * TICK;
    while cut_at.elapsed() < watch {
        let id = fleet.generation_id("c1-p1").await;
        if id > last_id {
            longest_gap = longest_gap.max(last_change.elapsed());
            generations += id - last_id;
            last_id = id;
            last_change = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    longest_gap = longest_gap.max(last_change.elapsed());
    let (_, while_cut) = fleet.query("sql", sql).await;
    lab.set_link(&link, true, Dialer::Root);
    let back = within(2 * TICK + SLACK + STALE_AFTER, "the agent back", || async {
        complete(&fleet.query("sql", sql).await.1)
    })
    .await;
    report(
        "partition_agent",
        &[
            ("proxy_generations_while_cut", generations.to_string()),
            ("proxy_longest_gap_ms", ms(longest_gap)),
            ("recovered_ms", ms(back)),
        ],
    );
    assert!(
        generations >= (watch.as_secs() - 2),
        "the proxy made {generations} generations in {watch:?} with one agent cut"
    );
    // One generation a tick, give or take one on a loaded box.
    assert!(
        longest_gap <= 2 * TICK + Duration::from_millis(500),
        "the proxy stalled {longest_gap:?}"
    );
    let body = &while_cut;
    assert_eq!(body["generation"]["machines_seen"], 3, "{body}");
    assert_eq!(body["rows"][0][0], 3, "{body}");
}
