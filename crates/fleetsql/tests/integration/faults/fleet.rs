//! `FaultFleet`: real `fleetsql` processes of one topology file, each
//! placed in a network namespace of the test's [`Lab`] or in the root one,
//! listening on an address of its own choosing, and reached by its parents
//! at an address the test may redirect (a [`FaultProxy`] in between).
//! Unlike `TestCluster`, every process is started by the test in the order
//! it wants, and a killed one comes back on the addresses it had.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetsql_tiers::{AgentEntry, ProxyEntry, SqlNodeEntry, TlaEntry, Topology};
use serde_json::Value;

use crate::cluster::{BINARY, ready_line};
use crate::fixture::{fixture_machines, repo_root};

/// Where a process runs: a namespace (`None`: the root one) and the
/// address its ports bind.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub(crate) ns: Option<String>,
    pub(crate) ip: IpAddr,
}

impl Place {
    pub(crate) fn root() -> Place {
        Place {
            ns: None,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

#[derive(Debug)]
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub(crate) struct FaultFleet {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) topology: Topology,
    running: BTreeMap<String, Running>,
    roles: BTreeMap<String, &'static str>,
    places: BTreeMap<String, Place>,
    /// The addresses each process bound, kept across a kill for its restart.
    pub(crate) addrs: BTreeMap<String, BTreeMap<String, SocketAddr>>,
    /// Flight addresses parents dial instead of the bound one.
    advertised: BTreeMap<String, SocketAddr>,
    /// Further arguments and environment of a process, by name.
    pub(crate) extra_args: BTreeMap<String, Vec<String>>,
    pub(crate) extra_env: BTreeMap<String, Vec<(String, String)>>,
}

/// The fixture's machines as agents (tables as drop-dir files) in clusters
/// `c1`, `c2`, `proxies` per cluster, the TLAs and SQL nodes named, each
/// SQL node reading every TLA with no bonus.
pub(crate) fn fixture_topology(
    dir: &std::path::Path,
    tick: Duration,
    proxies: usize,
    tlas: &[&str],
    sqlnodes: &[&str],
) -> Topology {
    let mut topology = Topology {
        tick,
        table_expiry: Duration::from_secs(600),
        ..Topology::default()
    };
    let mut per_cluster: BTreeMap<String, usize> = BTreeMap::new();
    for machine in fixture_machines() {
        let n = per_cluster.entry(machine.cluster.clone()).or_default();
        *n += 1;
        let name = format!("{}-m{n}", machine.cluster);
        let drop_dir = dir.join(&name);
        std::fs::create_dir_all(&drop_dir).unwrap();
        for (table, csv) in &machine.tables {
            std::fs::write(drop_dir.join(format!("{table}.csv")), csv).unwrap();
        }
        topology.agents.insert(
            name,
            AgentEntry {
                cluster: machine.cluster.clone(),
                host: Some(machine.host.clone()),
                ip: Some(machine.ip.clone()),
                drop_dir: Some(drop_dir),
                host_collectors: Some(false),
                ..AgentEntry::default()
            },
        );
    }
    for cluster in per_cluster.keys() {
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
    for name in tlas {
        topology.tlas.insert(
            name.to_string(),
            TlaEntry {
                static_tables: Some(repo_root().join("tests/fixtures/static/index.toml")),
                ..TlaEntry::default()
            },
        );
    }
    for name in sqlnodes {
        topology.sqlnodes.insert(
            name.to_string(),
            SqlNodeEntry {
                tlas: tlas.iter().map(|t| (t.to_string(), 0)).collect(),
                ..SqlNodeEntry::default()
            },
        );
    }
    topology
}

impl FaultFleet {
    pub(crate) fn new(dir: tempfile::TempDir, topology: Topology) -> FaultFleet {
        FaultFleet {
            dir,
            topology,
            running: BTreeMap::new(),
            roles: BTreeMap::new(),
            places: BTreeMap::new(),
            addrs: BTreeMap::new(),
            advertised: BTreeMap::new(),
            extra_args: BTreeMap::new(),
            extra_env: BTreeMap::new(),
        }
    }

    fn topology_path(&self) -> PathBuf {
        self.dir.path().join("topology.toml")
    }

    /// Writes the topology with every started process's addresses (the
    /// advertised Flight address where one is set); processes re-read it.
    pub(crate) fn save(&mut self) {
        for (name, addrs) in &self.addrs {
            let flight = self
                .advertised
                .get(name)
                .copied()
                .or_else(|| addrs.get("flight").copied());
            let http = addrs.get("http").copied();
            if let Some(e) = self.topology.agents.get_mut(name) {
                e.flight = flight;
                e.http = http;
                e.publish = addrs.get("publish").copied();
            } else if let Some(e) = self.topology.proxies.get_mut(name) {
                e.flight = flight;
                e.http = http;
            } else if let Some(e) = self.topology.tlas.get_mut(name) {
                e.flight = flight;
                e.http = http;
            } else if let Some(e) = self.topology.sqlnodes.get_mut(name) {
                e.http = http;
                e.pg = addrs.get("pg").copied();
            }
        }
        std::fs::write(self.topology_path(), self.topology.to_toml()).unwrap();
    }

    /// Parents reach `name`'s Flight port at `addr` from now on.
    pub(crate) fn advertise(&mut self, name: &str, addr: SocketAddr) {
        self.advertised.insert(name.to_string(), addr);
        self.save();
    }

    /// Starts `name` as `role` at `place` (its children must be up) and
    /// waits for its `/health` to show a generation.
    pub(crate) async fn start(&mut self, role: &'static str, name: &str, place: Place) {
        self.roles.insert(name.to_string(), role);
        self.places.insert(name.to_string(), place);
        self.spawn(name).await;
    }

    /// Starts every agent, proxy, TLA and SQL node of the topology not yet
    /// started, children first, in the root namespace.
    pub(crate) async fn start_rest(&mut self) {
        let order: Vec<(&'static str, Vec<String>)> = vec![
            ("agent", self.topology.agents.keys().cloned().collect()),
            ("proxy", self.topology.proxies.keys().cloned().collect()),
            ("tla", self.topology.tlas.keys().cloned().collect()),
            ("sqlnode", self.topology.sqlnodes.keys().cloned().collect()),
        ];
        for (role, names) in order {
            for name in names {
                if !self.roles.contains_key(&name) {
                    self.start(role, &name, Place::root()).await;
                }
            }
        }
    }

    async fn spawn(&mut self, name: &str) {
        self.save();
        let role = self.roles[name];
        let place = self.places[name].clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap();
        let mut command = match &place.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BINARY]);
                c
            }
            None => Command::new(BINARY),
        };
        command
            .arg(role)
            .arg("--config")
            .arg(self.topology_path())
            .args(["--name", name])
            .env("FLEETSQL_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log);
        let old = self.addrs.get(name).cloned().unwrap_or_default();
        let at = |key: &str| {
            old.get(key)
                .map(|a| a.to_string())
                .unwrap_or_else(|| SocketAddr::new(place.ip, 0).to_string())
        };
        let keys: &[&str] = match role {
            "agent" => &["flight", "http", "publish"],
            "sqlnode" => &["pg", "http"],
            _ => &["flight", "http"],
        };
        for key in keys {
            command.arg(format!("--{key}")).arg(at(key));
        }
        command.args(self.extra_args.get(name).into_iter().flatten());
        for (k, v) in self.extra_env.get(name).into_iter().flatten() {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start fleetsql");
        let line = ready_line(&mut child, &format!("fleetsql {role} ready:"))
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{role} {name} exited before it was ready: {}",
                    self.log(name)
                )
            });
        let addrs: BTreeMap<String, SocketAddr> = line
            .split_whitespace()
            .filter_map(|token| token.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect();
        self.addrs.insert(name.to_string(), addrs);
        self.running.insert(name.to_string(), Running { child });
        self.save();
        self.wait_healthy(name).await;
    }

    async fn wait_healthy(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(body) = self.health(name).await {
                let id = body["generation_id"]
                    .as_u64()
                    .or_else(|| body["generation"]["id"].as_u64())
                    .unwrap_or(0);
                if id > 0 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} never became healthy: {}",
                self.log(name)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// kill -9, as the kernel's OOM killer or a power cut would.
    pub(crate) fn kill(&mut self, name: &str) {
        let mut running = self.running.remove(name).expect("running");
        running.child.kill().unwrap();
        running.child.wait().unwrap();
    }

    /// Starts a killed process again, on the addresses it had.
    pub(crate) async fn restart(&mut self, name: &str) {
        self.spawn(name).await;
    }

    pub(crate) fn addr(&self, name: &str, key: &str) -> SocketAddr {
        self.addrs[name][key]
    }

    pub(crate) fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// `/health` of `name`, `None` when it does not answer within 2 s.
    pub(crate) async fn health(&self, name: &str) -> Option<Value> {
        reqwest::Client::new()
            .get(format!("http://{}/health", self.addr(name, "http")))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    pub(crate) async fn generation_id(&self, name: &str) -> u64 {
        self.health(name)
            .await
            .and_then(|b| b["generation_id"].as_u64())
            .unwrap_or(0)
    }

    /// `sql` over HTTP on SQL node `node`: status and body (`Null` when it
    /// did not answer).
    pub(crate) async fn query(&self, node: &str, sql: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("http://{}/v1/query", self.addr(node, "http")))
            .json(&serde_json::json!({ "sql": sql }))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match response {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }
}
