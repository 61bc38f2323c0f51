//! Reports as Markdown (for `BENCHMARKS.md`) and the scaling plot as SVG.

use std::fmt::Write;

use crate::stats::ratio;
use crate::{Latency, Report};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn verdict(value: f64, target: f64) -> &'static str {
    if !value.is_finite() {
        "not measured"
    } else if value <= target {
        "met"
    } else {
        "missed"
    }
}

/// The p50 of `latency`, or NaN (not measured) without samples.
fn measured(latency: &Latency) -> f64 {
    if latency.samples == 0 {
        f64::NAN
    } else {
        latency.p50_ms
    }
}

/// One scenario as a Markdown table: each figure, its target where the
/// issue sets one, and its baseline ratio where one applies.
pub fn markdown(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} machines in {} clusters ({} processes each), tick {} ms, value churn {}, process churn {} of machines per tick, {} profile, Flight compression {}, measured {:.0} s (load average {:.1} on {} cores at the end): {} rows and {:.0} MiB of Arrow per generation.\n",
        r.machines,
        r.clusters,
        r.processes_per_machine,
        r.tick_ms,
        r.churn,
        r.process_churn,
        if r.profile.is_empty() {
            "dev"
        } else {
            r.profile.as_str()
        },
        r.compression,
        r.duration_s,
        r.load_average,
        r.cores,
        r.rows,
        mib(r.raw_arrow_bytes)
    );
    let _ = writeln!(out, "| figure | value | target | baseline ratio |");
    let _ = writeln!(out, "|---|---|---|---|");
    let mut row = |figure: &str, value: String, target: String, baseline: String| {
        let _ = writeln!(out, "| {figure} | {value} | {target} | {baseline} |");
    };
    row(
        "TLA merge, p50 / max",
        format!(
            "{:.0} / {:.0} ms ({} generations)",
            r.tla_merge.p50_ms, r.tla_merge.max_ms, r.tla_merge.samples
        ),
        format!("<= 1000 ms ({})", verdict(measured(&r.tla_merge), 1000.0)),
        format!(
            "{:.1}x a memcpy of the generation's {:.0} MiB ({:.0} ms)",
            r.merge_vs_memcpy(),
            mib(r.tla_generation_bytes),
            r.memcpy_ms
        ),
    );
    row(
        "TLA collecting children (Flight in), p50 / max",
        format!("{:.0} / {:.0} ms", r.tla_fetch.p50_ms, r.tla_fetch.max_ms),
        "-".into(),
        format!("{:.1}x a memcpy", ratio(r.tla_fetch.p50_ms, r.memcpy_ms)),
    );
    row(
        "TLA Flight bytes in / out per generation",
        format!(
            "{:.0} / {:.0} MiB",
            r.tla_bytes_in_per_generation / 1_048_576.0,
            r.tla_bytes_out_per_generation / 1_048_576.0
        ),
        "-".into(),
        format!(
            "in = {:.2}x the raw Arrow",
            ratio(r.tla_bytes_in_per_generation, r.raw_arrow_bytes as f64)
        ),
    );
    row(
        "TLA peak RSS (idle)",
        format!(
            "{:.0} MiB ({:.0} MiB)",
            mib(r.tla_peak_rss_bytes),
            mib(r.tla_idle_rss_bytes)
        ),
        "-".into(),
        format!(
            "{:.2}x the raw Arrow",
            ratio(r.tla_peak_rss_bytes as f64, r.raw_arrow_bytes as f64)
        ),
    );
    row(
        "SQL node receive + install, p50 / p99",
        format!(
            "{:.0} / {:.0} ms ({} generations)",
            r.sql_install.p50_ms, r.sql_install.p99_ms, r.sql_install.samples
        ),
        format!("<= 1000 ms ({})", verdict(measured(&r.sql_install), 1000.0)),
        format!("{:.1}x a memcpy", ratio(r.sql_install.p50_ms, r.memcpy_ms)),
    );
    row(
        "SQL node peak RSS (idle)",
        format!(
            "{:.0} MiB ({:.0} MiB)",
            mib(r.sql_peak_rss_bytes),
            mib(r.sql_idle_rss_bytes)
        ),
        format!("<= 2x raw Arrow ({})", verdict(r.sql_rss_vs_raw(), 2.0)),
        format!(
            "{:.2}x the raw Arrow; above idle {:.2}x",
            r.sql_rss_vs_raw(),
            r.sql_data_rss_vs_raw()
        ),
    );
    row(
        "data age at first queryability, p50 / p99",
        format!("{:.0} / {:.0} ms", r.data_age.p50_ms, r.data_age.p99_ms),
        "-".into(),
        format!(
            "{:.2} ticks at p99",
            ratio(r.data_age.p99_ms, r.tick_ms as f64)
        ),
    );
    for q in &r.queries {
        let target = if q.name == "disk alert" {
            format!("p50 <= 20 ms ({})", verdict(q.fleetsql.p50_ms, 20.0))
        } else {
            "-".into()
        };
        let duckdb = match (q.duckdb, q.duckdb_ratio()) {
            (Some(d), Some(ratio)) => format!(
                "{ratio:.2}x DuckDB ({:.1} ms, {} rows vs our {})",
                d.p50_ms,
                q.duckdb_rows.unwrap_or(0),
                q.fleetsql_rows
            ),
            _ => "DuckDB not run".into(),
        };
        row(
            &format!("query `{}`, quiet p50 / p99 (under load p50)", q.name),
            format!(
                "{:.1} / {:.1} ms ({:.1} ms)",
                q.fleetsql.p50_ms, q.fleetsql.p99_ms, q.under_load.p50_ms
            ),
            target,
            duckdb,
        );
    }
    row(
        "bench process (simulated fleet) peak RSS",
        format!("{:.0} MiB", mib(r.bench_peak_rss_bytes)),
        "-".into(),
        format!(
            "simulator built the first generation in {:.0} ms",
            r.sim_build_ms
        ),
    );
    if let Some(note) = &r.duckdb_note {
        let _ = writeln!(out, "\nDuckDB: {note}.");
    }
    out
}

/// How the tiers grow with the fleet, one row per scenario.
pub fn scaling_markdown(reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| machines | rows | raw Arrow | TLA merge p50 | TLA fetch p50 | SQL install p50 | TLA peak RSS | SQL peak RSS | disk alert p50 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let disk = r
            .queries
            .iter()
            .find(|q| q.name == "disk alert")
            .map_or(f64::NAN, |q| q.fleetsql.p50_ms);
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} MiB | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} MiB | {:.0} MiB | {:.1} ms |",
            r.machines,
            r.rows,
            mib(r.raw_arrow_bytes),
            r.tla_merge.p50_ms,
            r.tla_fetch.p50_ms,
            r.sql_install.p50_ms,
            mib(r.tla_peak_rss_bytes),
            mib(r.sql_peak_rss_bytes),
            disk
        );
    }
    out
}

struct Line {
    name: &'static str,
    colour: &'static str,
    values: Vec<f64>,
}

/// Draws one panel (x: machines, y: from zero) at `left`.
fn panel(out: &mut String, left: f64, title: &str, unit: &str, machines: &[f64], lines: &[Line]) {
    const W: f64 = 400.0;
    const H: f64 = 260.0;
    const TOP: f64 = 40.0;
    let x_max = machines.iter().copied().fold(1.0, f64::max);
    let y_max = lines
        .iter()
        .flat_map(|l| l.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let x = |m: f64| left + m / x_max * W;
    let y = |v: f64| TOP + H - v / y_max * H;
    let _ = write!(
        out,
        r#"<text x="{left}" y="{}" font-weight="bold">{title}</text>"#,
        TOP - 14.0
    );
    let _ = write!(
        out,
        r##"<rect x="{left}" y="{TOP}" width="{W}" height="{H}" fill="none" stroke="#999"/>"##
    );
    for k in 0..=4 {
        let v = y_max * f64::from(k) / 4.0;
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#555">{v:.0} {unit}</text>"##,
            left - 6.0,
            y(v) + 4.0
        );
    }
    for &m in machines {
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">{}k</text>"##,
            x(m),
            TOP + H + 16.0,
            m / 1000.0
        );
    }
    for (i, line) in lines.iter().enumerate() {
        let points: Vec<String> = machines
            .iter()
            .zip(&line.values)
            .filter(|(_, v)| v.is_finite())
            .map(|(m, v)| format!("{:.1},{:.1}", x(*m), y(*v)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            points.join(" "),
            line.colour
        );
        for p in &points {
            if let Some((px, py)) = p.split_once(',') {
                let _ = write!(
                    out,
                    r#"<circle cx="{px}" cy="{py}" r="3" fill="{}"/>"#,
                    line.colour
                );
            }
        }
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" fill="{}">{}</text>"#,
            left + 10.0,
            TOP + 16.0 + 16.0 * i as f64,
            line.colour,
            line.name
        );
    }
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">machines</text>"##,
        left + W / 2.0,
        TOP + H + 34.0
    );
}

/// Two panels: times (merge, fetch, install) and memory (peak RSS of both
/// tiers, raw Arrow), each against the number of machines.
pub fn scaling_svg(reports: &[Report]) -> String {
    let machines: Vec<f64> = reports.iter().map(|r| r.machines as f64).collect();
    let pick = |f: fn(&Report) -> f64| reports.iter().map(f).collect::<Vec<_>>();
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1000 360" font-family="sans-serif" font-size="12" role="img" aria-label="fleetsql scaling">"#
    );
    panel(
        &mut out,
        80.0,
        "Time per generation (p50)",
        "ms",
        &machines,
        &[
            Line {
                name: "TLA merge",
                colour: "#1f77b4",
                values: pick(|r| r.tla_merge.p50_ms),
            },
            Line {
                name: "TLA fetch (Flight in)",
                colour: "#ff7f0e",
                values: pick(|r| r.tla_fetch.p50_ms),
            },
            Line {
                name: "SQL node receive + install",
                colour: "#2ca02c",
                values: pick(|r| r.sql_install.p50_ms),
            },
        ],
    );
    panel(
        &mut out,
        580.0,
        "Memory",
        "MiB",
        &machines,
        &[
            Line {
                name: "TLA peak RSS",
                colour: "#1f77b4",
                values: pick(|r| mib(r.tla_peak_rss_bytes)),
            },
            Line {
                name: "SQL node peak RSS",
                colour: "#2ca02c",
                values: pick(|r| mib(r.sql_peak_rss_bytes)),
            },
            Line {
                name: "raw Arrow per generation",
                colour: "#7f7f7f",
                values: pick(|r| mib(r.raw_arrow_bytes)),
            },
        ],
    );
    out.push_str("</svg>\n");
    out
}

/// `text` with the part between `<!-- NAME begin -->` and `<!-- NAME end -->`
/// replaced by `content`; the markers are appended when absent.
pub fn replace_section(text: &str, name: &str, content: &str) -> String {
    let begin = format!("<!-- {name} begin -->");
    let end = format!("<!-- {name} end -->");
    let block = format!("{begin}\n{}\n{end}", content.trim_end());
    match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{block}{}", &text[..b], &text[e + end.len()..])
        }
        _ => format!("{}\n\n{block}\n", text.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_or_appended() {
        let once = replace_section("# B\n\ntext\n", "bench", "one");
        assert!(once.ends_with("<!-- bench begin -->\none\n<!-- bench end -->\n"));
        let twice = replace_section(&once, "bench", "two");
        assert!(twice.contains("two") && !twice.contains("one"));
        assert!(twice.starts_with("# B\n\ntext"));
    }
}
