//! `fleetsql alerts check`: what a definition would fire right now, from a
//! SQL node's HTTP answer, so authors test an alert before deploying it.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::definition::{AlertDefinition, DefinitionSet};
use crate::state::Row;
use crate::{AlertError, Result};

/// Loads `path` as the service would, checking its routes against the
/// `routes.toml` beside it.
pub fn load_definition(path: &Path) -> Result<AlertDefinition> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut set = DefinitionSet::new(dir);
    set.scan(0);
    let known: BTreeSet<String> = set.routes().keys().cloned().collect();
    AlertDefinition::load(path, &known)
}

/// The instances in a `POST /v1/query` JSON answer (`columns`, `rows`).
pub fn rows_from_answer(answer: &Value) -> Result<Vec<Row>> {
    let bad = |reason: &str| AlertError::Query {
        alert: String::new(),
        reason: reason.to_string(),
    };
    let columns: Vec<String> = answer["columns"]
        .as_array()
        .ok_or_else(|| bad("the answer has no `columns`"))?
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect();
    let rows = answer["rows"]
        .as_array()
        .ok_or_else(|| bad("the answer has no `rows`"))?;
    Ok(rows
        .iter()
        .map(|r| Row::from_values(&columns, r.as_array().cloned().unwrap_or_default()))
        .collect())
}

/// A plain-text report of what `def` would do over `rows`.
pub fn describe(def: &AlertDefinition, rows: &[Row], generation: &Value) -> String {
    let mut out = String::new();
    let keys: BTreeSet<String> = rows.iter().map(Row::key_text).collect();
    out.push_str(&format!(
        "alert `{}` ({}), every {:?}, fires after {} iteration(s) present, clears after {:?} absent\n",
        def.name,
        def.severity.as_str(),
        def.every,
        def.fire_after,
        def.clear_after
    ));
    if keys.len() < rows.len() {
        out.push_str(&format!(
            "warning: {} rows but only {} distinct instances; rows with the same *_key columns count once\n",
            rows.len(),
            keys.len()
        ));
    }
    if rows.first().is_some_and(|r| r.key.is_empty()) {
        out.push_str("note: no *_key column: the whole alert is one instance\n");
    }
    let verb = if def.fire_after <= 1 {
        "would fire now"
    } else {
        "would fire if still present for the next iterations"
    };
    out.push_str(&format!("{} instance(s) {verb}:\n", keys.len()));
    for row in rows {
        let key: Vec<String> = row
            .key
            .iter()
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .collect();
        let details: Vec<String> = row
            .details
            .iter()
            .map(|(k, v)| format!("{k}={}", plain(v)))
            .collect();
        out.push_str(&format!("  {}  {}\n", key.join(" "), details.join(", ")));
    }
    if let Some(id) = generation.get("id") {
        out.push_str(&format!(
            "over generation {id}: {}/{} machines, {}/{} clusters\n",
            generation["machines_seen"],
            generation["machines_expected"],
            generation["clusters_seen"],
            generation["clusters_expected"]
        ));
    }
    out
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
