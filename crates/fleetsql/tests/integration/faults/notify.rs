//! Alerts that fire and clear all the time, routed to a webhook the test
//! runs, so a fault test can tell whether a notification was lost or sent
//! twice across a kill: per (alert, instance) the notified events, in the
//! order they happened, must alternate fired, cleared, fired, ...; a lost
//! one or a duplicate shows as the same kind twice in a row.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use serde_json::Value;

/// How many alerts run (the 20).
pub(crate) const ALERTS: usize = 20;

/// One notified event: (alert, instance key, kind, at_ms).
pub(crate) type Notified = (String, String, String, i64);

#[derive(Debug, Clone, Default)]
pub(crate) struct Notifications {
    seen: Arc<Mutex<Vec<Notified>>>,
}

async fn record(State(seen): State<Notifications>, axum::Json(body): axum::Json<Value>) {
    let alert = body["alert"].as_str().unwrap_or_default().to_string();
    let mut all = seen.seen.lock().unwrap();
    for event in body["events"].as_array().cloned().unwrap_or_default() {
        let kind = event["kind"].as_str().unwrap_or_default().to_string();
        if kind != "fired" && kind != "cleared" {
            continue;
        }
        all.push((
            alert.clone(),
            event["key"].to_string(),
            kind,
            event["at_ms"].as_i64().unwrap_or(0),
        ));
    }
}

impl Notifications {
    /// Starts the webhook and writes `ALERTS` alerts and their route into
    /// `dir`: each fires for every machine in one period of a few seconds
    /// and clears in the next (a condition on the clock), evaluated every
    /// second; two SQL texts between them, so the nodes run two queries a
    /// pass, not twenty.
    pub(crate) async fn start(dir: &Path) -> Notifications {
        let notifications = Notifications::default();
        let app = axum::Router::new()
            .route("/hook", post(record))
            .with_state(notifications.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("routes.toml"),
            format!(
                "[route.noc]\nkind = \"webhook\"\nurl = \"http://{hook}/hook\"\nbackoff = \"50ms\"\n"
            ),
        )
        .unwrap();
        for i in 0..ALERTS {
            let period = if i % 2 == 0 { 3 } else { 4 };
            let text = format!(
                "name = \"flip{i:02}\"\nevery = \"1s\"\nfire_after = 1\nclear_after = \"0s\"\n\
                 min_completeness = 0.0\nroutes = [\"noc\"]\n\
                 sql = \"SELECT ip ip_key FROM sys WHERE CAST(date_part('epoch', now()) AS BIGINT) / {period} % 2 = 0\"\n"
            );
            std::fs::write(dir.join(format!("flip{i:02}.toml")), text).unwrap();
        }
        notifications
    }

    pub(crate) fn all(&self) -> Vec<Notified> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until every instance notified so far has an event at or after
    /// `after_ms` (the outbox drained past that time), at most `limit`.
    pub(crate) async fn wait_past(&self, after_ms: i64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let mut newest: BTreeMap<(String, String), i64> = BTreeMap::new();
            for (alert, key, _, at) in self.all() {
                let slot = newest.entry((alert, key)).or_default();
                *slot = (*slot).max(at);
            }
            if !newest.is_empty() && newest.values().all(|at| *at >= after_ms) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Over the events up to `until_ms`: (instances, events, lost or
    /// duplicated), where a lost or duplicated event is one whose kind
    /// repeats the previous one of its instance, or an exact repeat.
    pub(crate) fn check(&self, until_ms: i64) -> (usize, usize, Vec<String>) {
        let mut by_instance: BTreeMap<(String, String), Vec<(i64, String)>> = BTreeMap::new();
        for (alert, key, kind, at) in self.all() {
            if at <= until_ms {
                by_instance
                    .entry((alert, key))
                    .or_default()
                    .push((at, kind));
            }
        }
        let mut events = 0;
        let mut wrong = Vec::new();
        for ((alert, key), mut list) in by_instance.clone() {
            events += list.len();
            // Delivery runs several batches at once: order by when each
            // event happened, not by arrival.
            list.sort();
            for pair in list.windows(2) {
                if pair[0].1 == pair[1].1 {
                    wrong.push(format!(
                        "{alert} {key}: {} at {} then {} at {}",
                        pair[0].1, pair[0].0, pair[1].1, pair[1].0
                    ));
                }
            }
        }
        (by_instance.len(), events, wrong)
    }
}
