use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::{Inner, ReportDefinition, ReportsError, StoredRun, chart, run_report};

impl IntoResponse for ReportsError {
    fn into_response(self) -> Response {
        let (status, hint) = match &self {
            ReportsError::UnknownReport(_) => {
                (StatusCode::NOT_FOUND, "GET /v1/reports lists the reports")
            }
            ReportsError::History { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "SELECT * FROM fleet_history lists what this node keeps",
            ),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "see the node's log"),
        };
        (
            status,
            Json(json!({ "error": self.to_string(), "hint": hint })),
        )
            .into_response()
    }
}

/// A time range in milliseconds since the epoch; open ends mean everything kept.
/// `history=true` draws the part before the oldest kept run from Query
/// History, one point per `step_ms` (the report's `every` by default).
#[derive(Debug, Deserialize)]
struct Range {
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    #[serde(default)]
    history: bool,
    step_ms: Option<i64>,
}

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/reports", get(list))
        .route("/v1/reports/{name}/runs", get(runs))
        .route("/v1/reports/{name}/data.csv", get(data_csv))
        .route("/v1/reports/{name}/chart.svg", get(chart_svg))
        .route("/v1/reports/{name}/run", post(run_now))
        .with_state(inner)
}

fn report<'a>(inner: &'a Inner, name: &str) -> Result<&'a ReportDefinition, ReportsError> {
    inner
        .reports
        .get(name)
        .ok_or_else(|| ReportsError::UnknownReport(name.to_string()))
}

async fn stored_runs(
    inner: &Arc<Inner>,
    name: &str,
    range: &Range,
) -> Result<Vec<StoredRun>, ReportsError> {
    report(inner, name)?;
    let inner = inner.clone();
    let name = name.to_string();
    let (since, until) = (
        range.since_ms.unwrap_or(i64::MIN),
        range.until_ms.unwrap_or(i64::MAX),
    );
    // SQLite reads block; a wide range can take a moment.
    let store = inner.clone();
    let store_name = name.clone();
    let stored = tokio::task::spawn_blocking(move || store.store.runs(&store_name, since, until))
        .await
        .map_err(|e| ReportsError::Run {
            name: "store read".into(),
            message: e.to_string(),
        })??;
    if !range.history {
        return Ok(stored);
    }
    // History fills in only where no run was kept: before the oldest one.
    let history_until = stored
        .first()
        .map_or(until, |r| r.run_at_ms.saturating_sub(1).min(until));
    if history_until < since {
        return Ok(stored);
    }
    // Open ends: from the epoch to now (history holds nothing later).
    let since = since.max(0);
    let history_until = history_until.min(fleetsql_model::now_ms());
    let mut runs =
        crate::history::history_runs(&inner, &name, since, history_until, range.step_ms).await?;
    runs.extend(stored);
    Ok(runs)
}

async fn list(State(inner): State<Arc<Inner>>) -> Result<Response, ReportsError> {
    let mut reports = Vec::new();
    for r in inner.reports.values() {
        let (runs_kept, oldest, newest) = inner.store.summary(&r.name)?;
        let mut entry = serde_json::to_value(r).unwrap_or_default();
        entry["runs_kept"] = json!(runs_kept);
        entry["oldest_run_ms"] = json!(oldest);
        entry["last_run_ms"] = json!(newest);
        entry["last_error"] = json!(inner.store.last_error(&r.name)?);
        reports.push(entry);
    }
    Ok(Json(json!({ "reports": reports })).into_response())
}

async fn runs(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    Query(range): Query<Range>,
) -> Result<Response, ReportsError> {
    let runs = stored_runs(&inner, &name, &range).await?;
    Ok(Json(json!({ "report": name, "runs": runs })).into_response())
}

async fn data_csv(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    Query(range): Query<Range>,
) -> Result<Response, ReportsError> {
    let runs = stored_runs(&inner, &name, &range).await?;
    let mut response = chart::csv(&runs).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.csv\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

async fn chart_svg(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
    Query(range): Query<Range>,
) -> Result<Response, ReportsError> {
    let runs = stored_runs(&inner, &name, &range).await?;
    let definition = report(&inner, &name)?;
    let lines = chart::series(definition, &runs);
    let mut response = chart::svg(&definition.title, &lines, runs.len()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    Ok(response)
}

async fn run_now(
    State(inner): State<Arc<Inner>>,
    Path(name): Path<String>,
) -> Result<Response, ReportsError> {
    let run = run_report(&inner, &name).await?;
    Ok(Json(run).into_response())
}
