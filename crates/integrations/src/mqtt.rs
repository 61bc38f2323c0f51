//! MQTT: persistent-query results to topics, and topics to events.
//!
//! The sink keeps one connection per configured broker; every registration
//! gets a [`MqttSink`] publishing its notifications (JSON) to
//! `{topic_prefix}/{query id}`. Publishing never waits for the broker: while
//! it is unreachable, notifications beyond the sink's queue are dropped
//! and counted as bad items, and the connection is retried with back-off.
//! At QoS 1 and 2 a publish counts as delivered when the broker
//! acknowledges it; those still unacknowledged when the connection drops
//! are published again after the reconnect (at least once; each connection
//! is a clean session, so they go out as new publishes). At most
//! `MAX_INFLIGHT` wait for acknowledgement; the queue waits behind them.
//! The wire protocol is in `mqtt_wire`, over TCP or TLS.
//!
//! The source subscribes to topic filters; each message's payload, a JSON
//! object or an array of objects, becomes events of the configured stream.
//! Anything else is skipped and counted.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fleetsql_pqa::{Notification, PqaError, Sink, SinkFactory};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{MqttBroker, MqttSinkConfig, MqttSourceConfig};
use crate::error::{IntegrationError, Result};
use crate::health::HealthHandle;
use crate::mqtt_wire::{Connection, Incoming};
use crate::{EventSource, SourceContext, sleep_or_cancel};

/// Notifications queued while the broker is slow or away.
const QUEUE: usize = 256;
/// Publishes awaiting acknowledgement before the queue waits.
const MAX_INFLIGHT: usize = 64;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn client_id(name: &str, broker: &MqttBroker) -> String {
    broker
        .client_id
        .clone()
        .unwrap_or_else(|| format!("fleetsql-{name}-{}", std::process::id()))
}

fn describe(broker: &MqttBroker, e: &str) -> String {
    format!("mqtt {}:{}: {e}", broker.host, broker.port)
}

/// Half the keep-alive, so the broker never sees a silent client.
fn ping_every(broker: &MqttBroker) -> Duration {
    (broker.keep_alive / 2).max(Duration::from_millis(500))
}

/// Makes a [`MqttSink`] for every registration; all share one connection.
#[derive(Debug, Clone)]
pub struct MqttSinkFactory {
    name: String,
    queue: mpsc::Sender<(String, String)>,
    prefix: String,
    health: HealthHandle,
}

impl MqttSinkFactory {
    /// Connects (in the background) and returns the factory plus the task
    /// driving the connection; it stops when `cancel` fires.
    pub fn start(
        config: &MqttSinkConfig,
        health: HealthHandle,
        cancel: CancellationToken,
    ) -> (MqttSinkFactory, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let factory = MqttSinkFactory {
            name: config.name.clone(),
            queue,
            prefix: config.topic_prefix.trim_end_matches('/').to_string(),
            health: health.clone(),
        };
        let task = tokio::spawn(drive(rx, config.clone(), health, cancel));
        (factory, task)
    }
}

async fn drive(
    mut queue: mpsc::Receiver<(String, String)>,
    config: MqttSinkConfig,
    health: HealthHandle,
    cancel: CancellationToken,
) {
    let broker = &config.broker;
    let id = client_id(&config.name, broker);
    let mut inflight = Inflight::default();
    loop {
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            c = Connection::connect(broker, &id, CONNECT_TIMEOUT) => c,
        };
        let result = match outcome {
            Ok(mut conn) => {
                health.success(0);
                let r = serve_sink(
                    &mut conn,
                    &mut queue,
                    &mut inflight,
                    &config,
                    &health,
                    &cancel,
                )
                .await;
                if r.is_ok() {
                    conn.disconnect().await;
                    return;
                }
                r
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            health.failure(&describe(broker, &e));
            if !sleep_or_cancel(config.retry.delay(health.consecutive_failures()), &cancel).await {
                return;
            }
        }
    }
}

/// Publishes (QoS 1, 2) awaiting acknowledgement, oldest first, by packet
/// id on the current connection.
#[derive(Debug, Default)]
struct Inflight {
    waiting: Vec<(Option<u16>, String, String)>,
}

impl Inflight {
    async fn publish(
        &mut self,
        conn: &mut Connection,
        qos: u8,
        topic: String,
        json: String,
    ) -> std::result::Result<Option<u16>, String> {
        // Kept before sending: a send cut short is sent again.
        self.waiting.push((None, topic, json));
        let at = self.waiting.len() - 1;
        let (_, topic, json) = &self.waiting[at];
        let id = conn.publish(topic, qos, json.as_bytes()).await?;
        match id {
            Some(id) => self.waiting[at].0 = Some(id),
            None => {
                self.waiting.pop();
            }
        }
        Ok(id)
    }

    /// Removes an acknowledged publish; true if it was waiting.
    fn acked(&mut self, id: u16) -> bool {
        let before = self.waiting.len();
        self.waiting.retain(|(waiting, ..)| *waiting != Some(id));
        self.waiting.len() < before
    }
}

/// Publishes queued notifications until cancelled (`Ok`) or the connection fails.
async fn serve_sink(
    conn: &mut Connection,
    queue: &mut mpsc::Receiver<(String, String)>,
    inflight: &mut Inflight,
    config: &MqttSinkConfig,
    health: &HealthHandle,
    cancel: &CancellationToken,
) -> std::result::Result<(), String> {
    // What the previous connection left unacknowledged goes out again first.
    let unacknowledged = std::mem::take(&mut inflight.waiting);
    for (_, topic, json) in unacknowledged {
        if inflight
            .publish(conn, config.qos, topic, json)
            .await?
            .is_none()
        {
            health.items(1);
        }
    }
    let mut ping = tokio::time::interval(ping_every(&config.broker));
    ping.tick().await;
    loop {
        conn.flush().await?;
        let room = inflight.waiting.len() < MAX_INFLIGHT;
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            next = queue.recv(), if room => {
                let Some((topic, json)) = next else { return Ok(()) };
                if inflight.publish(conn, config.qos, topic, json).await?.is_none() {
                    health.items(1);
                }
            }
            incoming = conn.read() => {
                if let Incoming::Acked { id } = incoming? && inflight.acked(id) {
                    health.items(1);
                }
            }
            _ = ping.tick() => conn.ping().await?,
        }
    }
}

impl SinkFactory for MqttSinkFactory {
    fn sinks_for(&self, id: &str, _epl: &str) -> Vec<Arc<dyn Sink>> {
        vec![Arc::new(MqttSink {
            factory: self.clone(),
            topic: format!("{}/{id}", self.prefix),
        })]
    }
}

/// One registration's results to one MQTT topic.
#[derive(Debug)]
pub struct MqttSink {
    factory: MqttSinkFactory,
    topic: String,
}

#[async_trait]
impl Sink for MqttSink {
    fn name(&self) -> String {
        format!("mqtt:{}:{}", self.factory.name, self.topic)
    }

    async fn deliver(&self, _n: &Notification, json: &str) -> fleetsql_pqa::Result<()> {
        let f = &self.factory;
        f.queue
            .try_send((self.topic.clone(), json.to_string()))
            .map_err(|e| {
                let message = format!(
                    "notification for {} dropped: {e}; the broker is unreachable or slow",
                    self.topic
                );
                f.health.bad_items(1, &message);
                PqaError::BadRequest(message)
            })
    }
}

/// Messages of MQTT topics as events of one stream.
#[derive(Debug)]
pub struct MqttSource {
    config: MqttSourceConfig,
}

impl MqttSource {
    /// A source for `config` (connects when run).
    pub fn new(config: &MqttSourceConfig) -> Self {
        MqttSource {
            config: config.clone(),
        }
    }
}

/// The events in one message payload, or why there are none.
pub fn payload_events(payload: &[u8]) -> std::result::Result<Vec<serde_json::Value>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
    match value {
        serde_json::Value::Object(_) => Ok(vec![value]),
        serde_json::Value::Array(items) if items.iter().all(|v| v.is_object()) => Ok(items),
        _ => Err("payload is neither a JSON object nor an array of objects".to_string()),
    }
}

#[async_trait]
impl EventSource for MqttSource {
    fn name(&self) -> &str {
        &self.config.name
    }
    fn kind(&self) -> &'static str {
        "mqtt_source"
    }
    async fn run(&self, ctx: &SourceContext) -> Result<()> {
        let c = &self.config;
        let remote = |e: String| IntegrationError::Remote(describe(&c.broker, &e));
        // A fresh clean session per run: subscriptions are made after each
        // connect, so a broker restart loses nothing but the messages sent
        // while it was away.
        let id = client_id(&c.name, &c.broker);
        let mut conn = tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            conn = Connection::connect(&c.broker, &id, CONNECT_TIMEOUT) => conn.map_err(remote)?,
        };
        conn.subscribe(&c.topics, c.qos).await.map_err(remote)?;
        let mut ping = tokio::time::interval(ping_every(&c.broker));
        ping.tick().await;
        loop {
            conn.flush().await.map_err(remote)?;
            let incoming = tokio::select! {
                _ = ctx.cancel.cancelled() => {
                    conn.disconnect().await;
                    return Ok(());
                }
                incoming = conn.read() => incoming.map_err(remote)?,
                _ = ping.tick() => {
                    conn.ping().await.map_err(remote)?;
                    continue;
                }
            };
            match incoming {
                Incoming::SubAck { granted: false } => {
                    return Err(IntegrationError::Remote(format!(
                        "mqtt {}:{}: the broker refused a subscription to {:?}; check the topic filters and ACLs",
                        c.broker.host, c.broker.port, c.topics
                    )));
                }
                Incoming::SubAck { granted: true } => ctx.health.success(0),
                Incoming::Publish { topic, payload } => match payload_events(&payload) {
                    Ok(events) => {
                        ctx.emit(&c.stream, &events);
                    }
                    Err(e) => ctx.health.bad_items(1, &format!("topic {topic}: {e}")),
                },
                Incoming::Acked { .. } | Incoming::Other => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_become_events_or_reasons() {
        assert_eq!(payload_events(br#"{"a":1}"#).unwrap().len(), 1);
        assert_eq!(payload_events(br#"[{"a":1},{"a":2}]"#).unwrap().len(), 2);
        assert!(
            payload_events(b"not json")
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            payload_events(b"[1,2]")
                .unwrap_err()
                .contains("array of objects")
        );
        assert!(payload_events(b"42").is_err());
    }
}
