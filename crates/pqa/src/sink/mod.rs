//! Sinks: where a query's notifications go besides in-process subscribers.
//!
//! A sink implements [`Sink`]; [`spawn_sink`] runs it in its own task fed by
//! the query's topic, so a slow or failing sink never holds up the engine
//! (it lags and loses notifications instead, which is logged). XMPP pubsub
//! (XEP-0060) and MQTT sinks plug in by implementing the trait.

mod webhook;

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::topic::{CloseReason, Notification, Topic};

pub use webhook::{WebhookPolicy, WebhookSink};

/// A destination for notifications.
#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug + 'static {
    /// A name for logs and listings (e.g. the webhook URL).
    fn name(&self) -> String;
    /// Delivers one notification; retries are the sink's business.
    async fn deliver(&self, n: &Notification, json: &str) -> Result<()>;
    /// Where a client finds this sink's results (e.g. an XMPP pubsub
    /// service and node), shown in the registration answer; `None` for
    /// sinks with nothing to subscribe to.
    fn handle(&self) -> Option<serde_json::Value> {
        None
    }
    /// The registration was deleted (its last reference dropped). Called
    /// synchronously under the service's lock, so it must not block: queue
    /// any cleanup (deleting a pubsub node) for the sink's own task.
    fn query_deleted(&self) {}
}

/// Makes the sinks every new registration gets (e.g. an MQTT topic per
/// query), so integrations see a query's first result, not only those after
/// they noticed it. Registered with [`crate::PqaService::add_sink_factory`].
pub trait SinkFactory: Send + Sync + std::fmt::Debug + 'static {
    /// Sinks for the registration `id` of `epl`; none to leave it alone.
    fn sinks_for(&self, id: &str, epl: &str) -> Vec<Arc<dyn Sink>>;
    /// The name a registration gives (`"sinks": [name]`) to get this
    /// factory's sinks. `None` (the default) gives them to every registration.
    fn requested_as(&self) -> Option<&str> {
        None
    }
}

/// A running sink; dropping it stops the task.
#[derive(Debug)]
pub struct SinkTask {
    name: String,
    sink: Arc<dyn Sink>,
    handle: tokio::task::JoinHandle<()>,
}

impl SinkTask {
    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sink it runs.
    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }
}

impl Drop for SinkTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Runs `sink` on every notification of `topic`, in a task of the current
/// tokio runtime. Returns `None` outside a runtime.
pub fn spawn_sink(topic: &Topic, sink: Arc<dyn Sink>) -> Option<SinkTask> {
    let rt = tokio::runtime::Handle::try_current().ok()?;
    let mut sub = topic.subscribe();
    let name = sink.name();
    let running = sink.clone();
    let topic_name = topic.name().to_string();
    let handle = rt.spawn(async move {
        loop {
            match sub.next().await {
                Ok(p) => {
                    if let Err(e) = sink.deliver(&p.notification, &p.json).await {
                        tracing::warn!(topic = %topic_name, sink = %sink.name(), error = %e, "sink failed to deliver");
                    }
                }
                Err(CloseReason::TooSlow { dropped }) => {
                    tracing::warn!(topic = %topic_name, sink = %sink.name(), dropped, "sink lagged; notifications dropped");
                    // The receiver has skipped to the oldest notification still held; go on.
                }
                Err(CloseReason::Deleted) => break,
            }
        }
    });
    Some(SinkTask {
        name,
        sink: running,
        handle,
    })
}
