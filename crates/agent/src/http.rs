//! The loopback publish API.
//!
//! `POST /v1/tables/{name}` replaces the calling publisher's rows of a
//! table, `DELETE` withdraws them, `GET /v1/requested` lists the tables
//! being collected, `GET /health` answers `ok`. Every refusal is a 4xx with
//! JSON `{error, hint}`, and a refused publish leaves the table as it was.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetsql_model::parse::{InputFormat, ParseError, ParseLimits, parse_rows_limited};
use fleetsql_model::{ModelError, now_ms, validate_table_name};
use futures::StreamExt;
use serde::Serialize;

use crate::local::LocalPublishers;
use crate::store::Store;
use crate::watchdog::Watchdog;
use crate::{AgentError, Result};

/// Header naming the publisher; without it each table has one publisher.
pub const PUBLISHER_HEADER: &str = "x-fleetsql-publisher";
/// The publisher of requests without [`PUBLISHER_HEADER`].
pub const DEFAULT_PUBLISHER: &str = "http";

const MAX_PUBLISHER_LEN: usize = 128;
/// Publisher names the agent gives its own sources.
const RESERVED_PUBLISHER_PREFIXES: [&str; 2] = ["file:", "builtin:"];

#[derive(Debug, Clone)]
pub(crate) struct ApiState {
    pub(crate) store: Arc<Store>,
    pub(crate) local: LocalPublishers,
    pub(crate) max_body_bytes: usize,
    pub(crate) limits: ParseLimits,
    pub(crate) watchdog: Arc<Watchdog>,
}

pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/requested", get(requested))
        .route("/v1/tables/{name}", post(publish).delete(withdraw))
        // The limit is enforced while reading, to answer 413 as JSON.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(loopback_only))
        .with_state(state)
}

/// Refuses every request whose peer is not this machine: publishing is
/// local by design, and a misconfigured `publish_addr` must not open it.
async fn loopback_only(request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match peer {
        Some(peer) if peer.ip().to_canonical().is_loopback() => next.run(request).await,
        Some(peer) => ApiError(AgentError::NotLoopback { peer }).into_response(),
        // Served without peer addresses: fail closed.
        None => ApiError(AgentError::NotLoopback {
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
        })
        .into_response(),
    }
}

async fn health() -> &'static str {
    "ok"
}

#[derive(Debug, Serialize)]
struct RequestedAnswer {
    tables: Vec<String>,
}

async fn requested(State(state): State<ApiState>) -> Json<RequestedAnswer> {
    Json(RequestedAnswer {
        tables: state.local.requested().into_iter().collect(),
    })
}

#[derive(Debug, Serialize)]
struct PublishAnswer {
    table: String,
    publisher: String,
    rows_accepted: usize,
    requested: bool,
    requested_tables: Vec<String>,
}

async fn publish(
    State(state): State<ApiState>,
    Path(table): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PublishAnswer>, ApiError> {
    validate_table_name(&table).map_err(AgentError::from_model)?;
    let publisher = publisher_of(&headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let format = InputFormat::from_content_type(&content_type)
        .ok_or(AgentError::UnsupportedContentType { content_type })?;
    let body = read_limited(&headers, body, state.max_body_bytes).await?;
    let body_bytes = body.len() as u64;
    let published_at = now_ms();
    // Parsing a large body is CPU work: off the IO runtime.
    let parse_table = table.clone();
    let limits = state.limits;
    let batch = tokio::task::spawn_blocking(move || parse_rows_limited(format, &body, &limits))
        .await
        .map_err(|e| AgentError::Body {
            reason: format!("parsing was interrupted: {e}"),
        })?
        .map_err(|source| AgentError::Parse {
            table: parse_table,
            source,
        })?;
    // Counted before the store sees the rows: a shed publisher's rows are
    // refused and its previous ones stay.
    state.watchdog.admit(
        &table,
        &publisher,
        batch.num_rows() as u64,
        body_bytes,
        published_at,
    )?;
    let rows_accepted = state
        .store
        .publish(&table, &publisher, &batch, published_at)?;
    let requested_tables = state.local.requested();
    tracing::debug!(table, publisher, rows_accepted, "rows published");
    Ok(Json(PublishAnswer {
        requested: requested_tables.contains(&table),
        table,
        publisher,
        rows_accepted,
        requested_tables: requested_tables.into_iter().collect(),
    }))
}

#[derive(Debug, Serialize)]
struct WithdrawAnswer {
    table: String,
    publisher: String,
    rows_withdrawn: usize,
}

async fn withdraw(
    State(state): State<ApiState>,
    Path(table): Path<String>,
    headers: HeaderMap,
) -> Result<Json<WithdrawAnswer>, ApiError> {
    validate_table_name(&table).map_err(AgentError::from_model)?;
    let publisher = publisher_of(&headers)?;
    let rows_withdrawn =
        state
            .store
            .withdraw(&table, &publisher)
            .ok_or_else(|| AgentError::NotPublished {
                table: table.clone(),
                publisher: publisher.clone(),
            })?;
    Ok(Json(WithdrawAnswer {
        table,
        publisher,
        rows_withdrawn,
    }))
}

fn publisher_of(headers: &HeaderMap) -> Result<String> {
    let Some(value) = headers.get(PUBLISHER_HEADER) else {
        return Ok(DEFAULT_PUBLISHER.to_string());
    };
    let invalid = |publisher: String, reason: &str| AgentError::InvalidPublisher {
        publisher,
        reason: reason.to_string(),
    };
    let name = value
        .to_str()
        .map_err(|_| {
            invalid(
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
                "use printable ASCII",
            )
        })?
        .trim()
        .to_string();
    if name.is_empty() || name.len() > MAX_PUBLISHER_LEN {
        return Err(invalid(name, "use 1 to 128 characters"));
    }
    if RESERVED_PUBLISHER_PREFIXES
        .iter()
        .any(|p| name.starts_with(p))
    {
        return Err(invalid(
            name,
            "`file:` and `builtin:` name the agent's own sources",
        ));
    }
    Ok(name)
}

/// Reads at most `limit` bytes; a larger body is refused, by its declared
/// length before reading anything when it has one.
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(AgentError::TooLarge { limit });
    }
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::with_capacity(declared.map_or(0, |l| l as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| AgentError::Body {
            reason: e.to_string(),
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(AgentError::TooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// An agent error as an HTTP answer: status, message and what to do.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) AgentError);

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        ApiError(e)
    }
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
    hint: String,
}

impl ApiError {
    fn status_and_hint(&self) -> (StatusCode, String) {
        use AgentError as E;
        match &self.0 {
            E::Parse {
                source: ParseError::Empty,
                ..
            } => (
                StatusCode::BAD_REQUEST,
                "send at least one row; to withdraw your rows use DELETE on the same URL".into(),
            ),
            E::Parse {
                source: ParseError::Malformed { format, .. },
                ..
            } => (
                StatusCode::BAD_REQUEST,
                format!(
                    "fix the {format} body: CSV/TSV need a header line and the same number of \
                     fields on every line; NDJSON needs one JSON object per line"
                ),
            ),
            E::Parse {
                source: ParseError::Limit { setting, .. },
                ..
            } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "publish fewer columns, rows or nesting levels, or raise the agent's `{setting}`"
                ),
            ),
            E::Limit { setting, .. } => (
                StatusCode::CONFLICT,
                format!(
                    "withdraw rows no longer needed (DELETE with the same X-Fleetsql-Publisher), \
                     reuse a publisher name, or raise the agent's `{setting}`"
                ),
            ),
            E::Parse {
                source: ParseError::Name(_),
                ..
            }
            | E::InvalidName(ModelError::InvalidColumnName { .. }) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "rename the column: `_host`, `_ip`, `_cluster` and `_published_at` are added by \
                 the agent to every row"
                    .into(),
            ),
            E::InvalidName(_) => (
                StatusCode::BAD_REQUEST,
                "table names are lowercase letters, digits and `_`, start with a letter, are at \
                 most 63 characters and do not start with `fleet_`, `pg_` or `history`"
                    .into(),
            ),
            E::SchemaConflict(_) => (
                StatusCode::CONFLICT,
                "publish the column with the type it already has (integers may become floats); \
                 to change a column's type, first withdraw the old rows with DELETE (same \
                 X-Fleetsql-Publisher header) from every publisher of the table"
                    .into(),
            ),
            E::InvalidPublisher { .. } => (
                StatusCode::BAD_REQUEST,
                "set X-Fleetsql-Publisher to a short name of your own, or leave it out".into(),
            ),
            E::UnsupportedContentType { .. } => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "set Content-Type to application/x-ndjson, text/csv, text/tab-separated-values \
                 or application/vnd.apache.arrow.stream"
                    .into(),
            ),
            E::TooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "publish fewer rows, or raise the agent's max_body_bytes".into(),
            ),
            E::Shed { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "publish fewer rows or bytes per tick (merge your publishes into one per tick), or \
                 raise the agent's watchdog limits (--watchdog-rows-per-tick, \
                 --watchdog-bytes-per-tick)"
                    .into(),
            ),
            E::OverMemory { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "retry later; withdraw large tables no longer needed, or raise the agent's \
                 --watchdog-max-rss"
                    .into(),
            ),
            E::Body { .. } => (
                StatusCode::BAD_REQUEST,
                "send the whole body in one request".into(),
            ),
            E::NotLoopback { .. } => (
                StatusCode::FORBIDDEN,
                "publish from the machine the agent runs on, to 127.0.0.1".into(),
            ),
            E::NotPublished { .. } => (
                StatusCode::NOT_FOUND,
                "nothing to withdraw; check the table name and the X-Fleetsql-Publisher header"
                    .into(),
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the agent failed; its log has the details".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, hint) = self.status_and_hint();
        let error = if status.is_server_error() {
            tracing::error!(error = %self.0, "publish API failed");
            "internal error".to_string()
        } else {
            tracing::debug!(error = %self.0, status = status.as_u16(), "publish refused");
            self.0.to_string()
        };
        (status, Json(ErrorBody { error, hint })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::HostInfo;
    use fleetsql_model::origin::Origin;
    use tower::ServiceExt;

    fn state() -> ApiState {
        let store = Arc::new(Store::new(Origin {
            host: "h".into(),
            ip: "10.0.0.1".into(),
            cluster: "c".into(),
        }));
        let local = LocalPublishers::new(
            "agent".into(),
            "c".into(),
            HostInfo {
                hostname: "h".into(),
                ip: "10.0.0.1".into(),
            },
            store.clone(),
            Vec::new(),
            None,
        );
        ApiState {
            store,
            local,
            max_body_bytes: 1024,
            limits: ParseLimits::default(),
            watchdog: crate::watchdog::Watchdog::new(
                crate::WatchdogConfig::default(),
                std::time::Duration::from_secs(1),
            ),
        }
    }

    fn post_from(peer: SocketAddr) -> Request {
        let mut request = Request::post("/v1/tables/t")
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(Body::from("{\"x\":1}\n"))
            .unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }

    #[tokio::test]
    async fn remote_peers_are_refused_and_loopback_accepted() {
        let state = state();
        let app = router(state.clone());
        let answer = app
            .clone()
            .oneshot(post_from("192.0.2.7:5555".parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
        assert!(state.store.tables().is_empty());
        for local in ["127.0.0.1:5555", "[::1]:5555", "[::ffff:127.0.0.1]:5555"] {
            let answer = app
                .clone()
                .oneshot(post_from(local.parse().unwrap()))
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK, "{local}");
        }
        assert_eq!(state.store.publishers("t"), ["http"]);
    }

    #[test]
    fn reserved_publisher_names_are_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(publisher_of(&headers).unwrap(), DEFAULT_PUBLISHER);
        headers.insert(PUBLISHER_HEADER, "file:x.csv".parse().unwrap());
        assert!(publisher_of(&headers).is_err());
        headers.insert(PUBLISHER_HEADER, "cron-disk-check".parse().unwrap());
        assert_eq!(publisher_of(&headers).unwrap(), "cron-disk-check");
    }
}
