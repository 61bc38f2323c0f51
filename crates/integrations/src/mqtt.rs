//! MQTT: persistent-query results to topics, and topics to events.
//!
//! The sink keeps one connection per configured broker; every registration
//! gets a [`MqttSink`] publishing its notifications (JSON) to
//! `{topic_prefix}/{query id}`. Publishing never waits for the broker: while
//! it is unreachable, notifications beyond the client's queue are dropped
//! and counted as bad items, and the connection is retried with back-off.
//!
//! The source subscribes to topic filters; each message's payload, a JSON
//! object or an array of objects, becomes events of the configured stream.
//! Anything else is skipped and counted.

use std::sync::Arc;

use async_trait::async_trait;
use fleetsql_pqa::{Notification, PqaError, Sink, SinkFactory};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{MqttBroker, MqttSinkConfig, MqttSourceConfig, Retry};
use crate::error::{IntegrationError, Result};
use crate::health::HealthHandle;
use crate::{EventSource, SourceContext, sleep_or_cancel};

/// Requests the client queues while the broker is slow or away.
const QUEUE: usize = 256;

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn client(name: &str, broker: &MqttBroker) -> (AsyncClient, EventLoop) {
    let id = broker
        .client_id
        .clone()
        .unwrap_or_else(|| format!("fleetsql-{name}-{}", std::process::id()));
    let mut options = MqttOptions::new(id, broker.host.clone(), broker.port);
    options.set_keep_alive(broker.keep_alive);
    if let Some(user) = &broker.username {
        options.set_credentials(user.clone(), broker.password.clone().unwrap_or_default());
    }
    AsyncClient::new(options, QUEUE)
}

fn describe(broker: &MqttBroker, e: &ConnectionError) -> String {
    let hint = match e {
        ConnectionError::ConnectionRefused(_) => "; check username and password",
        ConnectionError::Io(_) | ConnectionError::NetworkTimeout => "; is the broker running?",
        _ => "",
    };
    format!("mqtt {}:{}: {e}{hint}", broker.host, broker.port)
}

/// Makes a [`MqttSink`] for every registration; all share one connection.
#[derive(Debug, Clone)]
pub struct MqttSinkFactory {
    name: String,
    client: AsyncClient,
    prefix: String,
    qos: QoS,
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
        let (client, events) = client(&config.name, &config.broker);
        let factory = MqttSinkFactory {
            name: config.name.clone(),
            client: client.clone(),
            prefix: config.topic_prefix.trim_end_matches('/').to_string(),
            qos: qos(config.qos),
            health: health.clone(),
        };
        let task = tokio::spawn(drive(
            events,
            client,
            config.broker.clone(),
            config.retry,
            health,
            cancel,
        ));
        (factory, task)
    }
}

async fn drive(
    mut events: EventLoop,
    client: AsyncClient,
    broker: MqttBroker,
    retry: Retry,
    health: HealthHandle,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            event = events.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => health.success(0),
            Ok(Event::Outgoing(Outgoing::Publish(_))) => health.items(1),
            Ok(_) => {}
            Err(e) => {
                health.failure(&describe(&broker, &e));
                if !sleep_or_cancel(retry.delay(health.consecutive_failures()), &cancel).await {
                    break;
                }
            }
        }
    }
    let _ = client.try_disconnect();
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
        f.client
            .try_publish(self.topic.as_str(), f.qos, false, json.as_bytes().to_vec())
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
        // A fresh clean session per run: subscriptions are made after each
        // connect, so a broker restart loses nothing but the messages sent
        // while it was away.
        let (client, mut events) = client(&c.name, &c.broker);
        loop {
            let event = tokio::select! {
                _ = ctx.cancel.cancelled() => {
                    let _ = client.try_disconnect();
                    return Ok(());
                }
                event = events.poll() => event,
            };
            match event.map_err(|e| IntegrationError::Remote(describe(&c.broker, &e)))? {
                Event::Incoming(Packet::ConnAck(_)) => {
                    for topic in &c.topics {
                        client
                            .try_subscribe(topic.as_str(), qos(c.qos))
                            .map_err(|e| {
                                IntegrationError::Remote(format!("subscribe {topic}: {e}"))
                            })?;
                    }
                }
                Event::Incoming(Packet::SubAck(ack)) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|r| matches!(r, rumqttc::SubscribeReasonCode::Failure));
                    if refused {
                        return Err(IntegrationError::Remote(format!(
                            "mqtt {}:{}: the broker refused a subscription to {:?}; check the topic filters and ACLs",
                            c.broker.host, c.broker.port, c.topics
                        )));
                    }
                    ctx.health.success(0);
                }
                Event::Incoming(Packet::Publish(message)) => {
                    match payload_events(&message.payload) {
                        Ok(events) => {
                            ctx.emit(&c.stream, &events);
                        }
                        Err(e) => ctx
                            .health
                            .bad_items(1, &format!("topic {}: {e}", message.topic)),
                    }
                }
                _ => {}
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
