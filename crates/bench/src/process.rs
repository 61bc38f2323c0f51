//! The tiers under test as child processes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{BenchError, Result};

/// A running `fleetsql tla` or `fleetsql sqlnode`.
#[derive(Debug)]
pub(crate) struct TierChild {
    role: &'static str,
    child: Child,
    pid: u32,
    log: PathBuf,
    /// `key=value` pairs of its ready line (`flight`, `http`, `pg`).
    pub(crate) addresses: BTreeMap<String, String>,
}

impl TierChild {
    /// Starts `fleetsql ROLE --config TOPOLOGY --name NAME ARGS..` and waits
    /// for the line saying it is ready.
    pub(crate) async fn start(
        fleetsql: &Path,
        role: &'static str,
        topology: &Path,
        name: &str,
        args: &[&str],
        log: PathBuf,
        timeout: Duration,
    ) -> Result<TierChild> {
        let log_file = std::fs::File::create(&log)
            .map_err(|e| BenchError::io(format!("creating {}", log.display()), e))?;
        let mut child = Command::new(fleetsql)
            .arg(role)
            .arg("--config")
            .arg(topology)
            .arg("--name")
            .arg(name)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::io(format!("starting {}", fleetsql.display()), e))?;
        let failed = |reason: String| BenchError::Tier {
            role,
            reason,
            log: log.display().to_string(),
        };
        let pid = child
            .id()
            .ok_or_else(|| failed("exited at once".to_string()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| failed("has no stdout".to_string()))?;
        let mut lines = BufReader::new(stdout).lines();
        let prefix = format!("fleetsql {role} ready:");
        let ready = tokio::time::timeout(timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix(&prefix) {
                    return Some(rest.to_string());
                }
            }
            None
        })
        .await
        .map_err(|_| failed(format!("was not ready within {timeout:?}")))?
        .ok_or_else(|| failed("exited before it was ready".to_string()))?;
        // Keep reading so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addresses = ready
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(TierChild {
            role,
            child,
            pid,
            log,
            addresses,
        })
    }

    pub(crate) fn address(&self, key: &str) -> Result<SocketAddr> {
        self.addresses
            .get(key)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| BenchError::Tier {
                role: self.role,
                reason: format!("gave no `{key}` address in its ready line"),
                log: self.log.display().to_string(),
            })
    }

    /// Its process id, for `/proc/PID`.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// Resident and peak resident memory, bytes.
    pub(crate) fn memory(&self) -> Option<Memory> {
        Memory::of(&format!("/proc/{}/status", self.pid))
    }

    /// Whether it is still running (it should be, all through a run).
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(BenchError::Tier {
                role: self.role,
                reason: format!("exited during the run ({status})"),
                log: self.log.display().to_string(),
            }),
            Err(e) => Err(BenchError::io("checking a tier process", e)),
        }
    }

    /// Asks it to shut down cleanly (SIGTERM) and waits a little; kills it
    /// if it does not.
    pub(crate) async fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: kill(2) with a pid this process spawned and still
            // owns (not yet reaped); no memory is shared.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Memory {
    pub(crate) rss: u64,
    pub(crate) peak: u64,
}

impl Memory {
    fn of(status_path: &str) -> Option<Memory> {
        let status = std::fs::read_to_string(status_path).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        };
        Some(Memory {
            rss: field("VmRSS:")?,
            peak: field("VmHWM:")?,
        })
    }

    /// This process.
    pub(crate) fn own() -> Option<Memory> {
        Memory::of("/proc/self/status")
    }
}
