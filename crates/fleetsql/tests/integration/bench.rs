//! `fleetsql bench --preset smoke`: the whole benchmark on a small fleet,
//! end to end (simulated proxies over Flight, a real TLA and SQL node, the
//! quiet query timings, DuckDB and memcpy baselines), checked for what it
//! reports rather than how fast it was.

use std::collections::BTreeSet;
use std::process::Command;

use fleetsql_sim::{SimConfig, SimFleet, TABLES};
use serde_json::Value;

use crate::cluster::BINARY;

/// Rows the smoke preset's fleet holds per generation, from the simulator
/// itself (row counts do not change from tick to tick).
fn expected_rows() -> u64 {
    let fleet = SimFleet::new(SimConfig {
        clusters: 4,
        machines_per_cluster: 500,
        processes_per_machine: 100,
        ..SimConfig::default()
    })
    .unwrap();
    let tables: BTreeSet<String> = TABLES.iter().map(|t| t.to_string()).collect();
    fleet
        .proxies()
        .iter()
        .map(|p| {
            let g = p.generation_at(1_000_000, &tables).unwrap();
            g.tables.values().map(|t| t.num_rows() as u64).sum::<u64>()
        })
        .sum()
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {v}", path.join(".")))
}

#[test]
fn the_smoke_preset_measures_every_tier_and_both_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let benchmarks = dir.path().join("BENCHMARKS.md");
    std::fs::write(&benchmarks, "# Benchmarks\n\nkept\n").unwrap();
    // scripts/test provides a Python with DuckDB; without it the bench
    // says why it did not compare, and everything else must still hold.
    let python = std::env::var("FLEETSQL_BENCH_PYTHON").ok();
    let output = Command::new(BINARY)
        .args([
            "bench",
            "--preset",
            "smoke",
            // Long enough that a loaded CI box still sees several
            // generations arrive in the window.
            "--duration",
            "8s",
            "--runs",
            "5",
            // The rows are compared with the simulator's at one tick:
            // without row churn, the count does not move between ticks.
            "--churn",
            "0",
        ])
        .arg("--python")
        .arg(python.as_deref().unwrap_or("python3"))
        .arg("--out")
        .arg(&out)
        .arg("--write-benchmarks")
        .arg(&benchmarks)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert!(stderr.contains("fleetsql bench: measuring"), "{stderr}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["machines"], 2000);
    assert_eq!(report["clusters"], 4);
    assert_eq!(num(&report, &["rows"]) as u64, expected_rows());
    assert!(num(&report, &["raw_arrow_bytes"]) > 0.0);
    for tier in ["tla_merge", "tla_fetch", "sql_install", "data_age"] {
        assert!(num(&report, &[tier, "samples"]) >= 1.0, "{tier}: {report}");
        assert!(num(&report, &[tier, "p50_ms"]) > 0.0, "{tier}: {report}");
    }
    assert!(num(&report, &["tla_bytes_in_per_generation"]) > 0.0);
    assert!(num(&report, &["tla_bytes_out_per_generation"]) > 0.0);
    assert!(num(&report, &["memcpy_ms"]) > 0.0);
    for tier in ["tla", "sql"] {
        let peak = num(&report, &[&format!("{tier}_peak_rss_bytes")]);
        let idle = num(&report, &[&format!("{tier}_idle_rss_bytes")]);
        assert!(peak > idle && idle > 0.0, "{tier}: peak {peak} idle {idle}");
    }

    let queries = report["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 3);
    for q in queries {
        assert_eq!(num(q, &["fleetsql", "samples"]), 5.0, "{q}");
        assert!(num(q, &["under_load", "samples"]) >= 1.0, "{q}");
        assert!(num(q, &["fleetsql_rows"]) > 0.0, "{q}");
        if python.is_some() {
            // Row counts of the seed's queries do not move with churn (the
            // hogs and full disks are fixed per machine), so DuckDB over
            // the exported tick must find exactly as many.
            assert_eq!(q["duckdb_rows"], q["fleetsql_rows"], "{q}");
            assert_eq!(num(q, &["duckdb", "samples"]), 5.0, "{q}");
        }
    }
    if python.is_some() {
        assert!(report["duckdb_note"].is_null(), "{report}");
    } else {
        assert!(report["duckdb_note"].is_string(), "{report}");
    }

    assert!(stdout.contains("| TLA merge, p50 / max |"), "{stdout}");
    let written = std::fs::read_to_string(&benchmarks).unwrap();
    assert!(written.starts_with("# Benchmarks\n\nkept"), "{written}");
    assert!(
        written.contains("<!-- fleetsql bench begin -->"),
        "{written}"
    );
    assert!(
        written.contains("| SQL node receive + install"),
        "{written}"
    );
}

#[test]
fn bad_bench_flags_are_refused_with_the_reason() {
    let output = Command::new(BINARY)
        .args(["bench", "--preset", "smoke", "--churn", "2", "--out"])
        .arg(std::env::temp_dir().join("fleetsql-bench-never"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--churn is a fraction"), "{stderr}");
    let output = Command::new(BINARY)
        .args(["bench", "--preset", "huge"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown preset `huge`"));
}

/// `fleetsql bench --apps-cost` on a tiny fleet: both halves report
/// install times and memory, and the apps really ran in the second (the
/// node listed every alert, persistent query and report, and each did
/// work). Nothing about how fast.
#[test]
fn the_apps_cost_mode_measures_both_halves_and_the_apps_ran() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench");
    let benchmarks = dir.path().join("BENCHMARKS.md");
    std::fs::write(&benchmarks, "# Benchmarks\n\nkept\n").unwrap();
    let output = Command::new(BINARY)
        .args([
            "bench",
            "--preset",
            "smoke",
            "--apps-cost",
            "--machines",
            "500",
            "--per-cluster",
            "250",
            "--processes",
            "10",
            "--duration",
            "6s",
            "--runs",
            "2",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--write-benchmarks")
        .arg(&benchmarks)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains("second half: the SQL node with"),
        "{stderr}"
    );

    let cost: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("apps-cost.json")).unwrap())
            .unwrap();
    for half in ["without", "with"] {
        let report = &cost[half];
        assert_eq!(report["machines"], 500, "{half}");
        assert!(
            num(report, &["sql_install", "samples"]) >= 1.0,
            "{half}: {report}"
        );
        assert!(
            num(report, &["sql_install", "p50_ms"]) > 0.0,
            "{half}: {report}"
        );
        let peak = num(report, &["sql_peak_rss_bytes"]);
        let steady = num(report, &["sql_steady_rss_bytes"]);
        let idle = num(report, &["sql_idle_rss_bytes"]);
        assert!(
            peak >= steady && steady > idle && idle > 0.0,
            "{half}: {report}"
        );
        // DuckDB is not part of this mode.
        assert!(report["duckdb_note"].is_string(), "{half}: {report}");
    }
    // Each half also left its own report.
    for sub in ["no-apps", "apps"] {
        assert!(out.join(sub).join("report.json").is_file(), "{sub}");
    }

    let apps = &cost["apps"];
    assert_eq!(num(apps, &["alerts"]), 20.0, "{apps}");
    assert_eq!(num(apps, &["alert_errors"]), 0.0, "{apps}");
    assert!(num(apps, &["alert_iterations"]) >= 20.0, "{apps}");
    assert_eq!(num(apps, &["persistent_queries"]), 100.0, "{apps}");
    assert_eq!(num(apps, &["pq_errors"]), 0.0, "{apps}");
    assert!(num(apps, &["pq_notifications"]) > 0.0, "{apps}");
    assert!(num(apps, &["feed_offered"]) >= 1.0, "{apps}");
    assert_eq!(apps["pq_tables"].as_array().unwrap().len(), 5, "{apps}");
    assert_eq!(num(apps, &["reports"]), 5.0, "{apps}");
    assert_eq!(num(apps, &["report_errors"]), 0.0, "{apps}");
    assert!(num(apps, &["report_runs"]) >= 5.0, "{apps}");
    // The persistent queries live in a temporary state directory that is
    // gone once the run is over, so a second run does not restore them.
    let leftovers: Vec<_> = std::fs::read_dir(out.join("apps"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("apps-state-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    assert!(stdout.contains("| receive + install p50 |"), "{stdout}");
    let written = std::fs::read_to_string(&benchmarks).unwrap();
    assert!(written.starts_with("# Benchmarks\n\nkept"), "{written}");
    assert!(
        written.contains("<!-- fleetsql bench apps begin -->"),
        "{written}"
    );
    assert!(written.contains("| peak RSS |"), "{written}");
}

#[test]
fn apps_cost_refuses_a_table_the_fleet_does_not_have() {
    let output = Command::new(BINARY)
        .args([
            "bench",
            "--preset",
            "smoke",
            "--apps-cost",
            "--apps-pq-tables",
            "sys,nope",
            "--out",
        ])
        .arg(std::env::temp_dir().join("fleetsql-bench-never"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`nope` is not a simulated fleet table"),
        "{stderr}"
    );
}

/// `fleetsql bench --soak` for two minutes at a CI-sized fleet (issue 20
/// item 6): every process sampled, the apps running, the seed queries
/// answered. Only growth bounds that a healthy run cannot cross are
/// asserted (descriptors and tasks after the warm-up), never timings: the
/// 30-minute figures go to BENCHMARKS.md.
#[test]
fn a_short_soak_shows_no_descriptor_or_task_growth() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("soak");
    let output = Command::new(BINARY)
        .args([
            "bench",
            "--preset",
            "smoke",
            "--soak",
            "2m",
            // Descriptors and tasks are flat from the first complete
            // generation on (memory is not: it climbs for a minute, see
            // SoakConfig::of), so their growth is counted over the last
            // 100 s rather than the default warm-up's last 60.
            "--soak-warmup",
            "20s",
            "--machines",
            "1000",
            "--per-cluster",
            "250",
            "--processes",
            "10",
            "--tick",
            "2s",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "soak failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("soak.json")).unwrap()).unwrap();
    assert_eq!(report["machines"], 1000);
    assert_eq!(report["alerts"], 20);
    assert_eq!(report["persistent_queries"], 100);
    assert!(num(&report, &["sql_generations"]) >= 10.0, "{report}");
    assert!(num(&report, &["queries"]) >= 100.0, "{report}");
    let processes = report["processes"].as_array().unwrap();
    let names: Vec<&str> = processes
        .iter()
        .map(|p| p["process"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tla", "sqlnode", "bench"]);
    for p in processes {
        let name = &p["process"];
        // A sample every 2 s over 2 minutes.
        assert!(p["samples"].as_array().unwrap().len() >= 30, "{name}: {p}");
        // In-flight connections move the count by a few; a leak of one
        // descriptor per generation or per query crosses this within the
        // 100 s after the warm-up.
        assert!(
            num(p, &["fd_max_growth"]) <= 24.0,
            "{name} leaks descriptors: {p}"
        );
        if name != "bench" {
            // Tasks come and go with requests; a task kept per query,
            // generation or scrape crosses this.
            assert!(
                p["task_growth"].as_i64().is_some_and(|g| g <= 40),
                "{name} leaks tasks: {p}"
            );
        }
    }
}
