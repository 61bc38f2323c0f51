//! `/health` and `/metrics` (Prometheus text) for every role.

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use fleetsql_aggregator::{Aggregator, process_rss_bytes};
use fleetsql_flight::{TransferStats, render_prometheus};
use fleetsql_model::{Generation, now_ms};
use fleetsql_sqlnode::SqlNode;
use serde_json::json;
use tokio::sync::watch;

/// What one process shows on its admin endpoints.
#[derive(Debug)]
pub(crate) struct Observed {
    pub(crate) role: &'static str,
    pub(crate) name: String,
    pub(crate) generation: watch::Receiver<Arc<Generation>>,
    pub(crate) aggregator: Option<Arc<Aggregator>>,
    pub(crate) sqlnode: Option<Arc<SqlNode>>,
    /// Sent to parents (absent on a SQL node).
    pub(crate) server: Option<Arc<TransferStats>>,
    /// Received from each child, by child name.
    /// (Replaced when a re-read topology changes the children.)
    pub(crate) clients: std::sync::Mutex<Vec<(String, Arc<TransferStats>)>>,
    pub(crate) started: std::time::Instant,
    /// Its mTLS identity: refusals and reloads on `/metrics`.
    pub(crate) tls: Option<Arc<fleetsql_flight::TlsContext>>,
    /// A proxy's members: refused announcements on `/metrics`.
    pub(crate) members: Option<crate::membership::Registry>,
}

pub(crate) fn router(observed: Arc<Observed>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(observed)
}

/// Only `/metrics`, for a SQL node whose query router has its own `/health`.
pub(crate) fn metrics_router(observed: Arc<Observed>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(observed)
}

async fn health(State(o): State<Arc<Observed>>) -> impl IntoResponse {
    let generation = o.generation.borrow().clone();
    let v = &generation.meta.visibility;
    axum::Json(json!({
        "status": "ok",
        "role": o.role,
        "name": o.name,
        "generation_id": generation.meta.id,
        "generation_age_ms": (generation.meta.id > 0).then(|| now_ms() - generation.meta.made_at_ms),
        "clusters_seen": v.clusters_seen(),
        "clusters_expected": v.clusters_expected(),
        "machines_seen": v.machines_seen(),
        "machines_expected": v.machines_expected(),
        "uptime_s": o.started.elapsed().as_secs_f64(),
    }))
}

async fn metrics(State(o): State<Arc<Observed>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&o),
    )
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn render(o: &Observed) -> String {
    let mut out = String::new();
    let labels = format!("role=\"{}\",node=\"{}\"", o.role, escape(&o.name));
    let generation = o.generation.borrow().clone();
    let v = &generation.meta.visibility;
    let mut gauge = |name: &str, help: &str, value: f64| {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    };
    gauge(
        "fleetsql_generation_id",
        "Id of the newest generation held",
        generation.meta.id as f64,
    );
    if generation.meta.id > 0 {
        gauge(
            "fleetsql_generation_age_seconds",
            "Time since the newest generation held was made",
            (now_ms() - generation.meta.made_at_ms) as f64 / 1000.0,
        );
    }
    if let Some(oldest) = v.oldest_data_ms() {
        gauge(
            "fleetsql_data_age_seconds",
            "Age of the oldest machine data in the newest generation",
            (now_ms() - oldest) as f64 / 1000.0,
        );
    }
    gauge(
        "fleetsql_clusters_seen",
        "Clusters with data in the newest generation",
        v.clusters_seen() as f64,
    );
    gauge(
        "fleetsql_clusters_expected",
        "Clusters the newest generation should cover",
        v.clusters_expected() as f64,
    );
    gauge(
        "fleetsql_machines_seen",
        "Machines with data in the newest generation",
        v.machines_seen() as f64,
    );
    gauge(
        "fleetsql_machines_expected",
        "Machines the newest generation should cover",
        v.machines_expected() as f64,
    );
    gauge(
        "fleetsql_generation_rows",
        "Rows in the newest generation",
        generation
            .tables
            .values()
            .map(|t| t.num_rows() as f64)
            .sum(),
    );
    gauge(
        "fleetsql_generation_bytes",
        "Arrow memory of the newest generation",
        generation.memory_size() as f64,
    );
    if let Some(rss) = process_rss_bytes() {
        gauge(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            rss as f64,
        );
    }
    gauge(
        "fleetsql_uptime_seconds",
        "Time since the process started",
        o.started.elapsed().as_secs_f64(),
    );
    if let Some(aggregator) = &o.aggregator {
        let stats = aggregator.stats();
        family(
            &mut out,
            "fleetsql_generations_total",
            "counter",
            "Generations made",
        );
        let _ = writeln!(
            out,
            "fleetsql_generations_total{{{labels}}} {}",
            stats.generations
        );
        for (name, help, ms) in [
            (
                "fleetsql_fetch_seconds",
                "Time the last tick took to collect its children's answers",
                stats.last_fetch_ms,
            ),
            (
                "fleetsql_merge_seconds",
                "Time the last tick took to merge the answers collected",
                stats.last_merge_ms,
            ),
        ] {
            family(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name}{{{labels}}} {}", ms / 1000.0);
        }
        family(
            &mut out,
            "fleetsql_children",
            "gauge",
            "Children merged and expected at the last tick",
        );
        let _ = writeln!(
            out,
            "fleetsql_children{{{labels},state=\"merged\"}} {}",
            stats.children_merged
        );
        let _ = writeln!(
            out,
            "fleetsql_children{{{labels},state=\"expected\"}} {}",
            stats.children_expected
        );
    }
    // Tasks alive in this process's runtime: a soak (`fleetsql bench
    // --soak`) watches that they do not grow.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        family(
            &mut out,
            "fleetsql_tasks",
            "gauge",
            "Tokio tasks alive in this process",
        );
        let _ = writeln!(
            out,
            "fleetsql_tasks{{{labels}}} {}",
            runtime.metrics().num_alive_tasks()
        );
    }
    if let Some(node) = &o.sqlnode {
        if let Some(install) = node.last_install() {
            family(
                &mut out,
                "fleetsql_install_seconds",
                "gauge",
                "From the source making the newest generation to this node answering from it",
            );
            let _ = writeln!(
                out,
                "fleetsql_install_seconds{{{labels}}} {}",
                install.latency_ms() as f64 / 1000.0
            );
            if let Some(age) = install.data_age_ms() {
                family(
                    &mut out,
                    "fleetsql_install_data_age_seconds",
                    "gauge",
                    "Age of the newest generation's oldest machine data when this node began answering from it",
                );
                let _ = writeln!(
                    out,
                    "fleetsql_install_data_age_seconds{{{labels}}} {}",
                    age as f64 / 1000.0
                );
            }
        }
        let sources = node.sources_status();
        type Pick = fn(&fleetsql_sqlnode::SourceStatus) -> u64;
        let families: [(&str, &str, Pick); 3] = [
            (
                "fleetsql_source_up",
                "Whether a TLA answered the last probe or fetch",
                |s| u64::from(s.alive),
            ),
            (
                "fleetsql_source_chosen",
                "The TLA the SQL node reads from",
                |s| u64::from(s.chosen),
            ),
            (
                "fleetsql_source_clusters_seen",
                "Clusters each TLA advertised at the last probe",
                |s| s.clusters_seen,
            ),
        ];
        for (name, help, pick) in families {
            family(&mut out, name, "gauge", help);
            for s in &sources {
                let _ = writeln!(
                    out,
                    "{name}{{{labels},source=\"{}\"}} {}",
                    escape(&s.name),
                    pick(s)
                );
            }
        }
        family(
            &mut out,
            "fleetsql_auth_refusals_total",
            "counter",
            "Clients refused at log-in, by front end and reason",
        );
        for (front_end, reason, count) in node.audit().refusals() {
            let _ = writeln!(
                out,
                "fleetsql_auth_refusals_total{{{labels},front_end=\"{front_end}\",reason=\"{reason}\"}} {count}"
            );
        }
        // The apps' stores (alert state, report runs): a full disk shows
        // here as well as in fleet_nodes.store_error and the log.
        let stores = node.stores().statuses();
        if !stores.is_empty() {
            family(
                &mut out,
                "fleetsql_store_failing",
                "gauge",
                "1 while writes to the store fail (a full disk, say), 0 once one works",
            );
            for s in &stores {
                let _ = writeln!(
                    out,
                    "fleetsql_store_failing{{{labels},store=\"{}\"}} {}",
                    escape(&s.store),
                    u8::from(s.error.is_some())
                );
            }
            family(
                &mut out,
                "fleetsql_store_write_failures_total",
                "counter",
                "Writes to the store that failed",
            );
            for s in &stores {
                let _ = writeln!(
                    out,
                    "fleetsql_store_write_failures_total{{{labels},store=\"{}\"}} {}",
                    escape(&s.store),
                    s.write_failures
                );
            }
        }
    }
    let server = o.server.as_ref().map(|s| s.snapshot());
    let clients: Vec<(String, _)> = o
        .clients
        .lock()
        .map(|c| {
            c.iter()
                .map(|(name, s)| (name.clone(), s.snapshot()))
                .collect()
        })
        .unwrap_or_default();
    let server_labels: [(&str, &str); 1] = [("peer", "parents")];
    let client_labels: Vec<[(&str, &str); 1]> = clients
        .iter()
        .map(|(name, _)| [("peer", name.as_str())])
        .collect();
    let mut parts: Vec<(&[(&str, &str)], &fleetsql_flight::TransferSnapshot)> = Vec::new();
    if let Some(server) = &server {
        parts.push((&server_labels, server));
    }
    for (labels, (_, snapshot)) in client_labels.iter().zip(&clients) {
        parts.push((labels, snapshot));
    }
    out.push_str(&render_prometheus(&parts));
    if let Some(tls) = &o.tls {
        tls.render_prometheus(&mut out, &labels);
    }
    if let Some(members) = &o.members {
        members.render_prometheus(&mut out, &labels);
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
