//! The tiers as separate processes: `TestCluster` starts real `fleetsql
//! agent|proxy|tla|sqlnode` binaries on port 0 from one topology file,
//! bottom up, each ready once its `/health` answers with a generation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetsql_tiers::{AgentEntry, ProxyEntry, SqlNodeEntry, TlaEntry, Topology};
use serde_json::Value;

use crate::cluster::{BINARY, ready_line};
use crate::fixture::{FixtureFleet, fixture_machines, repo_root};

const TICK: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Process {
    role: &'static str,
    child: Child,
    addrs: BTreeMap<String, SocketAddr>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A whole fleet of real processes: agents named `<cluster>-m<i>`, proxies
/// `<cluster>-p<i>`, TLAs `t<i>`, one SQL node `sql`.
#[derive(Debug)]
pub(crate) struct TestCluster {
    pub(crate) dir: tempfile::TempDir,
    topology: Topology,
    processes: BTreeMap<String, Process>,
    /// Further arguments of a process, by name.
    extra_args: BTreeMap<String, Vec<std::ffi::OsString>>,
}

fn ready_fields(line: &str) -> BTreeMap<String, SocketAddr> {
    line.split_whitespace()
        .filter_map(|token| token.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// What [`TestCluster::start_fleet`] starts beside the fixture's machines.
#[derive(Debug)]
pub(crate) struct FleetSpec {
    pub(crate) proxies: usize,
    pub(crate) tlas: usize,
    pub(crate) table_expiry: Duration,
    /// One more (empty) agent per cluster, so each has three.
    pub(crate) extra_agent: bool,
    /// SQL nodes by name; an entry naming no TLAs reads from all of them.
    pub(crate) sqlnodes: BTreeMap<String, SqlNodeEntry>,
    /// SQL nodes that are TLAs too (`fleetsql tla-sql`): each gets a TLA
    /// entry of its name, run in its process.
    pub(crate) tla_sql: BTreeSet<String>,
}

impl TestCluster {
    /// The fixture fleet's machines as agents (their tables as drop-dir
    /// files, host collectors off), one more empty agent per cluster so each
    /// cluster has three, `proxies` per cluster, `tlas` TLAs and one SQL
    /// node `sql`.
    pub(crate) async fn start(proxies: usize, tlas: usize, table_expiry: Duration) -> TestCluster {
        Self::start_fleet(FleetSpec {
            proxies,
            tlas,
            table_expiry,
            extra_agent: true,
            sqlnodes: BTreeMap::from([("sql".to_string(), SqlNodeEntry::default())]),
            tla_sql: BTreeSet::new(),
        })
        .await
    }

    /// A fleet as `spec` says, in the temp dir `dir` (for files the
    /// topology's entries name before the fleet starts).
    pub(crate) async fn start_fleet_in(dir: tempfile::TempDir, spec: FleetSpec) -> TestCluster {
        Self::start_fleet_edited(dir, spec, |_, _| {}).await
    }

    /// [`TestCluster::start_fleet_in`] with `edit` applied to the topology
    /// (and the temp dir) before any process starts: a `[tls]` section and
    /// its certificates, say.
    pub(crate) async fn start_fleet_edited(
        dir: tempfile::TempDir,
        spec: FleetSpec,
        edit: impl FnOnce(&mut Topology, &std::path::Path),
    ) -> TestCluster {
        let FleetSpec {
            proxies,
            tlas,
            table_expiry,
            extra_agent,
            sqlnodes,
            tla_sql,
        } = spec;
        let machines = fixture_machines();
        let mut topology = Topology {
            tick: TICK,
            table_expiry,
            ..Topology::default()
        };
        let mut per_cluster: BTreeMap<String, usize> = BTreeMap::new();
        let mut add_agent = |topology: &mut Topology, host: &str, ip: &str, cluster: &str| {
            let n = per_cluster.entry(cluster.to_string()).or_default();
            *n += 1;
            let name = format!("{cluster}-m{n}");
            let drop_dir = dir.path().join(&name);
            std::fs::create_dir_all(&drop_dir).unwrap();
            topology.agents.insert(
                name,
                AgentEntry {
                    cluster: cluster.to_string(),
                    host: Some(host.to_string()),
                    ip: Some(ip.to_string()),
                    drop_dir: Some(drop_dir),
                    host_collectors: Some(false),
                    ..AgentEntry::default()
                },
            );
        };
        for machine in &machines {
            add_agent(&mut topology, &machine.host, &machine.ip, &machine.cluster);
            let name = format!(
                "{}-m{}",
                machine.cluster,
                per_cluster_count(&topology, &machine.cluster)
            );
            let drop_dir = topology.agents[&name].drop_dir.clone().unwrap();
            for (table, csv) in &machine.tables {
                std::fs::write(drop_dir.join(format!("{table}.csv")), csv).unwrap();
            }
        }
        let clusters: BTreeSet<String> = machines.iter().map(|m| m.cluster.clone()).collect();
        for (k, cluster) in clusters.iter().enumerate() {
            if extra_agent {
                let ip = format!("10.0.9.{}", k + 1);
                add_agent(&mut topology, &format!("{cluster}-extra"), &ip, cluster);
            }
            for p in 1..=proxies {
                topology.proxies.insert(
                    format!("{cluster}-p{p}"),
                    ProxyEntry {
                        cluster: cluster.clone(),
                        ..ProxyEntry::default()
                    },
                );
            }
        }
        let tla_names = (1..=tlas)
            .map(|t| format!("t{t}"))
            .chain(tla_sql.iter().cloned());
        for name in tla_names {
            topology.tlas.insert(
                name,
                TlaEntry {
                    static_tables: Some(repo_root().join("tests/fixtures/static/index.toml")),
                    ..TlaEntry::default()
                },
            );
        }
        for (name, mut entry) in sqlnodes {
            if entry.tlas.is_empty() {
                entry.tlas = (1..=tlas).map(|t| (format!("t{t}"), 0)).collect();
            }
            topology.sqlnodes.insert(name, entry);
        }
        edit(&mut topology, dir.path());
        Self::launch(dir, topology, &tla_sql, true).await
    }

    /// Starts the processes of `topology`, children first: its agents too
    /// when `agents` (otherwise they are served already, at the addresses
    /// the topology gives), and the SQL nodes named in `tla_sql` as
    /// combined `tla-sql` processes.
    pub(crate) async fn launch(
        dir: tempfile::TempDir,
        topology: Topology,
        tla_sql: &BTreeSet<String>,
        agents: bool,
    ) -> TestCluster {
        let mut cluster = TestCluster {
            dir,
            topology,
            processes: BTreeMap::new(),
            extra_args: BTreeMap::new(),
        };
        if agents {
            for name in keys(&cluster.topology.agents) {
                cluster.spawn("agent", &name, true).await;
            }
        }
        for name in keys(&cluster.topology.proxies) {
            cluster.spawn("proxy", &name, true).await;
        }
        // Combined nodes first: other SQL nodes may read their TLA.
        for name in tla_sql {
            cluster.spawn("tla-sql", name, true).await;
        }
        for name in keys(&cluster.topology.tlas) {
            if !tla_sql.contains(&name) {
                cluster.spawn("tla", &name, true).await;
            }
        }
        for name in keys(&cluster.topology.sqlnodes) {
            if !tla_sql.contains(&name) {
                cluster.spawn("sqlnode", &name, true).await;
            }
        }
        cluster
    }

    pub(crate) async fn start_fleet(spec: FleetSpec) -> TestCluster {
        Self::start_fleet_in(tempfile::tempdir().unwrap(), spec).await
    }

    fn topology_path(&self) -> PathBuf {
        self.dir.path().join("topology.toml")
    }

    /// Starts `name` (its children must be up). `fresh`: on port 0, and its
    /// addresses are written into the topology for its parents; otherwise
    /// on the addresses the topology has (a restart).
    async fn spawn(&mut self, role: &'static str, name: &str, fresh: bool) {
        std::fs::write(self.topology_path(), self.topology.to_toml()).unwrap();
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log"))).unwrap();
        let mut command = Command::new(BINARY);
        command
            .arg(role)
            .arg("--config")
            .arg(self.topology_path())
            .args(["--name", name])
            .env("FLEETSQL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log);
        let any = "127.0.0.1:0";
        match (role, fresh) {
            ("agent", true) => command.args(["--flight", any, "--http", any, "--publish", any]),
            ("sqlnode", true) => command.args(["--pg", any, "--http", any]),
            ("tla-sql", true) => command.args(["--flight", any, "--pg", any, "--http", any]),
            (_, true) => command.args(["--flight", any, "--http", any]),
            _ => &mut command,
        };
        command.args(self.extra_args.get(name).into_iter().flatten());
        let mut child = command.spawn().expect("start fleetsql");
        let line = ready_line(&mut child, &format!("fleetsql {role} ready:"))
            .await
            .unwrap_or_else(|| panic!("{role} {name} exited before it was ready; see {name}.log"));
        let addrs = ready_fields(&line);
        if fresh {
            let flight = addrs.get("flight").copied();
            let http = addrs.get("http").copied();
            match role {
                "agent" => {
                    let entry = self.topology.agents.get_mut(name).unwrap();
                    entry.flight = flight;
                    entry.http = http;
                    entry.publish = addrs.get("publish").copied();
                }
                "proxy" => {
                    let entry = self.topology.proxies.get_mut(name).unwrap();
                    entry.flight = flight;
                    entry.http = http;
                }
                "tla" => {
                    let entry = self.topology.tlas.get_mut(name).unwrap();
                    entry.flight = flight;
                    entry.http = http;
                }
                "tla-sql" => {
                    let tla = self.topology.tlas.get_mut(name).unwrap();
                    tla.flight = flight;
                    tla.http = addrs.get("tla_http").copied();
                    let sql = self.topology.sqlnodes.get_mut(name).unwrap();
                    sql.http = http;
                    sql.pg = addrs.get("pg").copied();
                }
                _ => {
                    let entry = self.topology.sqlnodes.get_mut(name).unwrap();
                    entry.http = http;
                    entry.pg = addrs.get("pg").copied();
                }
            }
            // Running nodes learn this one's addresses by re-reading the
            // file; without this the last node started stays unknown.
            std::fs::write(self.topology_path(), self.topology.to_toml()).unwrap();
        }
        self.processes.insert(
            name.to_string(),
            Process {
                role,
                child,
                addrs: addrs.clone(),
            },
        );
        self.wait_healthy(name).await;
    }

    async fn wait_healthy(&self, name: &str) {
        let url = format!("http://{}/health", self.processes[name].addrs["http"]);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(&url).send().await
                && let Ok(body) = response.json::<Value>().await
            {
                // Tiers report `generation_id`; the SQL node its generation.
                let id = body["generation_id"]
                    .as_u64()
                    .or_else(|| body["generation"]["id"].as_u64())
                    .unwrap_or(0);
                if id > 0 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{name} never became healthy");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// kill -9.
    pub(crate) fn kill(&mut self, name: &str) {
        let mut process = self.processes.remove(name).expect("running");
        process.child.kill().unwrap();
        process.child.wait().unwrap();
    }

    /// Stops `name` cleanly (SIGTERM, as a service manager would) and
    /// waits, bounded, for it to exit with success.
    pub(crate) async fn stop(&mut self, name: &str) {
        let mut process = self.processes.remove(name).expect("running");
        let pid = process.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = process.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not stop within 30 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            status.success(),
            "{name} stopped with {status}; see {name}.log"
        );
    }

    /// Starts a killed node again on its old addresses.
    pub(crate) async fn restart(&mut self, name: &str, role: &'static str) {
        self.spawn(role, name, false).await;
    }

    /// Stops `name` and starts it again on its addresses with `args` added.
    pub(crate) async fn restart_with(
        &mut self,
        name: &str,
        role: &'static str,
        args: Vec<std::ffi::OsString>,
    ) {
        self.kill(name);
        self.extra_args.insert(name.to_string(), args);
        self.spawn(role, name, false).await;
    }

    /// Writes the topology as the test changed it: every process that
    /// watches the file re-reads it.
    pub(crate) fn save_topology(&self) {
        std::fs::write(self.topology_path(), self.topology.to_toml()).unwrap();
    }

    /// The topology, to edit before [`TestCluster::save_topology`].
    pub(crate) fn topology_mut(&mut self) -> &mut Topology {
        &mut self.topology
    }

    /// A new agent `name` in `cluster` (no tables), started and written
    /// into the topology with its address, as an operator adds a machine.
    pub(crate) async fn add_agent(&mut self, name: &str, cluster: &str) {
        let drop_dir = self.dir.path().join(name);
        std::fs::create_dir_all(&drop_dir).unwrap();
        self.topology.agents.insert(
            name.to_string(),
            AgentEntry {
                cluster: cluster.to_string(),
                host: Some(name.to_string()),
                ip: Some("10.0.8.1".to_string()),
                drop_dir: Some(drop_dir),
                host_collectors: Some(false),
                ..AgentEntry::default()
            },
        );
        self.spawn("agent", name, true).await;
        self.save_topology();
    }

    /// What process `name` logged, for failure messages.
    pub(crate) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// `/health` of process `name`.
    pub(crate) async fn health(&self, name: &str) -> Value {
        reqwest::get(format!("http://{}/health", self.addr(name, "http")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until process `name` has made `n` more generations.
    pub(crate) async fn generations_pass(&self, name: &str, n: u64) {
        let start = self.health(name).await["generation_id"]
            .as_u64()
            .unwrap_or(0);
        eventually(Duration::from_secs(30), "generations", || async {
            let now = self.health(name).await["generation_id"]
                .as_u64()
                .unwrap_or(0);
            (now >= start + n).then_some(())
        })
        .await;
    }

    /// The directory whose files agent `name` publishes.
    pub(crate) fn drop_dir(&self, name: &str) -> PathBuf {
        self.topology.agents[name].drop_dir.clone().unwrap()
    }

    pub(crate) fn addr(&self, name: &str, key: &str) -> SocketAddr {
        self.processes[name].addrs[key]
    }

    pub(crate) fn sql_url(&self) -> String {
        format!("http://{}", self.addr("sql", "http"))
    }

    /// `node`'s `fleet_nodes.pending_restart` once it has one (20 s at most).
    pub(crate) async fn pending_restart(&self, node: &str) -> String {
        let sql = format!("SELECT pending_restart FROM fleet_nodes WHERE name = '{node}'");
        eventually(Duration::from_secs(20), "the pending restart", || async {
            let (_, body) = self.query(&sql).await;
            body["rows"][0][0].as_str().map(str::to_string)
        })
        .await
    }

    pub(crate) async fn query(&self, sql: &str) -> (reqwest::StatusCode, Value) {
        self.query_on("sql", sql).await
    }

    /// `sql` over HTTP on the SQL node `node`.
    pub(crate) async fn query_on(&self, node: &str, sql: &str) -> (reqwest::StatusCode, Value) {
        let response = reqwest::Client::new()
            .post(format!("http://{}/v1/query", self.addr(node, "http")))
            .json(&serde_json::json!({ "sql": sql }))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn metrics(&self, name: &str) -> String {
        reqwest::get(format!("http://{}/metrics", self.addr(name, "http")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub(crate) fn roles(&self) -> BTreeMap<&str, usize> {
        let mut roles = BTreeMap::new();
        for p in self.processes.values() {
            *roles.entry(p.role).or_default() += 1;
        }
        roles
    }
}

fn keys<V>(map: &BTreeMap<String, V>) -> Vec<String> {
    map.keys().cloned().collect()
}

fn per_cluster_count(topology: &Topology, cluster: &str) -> usize {
    topology
        .agents
        .values()
        .filter(|a| a.cluster == cluster)
        .count()
}

/// A counter's value from Prometheus text, 0 when absent.
pub(crate) fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Publishes `csv` as `table` through an agent's publish API at `agent`,
/// failing the test with the agent's answer if it refuses.
pub(crate) async fn publish_csv(agent: SocketAddr, table: &str, csv: &str) {
    let response = reqwest::Client::new()
        .post(format!("http://{agent}/v1/tables/{table}"))
        .header("content-type", "text/csv")
        .body(csv.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert!(
        status.is_success(),
        "publishing {table}: {status} {}",
        response.text().await.unwrap_or_default()
    );
}

/// Polls `check` every 100 ms until it returns `Some`, at most `limit`.
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sorted_rows(body: &Value) -> Vec<String> {
    let mut rows: Vec<String> = body["rows"]
        .as_array()
        .map(|rows| rows.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    rows.sort();
    rows
}

const SEED_QUERIES: [&str; 3] = [
    "SELECT sys.ip ip, procname, rss, pid FROM sys, processes \
     WHERE sys.ip = processes.ip AND (rss*100)/sys.memtotal > 75 \
     AND sys.ip in (SELECT ip FROM machinerole WHERE role='dns')",
    "SELECT c.continent_name, SUM(l.hits) hits FROM load_info l, region_data r, continent_data c \
     WHERE l.georegion=r.id AND r.continent=c.continent GROUP BY c.continent_name ORDER BY hits DESC",
    "SELECT machineip ip_key, mountp mnt_key, (100*bavail)/blocks pct FROM filesystem a \
     WHERE blocks > 0 and (100*bavail)/blocks < 3",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_fleet_answers_like_the_in_process_one() {
    let cluster = TestCluster::start(2, 2, Duration::from_secs(600)).await;
    assert_eq!(
        cluster.roles(),
        BTreeMap::from([("agent", 6), ("proxy", 4), ("sqlnode", 1), ("tla", 2)])
    );

    // The seed's queries: same rows as the in-process fleet on the same data.
    let fixture = FixtureFleet::start().await;
    let mut seed_answers = Vec::new();
    for sql in SEED_QUERIES {
        let expected = fixture.node.query(sql).await.unwrap();
        let expected = fleetsql_http::batches_to_rows(&expected.batches).unwrap();
        let mut expected: Vec<String> = expected
            .iter()
            .map(|row| Value::Array(row.clone()).to_string())
            .collect();
        expected.sort();
        assert!(!expected.is_empty(), "{sql} should have rows");
        seed_answers.push((sql, expected));
    }
    let seed_queries_answer_as_in_process = || async {
        for (sql, expected) in &seed_answers {
            let (status, body) = cluster.query(sql).await;
            assert!(status.is_success(), "{sql}: {body}");
            assert_eq!(&sorted_rows(&body), expected, "{sql}");
            assert_eq!(body["generation"]["machines_seen"], 6, "{body}");
            assert_eq!(body["generation"]["clusters_seen"], 2, "{body}");
        }
    };
    seed_queries_answer_as_in_process().await;

    // A row published on one agent is queryable on the SQL node.
    let publish = cluster.addr("c2-m2", "publish");
    publish_csv(publish, "services", "svc,up\nmarker-42,1\n").await;
    let host = eventually(Duration::from_secs(20), "the published row", || async {
        let (_, body) = cluster
            .query("SELECT _host, _cluster FROM services WHERE svc = 'marker-42'")
            .await;
        body["rows"].as_array().filter(|r| !r.is_empty()).cloned()
    })
    .await;
    assert_eq!(host[0][1], "c2");

    // The publisher's next version of the table (the same row, one value
    // changed) reaches the SQL node too: later generations travel as diffs
    // against what each parent holds, on every link.
    publish_csv(publish, "services", "svc,up\nmarker-42,2\n").await;
    eventually(Duration::from_secs(20), "the changed value", || async {
        let (_, body) = cluster
            .query("SELECT up FROM services WHERE svc = 'marker-42'")
            .await;
        (body["rows"][0][0] == 2).then_some(())
    })
    .await;
    for name in ["t1", "sql"] {
        let text = cluster.metrics(name).await;
        assert!(
            metric(&text, "fleetsql_flight_diff_tables_received_total", &[]) > 0.0,
            "{name} received no diffs: {text}"
        );
    }
    seed_queries_answer_as_in_process().await;

    // Every tier reports itself in fleet_nodes: all agents, the proxy the
    // TLA took each cluster from, the TLA and the SQL node.
    // `fleet_nodes` is named here for the first time, and the first answer
    // for a newly named table is best-effort: on a loaded box a proxy may
    // not have collected it within `fetch_timeout`, and that cluster's rows
    // come a tick later.
    let every_tier = BTreeMap::from([
        ("agent".to_string(), 6),
        ("proxy".to_string(), 2),
        ("sqlnode".to_string(), 1),
        ("tla".to_string(), 1),
    ]);
    eventually(
        Duration::from_secs(20),
        "every tier in fleet_nodes",
        || async {
            let (_, body) = cluster
                .query("SELECT role, count(*) n FROM fleet_nodes GROUP BY role ORDER BY role")
                .await;
            let counts: BTreeMap<String, u64> = body["rows"]
                .as_array()?
                .iter()
                .filter_map(|r| Some((r[0].as_str()?.to_string(), r[1].as_u64()?)))
                .collect();
            (counts == every_tier).then_some(())
        },
    )
    .await;

    // /metrics on every process.
    for name in ["c1-m1", "c1-p1", "t1", "sql"] {
        let text = cluster.metrics(name).await;
        assert!(
            metric(&text, "fleetsql_generation_id", &[]) > 0.0,
            "{name}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_node_switches_tla_when_its_tla_dies() {
    let mut cluster = TestCluster::start(1, 2, Duration::from_secs(600)).await;
    let sql = "SELECT count(*) n FROM sys";
    let (_, body) = cluster.query(sql).await;
    let first = body["generation"]["producer"].as_str().unwrap().to_string();
    let other = if first == "t1" { "t2" } else { "t1" };
    cluster.kill(&first);

    // Query in a bounded loop; no stretch of failures may last 10 s, and
    // answers must come back complete from the other TLA.
    let started = Instant::now();
    let mut failing_since: Option<Instant> = None;
    let mut longest_failure = Duration::ZERO;
    let mut switched = false;
    while started.elapsed() < Duration::from_secs(30) {
        let (status, body) = cluster.query(sql).await;
        if status.is_success() {
            if let Some(since) = failing_since.take() {
                longest_failure = longest_failure.max(since.elapsed());
            }
            let g = &body["generation"];
            if g["producer"] == other && g["clusters_seen"] == 2 && g["machines_seen"] == 6 {
                assert_eq!(body["rows"][0][0], 4, "{body}");
                switched = true;
                break;
            }
        } else {
            failing_since.get_or_insert_with(Instant::now);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(since) = failing_since {
        longest_failure = longest_failure.max(since.elapsed());
    }
    assert!(switched, "never answered from {other}");
    assert!(
        longest_failure < Duration::from_secs(10),
        "{longest_failure:?}"
    );
    let text = cluster.metrics("sql").await;
    assert_eq!(
        metric(&text, "fleetsql_source_chosen", &[("source", other)]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_survives_one_proxy_and_reports_losing_both() {
    let mut cluster = TestCluster::start(2, 1, Duration::from_secs(600)).await;
    let sql = "SELECT count(*) n FROM sys";
    let complete = |body: &Value| {
        body["generation"]["clusters_seen"] == 2 && body["generation"]["machines_seen"] == 6
    };
    let (_, body) = cluster.query(sql).await;
    assert!(complete(&body), "{body}");
    let made_before = body["generation"]["made_at_ms"].as_i64().unwrap();

    // One proxy of c1 down: the TLA takes c1 from the other one.
    cluster.kill("c1-p1");
    let body = eventually(
        Duration::from_secs(20),
        "a generation after the kill",
        || async {
            let (_, body) = cluster.query(sql).await;
            let made = body["generation"]["made_at_ms"].as_i64().unwrap_or(0);
            (made > made_before + 2000).then_some(body)
        },
    )
    .await;
    assert!(complete(&body), "{body}");

    // Both down: 1 of 2 clusters, said in every answer.
    cluster.kill("c1-p2");
    let body = eventually(Duration::from_secs(20), "c1 reported missing", || async {
        let (_, body) = cluster.query(sql).await;
        (body["generation"]["clusters_seen"] == 1).then_some(body)
    })
    .await;
    assert_eq!(body["generation"]["clusters_expected"], 2, "{body}");
    assert_eq!(body["rows"][0][0], 2, "{body}");

    // One comes back on its old address: complete again, no operator action.
    cluster.restart("c1-p2", "proxy").await;
    eventually(Duration::from_secs(20), "c1 back", || async {
        let (_, body) = cluster.query(sql).await;
        complete(&body).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_travel_only_while_queried() {
    let expiry = Duration::from_secs(3);
    let cluster = TestCluster::start(1, 1, expiry).await;
    let sent = |text: &str| {
        metric(
            text,
            "fleetsql_flight_rows_sent_total",
            &[("table", "load_info")],
        )
    };
    // Nobody asked for load_info: no agent has sent a row of it.
    assert_eq!(sent(&cluster.metrics("c1-m1").await), 0.0);

    let (status, body) = cluster.query("SELECT sum(hits) FROM load_info").await;
    assert!(status.is_success(), "{body}");
    let after_query = sent(&cluster.metrics("c1-m1").await);
    assert!(after_query > 0.0);

    // After the expiry the count stops growing: wait until it holds still
    // for three ticks (bounded), then check it still does a while later.
    let settled = eventually(Duration::from_secs(30), "load_info to stop", || async {
        let before = sent(&cluster.metrics("c1-m1").await);
        tokio::time::sleep(TICK * 3).await;
        let after = sent(&cluster.metrics("c1-m1").await);
        (after == before).then_some(after)
    })
    .await;
    tokio::time::sleep(TICK * 3).await;
    assert_eq!(sent(&cluster.metrics("c1-m1").await), settled);
    // Another table that stayed in use would have kept growing: sys is
    // prewarmed by nobody, so it was never sent either.
    assert_eq!(
        metric(
            &cluster.metrics("c1-m1").await,
            "fleetsql_flight_rows_sent_total",
            &[("table", "sys")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_table_publishers_from_its_integrations_file() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let exporter = listener.local_addr().unwrap();
    let body = "# TYPE rack_temp gauge\nrack_temp{rack=\"r1\"} 31.5\n";
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(move || async move { body }));
    let server = tokio::spawn(axum::serve(listener, app).into_future());
    let mut cluster = TestCluster::start(1, 1, Duration::from_secs(30)).await;
    let file = cluster.dir.path().join("agent-integrations.toml");
    std::fs::write(
        &file,
        format!(
            "[[prometheus]]\nname = \"racks\"\nurl = \"http://{exporter}/metrics\"\ninterval = \"500ms\"\n"
        ),
    )
    .unwrap();
    cluster
        .restart_with("c1-m1", "agent", vec!["--integrations".into(), file.into()])
        .await;
    let rows = eventually(
        Duration::from_secs(30),
        "rack_temp through the tiers",
        || async {
            let (status, body) = cluster
                .query("SELECT rack, value, job FROM rack_temp")
                .await;
            (status.is_success() && body["rows"].as_array().is_some_and(|r| !r.is_empty()))
                .then_some(body["rows"].clone())
        },
    )
    .await;
    assert_eq!(rows[0][0], "r1", "{rows}");
    assert_eq!(rows[0][1], 31.5, "{rows}");
    assert_eq!(rows[0][2], "racks", "{rows}");
    let sources = eventually(Duration::from_secs(30), "fleet_sources", || async {
        let (status, body) = cluster
            .query("SELECT name, kind, status FROM fleet_sources")
            .await;
        (status.is_success() && body["rows"][0][2] == "ok").then_some(body["rows"].clone())
    })
    .await;
    assert_eq!(sources, serde_json::json!([["racks", "prometheus", "ok"]]));
    server.abort();
}

/// A SQL node whose topology entry configures no apps still serves the
/// console at `/` and persistent queries fed by its generations; the
/// console's config says alerts and reports are off, so the page never
/// calls their endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_sql_node_serves_the_console_and_persistent_queries() {
    let cluster = TestCluster::start(1, 1, Duration::from_secs(600)).await;
    let base = cluster.sql_url();
    let client = reqwest::Client::new();
    let page = client.get(format!("{base}/")).send().await.unwrap();
    assert!(page.status().is_success(), "{}", page.status());
    assert!(page.text().await.unwrap().contains("<html"));
    let config: Value = client
        .get(format!("{base}/v1/console/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["node"], "sql", "{config}");
    assert_eq!(config["features"]["persistent_queries"], true, "{config}");
    assert_eq!(config["features"]["alerts"], false, "{config}");
    assert_eq!(config["features"]["reports"], false, "{config}");
    // /health and /metrics stay beside the apps.
    assert!(
        cluster
            .metrics("sql")
            .await
            .contains("fleetsql_generation_id")
    );

    let registered: Value = client
        .post(format!("{base}/v1/persistent-queries"))
        .json(&serde_json::json!({
            "epl": "select count(*) as n from sys.win:time(1 hour)"
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = registered["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {registered}"))
        .to_string();
    let mut events = client
        .get(format!("{base}/v1/persistent-queries/{id}/events"))
        .send()
        .await
        .unwrap();
    assert!(events.status().is_success(), "{}", events.status());
    // The node's generations feed the query: a result arrives (bounded).
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let has_result = |text: &str| {
        text.lines()
            .any(|l| l.starts_with("event:") && l[6..].trim() == "result")
    };
    while !has_result(&text) {
        let chunk = tokio::time::timeout_at(deadline, events.chunk())
            .await
            .expect("a result from the fleet's generations within 30 s")
            .unwrap()
            .expect("the event stream ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let listed: Value = client
        .get(format!("{base}/v1/persistent-queries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.to_string().contains(&id), "{listed}");
}

/// Seed 3.6: a TLA and a SQL node in one process (`fleetsql tla-sql`). Its
/// SQL node reads its own TLA without a Flight hop; another SQL node reads
/// the same TLA over Flight; both answer the seed's queries as the
/// in-process fleet does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_combined_tla_and_sql_node_answers_without_a_hop() {
    let reads_x = || SqlNodeEntry {
        tlas: BTreeMap::from([("x".to_string(), 0)]),
        ..SqlNodeEntry::default()
    };
    let cluster = TestCluster::start_fleet(FleetSpec {
        proxies: 1,
        tlas: 0,
        table_expiry: Duration::from_secs(600),
        extra_agent: true,
        sqlnodes: BTreeMap::from([("x".to_string(), reads_x()), ("sql".to_string(), reads_x())]),
        tla_sql: BTreeSet::from(["x".to_string()]),
    })
    .await;
    assert_eq!(
        cluster.roles(),
        BTreeMap::from([("agent", 6), ("proxy", 2), ("sqlnode", 1), ("tla-sql", 1)])
    );

    let fixture = FixtureFleet::start().await;
    for sql in SEED_QUERIES {
        let expected = fixture.node.query(sql).await.unwrap();
        let expected = fleetsql_http::batches_to_rows(&expected.batches).unwrap();
        let mut expected: Vec<String> = expected
            .iter()
            .map(|row| Value::Array(row.clone()).to_string())
            .collect();
        expected.sort();
        for node in ["x", "sql"] {
            let (status, body) = cluster.query_on(node, sql).await;
            assert!(
                status.is_success(),
                "{node}: {sql}: {body}\n{}",
                cluster.log(node)
            );
            assert_eq!(sorted_rows(&body), expected, "{node}: {sql}");
            assert_eq!(body["generation"]["producer"], "x", "{body}");
            assert_eq!(body["generation"]["clusters_seen"], 2, "{body}");
        }
    }

    // The combined node has no Flight client for its own TLA; the other
    // SQL node fetches from it over Flight.
    let combined = cluster.metrics("x").await;
    assert!(!combined.contains("peer=\"x\""), "{combined}");
    let remote = cluster.metrics("sql").await;
    assert!(remote.contains("peer=\"x\""), "{remote}");
}

/// Seed 7.2: a topology edited while the fleet runs is applied by every
/// proxy and TLA without a restart (a machine joins, a prewarm table comes
/// and goes); a listen address, which cannot change live, is reported in
/// `fleet_nodes` and not applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_topology_is_applied_without_a_restart() {
    let mut cluster = TestCluster::start_fleet(FleetSpec {
        proxies: 1,
        tlas: 2,
        table_expiry: Duration::from_secs(600),
        extra_agent: false,
        sqlnodes: BTreeMap::from([(
            "sql".to_string(),
            SqlNodeEntry {
                tlas: BTreeMap::from([("t1".to_string(), 0)]),
                ..SqlNodeEntry::default()
            },
        )]),
        tla_sql: BTreeSet::new(),
    })
    .await;
    let received = |text: &str| {
        metric(
            text,
            "fleetsql_flight_rows_received_total",
            &[("table", "machinerole")],
        )
    };

    // A prewarm table added to the TLA is collected though nobody asks.
    assert_eq!(received(&cluster.metrics("t1").await), 0.0);
    cluster.topology_mut().tlas.get_mut("t1").unwrap().prewarm =
        BTreeSet::from(["machinerole".to_string()]);
    cluster.save_topology();
    eventually(Duration::from_secs(20), "machinerole collected", || async {
        (received(&cluster.metrics("t1").await) > 0.0).then_some(())
    })
    .await;

    // Taken off the list (and no query names it), it stops travelling.
    cluster.topology_mut().tlas.get_mut("t1").unwrap().prewarm = BTreeSet::new();
    cluster.save_topology();
    cluster.generations_pass("t1", 3).await;
    let settled = received(&cluster.metrics("t1").await);
    cluster.generations_pass("t1", 3).await;
    assert_eq!(received(&cluster.metrics("t1").await), settled);

    // A half-written file (a typo) changes nothing: every node keeps
    // running as it was, and the next good version is applied below.
    std::fs::write(
        cluster.dir.path().join("topology.toml"),
        "tick = \"5 parsecs\"\n[agents.x\n",
    )
    .unwrap();
    cluster.generations_pass("t1", 2).await;
    for node in ["c1-m1", "c1-p1", "t1"] {
        assert_eq!(cluster.health(node).await["status"], "ok", "{node}");
    }
    assert_eq!(received(&cluster.metrics("t1").await), settled);
    assert!(
        cluster
            .log("c1-p1")
            .contains("topology changed but was not applied")
    );

    // A machine joins cluster c1: its proxy and the TLA expect and see it.
    let c1 = "SELECT machines_seen, machines_expected FROM fleet_clusters WHERE cluster = 'c1'";
    let (_, body) = cluster.query(c1).await;
    assert_eq!(body["rows"][0], serde_json::json!([2, 2]), "{body}");
    cluster.add_agent("c1-new", "c1").await;
    eventually(Duration::from_secs(20), "the new machine", || async {
        let (_, body) = cluster.query(c1).await;
        (body["rows"][0] == serde_json::json!([3, 3])).then_some(())
    })
    .await;

    // A proxy listening where the file says (restarted without flags) is
    // told to move its HTTP address: it reports that, and stays.
    cluster.kill("c1-p1");
    cluster.restart("c1-p1", "proxy").await;
    let old_http = cluster.addr("c1-p1", "http");
    let moved: SocketAddr = "127.0.0.1:1".parse().unwrap();
    cluster
        .topology_mut()
        .proxies
        .get_mut("c1-p1")
        .unwrap()
        .http = Some(moved);
    cluster.save_topology();
    let note = cluster.pending_restart("c1-p1").await;
    assert!(note.contains("http address 127.0.0.1:1"), "{note}");
    assert!(note.contains(&old_http.to_string()), "{note}");
    assert_eq!(cluster.health("c1-p1").await["status"], "ok");

    // A TLA told to keep history opens its store only at start: it says so.
    let history_dir = cluster.dir.path().join("t1-history");
    cluster.topology_mut().tlas.get_mut("t1").unwrap().history =
        Some(fleetsql_tiers::HistoryConfig {
            dir: Some(history_dir),
            ..fleetsql_tiers::HistoryConfig::of_tables(["sys"])
        });
    cluster.save_topology();
    let note = cluster.pending_restart("t1").await;
    assert!(note.contains("history"), "{note}");
    assert_eq!(cluster.health("t1").await["status"], "ok");

    // The SQL node is moved to the other TLA: it reads from t2 from then
    // on, without a restart; a changed query time-out waits for one.
    let (_, body) = cluster.query("SELECT count(*) FROM sys").await;
    assert_eq!(body["generation"]["producer"], "t1", "{body}");
    // Another tokens file: which files a node reads is fixed at start.
    let other_tokens = cluster.dir.path().join("tokens-to-come.toml");
    let sql = cluster.topology_mut().sqlnodes.get_mut("sql").unwrap();
    sql.tlas = BTreeMap::from([("t2".to_string(), 0)]);
    sql.query_timeout = Some(Duration::from_secs(7));
    sql.tokens = Some(other_tokens);
    cluster.save_topology();
    eventually(Duration::from_secs(20), "answers from t2", || async {
        let (_, body) = cluster.query("SELECT count(*) FROM sys").await;
        (body["generation"]["producer"] == "t2").then_some(())
    })
    .await;
    let note = cluster.pending_restart("sql").await;
    assert!(note.contains("query_timeout"), "{note}");
    assert!(note.contains("tokens"), "{note}");

    // Alerts switched on in the file: the SQL node restarts its apps with
    // them, and the console's alerts view and the alert tables appear.
    let alerts = cluster.dir.path().join("alerts");
    std::fs::create_dir_all(&alerts).unwrap();
    std::fs::copy(
        repo_root().join("alerts/examples/disk_space.toml"),
        alerts.join("disk_space.toml"),
    )
    .unwrap();
    let state = cluster.dir.path().join("sql-state");
    let sql = cluster.topology_mut().sqlnodes.get_mut("sql").unwrap();
    sql.alerts_dir = Some(alerts);
    sql.state_dir = Some(state);
    cluster.save_topology();
    eventually(Duration::from_secs(30), "the alert loaded", || async {
        let (_, body) = cluster.query("SELECT name FROM alerts").await;
        (body["rows"][0][0] == "disk space low").then_some(())
    })
    .await;
    let config: Value = reqwest::get(format!("{}/v1/console/config", cluster.sql_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["features"]["alerts"], true, "{config}");
}

/// The demo's tree (simulated clusters, one proxy each, TLA `tla`, SQL node
/// `sqlnode`, built by `LocalFleet::one_tla` as `fleetsql demo` builds it)
/// is planned once and run two ways: in one process, as the demo runs it,
/// and as `fleetsql proxy|tla|sqlnode` processes whose agents are the same
/// simulated machines served over Flight. The seed's queries answer the
/// same rows both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_tree_answers_alike_in_one_process_and_as_processes() {
    use fleetsql_sim::{SimConfig, SimFleet};
    use fleetsql_tiers::{Listen, LocalFleet, SqlProcess};

    // A day-long simulated tick: both trees read the same simulated values.
    let sim = SimFleet::new(SimConfig {
        clusters: 2,
        machines_per_cluster: 3,
        processes_per_machine: 8,
        tick: Duration::from_secs(86_400),
        ..SimConfig::default()
    })
    .unwrap();
    let (mut topology, agents) = LocalFleet::one_tla(
        TICK,
        sim.machines_by_cluster(),
        TlaEntry {
            static_tables: Some(repo_root().join("demo/static/index.toml")),
            ..TlaEntry::default()
        },
    );
    // A simulated machine's data are as old as its simulated tick.
    topology.stale_after = Some(Duration::from_secs(2 * 86_400));
    topology.sqlnodes.insert(
        "sqlnode".to_string(),
        SqlNodeEntry {
            tlas: BTreeMap::from([("tla".to_string(), 0)]),
            ..SqlNodeEntry::default()
        },
    );

    let local = LocalFleet::start(&topology, agents.clone()).unwrap();
    local.tick_now().await;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let in_process = SqlProcess::start_with(
        &topology,
        "sqlnode",
        Listen {
            pg: Some(any),
            http: Some(any),
            ..Listen::default()
        },
        fleetsql_apps::AppsConfig::default(),
        &local.links(),
        None,
    )
    .await
    .unwrap();

    let mut servers = Vec::new();
    for (name, machine) in agents {
        let server = fleetsql_flight::FlightServer::start(machine, any).unwrap();
        topology.agents.get_mut(&name).unwrap().flight = Some(server.local_addr());
        servers.push(server);
    }
    let processes = TestCluster::launch(
        tempfile::tempdir().unwrap(),
        topology,
        &BTreeSet::new(),
        false,
    )
    .await;

    let client = reqwest::Client::new();
    let mut answered = 0;
    // The seed's queries, and two whose rows do not depend on which
    // simulated values this seed drew.
    let queries = SEED_QUERIES.into_iter().chain([
        "SELECT _host, _cluster, count(*) n, sum(rss) rss FROM processes GROUP BY _host, _cluster",
        "SELECT s.ip, s.memtotal, m.role FROM sys s JOIN machinerole m ON s.ip = m.ip",
    ]);
    for sql in queries {
        let expected: Value = client
            .post(format!("http://{}/v1/query", in_process.http_addr()))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(expected["generation"]["machines_seen"], 6, "{expected}");
        let (status, body) = processes.query_on("sqlnode", sql).await;
        assert!(status.is_success(), "{sql}: {body}");
        assert_eq!(sorted_rows(&body), sorted_rows(&expected), "{sql}");
        assert_eq!(body["generation"]["machines_seen"], 6, "{body}");
        answered += usize::from(!sorted_rows(&body).is_empty());
    }
    assert!(answered >= 3, "the queries should have rows here");
    in_process.shutdown().await;
    local.shutdown().await;
    drop(processes);
    for server in servers {
        server.shutdown().await;
    }
}
