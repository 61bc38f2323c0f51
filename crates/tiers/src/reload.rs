//! Configuration changes without a restart (seed 7.2: "make rapid changes
//! in behavior easy any time it is safe"): a process re-reads its topology
//! file when it changes and applies what it can. A file that does not load
//! (a half-written edit, a typo) changes nothing: the process keeps its
//! running configuration, logs why, and tries again at the next change.

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::Result;
use crate::topology::Topology;

/// Watches one topology file; dropping or shutting it down stops watching.
#[derive(Debug)]
pub(crate) struct TopologyWatch {
    task: Option<JoinHandle<()>>,
}

impl TopologyWatch {
    /// Polls `path` every `every` (a file's content, not its time stamp,
    /// decides: editors that rewrite a file without changing it, or clocks
    /// that disagree, cause nothing) and calls `apply` with each new version
    /// that loads.
    pub(crate) fn start(
        path: PathBuf,
        every: Duration,
        apply: impl Fn(&Topology) -> Result<()> + Send + 'static,
    ) -> TopologyWatch {
        let task = tokio::spawn(async move {
            let mut last = std::fs::read(&path).ok();
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            interval.tick().await;
            loop {
                interval.tick().await;
                let Ok(now) = std::fs::read(&path) else {
                    continue;
                };
                if last.as_ref() == Some(&now) {
                    continue;
                }
                last = Some(now);
                match Topology::load(&path).and_then(|topology| apply(&topology)) {
                    Ok(()) => {}
                    Err(e) => tracing::error!(
                        file = %path.display(),
                        error = %e,
                        "topology changed but was not applied; still running with the previous one. Fix the file and save it again"
                    ),
                }
            }
        });
        TopologyWatch { task: Some(task) }
    }

    pub(crate) async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TopologyWatch {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
