use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetsql_sqlnode::{GenerationInfo, QueryStream, SqlError, SqlNode};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::auth::{self, Auth, HttpSecurity};
use crate::guard::{self, Guard, HttpAccess};
use crate::shape::{QueryLimits, sql_expression_depth};
use crate::tls::{self, Peer, TlsListener};

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
pub const GENERATION_HEADER: &str = "x-fleetsql-generation";

#[derive(Debug, thiserror::Error)]
pub enum HttpServerError {
    #[error(
        "cannot listen for HTTP on {addr}: {source}; pick another --http-port (0 picks a free one)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize)]
pub struct QueryRequest {
    pub sql: String,
}

/// The SQL node's routes under the default [`QueryLimits`]; `extra` routes
/// (persistent queries, console) are merged in by the caller.
pub fn router(node: Arc<SqlNode>) -> Router {
    router_with_limits(node, QueryLimits::default())
}

/// [`router`] under `limits`.
pub fn router_with_limits(node: Arc<SqlNode>, limits: QueryLimits) -> Router {
    Router::new()
        .route("/v1/query", post(query))
        .route("/health", get(health))
        .layer(axum::Extension(limits))
        .with_state(node)
}

async fn health(State(node): State<Arc<SqlNode>>) -> Response {
    let generation = node.current();
    let info = GenerationInfo::of(&generation);
    axum::Json(json!({
        "status": "ok",
        "node": node.name(),
        "generation": info,
        // Queries holding a place among those running at once, and those
        // waiting for one (`max_concurrent_queries`, `max_queued_queries`).
        "queries": node.query_load().map(|(running, queued)| json!({
            "running": running,
            "queued": queued,
        })),
    }))
    .into_response()
}

fn error_response(e: &SqlError) -> Response {
    if let SqlError::ServedElsewhere { nodes, .. } = e {
        return redirect(e, nodes);
    }
    let (status, hint) = status_and_hint(e);
    let mut body = json!({ "error": e.to_string(), "hint": hint, "sqlstate": e.sqlstate() });
    if let SqlError::Limit { max, setting, .. } = e {
        body["limit"] = json!(max);
        body["setting"] = json!(setting);
    }
    let mut response = (status, axum::Json(body)).into_response();
    if e.sqlstate() == "53300" {
        // A place among the running queries comes free as soon as one
        // ends: a second is a fair first retry.
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// The status an error is answered with and the hint that goes with it
/// (also in the tail of a JSON answer that failed after its first rows).
pub(crate) fn status_and_hint(e: &SqlError) -> (StatusCode, &'static str) {
    match e {
        SqlError::Parse(_) => (StatusCode::BAD_REQUEST, "check the SQL syntax"),
        SqlError::ReadOnly { .. } => (StatusCode::FORBIDDEN, "only queries are allowed"),
        SqlError::UnknownTable { .. } => (
            StatusCode::NOT_FOUND,
            "SELECT table_name FROM fleet_tables lists every table",
        ),
        SqlError::NotYetCollected { .. } | SqlError::NoGeneration { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "retry in a few seconds")
        }
        SqlError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "narrow the query"),
        SqlError::ResourcesExhausted(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "aggregate or filter more, or raise the memory limit",
        ),
        SqlError::SharedSetting { .. } => (
            StatusCode::FORBIDDEN,
            "set it in the SQL node's configuration",
        ),
        SqlError::Query(_) => (StatusCode::BAD_REQUEST, "check table and column names"),
        SqlError::Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "retry; if it fails again, report it with the query",
        ),
        SqlError::Limit { sqlstate, .. } if *sqlstate == "53400" => (
            StatusCode::TOO_MANY_REQUESTS,
            "name tables that exist (SELECT table_name FROM fleet_tables), or raise the setting in the SQL node's topology entry",
        ),
        SqlError::Limit { sqlstate, .. } if *sqlstate == "53300" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is at its concurrency limit (max_concurrent_queries running, max_queued_queries waiting); retry after the seconds in Retry-After (the query was not sent elsewhere)",
        ),
        SqlError::Limit { .. } => (StatusCode::BAD_REQUEST, "check the table name"),
        SqlError::OutsideDomain { .. } => (
            StatusCode::FORBIDDEN,
            "query a SQL node of a set whose domain has your role (SELECT * FROM fleet_sets)",
        ),
        SqlError::NotReadable { .. } => (
            StatusCode::FORBIDDEN,
            "log in as an admin to read it (the audit log holds every user's SQL)",
        ),
        SqlError::ServedElsewhere { .. } => (
            StatusCode::TEMPORARY_REDIRECT,
            "send the query to the node in `redirect` (fleetsql sql follows it)",
        ),
        SqlError::NoSubset { .. } => (
            StatusCode::BAD_REQUEST,
            "SELECT node, tables FROM fleet_sets lists which SQL nodes serve which tables",
        ),
        SqlError::Forward { .. } | SqlError::Remote { .. } => {
            (StatusCode::BAD_GATEWAY, "ask the serving SQL node directly")
        }
    }
}

/// 307 to the first serving node with an address (a POST is re-sent with
/// its body); the body names every serving node, so a client whose first
/// choice is down can try the next.
fn redirect(e: &SqlError, nodes: &[fleetsql_sqlnode::Peer]) -> Response {
    let targets: Vec<_> = nodes
        .iter()
        .filter_map(|n| Some((n.name.clone(), format!("http://{}/v1/query", n.http?))))
        .collect();
    let Some((_, first)) = targets.first() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "error": e.to_string(),
                "hint": "the serving SQL nodes have no `http` address in the topology",
                "sqlstate": e.sqlstate(),
            })),
        )
            .into_response();
    };
    let body = json!({
        "error": e.to_string(),
        "hint": "send the query to the node in `redirect` (fleetsql sql follows it)",
        "sqlstate": e.sqlstate(),
        "redirect": targets
            .iter()
            .map(|(node, url)| json!({ "node": node, "url": url }))
            .collect::<Vec<_>>(),
    });
    let mut response = (StatusCode::TEMPORARY_REDIRECT, axum::Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(first) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn query(
    State(node): State<Arc<SqlNode>>,
    axum::Extension(limits): axum::Extension<QueryLimits>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // Each client's new table names count against its own share.
    let client = extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let request: QueryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({
                    "error": format!("the body is not {{\"sql\": \"...\"}}: {e}"),
                    "hint": "POST a JSON object with a `sql` string",
                })),
            )
                .into_response();
        }
    };
    if let Some(depth) = sql_expression_depth(&request.sql)
        && depth > limits.max_sql_expression_depth
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "error": format!(
                    "the query's expressions nest about {depth} levels deep, over the limit of {} (setting `max_sql_expression_depth`)",
                    limits.max_sql_expression_depth
                ),
                "hint": "split long chains of AND/OR/+ (e.g. use IN (...) for many alternatives)",
                "setting": "max_sql_expression_depth",
                "limit": limits.max_sql_expression_depth,
            })),
        )
            .into_response();
    }
    // Without the auth layer (an embedded server) the client is anonymous,
    // as the layer itself treats it when authentication is off.
    let anonymous = fleetsql_auth::Principal::unauthenticated("anonymous");
    let principal = extensions
        .get::<Arc<fleetsql_auth::Principal>>()
        .map_or(&anonymous, |p| p.as_ref());
    // A statement that does not parse is admitted as the principal and
    // then answered with its parse error.
    let admitted = match node.parse(&request.sql) {
        Ok(statement) => node.admit_statement(principal, &statement),
        Err(_) => node.admit(principal),
    };
    if let Err(e) = admitted {
        return error_response(&e);
    }
    // The answer is sent batch by batch as it is computed (see
    // `answer.rs`); the status waits for the first batch.
    let began = std::time::Instant::now();
    let answer = match stream_query(&node, &request.sql, client).await {
        Ok(answer) => answer,
        Err(e) => return error_response(&e),
    };
    let started = match crate::answer::start(answer).await {
        Ok(started) => started,
        Err(e) => return error_response(&e),
    };
    let wants_arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    let info = serde_json::to_string(&started.generation).unwrap_or_default();
    let progress = crate::answer::AnswerProgress::default();
    let (content_type, body) = if wants_arrow {
        (
            ARROW_STREAM,
            crate::answer::arrow_body(started, progress.clone()),
        )
    } else {
        let body = crate::answer::json_body(started, began, progress.clone());
        ("application/json", body)
    };
    let mut response = body.into_response();
    // The audit layer records the answer when its body ends, from this.
    response.extensions_mut().insert(progress);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if wants_arrow && let Ok(value) = HeaderValue::from_str(&info) {
        headers.insert(GENERATION_HEADER, value);
    }
    response
}

/// Parses, pins and starts `sql` (what `SqlNode::query_for` does, without
/// collecting the answer).
async fn stream_query(
    node: &SqlNode,
    sql: &str,
    client: Option<std::net::IpAddr>,
) -> Result<QueryStream, SqlError> {
    let prepared = node.prepare(sql)?;
    let generation = node.pin_prepared_for(&prepared, client).await?;
    node.stream_prepared(&prepared, generation).await
}

/// The answer to a request whose handler panicked. Every router of the
/// node is served by [`HttpServer`], so this is the one place a bug in a
/// handler is contained: without it the connection would be dropped with
/// no answer (and with `panic = "abort"` the process would die).
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = fleetsql_model::panic_message(panic.as_ref());
    tracing::error!(
        panic = message,
        "an HTTP request handler panicked; answered 500"
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(json!({
            "error": "internal error: the request failed inside the node",
            "hint": "the node is still running; retry, and report this with the node's log",
        })),
    )
        .into_response()
}

/// A running HTTP listener with graceful shutdown.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Serves `app` on `addr` (port 0 picks one). A request whose handler
    /// panics is answered 500 and logged; the server and every other
    /// request go on.
    /// Requests are checked first (see [`HttpAccess`]): a foreign `Host`
    /// answers 421, a cross-site state change 403, a body of a type a
    /// cross-site page could send 415.
    pub async fn start(app: Router, addr: SocketAddr) -> Result<HttpServer, HttpServerError> {
        Self::start_with_access(app, addr, &HttpAccess::default()).await
    }

    /// [`HttpServer::start`] for a node also reached by the names and web
    /// origins in `access`.
    pub async fn start_with_access(
        app: Router,
        addr: SocketAddr,
        access: &HttpAccess,
    ) -> Result<HttpServer, HttpServerError> {
        Self::serve(app, addr, access, None).await
    }

    /// [`HttpServer::start_with_access`] for a SQL node's port: every
    /// route behind `security`'s authentication and roles, audited, over
    /// HTTPS when it has a certificate (see [`HttpSecurity`]).
    pub async fn start_secure(
        app: Router,
        addr: SocketAddr,
        access: &HttpAccess,
        security: HttpSecurity,
    ) -> Result<HttpServer, HttpServerError> {
        Self::serve(app, addr, access, Some(security)).await
    }

    async fn serve(
        app: Router,
        addr: SocketAddr,
        access: &HttpAccess,
        security: Option<HttpSecurity>,
    ) -> Result<HttpServer, HttpServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HttpServerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| HttpServerError::Bind { addr, source })?;
        let guard = Arc::new(Guard::new(local_addr, access));
        let tls = security.as_ref().and_then(|s| s.tls.clone());
        let app = match security {
            Some(security) => app.layer(axum::middleware::from_fn_with_state(
                Arc::new(Auth::new(security)),
                auth::layer,
            )),
            None => app,
        };
        let app = app
            .layer(axum::middleware::from_fn_with_state(guard, guard::layer))
            .layer(tower_http::catch_panic::CatchPanicLayer::custom(
                panic_response,
            ));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            let served = match tls {
                Some(tls) => {
                    let app = app
                        .layer(axum::middleware::from_fn(tls::plain_or_tls))
                        .into_make_service_with_connect_info::<Peer>();
                    axum::serve(TlsListener::new(listener, local_addr, tls), app)
                        .with_graceful_shutdown(stopped)
                        .await
                }
                None => {
                    let app = app.into_make_service_with_connect_info::<SocketAddr>();
                    axum::serve(listener, app)
                        .with_graceful_shutdown(stopped)
                        .await
                }
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
        Ok(HttpServer {
            local_addr,
            stop: Some(stop),
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish (at most 5 s).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
