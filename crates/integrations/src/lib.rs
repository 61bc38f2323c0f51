//! fleetsql-integrations: the protocols operators' fleets already speak,
//! plugged into fleet tables and persistent queries.
//!
//! Three small traits carry every integration:
//!
//! - [`Publisher`]: polled for tables that the local agent publishes like
//!   any other publisher's (Prometheus exposition scrapes, SNMP tables).
//! - [`EventSource`]: runs a connection or poller that turns outside items
//!   into events of a persistent-query stream (MQTT subscriptions, perfSONAR
//!   esmond archives behind [`esmond::ArchiveSource`], XMPP pubsub nodes).
//! - [`fleetsql_pqa::Sink`]: receives persistent queries' results (MQTT
//!   topics `{prefix}/{query id}`, XMPP pubsub nodes), attached to each
//!   registration by a [`fleetsql_pqa::SinkFactory`].
//!
//! [`Integrations::start`] reads an [`IntegrationsConfig`] and runs each
//! integration in its own task. A failure (unreachable server, bad
//! credentials, a malformed answer) is reported to that integration's
//! [`HealthHandle`] and retried with exponential back-off; malformed items
//! (bad metric lines, non-JSON messages) are skipped and counted. Nothing
//! here holds a lock across a network call or waits on the engine, so a
//! stuck server stalls only its own task. The health of every integration
//! is published through the agent as the table `fleet_sources`.

pub mod config;
pub mod error;
pub mod esmond;
pub mod health;
pub mod mqtt;
pub mod mqtt_wire;
pub mod prometheus;
pub mod snmp;
mod snmp_usm;
pub mod tls;
pub mod xmpp;
pub mod xmpp_wire;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use async_trait::async_trait;
use fleetsql_pqa::{BatchResult, PqaService};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{IntegrationsConfig, Retry};
pub use error::{IntegrationError, Result};
pub use health::{FLEET_SOURCES, HealthHandle, SourceHealth};

use health::HealthRegistry;

/// Reads every integration's health whenever asked; see
/// [`Integrations::health_view`].
#[derive(Debug, Clone)]
pub struct HealthView(Arc<HealthRegistry>);

impl HealthView {
    pub fn snapshot(&self) -> Vec<SourceHealth> {
        self.0.snapshot()
    }

    /// Returns when any integration's health changes next.
    pub async fn changed(&self) {
        self.0.changed_any.notified().await
    }
}

/// Where publishers' tables go: the local agent in the binary.
pub trait TableTarget: Send + Sync + std::fmt::Debug + 'static {
    /// Replaces `publisher`'s rows of `table`.
    fn publish(&self, table: &str, publisher: &str, batch: &RecordBatch) -> Result<usize, String>;
    /// Withdraws `publisher`'s rows of `table`.
    fn withdraw(&self, table: &str, publisher: &str);
    /// Publishes a `fleet_` table the process itself owns (`fleet_sources`).
    fn publish_fleet_table(
        &self,
        table: &str,
        publisher: &str,
        batch: &RecordBatch,
    ) -> Result<usize, String>;
}

impl TableTarget for fleetsql_agent::Agent {
    fn publish(&self, table: &str, publisher: &str, batch: &RecordBatch) -> Result<usize, String> {
        fleetsql_agent::Agent::publish(self, table, publisher, batch).map_err(|e| e.to_string())
    }
    fn withdraw(&self, table: &str, publisher: &str) {
        fleetsql_agent::Agent::withdraw(self, table, publisher);
    }
    fn publish_fleet_table(
        &self,
        table: &str,
        publisher: &str,
        batch: &RecordBatch,
    ) -> Result<usize, String> {
        fleetsql_agent::Agent::publish_fleet_table(self, table, publisher, batch)
            .map_err(|e| e.to_string())
    }
}

/// What one poll of a [`Publisher`] produced.
#[derive(Debug, Default)]
pub struct Polled {
    /// Tables to publish (the publisher's previous tables not among them are withdrawn).
    pub tables: Vec<(String, RecordBatch)>,
    /// Malformed items skipped.
    pub bad_items: u64,
    /// The last of them, described.
    pub last_bad: Option<String>,
}

/// A source of fleet tables polled at an interval.
#[async_trait]
pub trait Publisher: Send + Sync + std::fmt::Debug + 'static {
    /// Configured name; also the agent publisher name `kind:name`.
    fn name(&self) -> &str;
    /// Kind, e.g. `prometheus`.
    fn kind(&self) -> &'static str;
    /// Time between successful polls.
    fn interval(&self) -> Duration;
    /// Fetches the current tables. An error is a failed poll (retried with back-off).
    async fn poll(&self) -> Result<Polled>;
}

/// What an [`EventSource`] gets to work with.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// The persistent-query engine events go to.
    pub pqa: PqaService,
    /// Where the source reports.
    pub health: HealthHandle,
    /// Fires at shutdown.
    pub cancel: CancellationToken,
}

impl SourceContext {
    /// Pushes `events` into `stream`; refused events count as bad items.
    pub fn emit(&self, stream: &str, events: &[serde_json::Value]) -> BatchResult {
        let result = self.pqa.push_events(stream, events);
        self.health.items(result.accepted as u64);
        if let Some(e) = result.errors.last() {
            self.health
                .bad_items(result.rejected as u64, &format!("stream `{stream}`: {e}"));
        }
        result
    }
}

/// A source of persistent-query events (a subscription or a poller).
#[async_trait]
pub trait EventSource: Send + Sync + std::fmt::Debug + 'static {
    /// Configured name.
    fn name(&self) -> &str;
    /// Kind, e.g. `mqtt_source`.
    fn kind(&self) -> &'static str;
    /// Runs until `ctx.cancel` fires (then `Ok`) or the source fails (then
    /// `Err`, and it is run again after a back-off). Reports successes to
    /// `ctx.health` as they happen, which resets the back-off.
    async fn run(&self, ctx: &SourceContext) -> Result<()>;
}

/// The running integrations of one process.
#[derive(Debug)]
pub struct Integrations {
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    health: Arc<HealthRegistry>,
    tables: Option<Arc<dyn TableTarget>>,
    pqa: Option<PqaService>,
}

impl Integrations {
    /// Starts every integration in `config` on the current tokio runtime.
    /// `tables` receives publishers' tables and `fleet_sources`; `pqa`
    /// receives events and gives results to sinks. An integration that
    /// needs a part given as `None` is refused.
    pub fn start(
        config: &IntegrationsConfig,
        tables: Option<Arc<dyn TableTarget>>,
        pqa: Option<PqaService>,
    ) -> Result<Integrations> {
        let need = |name: &str, what: &'static str, present: bool| {
            if present {
                Ok(())
            } else {
                Err(IntegrationError::Missing {
                    name: name.to_string(),
                    what,
                })
            }
        };
        for p in config
            .prometheus
            .iter()
            .map(|p| &p.name)
            .chain(config.snmp.iter().map(|s| &s.name))
        {
            need(p, "a local agent", tables.is_some())?;
        }
        for s in config
            .mqtt_sink
            .iter()
            .map(|s| &s.name)
            .chain(config.mqtt_source.iter().map(|s| &s.name))
            .chain(config.esmond.iter().map(|e| &e.name))
            .chain(config.xmpp_sink.iter().map(|s| &s.name))
            .chain(config.xmpp_source.iter().map(|s| &s.name))
        {
            need(s, "persistent queries", pqa.is_some())?;
        }
        let mut me = Integrations {
            cancel: CancellationToken::new(),
            tasks: Vec::new(),
            health: Arc::new(HealthRegistry::default()),
            tables,
            pqa,
        };
        for p in &config.prometheus {
            let publisher = prometheus::PrometheusPublisher::new(p)?;
            me.add_publisher(Arc::new(publisher), p.retry)?;
        }
        for s in &config.snmp {
            me.add_publisher(Arc::new(snmp::SnmpPublisher::new(s)?), s.retry)?;
        }
        for s in &config.mqtt_source {
            me.add_source(Arc::new(mqtt::MqttSource::new(s)), s.retry)?;
        }
        for e in &config.esmond {
            let source = esmond::EsmondSource::new(e)?;
            me.add_source(Arc::new(source), e.retry)?;
        }
        for s in &config.xmpp_source {
            me.add_source(Arc::new(xmpp::XmppSource::new(s)), s.retry)?;
        }
        for s in &config.mqtt_sink {
            me.add_mqtt_sink(s)?;
        }
        for s in &config.xmpp_sink {
            me.add_xmpp_sink(s)?;
        }
        if let Some(target) = me.tables.clone() {
            let task = health_task(
                me.health.clone(),
                target,
                config.health.publish_every,
                me.cancel.clone(),
            );
            me.tasks.push(tokio::spawn(task));
        }
        Ok(me)
    }

    /// Runs `publisher` every interval, publishing its tables as
    /// `kind:name` through the table target.
    pub fn add_publisher(&mut self, publisher: Arc<dyn Publisher>, retry: Retry) -> Result<()> {
        let Some(target) = self.tables.clone() else {
            return Err(IntegrationError::Missing {
                name: publisher.name().to_string(),
                what: "a local agent",
            });
        };
        let health = self.health.handle(publisher.name(), publisher.kind());
        let cancel = self.cancel.clone();
        self.tasks.push(tokio::spawn(run_publisher(
            publisher, target, health, retry, cancel,
        )));
        Ok(())
    }

    /// Runs `source`, again after a back-off whenever it fails.
    pub fn add_source(&mut self, source: Arc<dyn EventSource>, retry: Retry) -> Result<()> {
        let Some(pqa) = self.pqa.clone() else {
            return Err(IntegrationError::Missing {
                name: source.name().to_string(),
                what: "persistent queries",
            });
        };
        let ctx = SourceContext {
            pqa,
            health: self.health.handle(source.name(), source.kind()),
            cancel: self.cancel.clone(),
        };
        self.tasks
            .push(tokio::spawn(run_source(source, ctx, retry)));
        Ok(())
    }

    fn add_mqtt_sink(&mut self, config: &config::MqttSinkConfig) -> Result<()> {
        let Some(pqa) = self.pqa.clone() else {
            return Err(IntegrationError::Missing {
                name: config.name.clone(),
                what: "persistent queries",
            });
        };
        let health = self.health.handle(&config.name, "mqtt_sink");
        let (factory, task) = mqtt::MqttSinkFactory::start(config, health, self.cancel.clone());
        pqa.add_sink_factory(Arc::new(factory));
        self.tasks.push(task);
        Ok(())
    }

    fn add_xmpp_sink(&mut self, config: &config::XmppSinkConfig) -> Result<()> {
        let Some(pqa) = self.pqa.clone() else {
            return Err(IntegrationError::Missing {
                name: config.name.clone(),
                what: "persistent queries",
            });
        };
        let health = self.health.handle(&config.name, "xmpp_sink");
        let (factory, task) = xmpp::XmppSinkFactory::start(config, health, self.cancel.clone());
        pqa.add_sink_factory(Arc::new(factory));
        self.tasks.push(task);
        Ok(())
    }

    /// Every integration's health, as `fleet_sources` shows it.
    pub fn health(&self) -> Vec<SourceHealth> {
        self.health.snapshot()
    }

    /// A handle on the same health for a process that serves
    /// `fleet_sources` itself (a SQL node, which has no agent to publish
    /// it through).
    pub fn health_view(&self) -> HealthView {
        HealthView(self.health.clone())
    }

    /// Waits until `pred` holds for the health of integration `name`, or
    /// `timeout` passes; the last state seen either way.
    pub async fn wait_health(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&SourceHealth) -> bool,
    ) -> Option<SourceHealth> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.health.changed_any.notified();
            let current = self.health.snapshot().into_iter().find(|h| h.name == name);
            if current.as_ref().is_some_and(&pred) {
                return current;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return current;
            }
        }
    }

    /// Stops every integration and waits for their tasks.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn sleep_or_cancel(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

async fn run_publisher(
    publisher: Arc<dyn Publisher>,
    target: Arc<dyn TableTarget>,
    health: HealthHandle,
    retry: Retry,
    cancel: CancellationToken,
) {
    let publisher_name = format!("{}:{}", publisher.kind(), publisher.name());
    let mut previous: BTreeSet<String> = BTreeSet::new();
    loop {
        let polled = tokio::select! {
            _ = cancel.cancelled() => break,
            polled = publisher.poll() => polled,
        };
        match polled {
            Ok(polled) => {
                let mut rows = 0u64;
                let mut bad = polled.bad_items;
                let mut last_bad = polled.last_bad;
                let mut current = BTreeSet::new();
                for (table, batch) in &polled.tables {
                    match target.publish(table, &publisher_name, batch) {
                        Ok(n) => {
                            rows += n as u64;
                            current.insert(table.clone());
                        }
                        Err(e) => {
                            bad += 1;
                            last_bad = Some(format!("table `{table}` not published: {e}"));
                        }
                    }
                }
                for gone in previous.difference(&current) {
                    target.withdraw(gone, &publisher_name);
                }
                previous = current;
                health.success(rows);
                if let Some(e) = last_bad {
                    health.bad_items(bad, &e);
                }
            }
            Err(e) => health.failure(&e.to_string()),
        }
        let delay = match health.consecutive_failures() {
            0 => publisher.interval(),
            n => retry.delay(n),
        };
        if !sleep_or_cancel(delay, &cancel).await {
            break;
        }
    }
}

async fn run_source(source: Arc<dyn EventSource>, ctx: SourceContext, retry: Retry) {
    loop {
        let outcome = tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            outcome = source.run(&ctx) => outcome,
        };
        match outcome {
            Ok(()) if ctx.cancel.is_cancelled() => break,
            // A source that ends by itself is restarted like a failed one,
            // without counting a failure.
            Ok(()) => {}
            Err(e) => ctx.health.failure(&e.to_string()),
        }
        let delay = retry.delay(ctx.health.consecutive_failures().max(1));
        if !sleep_or_cancel(delay, &ctx.cancel).await {
            break;
        }
    }
}

async fn health_task(
    registry: Arc<HealthRegistry>,
    target: Arc<dyn TableTarget>,
    every: Duration,
    cancel: CancellationToken,
) {
    // Changes are coalesced: at most one publication per this spacing.
    let spacing = every.min(Duration::from_millis(200));
    loop {
        let batch = health::fleet_sources_batch(&registry.snapshot());
        if let Err(e) = target.publish_fleet_table(FLEET_SOURCES, "integrations", &batch) {
            tracing::warn!(error = %e, "cannot publish fleet_sources");
        }
        if !sleep_or_cancel(spacing, &cancel).await {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = registry.changed.notified() => {}
            _ = tokio::time::sleep(every.saturating_sub(spacing)) => {}
        }
    }
}
