//! The web console: a browser front end for a SQL node, served from its
//! HTTP port at `/`.
//!
//! Pages (one HTML page, switched by the URL fragment): query (editor with
//! SQL highlighting, history in the browser, sortable results, CSV, a
//! generation badge), table browser, fleet, persistent queries, reports and
//! alerts. The assets are compiled into the binary with `include_str!` and
//! are plain JavaScript, so nothing is fetched from elsewhere and nothing is
//! built at install time.
//!
//! Besides the assets the console adds two small JSON endpoints:
//! `GET /v1/tables` (every table of the current generation with columns,
//! types, rows and publishing machines) and `GET /v1/console/config` (which
//! optional surfaces, alerts and reports, this server mounts, and when the
//! generation badge turns amber and red).

mod tables;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fleetsql_sqlnode::SqlNode;
use serde::Serialize;

pub use tables::{ColumnInfo, TableInfo, TablesAnswer, describe_tables};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// Which optional HTTP surfaces the server mounts next to the console; the
/// page hides or explains the views whose back end is absent rather than
/// calling endpoints that would answer 404.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsoleOptions {
    /// `/v1/alerts` is mounted.
    pub alerts: bool,
    /// `/v1/reports` is mounted.
    pub reports: bool,
    /// Persistent queries (`/v1/persistent-queries`) are mounted.
    pub persistent_queries: bool,
    /// When the generation badge turns amber and red.
    #[serde(skip)]
    pub badge: BadgeThresholds,
}

/// Data older than `amber_age_ms` (or any machine missing) make the badge
/// amber; older than `red_age_ms` (or over a tenth of machines missing),
/// red. Operators of slow-ticking fleets raise them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BadgeThresholds {
    pub amber_age_ms: u64,
    pub red_age_ms: u64,
}

impl Default for BadgeThresholds {
    fn default() -> Self {
        BadgeThresholds {
            amber_age_ms: 30_000,
            red_age_ms: 120_000,
        }
    }
}

#[derive(Debug, Clone)]
struct ConsoleState {
    node: Arc<SqlNode>,
    options: ConsoleOptions,
    listing: Arc<tables::ListingCache>,
    /// Keeps the cache's per-generation hook registered while the routes
    /// live.
    _hook: Arc<fleetsql_sqlnode::GenerationHookHandle>,
}

/// The console's routes, to be merged into the SQL node's HTTP router.
pub fn router(node: Arc<SqlNode>, options: ConsoleOptions) -> Router {
    let listing = Arc::new(tables::ListingCache::default());
    let hook = node.add_generation_hook(listing.clone());
    Router::new()
        .route("/", get(index))
        .route("/console/app.js", get(app_js))
        .route("/console/app.css", get(app_css))
        .route("/v1/console/config", get(config))
        .route("/v1/tables", get(tables::handler))
        .with_state(ConsoleState {
            node,
            options,
            listing,
            _hook: Arc::new(hook),
        })
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The assets change with the binary; revalidating is cheap on loopback
    // and avoids a stale page after an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

async fn config(State(state): State<ConsoleState>) -> Response {
    axum::Json(serde_json::json!({
        "node": state.node.name(),
        "tick_ms": state.node.config().tick.as_millis() as u64,
        "features": state.options,
        "badge": state.options.badge,
    }))
    .into_response()
}
