//! The Debian package (`scripts/package`, `cargo deb`): its contents, its
//! systemd units as `systemd-analyze` reads them, and each unit's
//! `ExecStart` line run by hand against the shipped `/etc/fleetsql`, which
//! must make a working fleet of one machine. Also: every subcommand has a
//! `--help`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleetsql_tiers::Topology;
use serde_json::Value;

use crate::cluster::{BINARY, ready_line};
use crate::fixture::repo_root;
use crate::tiers::eventually;

const ROLES: [&str; 4] = ["agent", "proxy", "tla", "sqlnode"];

/// `cargo deb` is there, or the test may skip: only outside CI, where
/// `scripts/test` installs it.
fn cargo_deb_available() -> bool {
    let found = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "cargo-deb is missing in CI: scripts/test installs it (scripts/package --install-tool)"
        );
        eprintln!(
            "SKIPPED the package test: `cargo deb` is not installed; run `scripts/package --install-tool` (or scripts/test)"
        );
    }
    found
}

/// The target dir the test binary's `fleetsql` was built in, so the
/// package reuses it instead of building another profile.
fn target_dir() -> PathBuf {
    Path::new(BINARY)
        .parent()
        .and_then(Path::parent)
        .expect("<target>/debug/fleetsql")
        .to_path_buf()
}

struct Running {
    child: Child,
    addrs: BTreeMap<String, std::net::SocketAddr>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `KEY=value` lines of a unit's `[Service]` section and of an env file.
fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[tokio::test]
async fn the_debian_package_installs_units_that_run_the_shipped_fleet() {
    if !cargo_deb_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let started = Instant::now();
    let built = Command::new(repo_root().join("scripts/package"))
        .arg(&out)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("run scripts/package");
    assert!(
        built.status.success(),
        "scripts/package failed:\n{}\n{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    eprintln!("package built in {:?}", started.elapsed());
    let deb = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb in the output directory");

    // Contents.
    let contents = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(contents.status.success());
    let listing = String::from_utf8_lossy(&contents.stdout);
    let mut expected = vec![
        "./usr/bin/fleetsql".to_string(),
        "./etc/fleetsql/topology.toml".to_string(),
        "./etc/fleetsql/alerts/fleetsql_up.toml".to_string(),
        "./etc/fleetsql/alerts/few_machines.toml".to_string(),
        "./etc/fleetsql/reports/machines_reporting.toml".to_string(),
        "./usr/share/doc/fleetsql/operating.md".to_string(),
        "./usr/share/doc/fleetsql/grafana/fleetsql-tiers.json".to_string(),
    ];
    for role in ROLES {
        expected.push(format!("./lib/systemd/system/fleetsql-{role}.service"));
        expected.push(format!("./etc/fleetsql/{role}.env"));
    }
    for path in &expected {
        assert!(
            listing.lines().any(|l| l.ends_with(path.as_str())),
            "{path} not in the package:\n{listing}"
        );
    }
    let control = Command::new("dpkg-deb")
        .args(["--field"])
        .arg(&deb)
        .args(["Package", "Depends"])
        .output()
        .unwrap();
    let control = String::from_utf8_lossy(&control.stdout);
    assert!(control.contains("Package: fleetsql"), "{control}");
    assert!(control.contains("adduser"), "{control}");
    let conffiles = Command::new("dpkg-deb")
        .args(["--info"])
        .arg(&deb)
        .arg("conffiles")
        .output()
        .unwrap();
    let conffiles = String::from_utf8_lossy(&conffiles.stdout);
    assert!(
        conffiles.contains("/etc/fleetsql/topology.toml"),
        "configs are conffiles (kept on upgrade): {conffiles}"
    );
    let postinst = Command::new("dpkg-deb")
        .args(["--info"])
        .arg(&deb)
        .arg("postinst")
        .output()
        .unwrap();
    let postinst = String::from_utf8_lossy(&postinst.stdout);
    assert!(postinst.contains("adduser --system"), "{postinst}");

    // Unpacked into a temp root: the units, the binary, /etc/fleetsql.
    let root = dir.path().join("root");
    let unpacked = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .status()
        .unwrap();
    assert!(unpacked.success());
    let binary = root.join("usr/bin/fleetsql");
    let etc = root.join("etc/fleetsql");
    let state = dir.path().join("var-lib-fleetsql");
    std::fs::create_dir_all(&state).unwrap();

    let mut units = BTreeMap::new();
    for role in ROLES {
        let path = root.join(format!("lib/systemd/system/fleetsql-{role}.service"));
        let text = std::fs::read_to_string(&path).unwrap();
        for hardening in [
            "User=fleetsql",
            "ProtectSystem=strict",
            "StateDirectory=fleetsql",
            "NoNewPrivileges=true",
            "PrivateTmp=true",
            "CapabilityBoundingSet=",
        ] {
            assert!(
                text.lines().any(|l| l == hardening),
                "{role}: no {hardening}"
            );
        }
        units.insert(role, text);
    }
    verify_units(dir.path(), &units, &binary);

    // Each unit's ExecStart by hand: the unpacked binary, the unpacked
    // /etc/fleetsql, a temp state directory, and ports picked by the
    // kernel, each written into the topology before its parent starts
    // (as an operator lists the addresses).
    let topology_path = etc.join("topology.toml");
    let text = std::fs::read_to_string(&topology_path).unwrap();
    std::fs::write(
        &topology_path,
        text.replace("/var/lib/fleetsql", state.to_str().unwrap()),
    )
    .unwrap();
    let mut running: BTreeMap<&str, Running> = BTreeMap::new();
    for role in ROLES {
        let unit = &units[role];
        let exec = unit_values(unit, "ExecStart").pop().expect("ExecStart");
        let mut env: BTreeMap<String, String> = unit_values(unit, "Environment")
            .iter()
            .filter_map(|v| v.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env_path = unit_values(unit, "EnvironmentFile")
            .pop()
            .expect("EnvironmentFile");
        let env_path = env_path.trim_start_matches('-');
        let shipped_env = root.join(env_path.trim_start_matches('/'));
        assert!(shipped_env.is_file(), "{role}: {env_path} is not shipped");
        env.extend(env_file(&shipped_env));
        let mut words: Vec<String> = exec
            .split_whitespace()
            .map(|w| {
                let mut w = w.to_string();
                for (k, v) in &env {
                    w = w.replace(&format!("${{{k}}}"), v);
                }
                w.replace("/etc/fleetsql", etc.to_str().unwrap())
            })
            .collect();
        assert_eq!(words[0], "/usr/bin/fleetsql", "{role}: {exec}");
        words[0] = binary.to_str().unwrap().to_string();
        let any = "127.0.0.1:0";
        let ports: &[&str] = match role {
            "agent" => &["--flight", any, "--http", any, "--publish", any],
            "sqlnode" => &["--pg", any, "--http", any],
            _ => &["--flight", any, "--http", any],
        };
        let log = std::fs::File::create(dir.path().join(format!("{role}.log"))).unwrap();
        let mut child = Command::new(&words[0])
            .args(&words[1..])
            .args(ports)
            .envs(&env)
            .current_dir(&state)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the packaged fleetsql");
        let line = ready_line(&mut child, &format!("fleetsql {role} ready:"))
            .await
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(dir.path().join(format!("{role}.log")));
                panic!(
                    "{role} exited before it was ready:\n{}",
                    log.unwrap_or_default()
                )
            });
        let addrs: BTreeMap<String, std::net::SocketAddr> = line
            .split_whitespace()
            .filter_map(|t| t.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect();
        // Its parents find it at these addresses.
        let mut topology = Topology::load(&topology_path).unwrap();
        let name = &env["FLEETSQL_NAME"];
        match role {
            "agent" => {
                let e = topology.agents.get_mut(name).unwrap();
                e.flight = addrs.get("flight").copied();
                e.http = addrs.get("http").copied();
                e.publish = addrs.get("publish").copied();
            }
            "proxy" => {
                let e = topology.proxies.get_mut(name).unwrap();
                e.flight = addrs.get("flight").copied();
                e.http = addrs.get("http").copied();
            }
            "tla" => {
                let e = topology.tlas.get_mut(name).unwrap();
                e.flight = addrs.get("flight").copied();
                e.http = addrs.get("http").copied();
            }
            _ => {}
        }
        std::fs::write(&topology_path, topology.to_toml()).unwrap();
        let health = format!("http://{}/health", addrs["http"]);
        eventually(Duration::from_secs(60), &format!("{role} healthy"), || {
            let health = health.clone();
            async move {
                let body: Value = reqwest::get(&health).await.ok()?.json().await.ok()?;
                let id = body["generation_id"]
                    .as_u64()
                    .or_else(|| body["generation"]["id"].as_u64())
                    .unwrap_or(0);
                (id > 0).then_some(())
            }
        })
        .await;
        running.insert(role, Running { child, addrs });
    }

    // The SQL node answers from this machine's agent, through the tree,
    // with the shipped alerts loaded and none refused.
    let url = format!("http://{}/v1/query", running["sqlnode"].addrs["http"]);
    let query = |sql: &'static str| {
        let url = url.clone();
        async move {
            let response = reqwest::Client::new()
                .post(&url)
                .json(&serde_json::json!({ "sql": sql }))
                .send()
                .await
                .ok()?;
            let body: Value = response.json().await.ok()?;
            body["rows"].as_array().cloned()
        }
    };
    let hosts = eventually(Duration::from_secs(60), "sys through the tree", || async {
        query("SELECT hostname FROM sys")
            .await
            .filter(|r| r.len() == 1)
    })
    .await;
    assert_eq!(hosts.len(), 1);
    let alerts = eventually(Duration::from_secs(30), "shipped alerts", || async {
        query("SELECT name FROM alerts")
            .await
            .filter(|r| r.len() >= 4)
    })
    .await;
    let shipped = std::fs::read_dir(etc.join("alerts"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    assert_eq!(alerts.len(), shipped, "{alerts:?}");
    let errors = query("SELECT * FROM alert_errors")
        .await
        .expect("alert_errors");
    assert!(errors.is_empty(), "shipped alerts refused: {errors:?}");
    for (role, process) in &running {
        let metrics = reqwest::get(format!("http://{}/metrics", process.addrs["http"]))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("fleetsql_uptime_seconds"), "{role}");
    }
}

/// `systemd-analyze verify` on each unit, with `ExecStart` pointing at the
/// unpacked binary (verify checks that the program exists).
fn verify_units(dir: &Path, units: &BTreeMap<&str, String>, binary: &Path) {
    let verify_dir = dir.join("units");
    std::fs::create_dir_all(&verify_dir).unwrap();
    let mut paths = Vec::new();
    for (role, text) in units {
        let path = verify_dir.join(format!("fleetsql-{role}.service"));
        std::fs::write(
            &path,
            text.replace("/usr/bin/fleetsql", binary.to_str().unwrap()),
        )
        .unwrap();
        paths.push(path);
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("run systemd-analyze (package systemd)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Lines about the host (no running systemd in a container, units of
    // the host's own) are not about ours.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("fleetsql")).collect();
    assert!(
        output.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        output.status
    );
}

/// Every subcommand, and each of theirs, answers `--help` with its usage.
#[test]
fn every_subcommand_has_help() {
    fn commands(help: &str) -> Vec<String> {
        help.lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .map(str::to_string)
            .collect()
    }
    fn walk(path: &[String], seen: &mut Vec<String>) {
        let output = Command::new(BINARY)
            .args(path)
            .arg("--help")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&output.stdout).to_string();
        let usage = format!("Usage: fleetsql {}", path.join(" "));
        assert!(output.status.success(), "{path:?} --help failed");
        assert!(
            help.contains(usage.trim_end()),
            "{path:?} --help has no usage line:\n{help}"
        );
        seen.push(path.join(" "));
        for command in commands(&help) {
            let mut next = path.to_vec();
            next.push(command);
            walk(&next, seen);
        }
    }
    let mut seen = Vec::new();
    walk(&[], &mut seen);
    for expected in [
        "demo", "sql", "agent", "proxy", "tla", "sqlnode", "tla-sql", "alerts", "bench",
    ] {
        assert!(seen.iter().any(|s| s == expected), "{expected}: {seen:?}");
    }
}
