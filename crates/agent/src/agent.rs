use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use arrow::array::RecordBatch;
use fleetsql_aggregator::{Aggregator, AggregatorConfig, Child, ChildGroup};
use fleetsql_model::origin::Origin;
use fleetsql_model::{Generation, now_ms};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::collectors::{self, HostInfo};
use crate::drop_dir::DropDir;
use crate::http::{ApiState, router};
use crate::local::LocalPublishers;
use crate::store::{Store, StoreLimits};
use crate::watchdog::{self, FLEET_SOURCES, WATCHDOG_PUBLISHER, Watchdog};
use crate::{AgentConfig, AgentError, Result, WatchdogConfig};

/// A running agent: publish API, drop-directory watcher and the tier loop
/// over this machine's publishers. Dropping it stops everything; prefer
/// [`Agent::shutdown`], which lets in-flight publishes finish.
#[derive(Debug)]
pub struct Agent {
    aggregator: Option<Aggregator>,
    local: LocalPublishers,
    store: Arc<Store>,
    publish_addr: SocketAddr,
    cancel: CancellationToken,
    server: Option<JoinHandle<()>>,
    watcher: Option<JoinHandle<()>>,
    watchdog: Arc<Watchdog>,
    watchdog_task: Option<JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.cancel.cancel();
        for task in [
            self.server.take(),
            self.watcher.take(),
            self.watchdog_task.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
    }
}

impl Agent {
    /// Validates `config`, binds the publish API and starts the agent on the
    /// current tokio runtime (call it from inside one).
    pub fn start(config: AgentConfig) -> Result<Agent> {
        config.validate()?;
        let origin = Origin {
            host: config.host.clone(),
            ip: config.ip.clone(),
            cluster: config.cluster.clone(),
        };
        let store = Arc::new(Store::with_limits(
            origin,
            StoreLimits {
                max_publishers_per_table: config.max_publishers_per_table,
                max_tables: config.max_tables,
            },
        ));
        let host = HostInfo {
            hostname: config.host.clone(),
            ip: config.ip.clone(),
        };
        let drop_dir = match &config.drop_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| AgentError::Io {
                    path: dir.clone(),
                    source,
                })?;
                Some(Arc::new(DropDir::new(
                    dir.clone(),
                    store.clone(),
                    config.max_body_bytes,
                    config.limits,
                )))
            }
            None => None,
        };
        let name = format!("agent:{}", config.host);
        let local = LocalPublishers::new(
            format!("{name}/local"),
            config.cluster.clone(),
            host,
            store.clone(),
            collectors::builtin(&config),
            drop_dir.clone(),
        );

        // Bound synchronously so the caller learns the port (and any bind
        // error) before start returns.
        let listener = std::net::TcpListener::bind(config.publish_addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|source| AgentError::Bind {
                addr: config.publish_addr,
                source,
            })?;
        let publish_addr = listener.local_addr().map_err(|source| AgentError::Bind {
            addr: config.publish_addr,
            source,
        })?;

        let mut aggregator_config = AggregatorConfig::new(name, config.tick);
        aggregator_config.role = "agent".to_string();
        aggregator_config.prewarm = config.prewarm.clone();
        if let Some(grace) = config.request_grace {
            aggregator_config.parent_grace = grace;
        }
        let local_child: Arc<dyn Child> = Arc::new(local.clone());
        let aggregator =
            Aggregator::start(aggregator_config, vec![ChildGroup::single(local_child)]);

        let cancel = CancellationToken::new();
        let watchdog = Watchdog::new(config.watchdog, config.tick);
        let app = router(ApiState {
            store: store.clone(),
            local: local.clone(),
            max_body_bytes: config.max_body_bytes,
            limits: config.limits,
            watchdog: watchdog.clone(),
        });
        let server_cancel = cancel.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(server_cancel.cancelled_owned())
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "publish API stopped");
            }
        });
        let watcher = drop_dir.map(|dir| {
            let cancel = cancel.clone();
            let every = config.drop_poll;
            tokio::spawn(async move {
                loop {
                    let dir = dir.clone();
                    let _ = tokio::task::spawn_blocking(move || dir.scan()).await;
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(every) => {}
                    }
                }
            })
        });
        let watchdog_task = tokio::spawn(watchdog_loop(
            watchdog.clone(),
            store.clone(),
            config.tick,
            cancel.clone(),
        ));
        tracing::info!(
            addr = %publish_addr,
            cluster = %config.cluster,
            drop_dir = ?config.drop_dir,
            "agent started"
        );
        Ok(Agent {
            aggregator: Some(aggregator),
            local,
            store,
            publish_addr,
            cancel,
            server: Some(server),
            watcher,
            watchdog,
            watchdog_task: Some(watchdog_task),
        })
    }

    fn aggregator(&self) -> &Aggregator {
        // Only `shutdown` takes it, and that consumes the agent.
        self.aggregator
            .as_ref()
            .expect("aggregator present until shutdown")
    }

    /// A changed prewarm list (a re-read topology): tables collected
    /// whether or not a proxy asks.
    pub fn set_prewarm(&self, prewarm: BTreeSet<String>) {
        self.aggregator().set_prewarm(prewarm);
    }

    /// What a re-read configuration changed that only a restart applies,
    /// shown in this agent's `fleet_nodes` row.
    pub fn set_pending_restart(&self, what: Option<String>) {
        self.aggregator().set_pending_restart(what);
    }

    /// Changes the watchdog's limits (`fleetsql agent --watchdog-*`);
    /// turning it off forgets what it counted.
    pub fn set_watchdog(&self, config: WatchdogConfig) {
        self.watchdog.set_config(config);
    }

    /// The watchdog's limits in force.
    pub fn watchdog(&self) -> WatchdogConfig {
        self.watchdog.config()
    }

    /// The agent as a child of a cluster proxy in the same process.
    pub fn as_child(&self) -> Arc<dyn Child> {
        self.aggregator().as_child()
    }

    /// Where the publish API listens (the real port when configured as 0).
    pub fn publish_addr(&self) -> SocketAddr {
        self.publish_addr
    }

    /// Tables the agent collects, as of its last generation.
    pub fn requested(&self) -> BTreeSet<String> {
        self.local.requested()
    }

    /// Every table some local publisher or host collector can give.
    pub fn available(&self) -> BTreeSet<String> {
        self.local.available()
    }

    /// The agent's newest generation.
    pub fn current(&self) -> Arc<Generation> {
        self.aggregator().current()
    }

    /// Every new generation, as it is made.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Generation>> {
        self.aggregator().subscribe()
    }

    /// Makes a generation now instead of at the next tick.
    pub fn tick_now(&self) {
        self.aggregator().tick_now();
    }

    /// Publishes `batch` as `publisher`'s rows of `table` from inside the
    /// process, with the same checks and replace semantics as the HTTP API.
    pub fn publish(&self, table: &str, publisher: &str, batch: &RecordBatch) -> Result<usize> {
        self.store.publish(table, publisher, batch, now_ms())
    }

    /// Publishes an in-process component's own `fleet_<name>` table (e.g.
    /// `fleet_sources`, the integrations' health), a prefix the HTTP API and
    /// [`Agent::publish`] refuse.
    pub fn publish_fleet_table(
        &self,
        table: &str,
        publisher: &str,
        batch: &RecordBatch,
    ) -> Result<usize> {
        self.store
            .publish_fleet_table(table, publisher, batch, now_ms())
    }

    /// Publishers that currently have rows in `table` (`http`, the
    /// `X-Fleetsql-Publisher` names, `file:<name>`, `builtin:<table>`).
    pub fn publishers(&self, table: &str) -> Vec<String> {
        self.store.publishers(table)
    }

    /// Withdraws `publisher`'s rows of `table`; how many there were.
    pub fn withdraw(&self, table: &str, publisher: &str) -> Option<usize> {
        self.store.withdraw(table, publisher)
    }

    /// Stops the publish API (in-flight requests finish), the drop-directory
    /// watcher and the tier loop.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.await;
        }
        if let Some(task) = self.watchdog_task.take() {
            let _ = task.await;
        }
        if let Some(aggregator) = self.aggregator.take() {
            aggregator.shutdown().await;
        }
        tracing::info!(addr = %self.publish_addr, "agent stopped");
    }
}

/// Once per tick: the agent's memory against its ceiling, and the
/// watchdog's rows of `fleet_sources` (withdrawn when it has none).
async fn watchdog_loop(
    watchdog: Arc<Watchdog>,
    store: Arc<Store>,
    tick: std::time::Duration,
    cancel: CancellationToken,
) {
    // Twice per tick, so a shed publisher shows within about half a tick.
    let every = tick / 2;
    let mut published = false;
    loop {
        watchdog.check_memory(watchdog::resident_bytes());
        match watchdog.report() {
            Some(batch) => {
                match store.publish_fleet_table(FLEET_SOURCES, WATCHDOG_PUBLISHER, &batch, now_ms())
                {
                    Ok(_) => published = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot publish the watchdog's fleet_sources rows")
                    }
                }
            }
            None if published => {
                store.withdraw(FLEET_SOURCES, WATCHDOG_PUBLISHER);
                published = false;
            }
            None => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
