//! In-process topics: one broadcast channel per registered query.
//!
//! Publishing never waits: a subscriber that falls more than the topic's
//! capacity behind loses its place and is closed with a reason (see
//! [`CloseReason`]); the engine and the other subscribers go on.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

/// One trigger of a query, as published on its topic.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    /// The registration id.
    pub query: String,
    /// 1, 2, 3... per registration.
    pub seq: u64,
    /// Engine time of the trigger (milliseconds).
    pub time: i64,
    /// The rows, after the registration's publish function.
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// The remove stream of `select irstream` (publish mode `all` only):
    /// rows that left a window, or groups as they were before the update.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub old_rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

impl Notification {
    /// The notification as JSON text.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }
}

/// A published notification with its JSON text computed once for all subscribers.
#[derive(Debug)]
pub struct Published {
    /// The notification.
    pub notification: Notification,
    /// Its JSON text.
    pub json: String,
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The subscriber read too slowly and `dropped` notifications were lost.
    TooSlow {
        /// How many it missed.
        dropped: u64,
    },
    /// The query was deleted.
    Deleted,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::TooSlow { dropped } => {
                write!(
                    f,
                    "subscriber too slow: {dropped} notifications dropped; reconnect to resume"
                )
            }
            CloseReason::Deleted => write!(f, "query deleted"),
        }
    }
}

/// A query's topic.
#[derive(Debug, Clone)]
pub struct Topic {
    name: Arc<str>,
    tx: broadcast::Sender<Arc<Published>>,
}

/// A subscription to a topic.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Published>>,
}

impl Subscription {
    /// The next notification, or why the subscription ended.
    pub async fn next(&mut self) -> Result<Arc<Published>, CloseReason> {
        match self.rx.recv().await {
            Ok(p) => Ok(p),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(CloseReason::TooSlow { dropped: n }),
            Err(broadcast::error::RecvError::Closed) => Err(CloseReason::Deleted),
        }
    }
}

impl Topic {
    /// A topic keeping at most `capacity` notifications for slow readers.
    pub fn new(name: &str, capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Topic {
            name: Arc::from(name),
            tx,
        }
    }

    /// The topic's name (`pqa/<query id>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Subscribes from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }

    /// Number of live subscribers (SSE, WebSocket, sink tasks).
    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Publishes without waiting; returns how many subscribers will see it.
    pub fn publish(&self, n: Notification) -> usize {
        let json = n.to_json_string();
        self.tx
            .send(Arc::new(Published {
                notification: n,
                json,
            }))
            .unwrap_or(0)
    }
}
