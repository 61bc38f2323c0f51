//! A report's runs as lines (one per group) and as CSV. The chart is an
//! SVG drawn here, so the page needs no charting library.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use crate::definition::ReportDefinition;
use crate::store::{StoredColumn, StoredRun};

/// One line: a group's values of one value column over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// (run time in ms, value), oldest first.
    pub points: Vec<(i64, f64)>,
}

fn is_numeric(data_type: &str) -> bool {
    ["Int", "UInt", "Float", "Decimal"]
        .iter()
        .any(|p| data_type.starts_with(p))
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn label(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "NULL".to_string(),
        other => other.to_string(),
    }
}

/// Which columns name the lines and which are drawn, from the definition
/// or, where it says nothing, from the column types of the newest run.
pub(crate) fn roles(
    report: &ReportDefinition,
    columns: &[StoredColumn],
) -> (Vec<String>, Vec<String>) {
    let group_by: Vec<String> = if report.group_by.is_empty() {
        columns
            .iter()
            .filter(|c| !is_numeric(&c.data_type))
            .map(|c| c.name.clone())
            .collect()
    } else {
        report.group_by.clone()
    };
    let values: Vec<String> = if report.values.is_empty() {
        columns
            .iter()
            .filter(|c| is_numeric(&c.data_type) && !group_by.contains(&c.name))
            .map(|c| c.name.clone())
            .collect()
    } else {
        report.values.clone()
    };
    (group_by, values)
}

pub fn series(report: &ReportDefinition, runs: &[StoredRun]) -> Vec<Series> {
    let Some(newest) = runs.iter().rev().find(|r| r.error.is_none()) else {
        return Vec::new();
    };
    let (group_by, values) = roles(report, &newest.columns);
    let mut lines: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for run in runs.iter().filter(|r| r.error.is_none()) {
        let index = |name: &String| run.columns.iter().position(|c| &c.name == name);
        let group_index: Vec<Option<usize>> = group_by.iter().map(index).collect();
        for value_column in &values {
            let Some(value_index) = index(value_column) else {
                continue;
            };
            for row in &run.rows {
                let Some(v) = row.get(value_index).and_then(number) else {
                    continue;
                };
                let mut name: Vec<String> = group_index
                    .iter()
                    .map(|i| i.and_then(|i| row.get(i)).map_or("?".to_string(), label))
                    .collect();
                if values.len() > 1 || name.is_empty() {
                    name.push(value_column.clone());
                }
                lines
                    .entry(name.join(" / "))
                    .or_default()
                    .push((run.run_at_ms, v));
            }
        }
    }
    lines
        .into_iter()
        .map(|(name, points)| Series { name, points })
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power)
}

fn format_number(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn format_time(ms: i64, span_ms: i64) -> String {
    let Some(t) = chrono::DateTime::from_timestamp_millis(ms) else {
        return String::new();
    };
    if span_ms > 2 * 86_400_000 {
        t.format("%m-%d %H:%M").to_string()
    } else if span_ms > 600_000 {
        t.format("%H:%M").to_string()
    } else {
        t.format("%H:%M:%S").to_string()
    }
}

const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// The chart: time across (UTC), value up from zero, a legend on the right.
pub fn svg(title: &str, lines: &[Series], runs: usize) -> String {
    const WIDTH: f64 = 960.0;
    const HEIGHT: f64 = 380.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 210.0;
    const TOP: f64 = 34.0;
    const BOTTOM: f64 = 40.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" class="report-chart" data-runs="{runs}" data-series="{}" font-family="sans-serif" font-size="12" role="img" aria-label="{}">"#,
        lines.len(),
        escape(title)
    );
    let _ = write!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let points = lines.iter().flat_map(|s| s.points.iter());
    let (mut t0, mut t1, mut v0, mut v1) = (i64::MAX, i64::MIN, 0f64, f64::MIN);
    for &(t, v) in points {
        t0 = t0.min(t);
        t1 = t1.max(t);
        v0 = v0.min(v);
        v1 = v1.max(v);
    }
    if t0 > t1 {
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#6a6f75">no runs in this range yet</text></svg>"##,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
        return out;
    }
    if t0 == t1 {
        t0 -= 30_000;
        t1 += 30_000;
    }
    if v1 <= v0 {
        v1 = v0 + 1.0;
    }
    let step = nice_step((v1 - v0) / 5.0);
    let v0 = (v0 / step).floor() * step;
    let v1 = (v1 / step).ceil() * step;
    let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * plot_w;
    let y = |v: f64| TOP + plot_h - (v - v0) / (v1 - v0) * plot_h;

    let mut tick = v0;
    while tick <= v1 + step / 2.0 {
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e5e8"/><text x="{}" y="{:.1}" text-anchor="end" fill="#444">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y(tick) + 4.0,
            format_number(tick),
            y = y(tick)
        );
        tick += step;
    }
    for i in 0..=4 {
        let t = t0 + (t1 - t0) * i / 4;
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{}" y2="{}" stroke="#999"/><text x="{x:.1}" y="{}" text-anchor="middle" fill="#444">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 5.0,
            TOP + plot_h + 18.0,
            format_time(t, t1 - t0),
            x = x(t)
        );
    }
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#6a6f75">time (UTC)</text><rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bbb"/>"##,
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0
    );
    for (i, line) in lines.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let coordinates: Vec<String> = line
            .points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline class="series" data-series="{}" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            escape(&line.name),
            coordinates.join(" ")
        );
        if line.points.len() <= 120 {
            for &(t, v) in &line.points {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"><title>{}: {}</title></circle>"#,
                    x(t),
                    y(v),
                    escape(&line.name),
                    format_number(v)
                );
            }
        }
        let legend_y = TOP + 8.0 + i as f64 * 18.0;
        let _ = write!(
            out,
            r#"<rect x="{}" y="{:.1}" width="12" height="12" fill="{colour}"/><text x="{}" y="{:.1}" class="legend">{}</text>"#,
            WIDTH - RIGHT + 16.0,
            legend_y - 10.0,
            WIDTH - RIGHT + 34.0,
            legend_y,
            escape(&line.name)
        );
    }
    out.push_str("</svg>");
    out
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Every stored row with its run's time and generation, one CSV line each.
/// Columns are the union over the runs, in the order first seen.
pub fn csv(runs: &[StoredRun]) -> String {
    let mut columns: Vec<String> = Vec::new();
    for run in runs {
        for c in &run.columns {
            if !columns.contains(&c.name) {
                columns.push(c.name.clone());
            }
        }
    }
    let mut out = String::from("run_at,generation_id");
    for c in &columns {
        out.push(',');
        out.push_str(&csv_field(c));
    }
    out.push('\n');
    for run in runs {
        let at = chrono::DateTime::from_timestamp_millis(run.run_at_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        let index: Vec<Option<usize>> = columns
            .iter()
            .map(|name| run.columns.iter().position(|c| &c.name == name))
            .collect();
        for row in &run.rows {
            out.push_str(&at);
            out.push(',');
            if let Some(g) = run.generation_id {
                out.push_str(&g.to_string());
            }
            for i in &index {
                out.push(',');
                match i.and_then(|i| row.get(i)) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(s)) => out.push_str(&csv_field(s)),
                    Some(other) => out.push_str(&csv_field(&other.to_string())),
                }
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(group_by: &[&str]) -> ReportDefinition {
        ReportDefinition {
            name: "r".into(),
            title: "R & D".into(),
            sql: "SELECT 1".into(),
            every: Duration::from_secs(1),
            retention: Duration::from_secs(60),
            group_by: group_by.iter().map(|s| s.to_string()).collect(),
            values: Vec::new(),
            file: "r.toml".into(),
        }
    }

    fn run(at: i64, rows: &[(&str, i64)]) -> StoredRun {
        StoredRun {
            run_at_ms: at,
            generation_id: Some(7),
            machines_seen: None,
            machines_expected: None,
            error: None,
            columns: vec![
                StoredColumn {
                    name: "continent_name".into(),
                    data_type: "Utf8".into(),
                },
                StoredColumn {
                    name: "hits".into(),
                    data_type: "Int64".into(),
                },
            ],
            rows: rows
                .iter()
                .map(|(c, h)| vec![Value::from(*c), Value::from(*h)])
                .collect(),
        }
    }

    #[test]
    fn one_line_per_group_from_column_types() {
        let runs = [
            run(1000, &[("Europe", 5), ("Asia", 7)]),
            run(2000, &[("Europe", 6)]),
        ];
        let lines = series(&report(&[]), &runs);
        assert_eq!(
            lines,
            vec![
                Series {
                    name: "Asia".into(),
                    points: vec![(1000, 7.0)]
                },
                Series {
                    name: "Europe".into(),
                    points: vec![(1000, 5.0), (2000, 6.0)]
                },
            ]
        );
        let drawn = svg("R & D", &lines, runs.len());
        assert_eq!(drawn.matches("<polyline").count(), 2);
        assert!(drawn.contains(r#"data-series="Europe""#));
        assert!(drawn.contains("R &amp; D"));
        assert!(drawn.contains(r#"data-runs="2""#));
    }

    #[test]
    fn no_runs_draw_an_empty_chart_that_says_so() {
        let drawn = svg("r", &series(&report(&[]), &[]), 0);
        assert!(drawn.contains("no runs"));
        assert!(!drawn.contains("<polyline"));
    }

    #[test]
    fn csv_has_a_line_per_row_with_its_run_time() {
        let mut tricky = run(0, &[("South, \"far\" America", 1)]);
        tricky.generation_id = None;
        let text = csv(&[run(1000, &[("Europe", 5), ("Asia", 7)]), tricky]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "run_at,generation_id,continent_name,hits");
        assert_eq!(lines[1], "1970-01-01T00:00:01.000Z,7,Europe,5");
        assert_eq!(lines[2], "1970-01-01T00:00:01.000Z,7,Asia,7");
        assert_eq!(
            lines[3],
            "1970-01-01T00:00:00.000Z,,\"South, \"\"far\"\" America\",1"
        );
    }

    #[test]
    fn steps_are_one_two_or_five() {
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(17.0), 20.0);
        assert_eq!(nice_step(4000.0), 5000.0);
    }
}
