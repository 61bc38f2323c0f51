//! Prometheus as a peer: Debian's `prometheus` scrapes every role's
//! `/metrics` of a real fleet (agents, proxies, a TLA, a SQL node) on
//! loopback; each target must be up, without a scrape error, and the
//! fleetsql series must be queryable. `promtool check metrics` reads each
//! exposition too.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::tiers::{TestCluster, eventually};

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn api(url: &str, path: &str) -> Option<Value> {
    let body: Value = reqwest::get(format!("{url}{path}"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    (body["status"] == "success").then_some(body["data"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_role() {
    let mut cluster = TestCluster::start(1, 1, Duration::from_secs(600)).await;
    let topology = cluster.topology_mut().clone();
    let names = [
        ("agent", topology.agents.keys().collect::<Vec<_>>()),
        ("proxy", topology.proxies.keys().collect()),
        ("tla", topology.tlas.keys().collect()),
        ("sqlnode", topology.sqlnodes.keys().collect()),
    ];
    let targets: Vec<(&str, String, std::net::SocketAddr)> = names
        .iter()
        .flat_map(|(role, names)| names.iter().map(move |n| (*role, n.to_string())))
        .map(|(role, name)| {
            let addr = cluster.addr(&name, "http");
            (role, name, addr)
        })
        .collect();
    let roles: BTreeSet<&str> = targets.iter().map(|t| t.0).collect();
    assert_eq!(
        roles,
        BTreeSet::from(["agent", "proxy", "sqlnode", "tla"]),
        "every role runs"
    );

    // Each role's exposition as promtool reads it.
    for (role, name, addr) in &targets {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (package prometheus; scripts/apt/prometheus.txt)");
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics on {role} {name}: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let mut config =
        String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
    let mut by_role: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (role, _, addr) in &targets {
        by_role.entry(*role).or_default().push(format!("'{addr}'"));
    }
    for (role, addrs) in &by_role {
        config.push_str(&format!(
            "  - job_name: fleetsql-{role}\n    static_configs:\n      - targets: [{}]\n",
            addrs.join(", ")
        ));
    }
    let dir = cluster.dir.path();
    std::fs::write(dir.join("prometheus.yml"), &config).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (scripts/apt/prometheus.txt)"),
    );
    let url = format!("http://127.0.0.1:{port}");

    // Every target scraped without error, `up` 1.
    let count = targets.len();
    let health = eventually(Duration::from_secs(60), "every target up", || async {
        let data = api(&url, "/api/v1/targets").await?;
        let active = data["activeTargets"].as_array()?.clone();
        (active.len() == count && active.iter().all(|t| t["health"] == "up")).then_some(active)
    })
    .await;
    for target in &health {
        assert_eq!(target["lastError"], "", "{target}");
    }
    let up = eventually(Duration::from_secs(30), "up == 1 everywhere", || async {
        let data = api(&url, "/api/v1/query?query=up").await?;
        let result = data["result"].as_array()?.clone();
        (result.len() == count && result.iter().all(|r| r["value"][1] == "1")).then_some(result)
    })
    .await;
    assert_eq!(up.len(), count);

    // fleetsql's own series, from each role.
    for (query, roles) in [
        (
            "fleetsql_generation_id",
            vec!["agent", "proxy", "tla", "sqlnode"],
        ),
        (
            "fleetsql_uptime_seconds",
            vec!["agent", "proxy", "tla", "sqlnode"],
        ),
        ("fleetsql_machines_seen", vec!["proxy", "tla", "sqlnode"]),
        ("fleetsql_generations_total", vec!["proxy", "tla"]),
        ("fleetsql_source_up", vec!["sqlnode"]),
    ] {
        let seen = eventually(Duration::from_secs(30), query, || async {
            let data = api(&url, &format!("/api/v1/query?query={query}")).await?;
            let roles: BTreeSet<String> = data["result"]
                .as_array()?
                .iter()
                .filter_map(|r| r["metric"]["role"].as_str().map(str::to_string))
                .collect();
            (!roles.is_empty()).then_some(roles)
        })
        .await;
        for role in roles {
            assert!(seen.contains(role), "{query}: no {role} series in {seen:?}");
        }
    }
    // Every series the shipped Grafana dashboard draws exists (tables
    // travel, so the Flight counters have rows, once a query names one).
    let (status, body) = cluster.query("SELECT count(*) FROM sys").await;
    assert!(status.is_success(), "{body}");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            crate::fixture::repo_root().join("docs/grafana/fleetsql-tiers.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut drawn = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("fleetsql_") || word.starts_with("process_") {
                    drawn.insert(word.to_string());
                }
            }
        }
    }
    assert!(drawn.len() >= 10, "{drawn:?}");
    eventually(
        Duration::from_secs(30),
        "the dashboard's series",
        || async {
            let names = api(&url, "/api/v1/label/__name__/values").await?;
            let names: BTreeSet<String> = names
                .as_array()?
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect();
            let missing: Vec<&String> = drawn.iter().filter(|d| !names.contains(*d)).collect();
            if !missing.is_empty() {
                eprintln!("dashboard series not scraped yet: {missing:?}");
            }
            missing.is_empty().then_some(())
        },
    )
    .await;

    // The whole fleet seen by the SQL node, as Prometheus has it.
    let machines = api(
        &url,
        "/api/v1/query?query=fleetsql_machines_seen%7Brole%3D%22sqlnode%22%7D",
    )
    .await
    .expect("query");
    let value = machines["result"][0]["value"][1].as_str().unwrap_or("0");
    assert!(value.parse::<f64>().unwrap_or(0.0) > 0.0, "{machines}");
}
