//! kill -9 under load: a bounded client loop (pg and HTTP, about a
//! thousand queries a minute) against two SQL nodes of one set, each
//! client with both nodes' addresses (pg: a libpq-style host list; HTTP:
//! the next address when one does not answer), while an agent, a proxy,
//! the SQL node's TLA and one SQL node are killed with -9 in turn and
//! started again. Counted: queries failed outside the failover window,
//! the failover time of each kill, and whether each killed process
//! rejoined. 20 alerts run on the two SQL nodes all along (one state file,
//! one lease), firing and clearing every few seconds to a webhook: no
//! notification may be lost or sent twice across the kills.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fleet::{FaultFleet, fixture_topology};
use super::notify::Notifications;
use super::report;

const TICK: Duration = Duration::from_secs(1);
/// The failover target.
const WINDOW: Duration = Duration::from_secs(10);
const SQL: &str = "SELECT count(*) n FROM sys";

#[derive(Debug, Clone, Copy)]
struct Outcome {
    at: Instant,
    ok: bool,
    pg: bool,
}

/// HTTP: each address in turn until one answers 200.
async fn http_query(client: &reqwest::Client, nodes: &[SocketAddr]) -> bool {
    for node in nodes {
        let answer = client
            .post(format!("http://{node}/v1/query"))
            .json(&serde_json::json!({ "sql": SQL }))
            .timeout(Duration::from_secs(3))
            .send()
            .await;
        if let Ok(r) = answer
            && r.status().is_success()
        {
            return true;
        }
    }
    false
}

/// pg over a host list: a connection kept while it works; on an error,
/// connect again (the list in order) and ask once more.
struct PgClient {
    config: tokio_postgres::Config,
    client: Option<tokio_postgres::Client>,
}

impl PgClient {
    fn new(nodes: &[SocketAddr]) -> PgClient {
        let mut config = tokio_postgres::Config::new();
        for node in nodes {
            config.host(node.ip().to_string()).port(node.port());
        }
        config
            .user("fleet")
            .dbname("fleet")
            .connect_timeout(Duration::from_secs(2));
        PgClient {
            config,
            client: None,
        }
    }

    async fn query(&mut self) -> bool {
        for _ in 0..2 {
            if self.client.is_none() {
                if let Ok((client, connection)) = self.config.connect(tokio_postgres::NoTls).await {
                    tokio::spawn(connection);
                    self.client = Some(client);
                } else {
                    continue;
                }
            }
            let client = self.client.as_ref().expect("connected above");
            let answer =
                tokio::time::timeout(Duration::from_secs(3), client.simple_query(SQL)).await;
            if let Ok(Ok(_)) = answer {
                return true;
            }
            self.client = None;
        }
        false
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_turn_under_client_load() {
    let dir = tempfile::tempdir().unwrap();
    let topology = fixture_topology(dir.path(), TICK, 2, &["t1", "t2"], &["sql1", "sql2"]);
    let mut fleet = FaultFleet::new(dir, topology);
    // 20 alerts on the two SQL nodes, sharing one state file (one holds
    // the lease and notifies; the other takes over when it dies).
    let alerts_dir = fleet.dir.path().join("alerts");
    let notifications = Notifications::start(&alerts_dir).await;
    let alerts_state = fleet.dir.path().join("alerts.db");
    for node in ["sql1", "sql2"] {
        let args: Vec<String> = vec![
            "--alerts-dir".into(),
            alerts_dir.display().to_string(),
            "--alerts-state".into(),
            alerts_state.display().to_string(),
            "--alerts-node".into(),
            node.into(),
            "--alerts-lease".into(),
            "3s".into(),
        ];
        fleet.extra_args.insert(node.to_string(), args);
    }
    fleet.start_rest().await;
    let http_nodes = [fleet.addr("sql1", "http"), fleet.addr("sql2", "http")];
    let pg_nodes = [fleet.addr("sql1", "pg"), fleet.addr("sql2", "pg")];

    // ~1,000 queries a minute: one every 60 ms, pg and HTTP alternating.
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let outcomes = outcomes.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut pg = PgClient::new(&pg_nodes);
            let mut interval = tokio::time::interval(Duration::from_millis(60));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            // Bounded: the test stops it, and it stops by itself after 3 min.
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(180)
            {
                interval.tick().await;
                n += 1;
                let use_pg = n.is_multiple_of(2);
                let at = Instant::now();
                let ok = if use_pg {
                    pg.query().await
                } else {
                    http_query(&http, &http_nodes).await
                };
                outcomes
                    .lock()
                    .unwrap()
                    .push(Outcome { at, ok, pg: use_pg });
            }
        })
    };
    tokio::time::sleep(3 * TICK).await;

    let producer = fleet.query("sql1", SQL).await.1["generation"]["producer"]
        .as_str()
        .unwrap_or("t1")
        .to_string();
    let mut kills: Vec<(String, Instant)> = Vec::new();
    let mut rejoined: Vec<(String, Duration)> = Vec::new();
    for victim in ["c1-m1", "c1-p1", producer.as_str(), "sql1"] {
        fleet.kill(victim);
        kills.push((victim.to_string(), Instant::now()));
        tokio::time::sleep(4 * TICK).await;
        let restarted = Instant::now();
        fleet.restart(victim).await;
        // Rejoined: the fleet answers complete from sql1 again, with the
        // restarted process's part in it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = fleet.query("sql1", SQL).await;
            if body["generation"]["machines_seen"] == 4 && body["rows"][0][0] == 4 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{victim} did not rejoin: {body}\n{}",
                fleet.log(victim)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rejoined.push((victim.to_string(), restarted.elapsed()));
        tokio::time::sleep(2 * TICK).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    // Every notification of an event up to now delivered, then none lost
    // or sent twice across the kills.
    let until_ms = fleetsql_model::now_ms();
    let drained = notifications
        .wait_past(until_ms, Duration::from_secs(30))
        .await;
    let (instances, events, wrong) = notifications.check(until_ms);

    let outcomes = outcomes.lock().unwrap().clone();
    let in_window = |o: &Outcome| {
        kills
            .iter()
            .any(|(_, at)| o.at >= *at && o.at < *at + WINDOW)
    };
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    let outside = failed.iter().filter(|o| !in_window(o)).count();
    let mut failover = Vec::new();
    for (victim, at) in &kills {
        let last_failure = failed
            .iter()
            .filter(|o| o.at >= *at && o.at < *at + WINDOW)
            .map(|o| o.at.duration_since(*at))
            .max()
            .unwrap_or_default();
        failover.push((victim.clone(), last_failure));
    }
    let pg_failed = failed.iter().filter(|o| o.pg).count();
    let mut figures = vec![
        ("alert_instances", instances.to_string()),
        ("notifications", events.to_string()),
        ("notifications_lost_or_twice", wrong.len().to_string()),
        ("queries", outcomes.len().to_string()),
        ("failed", failed.len().to_string()),
        ("failed_pg", pg_failed.to_string()),
        ("failed_outside_window", outside.to_string()),
    ];
    let role = |v: &str| match v {
        "c1-m1" => "agent",
        "c1-p1" => "proxy",
        "sql1" => "sqlnode",
        _ => "tla",
    };
    let failover_keys: Vec<(String, String)> = failover
        .iter()
        .map(|(v, d)| {
            (
                format!("failover_{}_ms", role(v)),
                d.as_millis().to_string(),
            )
        })
        .chain(
            rejoined
                .iter()
                .map(|(v, d)| (format!("rejoin_{}_ms", role(v)), d.as_millis().to_string())),
        )
        .collect();
    for (k, v) in &failover_keys {
        figures.push((k.as_str(), v.clone()));
    }
    report("kill_9_under_load", &figures);
    assert!(
        outcomes.len() > 300,
        "the load loop ran {} queries",
        outcomes.len()
    );
    assert_eq!(outside, 0, "queries failed outside the failover windows");
    assert!(drained, "the outbox did not drain within 30 s");
    assert_eq!(
        instances,
        super::notify::ALERTS * 4,
        "every alert notifies for each of the 4 machines"
    );
    assert!(
        wrong.is_empty(),
        "notifications lost or sent twice: {wrong:#?}"
    );
    for (victim, d) in &failover {
        assert!(*d < WINDOW, "{victim}: failures for {d:?}");
    }
}
