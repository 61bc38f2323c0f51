//! A report drawn from Query History (issue 18 item 7): its SQL answered
//! as of past times, over the generations the node kept, so the graph
//! reaches back before the report existed (or before its oldest kept run).
//!
//! Each table of the report's SQL that the node keeps in history is read
//! `FOR SYSTEM_TIME AS OF` each point in time (tables not kept, such as
//! static tables, are read as they are now). The points are the kept
//! generations of the first such table, at most one per `step` (the
//! report's `every` unless asked otherwise), as if it had run then.

use fleetsql_sqlnode::{HISTORY_SCHEMA, history_tables, read_as_of};

use crate::{Inner, ReportsError, Result, StoredColumn, StoredRun};

/// At most this many points are drawn from history per request, so a
/// wide range with a small step cannot run the report without bound.
pub const MAX_HISTORY_POINTS: usize = 2000;

/// The report `name` as it would have answered at the kept generations in
/// `since_ms..=until_ms`, one run per point, oldest first. A point whose
/// query fails is a run with its error, as a scheduled run would be.
pub(crate) async fn history_runs(
    inner: &Inner,
    name: &str,
    since_ms: i64,
    until_ms: i64,
    step_ms: Option<i64>,
) -> Result<Vec<StoredRun>> {
    let report = inner
        .reports
        .get(name)
        .ok_or_else(|| ReportsError::UnknownReport(name.to_string()))?;
    let failed = |message: String| ReportsError::History {
        name: name.to_string(),
        message,
    };
    let node = &inner.node;
    let kept = history_tables(&node.session_context());
    let statement = node.parse(&report.sql).map_err(|e| failed(e.to_string()))?;
    // Which tables it reads that are kept: versioned at any time.
    let (_, versioned) = read_as_of(&statement, |t| kept.iter().any(|k| k == t), 0)
        .map_err(|e| failed(e.to_string()))?;
    let Some(first) = versioned.first() else {
        return Err(failed(format!(
            "it reads no table this node keeps in history (kept: {}); add its tables to `history.tables` of this node's entry in the topology",
            if kept.is_empty() {
                "none".to_string()
            } else {
                kept.join(", ")
            }
        )));
    };
    let times_sql = format!(
        "SELECT DISTINCT CAST(_generation_time AS BIGINT) AS t FROM {HISTORY_SCHEMA}.\"{}\" \
         WHERE _generation_time >= to_timestamp_millis({since_ms}) \
         AND _generation_time <= to_timestamp_millis({until_ms}) ORDER BY t",
        first.replace('"', "\"\"")
    );
    let times = node
        .query(&times_sql)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let times = fleetsql_model::json::batches_to_rows(&times.batches)
        .map_err(|e| failed(e.to_string()))?
        .into_iter()
        .filter_map(|row| row.first().and_then(|v| v.as_i64()))
        .collect::<Vec<_>>();
    let step = step_ms.unwrap_or(report.every.as_millis() as i64).max(0);
    let points = thin(&times, step);
    let mut runs = Vec::with_capacity(points.len());
    for at in points {
        let (statement, _) = read_as_of(&statement, |t| kept.iter().any(|k| k == t), at)
            .map_err(|e| failed(e.to_string()))?;
        runs.push(run_at(inner, &statement.to_string(), at).await);
    }
    Ok(runs)
}

/// The oldest of `times` (sorted), then each next one at least `step`
/// after the last taken; at most [`MAX_HISTORY_POINTS`], the newest kept
/// when there are more.
pub(crate) fn thin(times: &[i64], step: i64) -> Vec<i64> {
    let mut points: Vec<i64> = Vec::new();
    for &t in times {
        if points.last().is_none_or(|&last| t >= last + step.max(1)) {
            points.push(t);
        }
    }
    let extra = points.len().saturating_sub(MAX_HISTORY_POINTS);
    points.split_off(extra)
}

async fn run_at(inner: &Inner, sql: &str, at_ms: i64) -> StoredRun {
    let error_run = |error: String| StoredRun {
        run_at_ms: at_ms,
        generation_id: None,
        machines_seen: None,
        machines_expected: None,
        error: Some(error),
        columns: Vec::new(),
        rows: Vec::new(),
    };
    let output = match inner.node.query(sql).await {
        Ok(output) => output,
        Err(e) => return error_run(e.to_string()),
    };
    let rows = match fleetsql_model::json::batches_to_rows(&output.batches) {
        Ok(rows) => rows,
        Err(e) => return error_run(e.to_string()),
    };
    StoredRun {
        run_at_ms: at_ms,
        // The kept generation read, not the live one the query was
        // pinned to; machine counts of a past generation are not kept.
        generation_id: output
            .generation
            .history
            .first()
            .and_then(|h| h.last_generation),
        machines_seen: None,
        machines_expected: None,
        error: None,
        columns: StoredColumn::of(&output),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_one_point_per_step_from_the_oldest() {
        assert_eq!(thin(&[0, 5, 10, 12, 20, 29, 31], 10), [0, 10, 20, 31]);
        assert_eq!(thin(&[0, 5, 10], 0), [0, 5, 10]);
        let many: Vec<i64> = (0..(MAX_HISTORY_POINTS as i64 + 5)).collect();
        let points = thin(&many, 1);
        assert_eq!(points.len(), MAX_HISTORY_POINTS);
        assert_eq!(points.last(), many.last());
    }
}
