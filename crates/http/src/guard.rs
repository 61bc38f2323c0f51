//! What every request to a node's HTTP port must satisfy before any router
//! sees it, so the query API, persistent queries, XML-RPC, the console,
//! alerts and reports are covered alike:
//!
//! - **Host** (DNS rebinding): a page on `evil.example` whose name is made
//!   to resolve to this node's address is sent by the browser with
//!   `Host: evil.example`; only the node's own names are answered.
//! - **Origin** (cross-site requests): a browser names the page that sent a
//!   request; a state-changing request (or a WebSocket upgrade, which
//!   browsers never check) from a page of another origin is refused.
//! - **Content type**: the types a page of any origin may send without the
//!   browser asking first (`text/plain`, form encodings) are refused on
//!   request bodies; JSON endpoints take `application/json`, and the
//!   endpoints that take other types on purpose keep them (XML-RPC's
//!   `text/xml`, Arrow IPC, CSV/TSV, NDJSON).
//!
//! Clients that are not browsers (curl, the CLI, drivers) send no Origin
//! and reach the node by its address, so they pass unchanged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Names and origins a node is reached by besides its own; see the module
/// documentation. Empty lists suit a node reached by its address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpAccess {
    /// Host names (no port) besides the bound address, `localhost` and
    /// loopback addresses; setting `http_hosts`.
    pub hosts: Vec<String>,
    /// Origins (`https://dash.example.com[:port]`) whose pages may send
    /// state-changing requests besides the node's own; setting
    /// `http_origins`.
    pub origins: Vec<String>,
}

/// Media types a request body may have: JSON for the JSON endpoints, and
/// what other endpoints take on purpose. None is one a cross-site form or
/// `fetch` may send without a preflight.
pub const BODY_TYPES: &[&str] = &[
    "application/json",
    "application/x-ndjson",
    "application/jsonl",
    "text/xml",
    "application/xml",
    "application/vnd.apache.arrow.stream",
    "text/csv",
    "text/tab-separated-values",
];

#[derive(Debug)]
pub(crate) struct Guard {
    bound: IpAddr,
    hosts: Vec<String>,
    origins: Vec<String>,
}

impl Guard {
    pub(crate) fn new(bound: SocketAddr, access: &HttpAccess) -> Guard {
        Guard {
            bound: bound.ip(),
            hosts: access
                .hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            origins: access
                .origins
                .iter()
                .map(|o| normalize_origin(o.trim_end_matches('/')))
                .collect(),
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        if let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            // An address can only be rebound by a name, never by itself;
            // on a wildcard bind every address of the machine is its own.
            return ip.is_loopback() || ip == self.bound || self.bound.is_unspecified();
        }
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = normalize_origin(origin);
        if let Some(host) = host
            && let Some(authority) = origin.split_once("://").map(|(_, a)| a)
            && authority == strip_port(&host.to_ascii_lowercase(), "80")
        {
            return true;
        }
        self.origins.contains(&origin)
    }
}

/// The name part of a `Host` value (`[::1]:80` → `[::1]`, `a:80` → `a`).
fn host_name(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(']') => {
            &host[..i]
        }
        _ => host,
    }
}

fn strip_port(authority: &str, default: &str) -> String {
    authority
        .strip_suffix(&format!(":{default}"))
        .unwrap_or(authority)
        .to_string()
}

/// `scheme://host[:port]` lowercased, without the scheme's default port.
fn normalize_origin(origin: &str) -> String {
    let origin = origin.to_ascii_lowercase();
    match origin.split_once("://") {
        Some(("http", authority)) => format!("http://{}", strip_port(authority, "80")),
        Some(("https", authority)) => format!("https://{}", strip_port(authority, "443")),
        _ => origin,
    }
}

fn refuse(status: StatusCode, error: String, hint: &str, setting: Option<&str>) -> Response {
    let mut body = json!({ "error": error, "hint": hint });
    if let Some(setting) = setting {
        body["setting"] = json!(setting);
    }
    (status, axum::Json(body)).into_response()
}

fn changes_state(method: &Method, headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    upgrade || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

fn body_type_allowed(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    BODY_TYPES.contains(&media.as_str())
        || (media.starts_with("application/") && media.ends_with("+json"))
}

/// `GET /health` and `GET /metrics` answer whatever name the node is
/// reached by: monitoring (Prometheus, load balancers) scrapes every tier by
/// the names of its own configuration, and agents, proxies and TLAs have no
/// `http_hosts` to list them in. A rebound page learns no more than any
/// scraper may, and changes nothing.
fn is_probe(request: &Request) -> bool {
    matches!(*request.method(), Method::GET | Method::HEAD)
        && matches!(request.uri().path(), "/health" | "/metrics")
}

/// The checks, in the order a browser-borne attack meets them.
pub(crate) fn check(guard: &Guard, request: &Request) -> Option<Response> {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    if let Some(host) = &host
        && !is_probe(request)
        && !guard.host_allowed(host)
    {
        return Some(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this node is not reached by the name `{}` (the request's Host header)",
                host.chars().take(100).collect::<String>()
            ),
            "use the node's address or `localhost`, or add the name to the node's `http_hosts`",
            Some("http_hosts"),
        ));
    }
    if changes_state(request.method(), headers)
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let origin = origin.to_str().unwrap_or("null");
        if !guard.origin_allowed(origin, host.as_deref()) {
            return Some(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-site request refused: a page of `{}` may not send {} requests to this node",
                    origin.chars().take(100).collect::<String>(),
                    request.method()
                ),
                "use the node's own console, a client that sends no Origin (curl, the CLI), or add the origin to the node's `http_origins`",
                Some("http_origins"),
            ));
        }
    }
    if matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) && has_body(headers)
    {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !body_type_allowed(content_type) {
            let said = if content_type.is_empty() {
                "no Content-Type".to_string()
            } else {
                format!(
                    "Content-Type `{}`",
                    content_type.chars().take(100).collect::<String>()
                )
            };
            return Some(refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("a request body with {said} is not taken here"),
                "send JSON with `Content-Type: application/json` (XML-RPC: text/xml; events also NDJSON as application/x-ndjson)",
                None,
            ));
        }
    }
    None
}

pub(crate) async fn layer(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    match check(&guard, &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn guard(bound: &str, access: HttpAccess) -> Guard {
        Guard::new(bound.parse().unwrap(), &access)
    }

    fn request(method: &str, headers: &[(&str, &str)]) -> Request {
        let mut builder = axum::http::Request::builder()
            .method(method)
            .uri("/v1/query");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap()
    }

    fn status(guard: &Guard, method: &str, headers: &[(&str, &str)]) -> u16 {
        check(guard, &request(method, headers)).map_or(200, |r| r.status().as_u16())
    }

    #[test]
    fn hosts_the_node_answers_to() {
        let g = guard("127.0.0.1:8080", HttpAccess::default());
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "127.0.0.2",
        ] {
            assert_eq!(status(&g, "GET", &[("host", host)]), 200, "{host}");
        }
        for host in [
            "evil.example:8080",
            "evil.example",
            "10.1.2.3:8080",
            "localhost.evil.example",
        ] {
            assert_eq!(status(&g, "GET", &[("host", host)]), 421, "{host}");
        }
        let named = guard(
            "10.1.2.3:8080",
            HttpAccess {
                hosts: vec!["SQL1.example".into()],
                ..HttpAccess::default()
            },
        );
        for host in ["10.1.2.3:8080", "sql1.example:8080", "localhost"] {
            assert_eq!(status(&named, "GET", &[("host", host)]), 200, "{host}");
        }
        assert_eq!(status(&named, "GET", &[("host", "10.1.2.4")]), 421);
        let wildcard = guard("0.0.0.0:8080", HttpAccess::default());
        assert_eq!(status(&wildcard, "GET", &[("host", "10.1.2.4:8080")]), 200);
        assert_eq!(
            status(&wildcard, "GET", &[("host", "rebound.example")]),
            421
        );
    }

    #[test]
    fn health_and_metrics_answer_any_name() {
        let g = guard("10.1.2.3:8080", HttpAccess::default());
        for path in ["/health", "/metrics"] {
            let probe = axum::http::Request::builder()
                .uri(path)
                .header("host", "tla1.dc1.example:7101")
                .body(Body::empty())
                .unwrap();
            assert!(check(&g, &probe).is_none(), "{path}");
        }
        let other = axum::http::Request::builder()
            .uri("/metrics/../v1/query")
            .header("host", "tla1.dc1.example:7101")
            .body(Body::empty())
            .unwrap();
        assert!(check(&g, &other).is_some());
        let post = axum::http::Request::builder()
            .method("POST")
            .uri("/health")
            .header("host", "evil.example")
            .body(Body::empty())
            .unwrap();
        assert!(check(&g, &post).is_some(), "only reads are probes");
    }

    #[test]
    fn origins_that_may_change_state() {
        let g = guard(
            "127.0.0.1:8080",
            HttpAccess {
                origins: vec!["https://dash.example/".into()],
                ..HttpAccess::default()
            },
        );
        let host = ("host", "127.0.0.1:8080");
        assert_eq!(
            status(&g, "POST", &[host, ("origin", "http://127.0.0.1:8080")]),
            200
        );
        assert_eq!(
            status(&g, "POST", &[host, ("origin", "https://dash.example:443")]),
            200
        );
        assert_eq!(status(&g, "POST", &[host]), 200, "no Origin: not a browser");
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:9999",
            "http://localhost:8080",
        ] {
            assert_eq!(
                status(&g, "POST", &[host, ("origin", origin)]),
                403,
                "{origin}"
            );
            assert_eq!(
                status(&g, "DELETE", &[host, ("origin", origin)]),
                403,
                "{origin}"
            );
        }
        // Reading is left to the browser's same-origin rule; a WebSocket
        // is not covered by it.
        assert_eq!(
            status(&g, "GET", &[host, ("origin", "http://evil.example")]),
            200
        );
        assert_eq!(
            status(
                &g,
                "GET",
                &[
                    host,
                    ("origin", "http://evil.example"),
                    ("upgrade", "websocket")
                ]
            ),
            403
        );
        let port80 = guard("127.0.0.1:80", HttpAccess::default());
        assert_eq!(
            status(
                &port80,
                "POST",
                &[("host", "localhost"), ("origin", "http://localhost:80")]
            ),
            200
        );
    }

    #[test]
    fn request_bodies_say_a_type_a_cross_site_page_cannot_send() {
        let g = guard("127.0.0.1:8080", HttpAccess::default());
        let body = ("content-length", "12");
        for taken in [
            "application/json",
            "application/json; charset=utf-8",
            "text/xml",
            "application/vnd.apache.arrow.stream",
            "application/x-ndjson",
            "application/merge-patch+json",
        ] {
            assert_eq!(
                status(&g, "POST", &[body, ("content-type", taken)]),
                200,
                "{taken}"
            );
        }
        for refused in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            assert_eq!(
                status(&g, "POST", &[body, ("content-type", refused)]),
                415,
                "{refused}"
            );
        }
        assert_eq!(status(&g, "POST", &[body]), 415);
        assert_eq!(status(&g, "POST", &[("transfer-encoding", "chunked")]), 415);
        // No body, nothing to say (a DELETE, a report's run button).
        assert_eq!(status(&g, "DELETE", &[]), 200);
        assert_eq!(status(&g, "POST", &[("content-length", "0")]), 200);
    }
}
