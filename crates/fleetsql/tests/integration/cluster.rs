//! `TestDemo`: the real `fleetsql demo` binary on port 0, its own temp dir,
//! ready once `/health` answers with a generation; killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_fleetsql");

#[derive(Debug)]
pub(crate) struct TestDemo {
    process: Child,
    pub(crate) pg: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) publish: SocketAddr,
    pub(crate) flightsql: SocketAddr,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for TestDemo {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Waits for the line a `fleetsql` process prints once it listens (it
/// names the bound ports), then keeps draining stdout so the process never
/// blocks on a full pipe. `None` if the process exited first.
pub(crate) async fn ready_line(process: &mut Child, prefix: &str) -> Option<String> {
    let stdout = process.stdout.take()?;
    let prefix = prefix.to_string();
    tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return None;
            }
            if line.starts_with(&prefix) {
                std::thread::spawn(move || for _ in reader.lines() {});
                return Some(line.clone());
            }
        }
    })
    .await
    .ok()
    .flatten()
}

fn field(line: &str, key: &str) -> SocketAddr {
    let start = line
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        + key.len()
        + 1;
    let end = line[start..].find(' ').map_or(line.len(), |i| start + i);
    line[start..end].parse().unwrap()
}

impl TestDemo {
    /// A small demo fleet (2 clusters x 3 machines) with a fast tick.
    pub(crate) async fn start() -> TestDemo {
        Self::start_sized(2, 3).await
    }

    pub(crate) async fn start_sized(clusters: usize, machines: usize) -> TestDemo {
        Self::start_with(clusters, machines, "1s", &[]).await
    }

    /// A demo fleet with its tick and further `fleetsql demo` arguments.
    pub(crate) async fn start_with(
        clusters: usize,
        machines: usize,
        tick: &str,
        extra_args: &[std::ffi::OsString],
    ) -> TestDemo {
        let dir = tempfile::tempdir().unwrap();
        let drop_dir = dir.path().join("drop");
        std::fs::create_dir_all(&drop_dir).unwrap();
        // Tests that are not about alerts run none (the demo's default is
        // the shipped examples, which request tables of their own).
        let mut extra = extra_args.to_vec();
        if !extra.iter().any(|a| a == "--alerts-dir") {
            let no_alerts = dir.path().join("no-alerts");
            std::fs::create_dir_all(&no_alerts).unwrap();
            extra.push("--alerts-dir".into());
            extra.push(no_alerts.into_os_string());
        }
        // Nor the shipped views (one prewarms a table of its own).
        if !extra.iter().any(|a| a == "--views-dir") {
            let no_views = dir.path().join("no-views");
            std::fs::create_dir_all(&no_views).unwrap();
            extra.push("--views-dir".into());
            extra.push(no_views.into_os_string());
        }
        // Never the user's own demo state: tests run side by side.
        if !extra.iter().any(|a| a == "--state-dir") {
            extra.push("--state-dir".into());
            extra.push(dir.path().join("state").into_os_string());
        }
        let mut process = Command::new(BINARY)
            .args(["demo", "--processes", "10", "--tick", tick])
            .args(["--clusters", &clusters.to_string()])
            .args(["--machines", &machines.to_string()])
            .args(["--pg-port", "0", "--http-port", "0", "--publish-port", "0"])
            .args(["--flightsql-port", "0"])
            .arg("--drop-dir")
            .arg(&drop_dir)
            .args(&extra)
            .env("FLEETSQL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fleetsql demo");
        let line = ready_line(&mut process, "fleetsql demo ready:")
            .await
            .expect("fleetsql demo exited before it was ready");
        let demo = TestDemo {
            process,
            pg: field(&line, "pg"),
            http: field(&line, "http"),
            publish: field(&line, "publish"),
            flightsql: field(&line, "flightsql"),
            dir,
        };
        demo.wait_healthy().await;
        demo
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("http://{}/health", self.http);
        loop {
            if let Ok(response) = client
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                && let Ok(body) = response.json::<serde_json::Value>().await
                && body["generation"]["id"].as_u64().unwrap_or(0) > 0
            {
                return;
            }
            assert!(Instant::now() < deadline, "demo never became healthy");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Runs `fleetsql sql` against this demo.
    pub(crate) fn sql_cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BINARY)
            .arg("sql")
            .arg("--url")
            .arg(self.url())
            .args(args)
            .env("FLEETSQL_LOG", "warn")
            .output()
            .expect("run fleetsql sql")
    }

    pub(crate) async fn query_json(&self, sql: &str) -> (reqwest::StatusCode, serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/v1/query", self.url()))
            .json(&serde_json::json!({ "sql": sql }))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}
