//! Prometheus exposition scrapes published as fleet tables.
//!
//! Each metric family becomes a table named after it (lowercased, `:` as
//! `_`, with the configured prefix): `job` (the source name), `instance`
//! (the target's host:port), one text column per label, `sample` for
//! families whose samples have several names (histogram `_bucket`, `_sum`,
//! `_count`), `value` and `timestamp`. A label that would clash with these
//! columns is renamed `exported_<label>`, as Prometheus does.
//!
//! The text format is parsed here rather than with `prometheus-parse`: that
//! crate silently drops lines it cannot read and splits label values at
//! commas, and the point of this publisher is to report every bad line.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use async_trait::async_trait;

use crate::config::PrometheusConfig;
use crate::error::{IntegrationError, Result};
use crate::{Polled, Publisher};

/// A family's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// `counter`
    Counter,
    /// `gauge`
    Gauge,
    /// `histogram`
    Histogram,
    /// `summary`
    Summary,
    /// `untyped` or no `# TYPE`
    Untyped,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's own name (`foo_bucket` in family `foo`).
    pub name: String,
    /// Labels in line order.
    pub labels: Vec<(String, String)>,
    /// The value (NaN and ±Inf allowed).
    pub value: f64,
    /// The exposition's timestamp (ms), if given.
    pub timestamp_ms: Option<i64>,
}

/// One metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Family name.
    pub name: String,
    /// Declared type.
    pub kind: MetricKind,
    /// `# HELP` text.
    pub help: Option<String>,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Families in order of first appearance.
    pub families: Vec<Family>,
    /// Lines that could not be read: (1-based line number, what was wrong).
    pub errors: Vec<(usize, String)>,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Reads a sample line: `name{l="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> std::result::Result<Sample, String> {
    let name_end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
    let name = &line[..name_end];
    if !name.starts_with(is_name_start) {
        return Err("a sample line starts with a metric name".to_string());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            while chars.next_if(|(_, c)| *c == ' ' || *c == ',').is_some() {}
            let Some(&(start, c)) = chars.peek() else {
                return Err("labels are not closed with `}`".to_string());
            };
            if c == '}' {
                rest = &after[start + 1..];
                break;
            }
            let mut end = start;
            while let Some(&(i, c)) = chars.peek() {
                if !(c.is_ascii_alphanumeric() || c == '_') {
                    break;
                }
                end = i + 1;
                chars.next();
            }
            let label = &after[start..end];
            if label.is_empty() || label.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(format!("bad label name at byte {}", name_end + 1 + start));
            }
            while chars.next_if(|(_, c)| *c == ' ').is_some() {}
            if chars.next().map(|(_, c)| c) != Some('=') {
                return Err(format!("label `{label}` has no `=`"));
            }
            while chars.next_if(|(_, c)| *c == ' ').is_some() {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("the value of label `{label}` is not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("the value of label `{label}` is not closed")),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, other)) => {
                            value.push('\\');
                            value.push(other);
                        }
                        None => {
                            return Err(format!("the value of label `{label}` is not closed"));
                        }
                    },
                    Some((_, c)) => value.push(c),
                }
            }
            labels.push((label.to_string(), value));
        }
    }
    let mut fields = rest.split_ascii_whitespace();
    let value_text = fields
        .next()
        .ok_or_else(|| format!("sample `{name}` has no value"))?;
    let value = parse_float(value_text).ok_or_else(|| format!("`{value_text}` is not a number"))?;
    let timestamp_ms = match fields.next() {
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| format!("timestamp `{t}` is not integer milliseconds"))?,
        ),
        None => None,
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected `{extra}` after the timestamp"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
    })
}

fn family_of<'a>(sample: &str, kind: MetricKind, family: &'a str) -> Option<&'a str> {
    if sample == family {
        return Some(family);
    }
    let suffix = sample.strip_prefix(family)?;
    let ok = match kind {
        MetricKind::Histogram => matches!(suffix, "_bucket" | "_sum" | "_count"),
        MetricKind::Summary => matches!(suffix, "_sum" | "_count"),
        _ => false,
    };
    ok.then_some(family)
}

fn family_for(
    out: &mut Exposition,
    index: &mut HashMap<String, usize>,
    name: &str,
    kind: Option<MetricKind>,
) -> usize {
    if let Some(&i) = index.get(name) {
        if let Some(k) = kind {
            out.families[i].kind = k;
        }
        return i;
    }
    out.families.push(Family {
        name: name.to_string(),
        kind: kind.unwrap_or(MetricKind::Untyped),
        help: None,
        samples: Vec::new(),
    });
    index.insert(name.to_string(), out.families.len() - 1);
    out.families.len() - 1
}

/// Parses the text exposition format; bad lines are listed, not fatal.
pub fn parse_exposition(text: &str) -> Exposition {
    let mut out = Exposition::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    // The family the last `# TYPE` or `# HELP` introduced.
    let mut current: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_ascii_whitespace();
            match words.next() {
                Some("TYPE") => {
                    let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                        out.errors
                            .push((n + 1, "`# TYPE` needs a name and a type".into()));
                        continue;
                    };
                    let kind = match kind {
                        "counter" => MetricKind::Counter,
                        "gauge" => MetricKind::Gauge,
                        "histogram" => MetricKind::Histogram,
                        "summary" => MetricKind::Summary,
                        "untyped" | "unknown" => MetricKind::Untyped,
                        other => {
                            out.errors
                                .push((n + 1, format!("unknown metric type `{other}`")));
                            MetricKind::Untyped
                        }
                    };
                    current = Some(family_for(&mut out, &mut index, name, Some(kind)));
                }
                Some("HELP") => {
                    let Some(name) = words.next() else {
                        out.errors.push((n + 1, "`# HELP` needs a name".into()));
                        continue;
                    };
                    let i = family_for(&mut out, &mut index, name, None);
                    let help = comment
                        .trim_start()
                        .trim_start_matches("HELP")
                        .trim_start()
                        .trim_start_matches(name)
                        .trim();
                    out.families[i].help = Some(help.to_string());
                    current = Some(i);
                }
                _ => {}
            }
            continue;
        }
        let sample = match parse_sample(line) {
            Ok(s) => s,
            Err(e) => {
                out.errors.push((n + 1, e));
                continue;
            }
        };
        let i = current
            .filter(|&i| {
                let f = &out.families[i];
                family_of(&sample.name, f.kind, &f.name).is_some()
            })
            .unwrap_or_else(|| {
                // Histogram and summary parts seen without their family's
                // header still belong to it when it was declared earlier.
                let declared = out
                    .families
                    .iter()
                    .position(|f| family_of(&sample.name, f.kind, &f.name).is_some());
                match declared {
                    Some(i) => i,
                    None => family_for(&mut out, &mut index, &sample.name, None),
                }
            });
        out.families[i].samples.push(sample);
    }
    out
}

/// The table name for `family`, or why there is none.
pub fn table_name(prefix: &str, family: &str) -> std::result::Result<String, String> {
    let mut name: String = family
        .chars()
        .map(|c| {
            if c == ':' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) && prefix.is_empty() {
        name.insert(0, 'm');
    }
    let name = format!("{prefix}{name}");
    if name.len() > 63 {
        return Err(format!(
            "family `{family}`: table name `{name}` is longer than 63 characters; skipped"
        ));
    }
    Ok(name)
}

const FIXED_COLUMNS: [&str; 5] = ["job", "instance", "sample", "value", "timestamp"];

/// One family as a table; `job`/`instance` identify the scrape, `now_ms`
/// stamps samples without their own timestamp.
pub fn family_batch(family: &Family, job: &str, instance: &str, now_ms: i64) -> RecordBatch {
    let column_of = |label: &str| {
        if FIXED_COLUMNS.contains(&label) || label.starts_with('_') {
            format!("exported_{}", label.trim_start_matches('_'))
        } else {
            label.to_string()
        }
    };
    let label_names: BTreeSet<&str> = family
        .samples
        .iter()
        .flat_map(|s| s.labels.iter().map(|(k, _)| k.as_str()))
        .collect();
    let with_sample = family.samples.iter().any(|s| s.name != family.name);
    let rows = family.samples.len();
    let mut fields = vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("instance", DataType::Utf8, false),
    ];
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            job, rows,
        ))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            instance, rows,
        ))),
    ];
    for label in &label_names {
        fields.push(Field::new(column_of(label), DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(
            family
                .samples
                .iter()
                .map(|s| {
                    s.labels
                        .iter()
                        .find(|(k, _)| k == label)
                        .map(|(_, v)| v.as_str())
                })
                .collect::<Vec<_>>(),
        )));
    }
    if with_sample {
        fields.push(Field::new("sample", DataType::Utf8, false));
        columns.push(Arc::new(StringArray::from_iter_values(
            family.samples.iter().map(|s| s.name.as_str()),
        )));
    }
    fields.push(Field::new("value", DataType::Float64, false));
    columns.push(Arc::new(Float64Array::from_iter_values(
        family.samples.iter().map(|s| s.value),
    )));
    fields.push(Field::new(
        "timestamp",
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    ));
    columns.push(Arc::new(
        TimestampMillisecondArray::from_iter_values(
            family
                .samples
                .iter()
                .map(|s| s.timestamp_ms.unwrap_or(now_ms)),
        )
        .with_timezone("UTC"),
    ));
    // Two labels mapping to one column name would be the only way to fail;
    // label names cannot start with `exported_` and `_` both.
    let schema = Arc::new(Schema::new(fields));
    RecordBatch::try_new(schema.clone(), columns).unwrap_or_else(|_| RecordBatch::new_empty(schema))
}

/// Scrapes one exposition URL.
#[derive(Debug)]
pub struct PrometheusPublisher {
    config: PrometheusConfig,
    instance: String,
    client: reqwest::Client,
}

impl PrometheusPublisher {
    /// A publisher for `config` (nothing is fetched yet).
    pub fn new(config: &PrometheusConfig) -> Result<Self> {
        let instance = config
            .url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or(&config.url)
            .to_string();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| IntegrationError::Config(format!("prometheus `{}`: {e}", config.name)))?;
        Ok(PrometheusPublisher {
            config: config.clone(),
            instance,
            client,
        })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Turns an exposition into the tables to publish.
pub fn exposition_tables(
    exposition: &Exposition,
    config: &PrometheusConfig,
    instance: &str,
    now_ms: i64,
) -> Polled {
    let mut polled = Polled::default();
    for (line, error) in &exposition.errors {
        polled.bad_items += 1;
        polled.last_bad = Some(format!("{}: line {line}: {error}", config.url));
    }
    for family in &exposition.families {
        if family.samples.is_empty()
            || !(config.families.is_empty()
                || config
                    .families
                    .iter()
                    .any(|p| family.name.starts_with(p.as_str())))
        {
            continue;
        }
        match table_name(&config.table_prefix, &family.name) {
            Ok(table) => polled
                .tables
                .push((table, family_batch(family, &config.name, instance, now_ms))),
            Err(e) => {
                polled.bad_items += 1;
                polled.last_bad = Some(e);
            }
        }
    }
    polled
}

#[async_trait]
impl Publisher for PrometheusPublisher {
    fn name(&self) -> &str {
        &self.config.name
    }
    fn kind(&self) -> &'static str {
        "prometheus"
    }
    fn interval(&self) -> Duration {
        self.config.interval
    }
    async fn poll(&self) -> Result<Polled> {
        let url = &self.config.url;
        let response = self.client.get(url).send().await.map_err(|e| {
            IntegrationError::Remote(format!(
                "cannot scrape {url}: {e}; is the exporter running?"
            ))
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(IntegrationError::Remote(format!(
                "scraping {url} answered {status}; check the URL and the exporter's access rules"
            )));
        }
        let text = response
            .text()
            .await
            .map_err(|e| IntegrationError::Remote(format!("reading {url}: {e}")))?;
        let exposition = parse_exposition(&text);
        if exposition.families.is_empty() && !exposition.errors.is_empty() {
            return Err(IntegrationError::BadInput(format!(
                "{url} is not a Prometheus text exposition ({} unreadable lines, first: line {}: {})",
                exposition.errors.len(),
                exposition.errors[0].0,
                exposition.errors[0].1
            )));
        }
        Ok(exposition_tables(
            &exposition,
            &self.config,
            &self.instance,
            now_ms(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r##"
# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000
# A normal comment
msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n\"FILE.TXT\""} 1.458255915e9
metric_without_timestamp_and_labels 12.47
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.05"} 24054
http_request_duration_seconds_bucket{le="+Inf"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320
node_uname_info{version="#1 SMP, PREEMPT",value="x"} 1
"##;

    #[test]
    fn reads_the_reference_example() {
        let e = parse_exposition(TEXT);
        assert!(e.errors.is_empty(), "{:?}", e.errors);
        let names: Vec<_> = e.families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "http_requests_total",
                "msdos_file_access_time_seconds",
                "metric_without_timestamp_and_labels",
                "rpc_duration_seconds",
                "http_request_duration_seconds",
                "node_uname_info"
            ]
        );
        let msdos = &e.families[1].samples[0];
        assert_eq!(msdos.labels[0].1, r"C:\DIR\FILE.TXT");
        assert_eq!(msdos.labels[1].1, "Cannot find file:\n\"FILE.TXT\"");
        assert_eq!(e.families[3].samples.len(), 3);
        assert_eq!(e.families[4].kind, MetricKind::Histogram);
        assert_eq!(e.families[4].samples[1].labels[0].1, "+Inf");
        assert_eq!(e.families[4].samples[1].value, 144320.0);
        assert_eq!(e.families[0].samples[0].timestamp_ms, Some(1395066363000));
        assert_eq!(e.families[5].samples[0].labels[0].1, "#1 SMP, PREEMPT");
    }

    #[test]
    fn tables_have_labels_as_columns() {
        let e = parse_exposition(TEXT);
        let hist = family_batch(&e.families[4], "node", "127.0.0.1:9100", 5);
        let names: Vec<_> = hist
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            ["job", "instance", "le", "sample", "value", "timestamp"]
        );
        assert_eq!(hist.num_rows(), 4);
        let uname = family_batch(&e.families[5], "node", "i", 5);
        let names: Vec<_> = uname
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            [
                "job",
                "instance",
                "exported_value",
                "version",
                "value",
                "timestamp"
            ]
        );
        assert_eq!(table_name("", "a:b_C").unwrap(), "a_b_c");
        assert_eq!(table_name("", "_x").unwrap(), "m_x");
        assert!(table_name("", &"x".repeat(64)).is_err());
    }

    #[test]
    fn bad_lines_are_listed_and_the_rest_kept() {
        let e = parse_exposition(
            "good 1\nno_value\nbad{l=\"x} 1\nnum 12abc\n9starts 1\nts 1 notatime\nlbl{a=b} 2\nalso_good{a=\"b\"} 2\n# TYPE\n",
        );
        let lines: Vec<_> = e.errors.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 9], "{:?}", e.errors);
        let names: Vec<_> = e.families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["good", "also_good"]);
    }
}
