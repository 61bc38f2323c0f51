//! The HTTP surface: registration, listing, deletion, SSE and WebSocket
//! subscriptions, event ingestion and XML-RPC (`/RPC2`).

use std::convert::Infallible;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;

use crate::error::PqaError;
use crate::service::{PqaService, Publish};
use crate::topic::{CloseReason, Subscription};

impl IntoResponse for PqaError {
    fn into_response(self) -> Response {
        let status = match &self {
            PqaError::Parse { .. }
            | PqaError::Semantic { .. }
            | PqaError::BadEvent { .. }
            | PqaError::BadRequest(_)
            | PqaError::Limit { .. }
            | PqaError::WebhookRefused { .. } => StatusCode::BAD_REQUEST,
            PqaError::UnknownQuery(_) => StatusCode::NOT_FOUND,
            PqaError::Sink { .. } => StatusCode::BAD_GATEWAY,
            PqaError::Store { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut body = json!({ "error": self.to_string(), "hint": self.hint() });
        if let PqaError::Parse { pos, expected, .. } = &self {
            body["line"] = json!(pos.line);
            body["column"] = json!(pos.col);
            body["expected"] = json!(expected);
        }
        if let PqaError::Limit { max, setting, .. } = &self {
            body["limit"] = json!(max);
            body["setting"] = json!(setting);
        }
        if let PqaError::Semantic { pos, .. } = &self {
            body["line"] = json!(pos.line);
            body["column"] = json!(pos.col);
        }
        (status, Json(body)).into_response()
    }
}

/// Body of `POST /v1/persistent-queries`.
#[derive(Debug, Deserialize)]
struct RegisterBody {
    epl: String,
    #[serde(default)]
    publish: Option<String>,
    #[serde(default)]
    webhook: Option<String>,
    /// Names of configured sinks to attach (e.g. an XMPP pubsub sink).
    #[serde(default)]
    sinks: Vec<String>,
}

/// The routes, to be merged into the SQL node's server:
///
/// - `POST /v1/persistent-queries` `{"epl", "publish"?, "webhook"?, "sinks"?: [name]}`
///   → `201 {id, topic, sinks?: [handle]}` (handles of sinks such as an XMPP pubsub node)
/// - `GET /v1/persistent-queries` → list
/// - `DELETE /v1/persistent-queries/{id}`
/// - `GET /v1/persistent-queries/{id}/events` → Server-Sent Events (`event: result`,
///   and a final `event: close` with the reason)
/// - `GET /v1/persistent-queries/{id}/ws` → WebSocket, one text frame per notification
/// - `POST /v1/events/{stream}` → one JSON object, a JSON array, or NDJSON
/// - `GET /v1/streams` → per-stream counters (bad events included)
/// - `POST /RPC2` → XML-RPC: `pqa.register`, `pqa.delete`, `pqa.list`
pub fn router(service: PqaService) -> Router {
    Router::new()
        .route("/v1/persistent-queries", post(register).get(list))
        .route("/v1/persistent-queries/{id}", delete(remove).get(show))
        .route("/v1/persistent-queries/{id}/events", get(sse))
        .route("/v1/persistent-queries/{id}/ws", get(ws))
        .route("/v1/events/{stream}", post(events))
        .route("/v1/streams", get(streams))
        .route("/RPC2", post(crate::xmlrpc::handle))
        .with_state(service)
}

async fn register(State(svc): State<PqaService>, body: Bytes) -> Result<Response, PqaError> {
    let body: RegisterBody = serde_json::from_slice(&body).map_err(|e| {
        PqaError::BadRequest(format!(
            "body must be {{\"epl\": \"...\", \"publish\"?: ..., \"webhook\"?: ..., \"sinks\"?: [...]}}: {e}"
        ))
    })?;
    let publish: Publish = body.publish.as_deref().unwrap_or("all").parse()?;
    if let Some(url) = &body.webhook {
        // Resolved here, where waiting is allowed; the sink's client checks
        // again at every connection.
        svc.webhook_policy().check_resolved(url).await?;
    }
    let r = svc.register_with_sinks(&body.epl, publish, body.webhook.as_deref(), &body.sinks)?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

async fn list(State(svc): State<PqaService>) -> Response {
    Json(json!({ "queries": svc.list() })).into_response()
}

async fn show(State(svc): State<PqaService>, Path(id): Path<String>) -> Result<Response, PqaError> {
    let q = svc
        .list()
        .into_iter()
        .find(|q| q.id == id)
        .ok_or(PqaError::UnknownQuery(id))?;
    Ok(Json(q).into_response())
}

async fn remove(
    State(svc): State<PqaService>,
    Path(id): Path<String>,
) -> Result<Response, PqaError> {
    let left = svc.delete(&id)?;
    Ok(Json(json!({ "id": id, "deleted": left == 0, "refs": left })).into_response())
}

async fn sse(
    State(svc): State<PqaService>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, PqaError> {
    let sub = svc.subscribe(&id)?;
    let stream = futures::stream::unfold(Some(sub), |sub: Option<Subscription>| async move {
        let mut sub = sub?;
        match sub.next_json().await {
            Ok((seq, json)) => {
                let ev = SseEvent::default()
                    .event("result")
                    .id(seq.to_string())
                    .data(json);
                Some((Ok(ev), Some(sub)))
            }
            Err(reason) => {
                let ev = SseEvent::default()
                    .event("close")
                    .data(json!({ "reason": reason.to_string() }).to_string());
                Some((Ok(ev), None))
            }
        }
    });
    Ok(Sse::new(closed_on_panic(stream)).keep_alive(KeepAlive::default()))
}

/// A panic while serving one SSE subscriber (a bug) ends that stream with
/// a close event and a log line; the server and other subscribers go on.
fn closed_on_panic(
    events: impl Stream<Item = Result<SseEvent, Infallible>>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    std::panic::AssertUnwindSafe(events)
        .catch_unwind()
        .map(|item| match item {
            Ok(event) => event,
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(panic = message, "an SSE subscription panicked; closed it");
                Ok(SseEvent::default().event("close").data(
                    json!({ "reason": "internal error (see the node's log); subscribe again" })
                        .to_string(),
                ))
            }
        })
}

/// The message a caught panic carried.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)")
}

async fn ws(
    State(svc): State<PqaService>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, PqaError> {
    let sub = svc.subscribe(&id)?;
    Ok(upgrade.on_upgrade(move |socket| async move {
        ended_on_panic(ws_loop(socket, sub)).await;
    }))
}

/// A panic while serving one WebSocket subscriber (a bug) closes that
/// socket and is logged; the server and other subscribers go on. Whether
/// it panicked.
async fn ended_on_panic(serving: impl std::future::Future<Output = ()>) -> bool {
    match std::panic::AssertUnwindSafe(serving).catch_unwind().await {
        Ok(()) => false,
        Err(panic) => {
            let message = panic_message(panic.as_ref());
            tracing::error!(
                panic = message,
                "a WebSocket subscription panicked; closed it"
            );
            true
        }
    }
}

async fn ws_loop(mut socket: WebSocket, mut sub: Subscription) {
    loop {
        tokio::select! {
            n = sub.next_json() => match n {
                Ok((_, json)) => {
                    if socket.send(Message::Text(json.into())).await.is_err() {
                        return;
                    }
                }
                Err(reason) => {
                    // 1008 (policy) for a too-slow reader, 1000 (normal) when the query is gone.
                    let code = if matches!(reason, CloseReason::TooSlow { .. }) { 1008 } else { 1000 };
                    let frame = CloseFrame { code, reason: reason.to_string().into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
            },
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {} // clients have nothing to say; pings are answered by axum
            },
        }
    }
}

async fn events(
    State(svc): State<PqaService>,
    Path(stream): Path<String>,
    body: Bytes,
) -> Result<Response, PqaError> {
    let values: Vec<serde_json::Value> = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(a)) => a,
        Ok(v) => vec![v],
        Err(_) => {
            // NDJSON: one JSON value per line.
            let text = std::str::from_utf8(&body).map_err(|_| PqaError::BadEvent {
                stream: stream.clone(),
                message: "body is not UTF-8".into(),
            })?;
            let mut v = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                v.push(serde_json::from_str(line).map_err(|e| PqaError::BadEvent {
                    stream: stream.clone(),
                    message: format!("line {}: {e}", i + 1),
                })?);
            }
            v
        }
    };
    let res = svc.accept_events(&stream, values.iter())?;
    let status = if res.accepted == 0 && res.rejected > 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut body = serde_json::to_value(&res).unwrap_or_default();
    if status == StatusCode::BAD_REQUEST {
        body["error"] = json!(format!("no event of stream {stream} was accepted"));
        body["hint"] = json!("post JSON objects whose fields keep the same types");
    }
    Ok((
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response())
}

async fn streams(State(svc): State<PqaService>) -> Response {
    let m: serde_json::Map<String, serde_json::Value> = svc
        .stream_stats()
        .into_iter()
        .map(|(k, v)| (k, serde_json::to_value(v).unwrap_or_default()))
        .collect();
    Json(json!({ "streams": m })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event's SSE wire form (its `event:` and `data:` lines).
    fn wire(event: SseEvent) -> String {
        let mut response =
            Sse::new(futures::stream::iter([Ok::<_, Infallible>(event)])).into_response();
        let body = std::mem::take(response.body_mut());
        let bytes = futures::executor::block_on(axum::body::to_bytes(body, 1 << 16)).unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_panicking_sse_subscription_closes_with_a_reason_and_ends() {
        let events = futures::stream::iter([1, 2]).map(|n| {
            assert!(n < 2, "subscriber bug");
            Ok::<_, Infallible>(SseEvent::default().event("result").data(n.to_string()))
        });
        let events: Vec<_> = futures::executor::block_on(closed_on_panic(events).collect());
        let sent: Vec<String> = events.into_iter().map(|e| wire(e.unwrap())).collect();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(sent[0].contains("event: result"), "{sent:?}");
        assert!(sent[1].contains("event: close"), "{sent:?}");
        assert!(sent[1].contains("internal error"), "{sent:?}");
    }

    #[test]
    fn a_panicking_websocket_subscription_ends_without_unwinding() {
        let panicked = futures::executor::block_on(ended_on_panic(async {
            panic!("subscriber bug");
        }));
        assert!(panicked);
        assert!(!futures::executor::block_on(ended_on_panic(async {})));
    }
}
