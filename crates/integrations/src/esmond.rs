//! perfSONAR measurement archives as event sources.
//!
//! [`EsmondSource`] polls one or more archives behind the [`ArchiveSource`]
//! trait; [`EsmondArchive`] speaks the esmond REST API (perfSONAR 3.x/4.x):
//!
//! 1. metadata discovery: `GET {archive}?source=..&destination=..` lists
//!    measurements, each with `event-types` entries carrying a `base-uri`,
//!    `summaries` and `time-updated`;
//! 2. data: `GET {base-uri}?time-start=T` answers `[{"ts": .., "val": ..}]`
//!    for the points since the last poll (per measurement and event type).
//!
//! Each point becomes one event of the stream named after the event type
//! with `-` as `_` (`throughput`, `packet_loss_rate`, `histogram_owdelay`).
//! Histogram event types are read from their `statistics` summary (mean,
//! median, percentiles...) when the archive keeps one, otherwise summarised
//! from the raw histogram. perfSONAR 5's OpenSearch archive can be added as
//! another [`ArchiveSource`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::EsmondConfig;
use crate::error::{IntegrationError, Result};
use crate::{EventSource, SourceContext, sleep_or_cancel};

/// Which measurements to fetch.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Source host or address.
    pub source: Option<String>,
    /// Destination host or address.
    pub destination: Option<String>,
    /// Event types (archive names, e.g. `packet-loss-rate`).
    pub event_types: Vec<String>,
}

/// Per series (measurement + event type): the newest point already emitted
/// (seconds). Kept by the caller between polls.
pub type Cursor = HashMap<String, i64>;

/// What one fetch from an archive produced.
#[derive(Debug, Default)]
pub struct Fetched {
    /// (stream, event) pairs in archive order.
    pub events: Vec<(String, Value)>,
    /// Malformed items skipped.
    pub bad_items: u64,
    /// The last of them, described.
    pub last_bad: Option<String>,
}

/// A measurement archive.
#[async_trait]
pub trait ArchiveSource: Send + Sync + std::fmt::Debug + 'static {
    /// For messages: the archive's URL.
    fn describe(&self) -> String;
    /// The points matching `filter` newer than `cursor` (first poll: newer
    /// than `oldest`, seconds), advancing `cursor`. An error leaves the
    /// cursor where the points already returned put it.
    async fn fetch(&self, filter: &Filter, oldest: i64, cursor: &mut Cursor) -> Result<Fetched>;
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(rename = "metadata-key")]
    key: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    destination: Option<String>,
    #[serde(default, rename = "measurement-agent")]
    measurement_agent: Option<String>,
    #[serde(default, rename = "tool-name")]
    tool_name: Option<String>,
    #[serde(default, rename = "event-types")]
    event_types: Vec<EventTypeEntry>,
}

#[derive(Debug, Deserialize)]
struct EventTypeEntry {
    #[serde(rename = "event-type")]
    event_type: String,
    #[serde(rename = "base-uri")]
    base_uri: String,
    #[serde(default)]
    summaries: Vec<Summary>,
    #[serde(default, rename = "time-updated")]
    time_updated: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Summary {
    #[serde(rename = "summary-type")]
    summary_type: String,
    #[serde(rename = "summary-window")]
    summary_window: Value,
    uri: String,
}

/// An esmond archive root, e.g. `http://host/esmond/perfsonar/archive/`.
#[derive(Debug)]
pub struct EsmondArchive {
    root: Url,
    client: reqwest::Client,
}

impl EsmondArchive {
    /// An archive at `url`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self> {
        let mut root = Url::parse(url)
            .map_err(|e| IntegrationError::Config(format!("esmond archive `{url}`: {e}")))?;
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| IntegrationError::Config(format!("esmond archive `{url}`: {e}")))?;
        Ok(EsmondArchive { root, client })
    }

    async fn get(&self, url: Url) -> Result<Value> {
        let response = self.client.get(url.clone()).send().await.map_err(|e| {
            IntegrationError::Remote(format!("cannot reach esmond archive {url}: {e}"))
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(IntegrationError::Remote(format!(
                "esmond archive {url} answered {status}; check the archive URL and its access rules"
            )));
        }
        response.json().await.map_err(|e| {
            IntegrationError::BadInput(format!("esmond archive {url} did not answer JSON: {e}"))
        })
    }
}

/// Summarises a raw esmond histogram (`{"bucket": count, ...}`).
fn histogram_stats(histogram: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut buckets = Vec::new();
    for (bucket, count) in histogram {
        buckets.push((bucket.parse::<f64>().ok()?, count.as_f64()?));
    }
    let total: f64 = buckets.iter().map(|(_, c)| c).sum();
    if total <= 0.0 {
        return None;
    }
    let mean = buckets.iter().map(|(b, c)| b * c).sum::<f64>() / total;
    let min = buckets
        .iter()
        .map(|(b, _)| *b)
        .fold(f64::INFINITY, f64::min);
    let max = buckets
        .iter()
        .map(|(b, _)| *b)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut m = Map::new();
    m.insert("count".into(), json!(total));
    m.insert("mean".into(), json!(mean));
    m.insert("minimum".into(), json!(min));
    m.insert("maximum".into(), json!(max));
    Some(m)
}

/// One archive point's measured fields, or why it is unusable.
fn point_fields(val: &Value) -> std::result::Result<Map<String, Value>, String> {
    match val {
        Value::Number(_) => {
            let mut m = Map::new();
            m.insert("value".into(), json!(val.as_f64()));
            Ok(m)
        }
        Value::Object(obj) => {
            let numeric: Map<String, Value> = obj
                .iter()
                .filter(|(_, v)| v.is_number())
                .map(|(k, v)| (k.replace('-', "_"), json!(v.as_f64())))
                .collect();
            // A statistics summary names its fields; a raw histogram's keys
            // are bucket values.
            if numeric.keys().all(|k| k.parse::<f64>().is_ok()) {
                histogram_stats(obj).ok_or_else(|| "histogram with no usable buckets".to_string())
            } else {
                Ok(numeric)
            }
        }
        other => Err(format!("value {other} is neither a number nor an object")),
    }
}

#[async_trait]
impl ArchiveSource for EsmondArchive {
    fn describe(&self) -> String {
        self.root.to_string()
    }

    async fn fetch(&self, filter: &Filter, oldest: i64, cursor: &mut Cursor) -> Result<Fetched> {
        let mut url = self.root.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("format", "json");
            if let Some(s) = &filter.source {
                q.append_pair("source", s);
            }
            if let Some(d) = &filter.destination {
                q.append_pair("destination", d);
            }
            if let [only] = filter.event_types.as_slice() {
                q.append_pair("event-type", only);
            }
        }
        let listing = self.get(url.clone()).await?;
        let Value::Array(items) = listing else {
            return Err(IntegrationError::BadInput(format!(
                "esmond archive {url}: the metadata listing is not a JSON array"
            )));
        };
        let mut fetched = Fetched::default();
        let bad = |fetched: &mut Fetched, what: String| {
            fetched.bad_items += 1;
            fetched.last_bad = Some(what);
        };
        for item in items {
            let metadata: Metadata = match serde_json::from_value(item) {
                Ok(m) => m,
                Err(e) => {
                    bad(&mut fetched, format!("{url}: unreadable metadata: {e}"));
                    continue;
                }
            };
            for et in &metadata.event_types {
                if !filter.event_types.contains(&et.event_type) {
                    continue;
                }
                let series = format!("{}/{}", metadata.key, et.event_type);
                let since = cursor.get(&series).copied().unwrap_or(oldest);
                if et.time_updated.is_some_and(|t| t <= since) {
                    continue;
                }
                let statistics = et.summaries.iter().find(|s| {
                    s.summary_type == "statistics"
                        && (s.summary_window == json!("0") || s.summary_window == json!(0))
                });
                let uri = match (et.event_type.starts_with("histogram-"), statistics) {
                    (true, Some(s)) => &s.uri,
                    _ => &et.base_uri,
                };
                let mut data_url = match self.root.join(uri) {
                    Ok(u) => u,
                    Err(e) => {
                        bad(&mut fetched, format!("{url}: bad uri `{uri}`: {e}"));
                        continue;
                    }
                };
                data_url
                    .query_pairs_mut()
                    .append_pair("format", "json")
                    .append_pair("time-start", &(since + 1).to_string());
                let Value::Array(points) = self.get(data_url.clone()).await? else {
                    bad(
                        &mut fetched,
                        format!("{data_url}: data is not a JSON array"),
                    );
                    continue;
                };
                let stream = et.event_type.replace('-', "_");
                let mut newest = since;
                for point in points {
                    let ts = point.get("ts").and_then(Value::as_i64);
                    let fields = point
                        .get("val")
                        .ok_or_else(|| "no `val`".to_string())
                        .and_then(point_fields);
                    let (ts, fields) = match (ts, fields) {
                        (Some(ts), Ok(f)) => (ts, f),
                        (None, _) => {
                            bad(
                                &mut fetched,
                                format!("{data_url}: point without integer `ts`"),
                            );
                            continue;
                        }
                        (_, Err(e)) => {
                            bad(&mut fetched, format!("{data_url}: {e}"));
                            continue;
                        }
                    };
                    if ts <= since {
                        continue;
                    }
                    newest = newest.max(ts);
                    let mut event = Map::new();
                    event.insert("archive".into(), json!(self.root.as_str()));
                    event.insert("metadata_key".into(), json!(metadata.key));
                    event.insert("event_type".into(), json!(et.event_type));
                    for (name, v) in [
                        ("source", &metadata.source),
                        ("destination", &metadata.destination),
                        ("measurement_agent", &metadata.measurement_agent),
                        ("tool_name", &metadata.tool_name),
                    ] {
                        event.insert(name.into(), json!(v.clone().unwrap_or_default()));
                    }
                    event.insert("ts".into(), json!(ts));
                    event.extend(fields);
                    fetched.events.push((stream.clone(), Value::Object(event)));
                }
                cursor.insert(series, newest);
            }
        }
        Ok(fetched)
    }
}

/// Polls archives and injects their points as events.
#[derive(Debug)]
pub struct EsmondSource {
    name: String,
    archives: Vec<Arc<dyn ArchiveSource>>,
    filter: Filter,
    interval: Duration,
    lookback: Duration,
    cursors: Mutex<Vec<Cursor>>,
}

impl EsmondSource {
    /// A poller for `config`'s esmond archives.
    pub fn new(config: &EsmondConfig) -> Result<Self> {
        let archives = config
            .archives
            .iter()
            .map(|url| {
                EsmondArchive::new(url, config.timeout)
                    .map(|a| Arc::new(a) as Arc<dyn ArchiveSource>)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::with_archives(config, archives))
    }

    /// A poller over any archives (e.g. an OpenSearch one).
    pub fn with_archives(config: &EsmondConfig, archives: Vec<Arc<dyn ArchiveSource>>) -> Self {
        EsmondSource {
            name: config.name.clone(),
            cursors: Mutex::new(vec![Cursor::new(); archives.len()]),
            archives,
            filter: Filter {
                source: config.source.clone(),
                destination: config.destination.clone(),
                event_types: config.event_types.clone(),
            },
            interval: config.interval,
            lookback: config.lookback,
        }
    }

    async fn poll_once(&self, ctx: &SourceContext) -> Result<()> {
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let oldest = now_s - self.lookback.as_secs() as i64;
        let mut errors = Vec::new();
        for (i, archive) in self.archives.iter().enumerate() {
            // The cursor is taken out so no lock is held across the fetch.
            let mut cursor = std::mem::take(&mut self.cursors.lock()[i]);
            let result = archive.fetch(&self.filter, oldest, &mut cursor).await;
            self.cursors.lock()[i] = cursor;
            match result {
                Ok(fetched) => {
                    let mut by_stream: Vec<(String, Vec<Value>)> = Vec::new();
                    for (stream, event) in fetched.events {
                        match by_stream.iter_mut().find(|(s, _)| *s == stream) {
                            Some((_, events)) => events.push(event),
                            None => by_stream.push((stream, vec![event])),
                        }
                    }
                    for (stream, events) in &by_stream {
                        ctx.emit(stream, events);
                    }
                    if let Some(e) = fetched.last_bad {
                        ctx.health.bad_items(fetched.bad_items, &e);
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            ctx.health.success(0);
            Ok(())
        } else {
            Err(IntegrationError::Remote(errors.join("; ")))
        }
    }
}

#[async_trait]
impl EventSource for EsmondSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "esmond"
    }
    async fn run(&self, ctx: &SourceContext) -> Result<()> {
        loop {
            self.poll_once(ctx).await?;
            if !sleep_or_cancel(self.interval, &ctx.cancel).await {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_fields() {
        assert_eq!(point_fields(&json!(9.4e9)).unwrap()["value"], json!(9.4e9));
        let stats =
            point_fields(&json!({"mean": 12.5, "percentile-95": 14.0, "mode": [12.0]})).unwrap();
        assert_eq!(stats["percentile_95"], json!(14.0));
        assert!(!stats.contains_key("mode"));
        let hist = point_fields(&json!({"10.0": 1, "20.0": 3})).unwrap();
        assert_eq!(hist["mean"], json!(17.5));
        assert_eq!(hist["count"], json!(4.0));
        assert!(point_fields(&json!("x")).is_err());
    }
}
