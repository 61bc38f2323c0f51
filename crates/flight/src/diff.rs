//! Column diffs: a table sent as only the columns that changed since the
//! copy the parent already holds.
//!
//! Between ticks a machine's identity columns (ip, pid, procname, mount
//! point, origin columns) stay as they were while its measurements move, so
//! most of a generation's bytes are the same as in the previous one. When a
//! table's rows line up with the parent's copy (same schema, same row
//! count, rows in the same order) the child sends the changed columns and
//! the parent takes the others from its copy, zero-copy: the new table
//! shares those buffers with the old one, which is also what keeps a
//! tier's memory near one generation instead of two.
//!
//! Rows are compared by position, so a table whose row count changed is
//! sent whole. Columns are compared by buffer identity first (a column the
//! tier passed through from its own base is the same buffer) and by value
//! otherwise (a publisher that re-sent identical values); a column that
//! changed in one row is sent whole.

use arrow::array::{Array, ArrayRef, RecordBatch};
use fleetsql_model::Table;

/// Below this many rows per piece on average, a diff would leave the
/// parent's table cut into slivers; such a table is sent whole instead,
/// which also resets the parent's batch layout to the child's.
const MIN_ROWS_PER_PIECE: usize = 1024;

/// A row range that lies inside one batch of each of two tables with the
/// same rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    left_batch: usize,
    left_offset: usize,
    right_batch: usize,
    right_offset: usize,
    len: usize,
}

/// The ranges where the batch boundaries of `left` and `right` (of the same
/// total rows) both hold; empty batches are skipped.
fn pieces(left: &[RecordBatch], right: &[RecordBatch]) -> Vec<Piece> {
    let mut out = Vec::with_capacity(left.len().max(right.len()));
    let (mut li, mut lo, mut ri, mut ro) = (0, 0, 0, 0);
    loop {
        while li < left.len() && lo == left[li].num_rows() {
            li += 1;
            lo = 0;
        }
        while ri < right.len() && ro == right[ri].num_rows() {
            ri += 1;
            ro = 0;
        }
        if li == left.len() || ri == right.len() {
            return out;
        }
        let len = (left[li].num_rows() - lo).min(right[ri].num_rows() - ro);
        out.push(Piece {
            left_batch: li,
            left_offset: lo,
            right_batch: ri,
            right_offset: ro,
            len,
        });
        lo += len;
        ro += len;
    }
}

fn piece_of(batch: &RecordBatch, column: usize, offset: usize, len: usize) -> ArrayRef {
    let array = batch.column(column);
    if offset == 0 && len == array.len() {
        array.clone()
    } else {
        array.slice(offset, len)
    }
}

fn same_values(a: &ArrayRef, b: &ArrayRef) -> bool {
    let (a, b) = (a.to_data(), b.to_data());
    a.ptr_eq(&b) || a == b
}

/// The columns of `new` (by index) that differ from `base`, or `None` when
/// the two cannot be compared row by row (different schema or row count)
/// or a diff would fragment the parent's copy. An empty list means `new`
/// holds exactly `base`'s rows.
pub(crate) fn changed_columns(new: &Table, base: &Table) -> Option<Vec<usize>> {
    if new.schema().fields() != base.schema().fields()
        || new.num_rows() != base.num_rows()
        || new.num_rows() == 0
    {
        return None;
    }
    let pieces = pieces(new.batches(), base.batches());
    let misaligned = pieces.len() > new.batches().len().max(base.batches().len());
    if misaligned && pieces.len() * MIN_ROWS_PER_PIECE > new.num_rows() {
        return None;
    }
    let columns = new.schema().fields().len();
    let changed: Vec<usize> = (0..columns)
        .filter(|&c| {
            !pieces.iter().all(|p| {
                same_values(
                    &piece_of(&new.batches()[p.left_batch], c, p.left_offset, p.len),
                    &piece_of(&base.batches()[p.right_batch], c, p.right_offset, p.len),
                )
            })
        })
        .collect();
    Some(changed)
}

/// `new` cut down to the `changed` columns: what travels for a diff.
pub(crate) fn project(name: &str, new: &Table, changed: &[usize]) -> Result<Table, String> {
    let schema = new
        .schema()
        .project(changed)
        .map_err(|e| format!("table `{name}`: {e}"))?;
    let batches = new
        .batches()
        .iter()
        .map(|b| b.project(changed))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("table `{name}`: {e}"))?;
    Table::new(name, std::sync::Arc::new(schema), batches).map_err(|e| e.to_string())
}

/// The table a diff describes: `base` with the `changed` columns replaced
/// by those of `received` (batches of exactly those columns, in order).
pub(crate) fn apply(
    name: &str,
    base: &Table,
    changed: &[usize],
    received: &[RecordBatch],
) -> Result<Table, String> {
    let fields = base.schema().fields();
    if let Some(bad) = changed.iter().find(|&&c| c >= fields.len()) {
        return Err(format!(
            "table `{name}`: diff names column {bad}, the base has {} columns",
            fields.len()
        ));
    }
    if changed.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "table `{name}`: diff columns {changed:?} are not in schema order"
        ));
    }
    let received_rows: usize = received.iter().map(RecordBatch::num_rows).sum();
    if received_rows != base.num_rows() {
        return Err(format!(
            "table `{name}`: diff has {received_rows} rows, the base has {}",
            base.num_rows()
        ));
    }
    for batch in received {
        let got = batch.schema();
        let matches = got.fields().len() == changed.len()
            && got
                .fields()
                .iter()
                .zip(changed)
                .all(|(field, &c)| field == &fields[c]);
        if !matches {
            return Err(format!(
                "table `{name}`: diff columns do not match the base's schema"
            ));
        }
    }
    let mut position = vec![None; fields.len()];
    for (i, &c) in changed.iter().enumerate() {
        position[c] = Some(i);
    }
    let batches = pieces(received, base.batches())
        .into_iter()
        .map(|p| {
            let columns: Vec<ArrayRef> = position
                .iter()
                .enumerate()
                .map(|(c, at)| match at {
                    Some(i) => piece_of(&received[p.left_batch], *i, p.left_offset, p.len),
                    None => piece_of(&base.batches()[p.right_batch], c, p.right_offset, p.len),
                })
                .collect();
            RecordBatch::try_new(base.schema().clone(), columns)
                .map_err(|e| format!("table `{name}`: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Table::new(name, base.schema().clone(), batches).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray};

    use super::*;

    fn batch(ids: std::ops::Range<i64>, value: f64, name: &str) -> RecordBatch {
        let n = (ids.end - ids.start) as usize;
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(ids)) as ArrayRef,
            ),
            ("v", Arc::new(Float64Array::from(vec![value; n])) as _),
            ("s", Arc::new(StringArray::from(vec![name; n])) as _),
        ])
        .unwrap()
    }

    fn table(batches: Vec<RecordBatch>) -> Table {
        Table::new("t", batches[0].schema(), batches).unwrap()
    }

    fn rows(t: &Table) -> RecordBatch {
        arrow::compute::concat_batches(t.schema(), t.batches()).unwrap()
    }

    #[test]
    fn pieces_cut_at_both_tables_boundaries() {
        let left = [batch(0..3000, 1.0, "a"), batch(3000..5000, 1.0, "a")];
        let right = [batch(0..1000, 1.0, "a"), batch(1000..5000, 1.0, "a")];
        let cut: Vec<(usize, usize, usize)> = pieces(&left, &right)
            .iter()
            .map(|p| (p.left_batch, p.right_batch, p.len))
            .collect();
        assert_eq!(cut, vec![(0, 0, 1000), (0, 1, 2000), (1, 1, 2000)]);
    }

    #[test]
    fn only_changed_columns_travel_and_the_rest_is_shared() {
        let base = table(vec![batch(0..4096, 1.0, "a"), batch(4096..8192, 1.0, "a")]);
        // Same ids and names (other buffers, same values), new measurements.
        let new = table(vec![batch(0..8192, 2.0, "a")]);
        let changed = changed_columns(&new, &base).unwrap();
        assert_eq!(changed, vec![1]);
        let sent = project("t", &new, &changed).unwrap();
        assert_eq!(sent.schema().fields().len(), 1);
        let back = apply("t", &base, &changed, sent.batches()).unwrap();
        assert_eq!(rows(&back), rows(&new));
        // Unchanged columns are the base's buffers, not copies.
        let shared = back.batches()[1].column(0).to_data();
        assert!(shared.ptr_eq(&base.batches()[1].column(0).to_data()));
    }

    #[test]
    fn identical_tables_change_nothing() {
        let base = table(vec![batch(0..5000, 1.0, "a")]);
        assert_eq!(changed_columns(&base, &base), Some(vec![]));
        let equal_values = table(vec![batch(0..5000, 1.0, "a")]);
        assert_eq!(changed_columns(&equal_values, &base), Some(vec![]));
        let back = apply(
            "t",
            &base,
            &[],
            &[batch(0..5000, 1.0, "a").project(&[]).unwrap()],
        );
        assert_eq!(rows(&back.unwrap()), rows(&base));
    }

    #[test]
    fn tables_that_do_not_line_up_are_sent_whole() {
        let base = table(vec![batch(0..5000, 1.0, "a")]);
        assert_eq!(
            changed_columns(&table(vec![batch(0..5001, 1.0, "a")]), &base),
            None
        );
        let other_schema = RecordBatch::try_from_iter([(
            "id",
            Arc::new(Int64Array::from_iter_values(0..5000)) as ArrayRef,
        )])
        .unwrap();
        assert_eq!(changed_columns(&table(vec![other_schema]), &base), None);
        // Boundaries that fall between each other's: a diff would cut the
        // parent's copy into slivers.
        let shifted = |start: i64| {
            let mut cuts = vec![0];
            cuts.extend((start..3000).step_by(600));
            cuts.push(3000);
            table(
                cuts.windows(2)
                    .map(|w| batch(w[0]..w[1], 1.0, "a"))
                    .collect(),
            )
        };
        assert_eq!(changed_columns(&shifted(300), &shifted(600)), None);
        // The same boundaries, however short the batches: the parent's copy
        // is laid out as the child's own table is.
        assert_eq!(changed_columns(&shifted(300), &shifted(300)), Some(vec![]));
    }

    #[test]
    fn a_diff_that_does_not_fit_its_base_is_refused() {
        let base = table(vec![batch(0..100, 1.0, "a")]);
        let new = table(vec![batch(0..100, 2.0, "a")]);
        let sent = project("t", &new, &[1]).unwrap();
        // Wrong column: a float diff for the id column.
        assert!(apply("t", &base, &[0], sent.batches()).is_err());
        // Out of range, out of order.
        assert!(apply("t", &base, &[7], sent.batches()).is_err());
        assert!(apply("t", &base, &[2, 1], sent.batches()).is_err());
        // Too few rows.
        let short = project("t", &table(vec![batch(0..50, 2.0, "a")]), &[1]).unwrap();
        assert!(apply("t", &base, &[1], short.batches()).is_err());
    }
}
