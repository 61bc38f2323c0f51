//! Who may call which route of a SQL node's HTTP port, and the audit of
//! what they did. One layer in front of every router the node serves (the
//! query API, persistent queries with SSE, WebSocket and XML-RPC, alerts,
//! reports, the console), so a route added later is covered too: a path
//! not named here needs a principal that may run SQL.
//!
//! - Credentials: `Authorization: Bearer fsq_...` (the tokens file),
//!   `Authorization: Basic` (the users file; XML-RPC clients), or the
//!   console's session cookie, made by `POST /v1/login` and sent by the
//!   browser on `fetch`, `EventSource` and WebSocket alike (they cannot
//!   set headers).
//! - A session's state-changing requests carry its CSRF token in
//!   `x-csrf-token`; the token is given to the console page in a cookie
//!   its script reads (`fleetsql_csrf`) and by `GET /v1/session`.
//! - Each route is one [`Action`]; the principal's role (and a token's
//!   scope) must allow it.
//! - Refusals answer 401/403 `{error, hint, reason}` and are counted by
//!   reason in the node's [`AuditLog`] (`fleetsql_auth_refusals_total`).
//! - Queries, registrations, deletions, acknowledgements and log-ins are
//!   recorded in the [`AuditLog`] (`fleet_audit`) with principal, peer,
//!   text, outcome and duration, authentication on or off.
//!
//! Without a users or tokens file every client is let in as before.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fleetsql_auth::{
    Action, AuditEntry, AuditLog, AuthError, Credential, CredentialError, FrontEnd, Outcome,
    Principal, ServerTls, SessionStore, TokenStore, UserStore,
};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "fleetsql_session";
pub const CSRF_COOKIE: &str = "fleetsql_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Bodies of audited requests are read whole to record their text; the
/// handlers behind take at most axum's default of 2 MiB anyway.
const MAX_AUDITED_BODY: usize = 2 * 1024 * 1024;
/// An error answer read to record its message is never bigger than this.
const MAX_ERROR_BODY: usize = 256 * 1024;

/// What a node's HTTP port asks of its clients and where it records them.
#[derive(Debug, Clone)]
pub struct HttpSecurity {
    /// Console log-in and HTTP basic authentication.
    pub users: Option<Arc<UserStore>>,
    /// Bearer tokens.
    pub tokens: Option<Arc<TokenStore>>,
    /// HTTPS with this certificate (its ALPN [`crate::http_alpn`]).
    pub tls: Option<Arc<ServerTls>>,
    /// The node's audit log (`SqlNode::audit`), shared with pg.
    pub audit: Arc<AuditLog>,
    /// How long a console session lasts after its log-in.
    pub session_ttl: Duration,
    /// Sessions kept at once; the oldest goes first.
    pub max_sessions: usize,
}

impl HttpSecurity {
    /// No authentication and no TLS; requests are still audited.
    pub fn new(audit: Arc<AuditLog>) -> HttpSecurity {
        HttpSecurity {
            users: None,
            tokens: None,
            tls: None,
            audit,
            session_ttl: Duration::from_secs(12 * 3600),
            max_sessions: 10_000,
        }
    }

    /// Whether clients must show who they are (a users or tokens file).
    pub fn authenticates(&self) -> bool {
        self.users.is_some() || self.tokens.is_some()
    }
}

pub(crate) struct Auth {
    security: HttpSecurity,
    sessions: SessionStore,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Anyone: health, metrics, the log-in page, the console's assets.
    Open,
    /// A page for browsers: without a credential, sent to the log-in page.
    Page(Action),
    Api(Action),
}

fn classify(method: &Method, path: &str) -> Access {
    let pq = path.strip_prefix("/v1/persistent-queries/");
    match *method {
        _ if matches!(
            path,
            "/health" | "/metrics" | "/console/app.js" | "/console/app.css" | "/favicon.ico"
        ) =>
        {
            Access::Open
        }
        Method::GET if matches!(path, "/" | "/alerts") => Access::Page(Action::RunSql),
        Method::POST if path == "/v1/persistent-queries" => Access::Api(Action::RegisterQuery),
        Method::DELETE if pq.is_some() => Access::Api(Action::DeleteQuery),
        Method::GET
            if pq.is_some_and(|p| p.ends_with("/events") || p.ends_with("/ws"))
                || path == "/alerts/events" =>
        {
            Access::Api(Action::Subscribe)
        }
        Method::POST if path == "/alerts/api/ack" => Access::Api(Action::AckAlert),
        // Events fed into a stream change what every query on it
        // publishes: as much as registering one.
        Method::POST if path.starts_with("/v1/events/") => Access::Api(Action::RegisterQuery),
        _ => Access::Api(Action::RunSql),
    }
}

/// Requests recorded in the audit log (besides log-ins and refusals).
fn audited(method: &Method, path: &str) -> bool {
    match *method {
        Method::POST => {
            matches!(
                path,
                "/v1/query" | "/v1/persistent-queries" | "/alerts/api/ack" | "/RPC2"
            ) || (path.starts_with("/v1/reports/") && path.ends_with("/run"))
        }
        Method::DELETE => path.starts_with("/v1/persistent-queries/"),
        _ => false,
    }
}

/// The text between `<tag>` and `</tag>`, with XML's five escapes undone.
fn xml_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = start + body[start..].find(&format!("</{tag}>"))?;
    Some(
        body[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// An XML-RPC call's action, by its method name (the pqa aliases too).
fn xmlrpc_action(body: &str) -> Action {
    match xml_text(body, "methodName").as_deref().map(str::trim) {
        Some("pqa.register" | "registerQuery") => Action::RegisterQuery,
        Some("pqa.delete" | "deleteQuery") => Action::DeleteQuery,
        _ => Action::RunSql,
    }
}

/// What an audit entry says was asked: the SQL or EPL, an XML-RPC call's
/// method and first argument, else the request line.
fn audit_text(method: &Method, path: &str, body: &[u8]) -> String {
    if path == "/RPC2" {
        let body = String::from_utf8_lossy(body);
        let name = xml_text(&body, "methodName").unwrap_or_default();
        let arg = xml_text(&body, "string").unwrap_or_default();
        return format!("{}: {arg}", name.trim());
    }
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        for field in ["sql", "epl"] {
            if let Some(text) = value.get(field).and_then(Value::as_str) {
                return text.to_string();
            }
        }
        if let Some(alert) = value.get("alert").and_then(Value::as_str) {
            let key = value.get("key").map(Value::to_string).unwrap_or_default();
            return format!("ack {alert} {key}");
        }
    }
    if body.is_empty() {
        format!("{method} {path}")
    } else {
        String::from_utf8_lossy(body).into_owned()
    }
}

/// A refused request, answered `{error, hint, reason}`.
struct Refusal {
    status: StatusCode,
    reason: &'static str,
    error: String,
    hint: String,
}

impl Refusal {
    fn unauthorized(
        reason: &'static str,
        error: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            reason,
            error: error.into(),
            hint: hint.into(),
        }
    }

    fn from_auth(e: &AuthError) -> Refusal {
        let hint = match e {
            AuthError::BadPassword(_) | AuthError::NoPassword(_) => {
                "check the user name and password (`fleetsql users add` sets them)"
            }
            _ => "send `Authorization: Bearer <the token fleetsql tokens create printed>`",
        };
        Refusal::unauthorized(e.reason(), e.to_string(), hint)
    }

    fn response(&self) -> Response {
        let body = json!({ "error": self.error, "hint": self.hint, "reason": self.reason });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // Bearer only: a Basic challenge would make browsers pop up
            // their own password dialog over the console.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fleetsql\""),
            );
        }
        response
    }
}

/// 429 for an address with too many failed log-ins (already counted and
/// recorded by `AuditLog::admit_login`), with `Retry-After`.
fn throttled_response(e: &AuthError) -> Response {
    let body = json!({
        "error": e.to_string(),
        "hint": "wait, then send the right credential",
        "reason": e.reason(),
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    if let AuthError::Throttled {
        retry_after_secs, ..
    } = e
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
    }
    response
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn json_error(status: StatusCode, error: impl Into<String>, hint: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": error.into(), "hint": hint })),
    )
        .into_response()
}

fn changes_state(method: &Method) -> bool {
    // A WebSocket upgrade is a GET a page cannot add headers to; the
    // Origin check in front refuses a cross-site one.
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[derive(Deserialize)]
struct LoginBody {
    user: String,
    password: String,
}

impl Auth {
    pub(crate) fn new(security: HttpSecurity) -> Auth {
        Auth {
            sessions: SessionStore::new(security.session_ttl, security.max_sessions),
            security,
        }
    }

    /// The principal of a request's credential, `None` when it has none.
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        method: &Method,
    ) -> Result<Option<Principal>, Refusal> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let credential =
                Credential::parse(value.to_str().unwrap_or_default()).map_err(|e| {
                    Refusal::unauthorized(
                        e.reason(),
                        e.to_string(),
                        match e {
                            CredentialError::MalformedBasic => "send base64(\"user:password\")",
                            CredentialError::UnknownScheme(_) => {
                                "send `Authorization: Bearer fsq_...` or `Authorization: Basic ...`"
                            }
                        },
                    )
                })?;
            return match credential {
                Credential::Bearer(token) => {
                    let Some(tokens) = &self.security.tokens else {
                        return Err(Refusal::unauthorized(
                            "unknown_token",
                            "this node accepts no bearer tokens (its entry names no tokens file)",
                            "log in with a user and password (HTTP basic), or ask an admin to set `tokens` in the node's entry",
                        ));
                    };
                    tokens
                        .verify(&token)
                        .map(Some)
                        .map_err(|e| Refusal::from_auth(&e))
                }
                Credential::Basic { user, password } => {
                    let Some(users) = self.security.users.clone() else {
                        return Err(Refusal::unauthorized(
                            "bad_password",
                            "this node has no users file, so it takes no passwords",
                            "use a bearer token (`Authorization: Bearer fsq_...`)",
                        ));
                    };
                    // One PBKDF2 per request: off the IO threads.
                    let verified = tokio::task::spawn_blocking(move || {
                        users.verify_password(&user, &password)
                    })
                    .await;
                    match verified {
                        Ok(Ok(p)) => Ok(Some(p)),
                        Ok(Err(e)) => Err(Refusal::from_auth(&e)),
                        Err(_) => Err(Refusal::unauthorized(
                            "bad_password",
                            "the password check failed inside the node",
                            "retry; report it with the node's log",
                        )),
                    }
                }
            };
        }
        let Some(id) = cookie(headers, SESSION_COOKIE) else {
            return Ok(None);
        };
        let expired = || {
            Refusal::unauthorized(
                "expired_session",
                "the console session expired or was ended",
                "log in again at /login",
            )
        };
        // Console sessions exist only with a users file, which stays the
        // authority: a removed user's session ends.
        let Some(users) = self.security.users.as_deref() else {
            return Err(expired());
        };
        let Some(session) = self.sessions.get(id, Some(users)) else {
            return Err(expired());
        };
        if changes_state(method) {
            let sent = headers
                .get(CSRF_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !bool::from(sent.ct_eq(session.csrf.as_bytes())) {
                return Err(Refusal {
                    status: StatusCode::FORBIDDEN,
                    reason: "csrf",
                    error: format!(
                        "a state-changing request of a console session needs its CSRF token in the `{CSRF_HEADER}` header"
                    ),
                    hint: format!(
                        "send the `{CSRF_COOKIE}` cookie's value (or GET /v1/session's `csrf`) as `{CSRF_HEADER}`"
                    ),
                });
            }
        }
        Ok(Some(session.principal.clone()))
    }

    fn refuse(
        &self,
        refusal: &Refusal,
        peer: Option<SocketAddr>,
        entry: Option<AuditEntry>,
    ) -> Response {
        let audit = &self.security.audit;
        match entry {
            Some(mut entry) => {
                entry.peer = peer;
                entry.outcome = Outcome::Error(refusal.error.clone());
                audit.refused_request(entry, refusal.reason);
            }
            None => audit.refused(FrontEnd::Http, peer, "-", refusal.reason, &refusal.error),
        }
        refusal.response()
    }

    fn cookies(&self, session: &str, csrf: &str, max_age: u64) -> [HeaderValue; 2] {
        let secure = if self.security.tls.is_some() {
            "; Secure"
        } else {
            ""
        };
        let make = |text: String| {
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
        };
        [
            make(format!(
                "{SESSION_COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
            )),
            make(format!(
                "{CSRF_COOKIE}={csrf}; Path=/; SameSite=Strict; Max-Age={max_age}{secure}"
            )),
        ]
    }

    async fn login(&self, peer: Option<SocketAddr>, request: Request) -> Response {
        let started = Instant::now();
        let Some(users) = self.security.users.clone() else {
            return json_error(
                StatusCode::NOT_FOUND,
                "this node has no users file, so there is no log-in",
                "set `users` in the node's topology entry (`fleetsql users add` makes it)",
            );
        };
        let body = match axum::body::to_bytes(request.into_body(), 64 * 1024).await {
            Ok(body) => body,
            Err(_) => {
                return json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the log-in body is over 64 KiB",
                    "POST {\"user\": \"...\", \"password\": \"...\"}",
                );
            }
        };
        let LoginBody { user, password } = match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not {{\"user\": \"...\", \"password\": \"...\"}}: {e}"),
                    "POST a JSON object with `user` and `password` strings",
                );
            }
        };
        if let Err(throttled) = self
            .security
            .audit
            .admit_login(FrontEnd::Console, peer, &user)
        {
            return throttled_response(&throttled);
        }
        let name = user.clone();
        let verified = tokio::task::spawn_blocking(move || users.verify_password(&user, &password))
            .await
            .unwrap_or_else(|_| Err(AuthError::BadPassword(name.clone())));
        let principal = match verified {
            Ok(p) => p,
            Err(e) => {
                let refusal = Refusal::from_auth(&e);
                self.security.audit.refused(
                    FrontEnd::Console,
                    peer,
                    &name,
                    refusal.reason,
                    &refusal.error,
                );
                return refusal.response();
            }
        };
        let Ok((id, csrf)) = self.sessions.start(principal.clone()) else {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the system random source failed; no session was made",
                "retry; report it with the node's log",
            );
        };
        let ttl = self.sessions.ttl();
        let mut entry = AuditEntry::new(&principal, FrontEnd::Console, Action::Login);
        entry.peer = peer;
        entry.duration = started.elapsed();
        self.security.audit.record(entry);
        let mut response = axum::Json(json!({
            "user": principal.name,
            "role": principal.role.as_str(),
            "csrf": csrf,
        }))
        .into_response();
        for value in self.cookies(&id, &csrf, ttl.as_secs()) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response
    }

    async fn logout(&self, peer: Option<SocketAddr>, request: Request) -> Response {
        if let Some(id) = cookie(request.headers(), SESSION_COOKIE) {
            // Only the page holding the session's CSRF token ends it.
            match self.authenticate(request.headers(), request.method()).await {
                Ok(_) => self.sessions.end(id),
                Err(refusal) if refusal.reason == "csrf" => {
                    return self.refuse(&refusal, peer, None);
                }
                Err(_) => {}
            }
        }
        let mut response = axum::Json(json!({ "logged_out": true })).into_response();
        for value in self.cookies("", "", 0) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        response
    }

    /// Who the console is logged in as, and its CSRF token.
    async fn session_info(&self, headers: &HeaderMap) -> Response {
        if !self.security.authenticates() {
            return axum::Json(json!({ "auth": false })).into_response();
        }
        match self.authenticate(headers, &Method::GET).await {
            Ok(Some(p)) => {
                let csrf = cookie(headers, SESSION_COOKIE).and_then(|id| {
                    self.sessions
                        .get(id, self.security.users.as_deref())
                        .map(|s| s.csrf)
                });
                axum::Json(json!({
                    "auth": true,
                    "user": p.name,
                    "role": p.role.as_str(),
                    "csrf": csrf,
                    "login": self.security.users.is_some(),
                }))
                .into_response()
            }
            Ok(None) => {
                Refusal::unauthorized("no_credentials", "not logged in", "log in at /login")
                    .response()
            }
            Err(refusal) => refusal.response(),
        }
    }
}

/// What an answer says of the request's outcome: its `error` when it
/// failed, an XML-RPC fault's string. Reads the body only then (small).
async fn outcome(response: Response, xmlrpc: bool) -> (Response, Outcome) {
    let status = response.status();
    let failed = status.is_client_error() || status.is_server_error();
    if !failed && !xmlrpc {
        return (response, Outcome::Ok);
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        let outcome = if failed {
            Outcome::Error(status.to_string())
        } else {
            Outcome::Ok
        };
        return (Response::from_parts(parts, Body::empty()), outcome);
    };
    let outcome = if failed {
        let error = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| status.to_string());
        Outcome::Error(error)
    } else {
        let text = String::from_utf8_lossy(&bytes);
        if text.contains("<fault>") {
            let message = text
                .find("faultString")
                .and_then(|i| xml_text(&text[i..], "string"))
                .unwrap_or_else(|| "XML-RPC fault".into());
            Outcome::Error(message)
        } else {
            Outcome::Ok
        }
    };
    (Response::from_parts(parts, Body::from(bytes)), outcome)
}

const LOGIN_PAGE: &str = include_str!("login.html");

/// A streamed answer's audit entry (`/v1/query`), recorded when its body
/// ends, or is dropped because the client left, with the rows sent and
/// the error that ended it: its 200 status leaves with the first batch and
/// says neither.
struct AnswerAudit {
    audit: Arc<AuditLog>,
    entry: Option<AuditEntry>,
    progress: crate::answer::AnswerProgress,
    started: Instant,
}

impl AnswerAudit {
    fn record(&mut self) {
        let Some(mut entry) = self.entry.take() else {
            return;
        };
        let progress = self.progress.get();
        entry.rows = Some(progress.rows);
        entry.outcome = match progress.error {
            Some(error) => Outcome::Error(error),
            None if progress.ended => Outcome::Ok,
            None => Outcome::Error(format!(
                "the client left after {} rows, before the answer ended",
                progress.rows
            )),
        };
        entry.duration = self.started.elapsed();
        self.audit.record(entry);
    }

    /// `response` with the recording at its body's end or error: before
    /// the end (or the cut) is passed on, so the entry is there when a
    /// client has read the whole answer.
    fn when_answered(mut self, response: Response) -> Response {
        let (parts, body) = response.into_parts();
        let mut chunks = Box::pin(body.into_data_stream());
        let body = futures::stream::poll_fn(move |cx| {
            let chunk = std::task::ready!(futures::StreamExt::poll_next_unpin(&mut chunks, cx));
            if !matches!(chunk, Some(Ok(_))) {
                self.record();
            }
            std::task::Poll::Ready(chunk)
        });
        Response::from_parts(parts, Body::from_stream(body))
    }
}

impl Drop for AnswerAudit {
    fn drop(&mut self) {
        self.record();
    }
}

/// The layer itself; see the module documentation.
pub(crate) async fn layer(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let on = auth.security.authenticates();
    match (&method, path.as_str()) {
        (&Method::GET, "/login") if auth.security.users.is_some() => {
            return (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                LOGIN_PAGE,
            )
                .into_response();
        }
        (&Method::POST, "/v1/login") => return auth.login(peer, request).await,
        (&Method::POST, "/v1/logout") => return auth.logout(peer, request).await,
        (&Method::GET, "/v1/session") => return auth.session_info(request.headers()).await,
        _ => {}
    }
    let mut audit = audited(&method, &path);
    if !on && !audit {
        return next.run(request).await;
    }
    let xmlrpc = path == "/RPC2";
    let (mut request, body) = if audit {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_AUDITED_BODY).await else {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {MAX_AUDITED_BODY} bytes"),
                "send a shorter statement",
            );
        };
        (Request::from_parts(parts, Body::from(bytes.clone())), bytes)
    } else {
        (request, Bytes::new())
    };
    let mut access = classify(&method, &path);
    if xmlrpc {
        let action = xmlrpc_action(&String::from_utf8_lossy(&body));
        // Listing is neither a query nor a change.
        audit = action != Action::RunSql;
        access = Access::Api(action);
    }
    let front_end = if xmlrpc {
        FrontEnd::XmlRpc
    } else {
        FrontEnd::Http
    };
    let principal = match access {
        _ if !on => Principal::unauthenticated("anonymous"),
        Access::Open => return next.run(request).await,
        Access::Page(action) | Access::Api(action) => {
            let password = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| matches!(Credential::parse(v), Ok(Credential::Basic { .. })));
            if password
                && let Err(throttled) = auth.security.audit.admit_login(front_end, peer, "-")
            {
                return throttled_response(&throttled);
            }
            let principal = match auth.authenticate(request.headers(), &method).await {
                Ok(Some(p)) => p,
                // Without a users file there is no log-in page to go to.
                Ok(None) if matches!(access, Access::Page(_)) && auth.security.users.is_some() => {
                    return (
                        StatusCode::SEE_OTHER,
                        [(header::LOCATION, "/login")],
                        "log in at /login",
                    )
                        .into_response();
                }
                Ok(None) => {
                    let refusal = Refusal::unauthorized(
                        "no_credentials",
                        format!("{method} {path} needs a credential; none was sent"),
                        "send `Authorization: Bearer fsq_...` (a token from `fleetsql tokens create`), or log in to the console at /login",
                    );
                    return auth.refuse(&refusal, peer, None);
                }
                Err(refusal) => {
                    return auth.refuse(&refusal, peer, None);
                }
            };
            if !principal.allows(action) {
                let e = AuthError::Forbidden {
                    role: principal.role,
                    action,
                };
                let refusal = Refusal {
                    status: StatusCode::FORBIDDEN,
                    reason: "forbidden",
                    error: e.to_string(),
                    hint: if principal.role.allows(action) {
                        "the token's scope leaves this action out; use a token scoped for it".into()
                    } else {
                        format!(
                            "{} needs a user or token of a role that may {action} (operator or admin)",
                            path
                        )
                    },
                };
                let mut entry = AuditEntry::new(&principal, front_end, action);
                entry.text = audit_text(&method, &path, &body);
                return auth.refuse(&refusal, peer, Some(entry));
            }
            principal
        }
    };
    let action = match access {
        Access::Page(a) | Access::Api(a) => a,
        Access::Open => Action::RunSql,
    };
    let principal = Arc::new(principal);
    request.extensions_mut().insert(principal.clone());
    let response = next.run(request).await;
    if !audit {
        return response;
    }
    if let Some(progress) = response
        .extensions()
        .get::<crate::answer::AnswerProgress>()
        .cloned()
    {
        let mut entry = AuditEntry::new(&principal, front_end, action);
        entry.peer = peer;
        entry.text = audit_text(&method, &path, &body);
        let audit = AnswerAudit {
            audit: auth.security.audit.clone(),
            entry: Some(entry),
            progress,
            started,
        };
        return audit.when_answered(response);
    }
    let (response, outcome) = outcome(response, xmlrpc).await;
    let mut entry = AuditEntry::new(&principal, front_end, action);
    entry.peer = peer;
    entry.text = audit_text(&method, &path, &body);
    entry.outcome = outcome;
    entry.duration = started.elapsed();
    auth.security.audit.record(entry);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_one_action() {
        use Access::*;
        let cases = [
            (Method::GET, "/health", Open),
            (Method::GET, "/metrics", Open),
            (Method::GET, "/", Page(Action::RunSql)),
            (Method::POST, "/v1/query", Api(Action::RunSql)),
            (
                Method::POST,
                "/v1/persistent-queries",
                Api(Action::RegisterQuery),
            ),
            (
                Method::DELETE,
                "/v1/persistent-queries/q1",
                Api(Action::DeleteQuery),
            ),
            (
                Method::GET,
                "/v1/persistent-queries/q1/events",
                Api(Action::Subscribe),
            ),
            (
                Method::GET,
                "/v1/persistent-queries/q1/ws",
                Api(Action::Subscribe),
            ),
            (Method::GET, "/alerts/events", Api(Action::Subscribe)),
            (Method::POST, "/alerts/api/ack", Api(Action::AckAlert)),
            (Method::GET, "/v1/tables", Api(Action::RunSql)),
            (Method::GET, "/no/such/route", Api(Action::RunSql)),
        ];
        for (method, path, access) in cases {
            assert_eq!(classify(&method, path), access, "{method} {path}");
        }
    }

    #[test]
    fn xmlrpc_calls_are_told_apart_by_method() {
        let call = |name: &str| {
            format!(
                "<?xml version=\"1.0\"?><methodCall><methodName>{name}</methodName><params><param><value><string>select a &lt; 1</string></value></param></params></methodCall>"
            )
        };
        assert_eq!(xmlrpc_action(&call("pqa.register")), Action::RegisterQuery);
        assert_eq!(xmlrpc_action(&call("deleteQuery")), Action::DeleteQuery);
        assert_eq!(xmlrpc_action(&call("pqa.list")), Action::RunSql);
        assert_eq!(
            audit_text(&Method::POST, "/RPC2", call("pqa.register").as_bytes()),
            "pqa.register: select a < 1"
        );
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; fleetsql_session=abc; b=2"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, CSRF_COOKIE), None);
    }
}
