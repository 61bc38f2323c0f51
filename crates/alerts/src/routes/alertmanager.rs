//! Prometheus Alertmanager, API v2: `POST <url>/api/v2/alerts`.
//!
//! Each instance is one Alertmanager alert: labels are the alert's name
//! and severity plus its `_key` columns (without the suffix), so the same
//! instance keeps one fingerprint; the other columns, the description and
//! the procedure are annotations. A firing instance's `endsAt` lies four
//! re-send intervals ahead (as Prometheus does), and the service sends
//! every active instance again each interval, so Alertmanager resolves it
//! by itself only if fleetsql stops talking to it; a clear sends `endsAt`
//! = the clear time.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::{Map, Value, json};

use crate::routes::post_webhook;

/// An `alertname`-style label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn label_name(column: &str) -> String {
    let base = column.strip_suffix("_key").unwrap_or(column);
    let mut name: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The Alertmanager alerts of one outbox batch (see `Notification`):
/// fired and cleared events; "no data" is not an instance and is left out.
pub fn alertmanager_alerts(
    payload: &Value,
    extra_labels: &BTreeMap<String, String>,
    valid_for: Duration,
    now_ms: i64,
) -> Vec<Value> {
    let alert = payload.get("alert").map(text).unwrap_or_default();
    let severity = payload.get("severity").map(text).unwrap_or_default();
    let mut common = Map::new();
    for field in ["description", "procedure", "node"] {
        if let Some(v) = payload.get(field).map(text).filter(|v| !v.is_empty()) {
            common.insert(field.to_string(), Value::String(v));
        }
    }
    let events = payload
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    events
        .iter()
        .filter_map(|event| {
            let kind = event.get("kind").and_then(Value::as_str)?;
            let at_ms = event.get("at_ms").and_then(Value::as_i64).unwrap_or(now_ms);
            let fired_ms = event
                .get("fired_at_ms")
                .and_then(Value::as_i64)
                .unwrap_or(at_ms);
            let ends_ms = match kind {
                "fired" => now_ms + valid_for.as_millis() as i64,
                "cleared" => at_ms,
                _ => return None,
            };
            let mut labels = Map::new();
            for (k, v) in extra_labels {
                labels.insert(k.clone(), Value::String(v.clone()));
            }
            if let Some(key) = event.get("key").and_then(Value::as_object) {
                for (column, value) in key {
                    labels.insert(label_name(column), Value::String(text(value)));
                }
            }
            labels.insert("alertname".into(), Value::String(alert.clone()));
            labels.insert("severity".into(), Value::String(severity.clone()));
            let mut annotations = common.clone();
            if let Some(details) = event.get("details").and_then(Value::as_object) {
                for (column, value) in details {
                    annotations.insert(column.clone(), Value::String(text(value)));
                }
            }
            Some(json!({
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(fired_ms.min(ends_ms)),
                "endsAt": rfc3339(ends_ms),
            }))
        })
        .collect()
}

/// Posts one batch to Alertmanager, retried like a webhook.
pub async fn post_alertmanager(
    http: &reqwest::Client,
    url: &str,
    payload: &Value,
    extra_labels: &BTreeMap<String, String>,
    resend: Duration,
    retries: u32,
    backoff: Duration,
) -> Result<(), String> {
    // The alert's own interval may be longer than the re-send interval:
    // an instance stays valid across four of whichever is longer.
    let every = payload
        .get("every_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis)
        .unwrap_or_default();
    let valid_for = resend.max(every) * 4;
    let alerts = alertmanager_alerts(payload, extra_labels, valid_for, fleetsql_model::now_ms());
    if alerts.is_empty() {
        return Ok(());
    }
    let endpoint = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
    post_webhook(http, &endpoint, &Value::Array(alerts), retries, backoff).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_become_alerts_labelled_by_their_keys() {
        let payload = json!({
            "alert": "disk space low",
            "severity": "critical",
            "description": "little space",
            "procedure": "clean up",
            "every_ms": 60_000,
            "events": [
                {"kind": "fired", "key": {"ip_key": "10.0.0.1", "mnt_key": "/var"},
                 "details": {"pct": 2}, "at_ms": 1_000, "fired_at_ms": 1_000},
                {"kind": "cleared", "key": {"ip_key": "10.0.0.2", "mnt_key": "/"},
                 "details": {}, "at_ms": 5_000, "fired_at_ms": 2_000},
                {"kind": "nodata", "key": {}, "details": {}, "at_ms": 5_000},
            ],
        });
        let extra = BTreeMap::from([("team".to_string(), "ops".to_string())]);
        let alerts = alertmanager_alerts(&payload, &extra, Duration::from_secs(240), 10_000);
        assert_eq!(alerts.len(), 2, "no data is not an instance");
        let fired = &alerts[0];
        assert_eq!(
            fired["labels"],
            json!({"alertname": "disk space low", "severity": "critical", "ip": "10.0.0.1",
                   "mnt": "/var", "team": "ops"})
        );
        assert_eq!(fired["annotations"]["pct"], "2");
        assert_eq!(fired["annotations"]["procedure"], "clean up");
        assert_eq!(fired["startsAt"], "1970-01-01T00:00:01.000Z");
        assert_eq!(fired["endsAt"], "1970-01-01T00:04:10.000Z");
        let cleared = &alerts[1];
        assert_eq!(cleared["startsAt"], "1970-01-01T00:00:02.000Z");
        assert_eq!(cleared["endsAt"], "1970-01-01T00:00:05.000Z");
    }

    #[test]
    fn label_names_are_prometheus_names() {
        assert_eq!(label_name("ip_key"), "ip");
        assert_eq!(label_name("mount-point_key"), "mount_point");
        assert_eq!(label_name("1st_key"), "_1st");
        assert_eq!(label_name("_key"), "_");
    }
}
