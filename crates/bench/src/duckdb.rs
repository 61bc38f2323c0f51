//! The same queries on the same rows in DuckDB, in the same run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use fleetsql_model::Table;
use parquet::arrow::ArrowWriter;
use serde::Deserialize;

use crate::{BenchError, Latency, Result, SEED_QUERIES};

const SCRIPT: &str = include_str!("duckdb_queries.py");

/// What DuckDB measured per query: (latency, rows), or why it did not run.
pub(crate) type DuckDbResults = std::result::Result<BTreeMap<String, (Latency, usize)>, String>;

/// Writes one table (all clusters' parts) as Parquet.
pub(crate) fn write_parquet(dir: &Path, name: &str, parts: &[Arc<Table>]) -> Result<()> {
    let Some(first) = parts.first() else {
        return Ok(());
    };
    let path = dir.join(format!("{name}.parquet"));
    let file = std::fs::File::create(&path)
        .map_err(|e| BenchError::io(format!("creating {}", path.display()), e))?;
    let failed = |e: parquet::errors::ParquetError| {
        BenchError::DuckDb(format!("writing {}: {e}", path.display()))
    };
    let mut writer = ArrowWriter::try_new(file, first.schema().clone(), None).map_err(failed)?;
    for part in parts {
        for batch in part.batches() {
            writer.write(batch).map_err(failed)?;
        }
    }
    writer.close().map_err(failed)?;
    Ok(())
}

#[derive(Deserialize)]
struct Output {
    error: Option<String>,
    #[serde(default)]
    queries: BTreeMap<String, QueryOutput>,
}

#[derive(Deserialize)]
struct QueryOutput {
    rows: usize,
    times_ms: Vec<f64>,
}

/// Runs the seed queries `runs` times each in DuckDB over `dir`'s Parquet
/// and CSV files (each file one table, named after it).
pub(crate) async fn run(python: &Path, dir: &Path, runs: usize) -> DuckDbResults {
    let queries = serde_json::to_string(&SEED_QUERIES).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("queries.json"), queries).map_err(|e| e.to_string())?;
    let script = dir
        .parent()
        .unwrap_or(dir)
        .join("duckdb_queries.py")
        .to_path_buf();
    std::fs::write(&script, SCRIPT).map_err(|e| e.to_string())?;
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .arg(dir)
        .arg(runs.to_string())
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} exited with {}: {}",
            python.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let parsed: Output = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "unreadable answer from the DuckDB script ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    if let Some(error) = parsed.error {
        return Err(error);
    }
    Ok(parsed
        .queries
        .into_iter()
        .map(|(name, q)| (name, (Latency::of(&q.times_ms), q.rows)))
        .collect())
}
