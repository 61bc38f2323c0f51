//! In-process topics: one broadcast channel per registered query.
//!
//! Publishing never waits: a subscriber that falls more than the topic's
//! capacity behind loses its place and is closed with a reason (see
//! [`CloseReason`]); the engine and the other subscribers go on.
//!
//! # Serialize once per distinct result
//!
//! Many registrations often publish the same rows for the same event (10,000
//! statements `select v, host from S(v > N)` over one stream all produce the
//! event's row). The rows are turned into JSON objects and serialized once
//! ([`SharedRows`]) and every topic carries only a small envelope (query id,
//! sequence number, time, a reference to the shared rows). A subscriber
//! builds its [`Published`] text when it reads it, so the publishing side
//! (which holds the engine lock) pays per registration only for the send,
//! and notifications nobody reads are never formatted.

use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::processor::Row;
use crate::value::Value;

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

/// A published notification with its JSON text.
#[derive(Debug)]
pub struct Published {
    /// The notification.
    pub notification: Notification,
    /// Its JSON text.
    pub json: String,
}

/// The rows of one result, as JSON objects and as JSON text, shared by every
/// registration that publishes exactly these rows.
#[derive(Debug)]
pub(crate) struct SharedRows {
    rows: Vec<serde_json::Map<String, serde_json::Value>>,
    old_rows: Vec<serde_json::Map<String, serde_json::Value>>,
    /// `"rows":[...]`, then `,"old_rows":[...]` when there are any: the end
    /// of the notification's JSON object, as `Notification`'s serializer
    /// writes it.
    tail: String,
}

impl SharedRows {
    pub(crate) fn new(
        rows: Vec<serde_json::Map<String, serde_json::Value>>,
        old_rows: Vec<serde_json::Map<String, serde_json::Value>>,
    ) -> Self {
        // Serializing maps of JSON values cannot fail (string keys only).
        let mut tail = String::from("\"rows\":");
        tail.push_str(&serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into()));
        if !old_rows.is_empty() {
            tail.push_str(",\"old_rows\":");
            tail.push_str(&serde_json::to_string(&old_rows).unwrap_or_else(|_| "[]".into()));
        }
        SharedRows {
            rows,
            old_rows,
            tail,
        }
    }

    pub(crate) fn from_rows(rows: &[Row], old: &[Row]) -> Self {
        SharedRows::new(
            rows.iter().map(Row::to_json).collect(),
            old.iter().map(Row::to_json).collect(),
        )
    }
}

/// What a topic's channel carries: cheap to clone (two reference counts).
#[derive(Debug, Clone)]
struct Envelope {
    query: Arc<str>,
    seq: u64,
    time: i64,
    rows: Arc<SharedRows>,
}

impl Envelope {
    /// The notification's JSON text: the same bytes as
    /// [`Notification::to_json_string`] of [`Envelope::notification`].
    fn json(&self) -> String {
        let mut s = String::with_capacity(self.rows.tail.len() + self.query.len() + 48);
        s.push_str("{\"query\":");
        s.push_str(&serde_json::to_string(&*self.query).unwrap_or_else(|_| "\"\"".into()));
        // Writing to a String cannot fail.
        let _ = write!(s, ",\"seq\":{},\"time\":{},", self.seq, self.time);
        s.push_str(&self.rows.tail);
        s.push('}');
        s
    }

    fn notification(&self) -> Notification {
        Notification {
            query: self.query.to_string(),
            seq: self.seq,
            time: self.time,
            rows: self.rows.rows.clone(),
            old_rows: self.rows.old_rows.clone(),
        }
    }
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
    /// The registration id that notifications published by the service carry.
    query: Arc<str>,
    tx: broadcast::Sender<Envelope>,
}

/// A subscription to a topic.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Envelope>,
}

impl Subscription {
    async fn envelope(&mut self) -> Result<Envelope, CloseReason> {
        match self.rx.recv().await {
            Ok(e) => Ok(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(CloseReason::TooSlow { dropped: n }),
            Err(broadcast::error::RecvError::Closed) => Err(CloseReason::Deleted),
        }
    }

    /// The next notification, or why the subscription ended.
    pub async fn next(&mut self) -> Result<Arc<Published>, CloseReason> {
        let e = self.envelope().await?;
        Ok(Arc::new(Published {
            json: e.json(),
            notification: e.notification(),
        }))
    }

    /// The next notification's sequence number and JSON text (what SSE and
    /// WebSocket clients receive), without building its rows as objects.
    pub async fn next_json(&mut self) -> Result<(u64, String), CloseReason> {
        let e = self.envelope().await?;
        Ok((e.seq, e.json()))
    }
}

impl Topic {
    /// A topic keeping at most `capacity` notifications for slow readers.
    pub fn new(name: &str, capacity: usize) -> Self {
        Topic::named(Arc::from(name), Arc::from(name), capacity)
    }

    /// The topic `pqa/<id>` of registration `id`.
    pub(crate) fn for_query(id: &str, capacity: usize) -> Self {
        Topic::named(Arc::from(format!("pqa/{id}")), Arc::from(id), capacity)
    }

    fn named(name: Arc<str>, query: Arc<str>, capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Topic { name, query, tx }
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
        let envelope = Envelope {
            query: Arc::from(n.query.as_str()),
            seq: n.seq,
            time: n.time,
            rows: Arc::new(SharedRows::new(n.rows, n.old_rows)),
        };
        self.tx.send(envelope).unwrap_or(0)
    }

    /// Publishes rows shared with other topics, as notification `seq` of
    /// this topic's registration.
    pub(crate) fn publish_shared(&self, seq: u64, time: i64, rows: &Arc<SharedRows>) -> usize {
        let envelope = Envelope {
            query: self.query.clone(),
            seq,
            time,
            rows: rows.clone(),
        };
        self.tx.send(envelope).unwrap_or(0)
    }
}

/// Results already serialized during one publishing pass, so registrations
/// (and statements) producing exactly the same rows share one
/// [`SharedRows`]. Only the last few are kept: the statements one event
/// triggers publish one after another, so a short memory finds the sharing
/// without hashing every row.
#[derive(Debug, Default)]
pub(crate) struct SharedCache {
    recent: Vec<(Vec<Row>, Vec<Row>, Arc<SharedRows>)>,
}

/// How many distinct results [`SharedCache`] remembers.
const RECENT: usize = 8;

impl SharedCache {
    /// The shared form of (`rows`, `old`): one already built for identical
    /// rows, or a new one.
    pub(crate) fn get(&mut self, rows: &[Row], old: &[Row]) -> Arc<SharedRows> {
        if let Some((_, _, s)) = self
            .recent
            .iter()
            .rev()
            .find(|(r, o, _)| same_rows(r, rows) && same_rows(o, old))
        {
            return s.clone();
        }
        let s = Arc::new(SharedRows::from_rows(rows, old));
        if self.recent.len() == RECENT {
            self.recent.remove(0);
        }
        self.recent.push((rows.to_vec(), old.to_vec(), s.clone()));
        s
    }
}

/// Rows that serialize to the same JSON: same names, same values of the same
/// kind (`Value`'s own equality says `1 == 1.0`, which print differently).
fn same_rows(a: &[Row], b: &[Row]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.cols.len() == y.cols.len()
                && x.cols
                    .iter()
                    .zip(&y.cols)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_value(vx, vy))
        })
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Str(x), Value::Str(y)) => x == y,
        // Structural equality of JSON objects may ignore key order; only the
        // very same value is surely printed the same.
        (Value::Json(x), Value::Json(y)) => Arc::ptr_eq(x, y),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cols: &[(&str, Value)]) -> Row {
        Row {
            cols: cols
                .iter()
                .map(|(k, v)| (Arc::from(*k), v.clone()))
                .collect(),
        }
    }

    /// The envelope's text is byte for byte what serializing the
    /// notification gives, with and without a remove stream.
    #[test]
    fn envelope_json_is_the_notifications_json() {
        let new = [row(&[
            ("v", Value::Int(1)),
            ("h", Value::Str(Arc::from("a\"b"))),
        ])];
        let old = [row(&[("v", Value::Float(2.5)), ("h", Value::Null)])];
        for old in [&old[..], &[][..]] {
            let e = Envelope {
                query: Arc::from("q\\1"),
                seq: 7,
                time: -3,
                rows: Arc::new(SharedRows::from_rows(&new, old)),
            };
            assert_eq!(e.json(), e.notification().to_json_string());
        }
    }

    /// Rows that print differently are never shared, even when `Value`
    /// calls them equal.
    #[test]
    fn cache_shares_only_identical_rows() {
        let mut c = SharedCache::default();
        let a = c.get(&[row(&[("v", Value::Int(1))])], &[]);
        let b = c.get(&[row(&[("v", Value::Int(1))])], &[]);
        assert!(Arc::ptr_eq(&a, &b));
        let f = c.get(&[row(&[("v", Value::Float(1.0))])], &[]);
        assert!(!Arc::ptr_eq(&a, &f));
        assert_eq!(f.tail, "\"rows\":[{\"v\":1.0}]");
        let renamed = c.get(&[row(&[("w", Value::Int(1))])], &[]);
        assert!(!Arc::ptr_eq(&a, &renamed));
        let with_old = c.get(
            &[row(&[("v", Value::Int(1))])],
            &[row(&[("v", Value::Int(0))])],
        );
        assert!(!Arc::ptr_eq(&a, &with_old));
    }
}
