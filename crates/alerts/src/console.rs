//! The operator console: one page listing active instances with their
//! details and procedure, an acknowledge button, and live updates over
//! Server-Sent Events. Plain HTML and JS compiled into the binary.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetsql_model::now_ms;
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::service::Inner;
use crate::state::{Status, key_text};

const PAGE: &str = include_str!("console.html");

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/alerts", get(page))
        .route("/alerts/api/state", get(state))
        .route("/alerts/api/ack", post(ack))
        .route("/alerts/api/history", get(history))
        .route("/alerts/events", get(events))
        .with_state(inner)
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

/// Everything the page shows, as JSON.
pub(crate) fn state_json(inner: &Inner) -> Value {
    let snapshot = inner.snapshot.lock();
    let alerts: Vec<Value> = snapshot
        .definitions
        .values()
        .map(|d| {
            let s = snapshot.states.get(&d.name);
            json!({
                "name": d.name,
                "severity": d.severity.as_str(),
                "description": d.description,
                "procedure": d.procedure,
                "every_s": d.every.as_secs_f64(),
                "fire_after": d.fire_after,
                "iteration": s.map_or(0, |s| s.iteration),
                "last_run_ms": s.and_then(|s| s.last_run_ms),
                "last_error": s.and_then(|s| s.last_error.clone()),
                "nodata": s.is_some_and(|s| s.nodata),
            })
        })
        .collect();
    let mut instances: Vec<Value> = Vec::new();
    for (name, s) in &snapshot.states {
        let def = snapshot.definitions.get(name);
        for (key, i) in &s.instances {
            if i.status == Status::Pending {
                continue;
            }
            instances.push(json!({
                "alert": name,
                "severity": def.map(|d| d.severity.as_str()),
                "procedure": def.map(|d| d.procedure.clone()),
                "id": key,
                "key": i.key,
                "details": i.details,
                "status": i.status.as_str(),
                "stale": i.stale,
                "fired_at_ms": i.fired_at_ms,
                "cleared_at_ms": i.cleared_at_ms,
                "acked_at_ms": i.acked_at_ms,
                "acked_by": i.acked_by,
            }));
        }
    }
    json!({
        "node": inner.config.node_id,
        "lease_holder": snapshot.leader,
        "alerts": alerts,
        "instances": instances,
        "errors": snapshot.errors,
        "now_ms": now_ms(),
    })
}

async fn state(State(inner): State<Arc<Inner>>) -> Response {
    axum::Json(state_json(&inner)).into_response()
}

#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

/// Recently cleared instances, newest first: `?limit=` (default 50, at
/// most 1000), each with its alert's severity.
async fn history(
    State(inner): State<Arc<Inner>>,
    axum::extract::Query(query): axum::extract::Query<HistoryQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(50).min(1000);
    match inner.store.history(limit) {
        Ok(entries) => {
            let snapshot = inner.snapshot.lock();
            let cleared: Vec<Value> = entries
                .into_iter()
                .map(|entry| {
                    let severity = snapshot
                        .definitions
                        .get(&entry.alert)
                        .map(|d| d.severity.as_str());
                    let mut value = serde_json::to_value(entry).unwrap_or(Value::Null);
                    value["severity"] = json!(severity);
                    value
                })
                .collect();
            axum::Json(json!({ "cleared": cleared, "limit": limit })).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct AckRequest {
    alert: String,
    /// The instance id (`id` in the state JSON) or its key object.
    key: Value,
    #[serde(default)]
    by: Option<String>,
}

async fn ack(
    State(inner): State<Arc<Inner>>,
    axum::Json(request): axum::Json<AckRequest>,
) -> Response {
    let key = match &request.key {
        Value::String(s) => s.clone(),
        Value::Object(map) => key_text(map),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "`key` is the instance id string or its key object"})),
            )
                .into_response();
        }
    };
    let by = request.by.unwrap_or_else(|| "operator".to_string());
    let now = now_ms();
    match inner.store.ack(&request.alert, &key, &by, now) {
        Ok(true) => {
            if let Some(i) = inner
                .snapshot
                .lock()
                .states
                .get_mut(&request.alert)
                .and_then(|s| s.instances.get_mut(&key))
            {
                i.acked_at_ms = Some(now);
                i.acked_by = Some(by.clone());
            }
            let _ = inner.updates.send(());
            axum::Json(json!({"acked": true, "by": by})).into_response()
        }
        Ok(false) => (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"error": format!("no active instance {key} of alert `{}`", request.alert)}),
            ),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn events(
    State(inner): State<Arc<Inner>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let first = Event::default()
        .event("state")
        .data(state_json(&inner).to_string());
    let updates = BroadcastStream::new(inner.updates.subscribe()).map(move |_| {
        Ok(Event::default()
            .event("state")
            .data(state_json(&inner).to_string()))
    });
    let stream = tokio_stream::once(Ok(first)).chain(updates);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
