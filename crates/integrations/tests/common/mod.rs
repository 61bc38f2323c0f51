//! Helpers for tests against real servers started on loopback.
#![allow(dead_code, unreachable_pub)]

pub mod prosody;
pub mod tls;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use fleetsql_agent::{Agent, AgentConfig};
use fleetsql_integrations::TableTarget;
use parking_lot::Mutex;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// A server process, killed on drop.
#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program args` and waits (bounded) until `addr` accepts TCP connections.
pub fn start_server(program: &str, args: &[String], addr: SocketAddr) -> Server {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {program} (install it: see scripts/apt/integrations.txt): {e}")
        });
    let mut server = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("{program} exited before listening: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{program} never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The real agent, remembering the last batch of every table it was given.
#[derive(Debug)]
pub struct RecordingAgent {
    pub agent: Agent,
    pub last: Mutex<HashMap<String, RecordBatch>>,
}

impl RecordingAgent {
    pub fn start() -> Arc<RecordingAgent> {
        let agent = Agent::start(AgentConfig {
            publish_addr: "127.0.0.1:0".parse().unwrap(),
            ..AgentConfig::default()
        })
        .unwrap();
        Arc::new(RecordingAgent {
            agent,
            last: Mutex::new(HashMap::new()),
        })
    }

    pub fn table(&self, name: &str) -> Option<RecordBatch> {
        self.last.lock().get(name).cloned()
    }
}

impl TableTarget for RecordingAgent {
    fn publish(&self, table: &str, publisher: &str, batch: &RecordBatch) -> Result<usize, String> {
        let n = TableTarget::publish(&self.agent, table, publisher, batch)?;
        self.last.lock().insert(table.to_string(), batch.clone());
        Ok(n)
    }
    fn withdraw(&self, table: &str, publisher: &str) {
        TableTarget::withdraw(&self.agent, table, publisher);
        self.last.lock().remove(table);
    }
    fn publish_fleet_table(
        &self,
        table: &str,
        publisher: &str,
        batch: &RecordBatch,
    ) -> Result<usize, String> {
        let n = TableTarget::publish_fleet_table(&self.agent, table, publisher, batch)?;
        self.last.lock().insert(table.to_string(), batch.clone());
        Ok(n)
    }
}

/// Polls `f` every 50 ms until it returns `Some`, at most `secs` seconds.
pub async fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
