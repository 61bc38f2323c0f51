//! Diffs: a table sent as what changed since the copy the parent already
//! holds.
//!
//! Between ticks a machine's identity columns (ip, pid, procname, mount
//! point, origin columns) stay as they were while its measurements move,
//! and most rows' measurements move only now and then, so most of a
//! generation's bytes are the same as in the previous one. When a table's
//! rows line up with the parent's copy (same schema, same row count, rows
//! in the same order) each column is one of
//!
//! - *kept*: equal to the copy's; nothing travels and the parent shares
//!   the copy's buffers (zero-copy), which is also what keeps a tier's
//!   memory near one generation instead of two;
//! - *patched*: changed in at most [`MAX_PATCHED_SHARE`] of the rows; the
//!   changed rows travel in one patch (`_row` positions plus the values of
//!   every patched column), and the parent rebuilds those columns from its
//!   copy and the patch;
//! - *whole*: changed in more rows than that (`_published_at`, say); the
//!   column travels whole.
//!
//! Rows are compared by position. When the rows do not line up (a
//! machine's process count changed, a machine left) and the parent reads
//! diff version 2, the rows are first *realigned* by origin: both tables
//! are cut into runs of one `_host`, a run whose host has a run of the same
//! length in the copy is taken from the copy, and any other run travels
//! whole (the inserted rows). The parent rebuilds the realigned copy from
//! the run list and the inserted rows, and the column diff above applies to
//! that. So a machine whose row count changed costs only its own rows.
//! Columns are compared by buffer identity first (a column the tier passed
//! through from its own copy is the same buffer) and by value otherwise (a
//! publisher that re-sent identical values).

use std::sync::Arc;

use std::collections::HashMap;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, PrimitiveArray, RecordBatch,
    UInt64Array, downcast_primitive_array,
};
use arrow::compute::kernels::cmp::distinct;
use arrow::compute::{concat_batches, interleave};
use arrow::datatypes::{DataType, Field, Schema};
use fleetsql_model::{Table, origin};

/// A changed column whose changed rows are at most this share of all rows
/// travels as a patch; above it the patch (position plus value) would not
/// save enough to pay for rebuilding the column at the parent.
const MAX_PATCHED_SHARE: f64 = 0.4;

/// The column of a patch that holds each row's position in the table.
const PATCH_ROW: &str = "_row";

/// When the two tables' batch boundaries fall between each other's and
/// the pieces they cut average fewer rows than this, a diff would leave the
/// parent's table in slivers; such a table is sent whole instead, which
/// also resets the parent's batch layout to the child's.
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

/// What travels of one table that lines up with the parent's copy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TableDiff {
    /// Columns sent whole, by index, in schema order.
    pub(crate) whole: Vec<usize>,
    /// Columns sent as a patch, by index, in schema order.
    pub(crate) patched: Vec<usize>,
    /// `_row` then the `patched` columns' new values, rows in table order;
    /// `None` when nothing is patched.
    pub(crate) patch: Option<RecordBatch>,
    /// Realigned first (diff version 2): where the rows come from, before
    /// `whole` and `patch` apply.
    pub(crate) realign: Option<Realign>,
}

/// A run of a realigned table: `len` rows of the base from row `start`,
/// or (`None`) the next `len` inserted rows.
pub(crate) type RowRun = (Option<u64>, u64);

/// How a table's rows are rebuilt from the parent's copy and rows sent.
#[derive(Debug, Clone)]
pub(crate) struct Realign {
    pub(crate) runs: Vec<RowRun>,
    /// The rows of the `None` runs, in order, every column.
    pub(crate) inserted: Table,
}

impl PartialEq for Realign {
    fn eq(&self, other: &Self) -> bool {
        self.runs == other.runs
            && self.inserted.schema() == other.inserted.schema()
            && self.inserted.batches() == other.inserted.batches()
    }
}

/// Runs of one `_host` value: (host, first row, rows). `None` without a
/// `_host` column of strings.
fn host_runs(table: &Table) -> Option<Vec<(String, usize, usize)>> {
    let column = table.schema().index_of(origin::HOST).ok()?;
    let mut runs: Vec<(String, usize, usize)> = Vec::new();
    let mut offset = 0;
    for batch in table.batches() {
        let hosts = batch.column(column).as_string_opt::<i32>()?;
        let partitions = arrow::compute::partition(std::slice::from_ref(batch.column(column)))
            .ok()?
            .ranges();
        for range in partitions {
            let host = if hosts.is_null(range.start) {
                ""
            } else {
                hosts.value(range.start)
            };
            let start = offset + range.start;
            match runs.last_mut() {
                // A host's rows split by a batch boundary.
                Some(last) if last.0 == host && last.1 + last.2 == start => last.2 += range.len(),
                _ => runs.push((host.to_string(), start, range.len())),
            }
        }
        offset += batch.num_rows();
    }
    Some(runs)
}

/// Pushes a run, joining it to the last one where they continue each other.
fn push_run(runs: &mut Vec<RowRun>, run: RowRun) {
    if let Some(last) = runs.last_mut() {
        match (last.0, run.0) {
            (Some(a), Some(b)) if a + last.1 == b => {
                last.1 += run.1;
                return;
            }
            (None, None) => {
                last.1 += run.1;
                return;
            }
            _ => {}
        }
    }
    runs.push(run);
}

/// `new`'s rows as runs of `base` and inserted rows (ranges of `new`);
/// `None` when either table has no `_host`, or nothing can be taken from
/// the base.
/// Row ranges of a table: (first row, rows).
type Ranges = Vec<(usize, usize)>;

fn align(new: &Table, base: &Table) -> Option<(Vec<RowRun>, Ranges)> {
    let new_runs = host_runs(new)?;
    let base_runs = host_runs(base)?;
    // A host may have more than one run (rows not grouped by host): the
    // k-th run of a host matches the base's k-th run of it.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut in_base: HashMap<(&str, usize), (usize, usize)> = HashMap::new();
    for (host, start, len) in &base_runs {
        let k = seen.entry(host.as_str()).or_default();
        in_base.insert((host.as_str(), *k), (*start, *len));
        *k += 1;
    }
    seen.clear();
    let mut runs = Vec::new();
    let mut inserted: Vec<(usize, usize)> = Vec::new();
    let mut taken = 0usize;
    for (host, start, len) in &new_runs {
        let k = seen.entry(host.as_str()).or_default();
        match in_base.get(&(host.as_str(), *k)) {
            Some(&(from, base_len)) if base_len == *len => {
                push_run(&mut runs, (Some(from as u64), *len as u64));
                taken += len;
            }
            _ => {
                push_run(&mut runs, (None, *len as u64));
                match inserted.last_mut() {
                    Some(last) if last.0 + last.1 == *start => last.1 += len,
                    _ => inserted.push((*start, *len)),
                }
            }
        }
        *k += 1;
    }
    (taken > 0).then_some((runs, inserted))
}

/// `len` rows of `table` from row `start`, as zero-copy slices of its
/// batches.
fn rows_of(table_batches: &[RecordBatch], start: usize, len: usize, out: &mut Vec<RecordBatch>) {
    let (mut skip, mut left) = (start, len);
    for batch in table_batches {
        if left == 0 {
            return;
        }
        let n = batch.num_rows();
        if skip >= n {
            skip -= n;
            continue;
        }
        let take = (n - skip).min(left);
        out.push(batch.slice(skip, take));
        left -= take;
        skip = 0;
    }
}

/// The table `runs` describe: rows of `base` and of `inserted`, cut into
/// batches of `layout` rows each (the last takes what remains).
pub(crate) fn realigned(
    name: &str,
    base: &Table,
    runs: &[RowRun],
    inserted: &[RecordBatch],
    layout: &[usize],
) -> Result<Table, String> {
    let base_rows = base.num_rows() as u64;
    let inserted_rows: u64 = inserted.iter().map(|b| b.num_rows() as u64).sum();
    let mut next_inserted = 0u64;
    let mut total = 0u64;
    for (start, len) in runs {
        match start {
            Some(start) if start.checked_add(*len).is_none_or(|end| end > base_rows) => {
                return Err(format!(
                    "table `{name}`: a run of {len} rows from row {start} is past the base's {base_rows} rows"
                ));
            }
            Some(_) => {}
            None => next_inserted += len,
        }
        total += len;
    }
    if next_inserted != inserted_rows {
        return Err(format!(
            "table `{name}`: the runs take {next_inserted} inserted rows, {inserted_rows} were sent"
        ));
    }
    let mut slices = Vec::new();
    let mut taken = 0usize;
    for (start, len) in runs {
        match start {
            Some(start) => rows_of(base.batches(), *start as usize, *len as usize, &mut slices),
            None => {
                rows_of(inserted, taken, *len as usize, &mut slices);
                taken += *len as usize;
            }
        }
    }
    let schema = base.schema().clone();
    let mut batches = Vec::new();
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut sizes = layout.iter().copied().filter(|n| *n > 0);
    let mut want = sizes.next().unwrap_or(usize::MAX);
    let mut have = 0usize;
    let flush = |pending: &mut Vec<RecordBatch>, batches: &mut Vec<RecordBatch>| {
        let batch = match pending.as_slice() {
            [one] => Ok(one.clone()),
            _ => concat_batches(&schema, pending.iter()),
        };
        pending.clear();
        batch.map(|b| batches.push(b))
    };
    for mut slice in slices {
        while slice.num_rows() > 0 {
            let take = slice.num_rows().min(want - have);
            pending.push(slice.slice(0, take));
            slice = slice.slice(take, slice.num_rows() - take);
            have += take;
            if have == want {
                flush(&mut pending, &mut batches).map_err(|e| format!("table `{name}`: {e}"))?;
                have = 0;
                want = sizes.next().unwrap_or(usize::MAX);
            }
        }
    }
    if !pending.is_empty() {
        flush(&mut pending, &mut batches).map_err(|e| format!("table `{name}`: {e}"))?;
    }
    let table = Table::new(name, base.schema().clone(), batches).map_err(|e| e.to_string())?;
    if table.num_rows() as u64 != total {
        return Err(format!(
            "table `{name}`: realigned {} rows of {total}",
            table.num_rows()
        ));
    }
    Ok(table)
}

/// How `new` differs from `base` once realigned by origin (diff version 2).
fn diff_realigned(name: &str, new: &Table, base: &Table) -> Option<TableDiff> {
    let (runs, ranges) = align(new, base)?;
    let mut inserted = Vec::new();
    for (start, len) in ranges {
        rows_of(new.batches(), start, len, &mut inserted);
    }
    let layout: Vec<usize> = new.batches().iter().map(RecordBatch::num_rows).collect();
    let aligned = realigned(name, base, &runs, &inserted, &layout).ok()?;
    let mut diff = diff_positional(name, new, &aligned)?;
    diff.realign = Some(Realign {
        runs,
        inserted: Table::new(name, new.schema().clone(), inserted).ok()?,
    });
    Some(diff)
}

/// Where each row of a changed column differs from the base, per piece;
/// `None` for a type the comparison kernels do not take (the column then
/// goes whole).
fn changed_rows(
    new: &Table,
    base: &Table,
    pieces: &[Piece],
    column: usize,
) -> Option<Vec<BooleanArray>> {
    pieces
        .iter()
        .map(|p| {
            let a = piece_of(&new.batches()[p.left_batch], column, p.left_offset, p.len);
            let b = piece_of(
                &base.batches()[p.right_batch],
                column,
                p.right_offset,
                p.len,
            );
            distinct(&a, &b).ok()
        })
        .collect()
}

/// How `new` differs from `base`, or `None` when the two cannot be compared
/// (different schema; rows that do not line up, unless `realign` allows
/// aligning them by origin) or a diff would fragment the parent's copy.
/// An empty diff means `new` holds exactly `base`'s rows.
pub(crate) fn diff_table(
    name: &str,
    new: &Table,
    base: &Table,
    realign: bool,
) -> Option<TableDiff> {
    if std::ptr::eq(new, base) {
        // The very table the parent holds (a tier passed it through).
        return Some(TableDiff {
            whole: Vec::new(),
            patched: Vec::new(),
            patch: None,
            realign: None,
        });
    }
    if new.schema().fields() != base.schema().fields() {
        return None;
    }
    let width = new.schema().fields().len();
    // Same rows in the same order is the common case and the cheap one;
    // a diff sending every column whole means they did not line up.
    let positional = diff_positional(name, new, base).filter(|d| d.whole.len() < width);
    if positional.is_some() || !realign || new.num_rows() == 0 {
        return positional;
    }
    diff_realigned(name, new, base)
}

/// The column diff of two tables whose rows line up by position.
fn diff_positional(name: &str, new: &Table, base: &Table) -> Option<TableDiff> {
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
    let changed = (0..columns).filter(|&c| {
        !pieces.iter().all(|p| {
            same_values(
                &piece_of(&new.batches()[p.left_batch], c, p.left_offset, p.len),
                &piece_of(&base.batches()[p.right_batch], c, p.right_offset, p.len),
            )
        })
    });
    let limit = (new.num_rows() as f64 * MAX_PATCHED_SHARE) as usize;
    let mut whole = Vec::new();
    let mut candidates = Vec::new();
    for column in changed {
        match changed_rows(new, base, &pieces, column) {
            Some(masks) => {
                let count: usize = masks.iter().map(|m| m.true_count()).sum();
                if count > limit {
                    whole.push(column);
                } else {
                    candidates.push((count, column, masks));
                }
            }
            None => whole.push(column),
        }
    }
    // One patch carries every patched column's values for the rows where
    // any of them changed: take the least changed columns first, while the
    // rows all of them need stay within the limit (a row's measurements
    // usually change together, so the union is rarely larger than one).
    candidates.sort_by_key(|(count, column, _)| (*count, *column));
    let mut patched = Vec::new();
    let mut rows: Option<Vec<BooleanArray>> = None;
    for (_, column, masks) in candidates {
        let merged = match &rows {
            None => masks,
            Some(so_far) => so_far
                .iter()
                .zip(&masks)
                .map(|(a, b)| arrow::compute::or(a, b))
                .collect::<Result<Vec<_>, _>>()
                .ok()?,
        };
        if merged.iter().map(|m| m.true_count()).sum::<usize>() > limit {
            whole.push(column);
        } else {
            patched.push(column);
            rows = Some(merged);
        }
    }
    whole.sort_unstable();
    patched.sort_unstable();
    let patch = match rows {
        Some(rows) if !patched.is_empty() => {
            Some(patch_batch(name, new, &pieces, &patched, &rows)?)
        }
        _ => None,
    };
    Some(TableDiff {
        whole,
        patched,
        patch,
        realign: None,
    })
}

/// The patch of `new`: the rows set in `rows` (one mask per piece), their
/// positions and the `patched` columns' values.
fn patch_batch(
    name: &str,
    new: &Table,
    pieces: &[Piece],
    patched: &[usize],
    rows: &[BooleanArray],
) -> Option<RecordBatch> {
    let schema = patch_schema(new.schema(), patched);
    let mut parts = Vec::new();
    let mut offset = 0u64;
    for (p, mask) in pieces.iter().zip(rows) {
        if mask.true_count() > 0 {
            let positions = UInt64Array::from_iter_values(
                mask.values().set_indices().map(|i| offset + i as u64),
            );
            let mut columns: Vec<ArrayRef> = vec![Arc::new(positions)];
            for &c in patched {
                let piece = piece_of(&new.batches()[p.left_batch], c, p.left_offset, p.len);
                columns.push(arrow::compute::filter(&piece, mask).ok()?);
            }
            parts.push(RecordBatch::try_new(schema.clone(), columns).ok()?);
        }
        offset += p.len as u64;
    }
    let patch = concat_batches(&schema, &parts);
    if let Err(e) = &patch {
        tracing::warn!(table = name, error = %e, "cannot build a patch; sending the table whole");
    }
    patch.ok()
}

fn patch_schema(table: &Schema, patched: &[usize]) -> Arc<Schema> {
    let mut fields = vec![Field::new(PATCH_ROW, DataType::UInt64, false)];
    fields.extend(patched.iter().map(|&c| table.field(c).clone()));
    Arc::new(Schema::new(fields))
}

/// `new` cut down to the `whole` columns: what travels of them.
pub(crate) fn project(name: &str, new: &Table, whole: &[usize]) -> Result<Table, String> {
    let schema = new
        .schema()
        .project(whole)
        .map_err(|e| format!("table `{name}`: {e}"))?;
    let batches = new
        .batches()
        .iter()
        .map(|b| b.project(whole))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("table `{name}`: {e}"))?;
    Table::new(name, Arc::new(schema), batches).map_err(|e| e.to_string())
}

/// What a parent received of a diffed table.
#[derive(Debug)]
pub(crate) struct Received<'a> {
    pub(crate) whole: &'a [usize],
    /// Batches of exactly the `whole` columns, in order.
    pub(crate) whole_batches: &'a [RecordBatch],
    pub(crate) patched: &'a [usize],
    pub(crate) patch_batches: &'a [RecordBatch],
}

fn check_columns(name: &str, what: &str, columns: &[usize], width: usize) -> Result<(), String> {
    if let Some(bad) = columns.iter().find(|&&c| c >= width) {
        return Err(format!(
            "table `{name}`: {what} names column {bad}, the base has {width} columns"
        ));
    }
    if columns.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "table `{name}`: {what} columns {columns:?} are not in schema order"
        ));
    }
    Ok(())
}

/// The patch's positions and values, checked against the base.
struct Patch {
    rows: Vec<u64>,
    values: Vec<ArrayRef>,
}

fn read_patch(name: &str, base: &Table, received: &Received<'_>) -> Result<Option<Patch>, String> {
    if received.patched.is_empty() {
        if received.patch_batches.iter().any(|b| b.num_rows() > 0) {
            return Err(format!("table `{name}`: a patch without patched columns"));
        }
        return Ok(None);
    }
    let schema = patch_schema(base.schema(), received.patched);
    for batch in received.patch_batches {
        if batch.schema().fields() != schema.fields() {
            return Err(format!(
                "table `{name}`: the patch's columns do not match the base's schema"
            ));
        }
    }
    let all = concat_batches(&schema, received.patch_batches)
        .map_err(|e| format!("table `{name}`: {e}"))?;
    let positions = all
        .column(0)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .ok_or_else(|| format!("table `{name}`: the patch's `{PATCH_ROW}` is not UInt64"))?;
    if positions.null_count() > 0 {
        return Err(format!(
            "table `{name}`: the patch has rows without a position"
        ));
    }
    let rows = positions.values().to_vec();
    let total = base.num_rows() as u64;
    if rows.windows(2).any(|w| w[0] >= w[1]) || rows.last().is_some_and(|&last| last >= total) {
        return Err(format!(
            "table `{name}`: the patch's positions are not increasing rows of the {total}-row base"
        ));
    }
    Ok(Some(Patch {
        rows,
        values: all.columns()[1..].to_vec(),
    }))
}

/// The patch rows falling into one piece (table rows `start..start +
/// len`), shared by every patched column of the piece.
struct PiecePatch<'a> {
    patch: &'a Patch,
    start: u64,
    len: usize,
    /// Index range into `patch.rows`.
    from: usize,
    to: usize,
    /// For `interleave`: where each row of the piece comes from (base or
    /// patch), made on first need.
    indices: Option<Vec<(usize, usize)>>,
}

impl<'a> PiecePatch<'a> {
    fn new(patch: &'a Patch, start: u64, len: usize) -> PiecePatch<'a> {
        let from = patch.rows.partition_point(|&r| r < start);
        let to = patch.rows.partition_point(|&r| r < start + len as u64);
        PiecePatch {
            patch,
            start,
            len,
            from,
            to,
            indices: None,
        }
    }

    /// `base_column` (this piece of a patched column) with the patch's rows
    /// replaced by `value`'s.
    fn apply(&mut self, base_column: ArrayRef, value: &ArrayRef) -> Result<ArrayRef, String> {
        if self.from == self.to {
            return Ok(base_column);
        }
        let base = base_column.as_ref();
        let scattered = downcast_primitive_array!(
            base => self.scatter(base, value.as_ref()),
            _ => None
        );
        if let Some(done) = scattered {
            return Ok(done);
        }
        let (start, len, from, to) = (self.start, self.len, self.from, self.to);
        let rows = &self.patch.rows;
        let indices = self.indices.get_or_insert_with(|| {
            let mut indices = Vec::with_capacity(len);
            let mut next = from;
            for row in 0..len {
                if next < to && rows[next] == start + row as u64 {
                    indices.push((1, next));
                    next += 1;
                } else {
                    indices.push((0, row));
                }
            }
            indices
        });
        interleave(&[base_column.as_ref(), value.as_ref()], indices).map_err(|e| e.to_string())
    }

    /// The fast way for fixed-width values without nulls: copy the base's
    /// values and write the patch's over them. `None` when it does not
    /// apply (nulls, another type), for the general way.
    fn scatter<T: ArrowPrimitiveType>(
        &self,
        base: &PrimitiveArray<T>,
        value: &dyn Array,
    ) -> Option<ArrayRef> {
        let value = value.as_any().downcast_ref::<PrimitiveArray<T>>()?;
        if base.null_count() > 0 || value.null_count() > 0 {
            return None;
        }
        let mut values = base.values().to_vec();
        let new = value.values();
        for k in self.from..self.to {
            values[(self.patch.rows[k] - self.start) as usize] = new[k];
        }
        let array =
            PrimitiveArray::<T>::new(values.into(), None).with_data_type(base.data_type().clone());
        Some(Arc::new(array))
    }
}

/// The table a diff describes: `base` with the whole columns replaced by
/// the received ones and the patched columns rebuilt from the patch.
pub(crate) fn apply(name: &str, base: &Table, received: &Received<'_>) -> Result<Table, String> {
    let fields = base.schema().fields();
    check_columns(name, "diff", received.whole, fields.len())?;
    check_columns(name, "patch", received.patched, fields.len())?;
    if received.whole.iter().any(|c| received.patched.contains(c)) {
        return Err(format!(
            "table `{name}`: a column is both sent whole and patched"
        ));
    }
    let whole_rows: usize = received
        .whole_batches
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    if !received.whole.is_empty() && whole_rows != base.num_rows() {
        return Err(format!(
            "table `{name}`: diff has {whole_rows} rows, the base has {}",
            base.num_rows()
        ));
    }
    for batch in received.whole_batches {
        let got = batch.schema();
        let matches = got.fields().len() == received.whole.len()
            && got
                .fields()
                .iter()
                .zip(received.whole)
                .all(|(field, &c)| field == &fields[c]);
        if !matches {
            return Err(format!(
                "table `{name}`: diff columns do not match the base's schema"
            ));
        }
    }
    let patch = read_patch(name, base, received)?;
    #[derive(Clone, Copy)]
    enum Source {
        Base,
        Whole(usize),
        Patch(usize),
    }
    let mut sources = vec![Source::Base; fields.len()];
    for (i, &c) in received.whole.iter().enumerate() {
        sources[c] = Source::Whole(i);
    }
    for (i, &c) in received.patched.iter().enumerate() {
        sources[c] = Source::Patch(i);
    }
    // Without whole columns the base's own batches are the pieces.
    let pieces = if received.whole.is_empty() {
        pieces(base.batches(), base.batches())
    } else {
        pieces(received.whole_batches, base.batches())
    };
    let mut start = 0u64;
    let mut batches = Vec::with_capacity(pieces.len());
    for p in pieces {
        let mut piece_patch = patch
            .as_ref()
            .map(|patch| PiecePatch::new(patch, start, p.len));
        let columns = sources
            .iter()
            .enumerate()
            .map(|(c, source)| match source {
                Source::Whole(i) => Ok(piece_of(
                    &received.whole_batches[p.left_batch],
                    *i,
                    p.left_offset,
                    p.len,
                )),
                Source::Base => Ok(piece_of(
                    &base.batches()[p.right_batch],
                    c,
                    p.right_offset,
                    p.len,
                )),
                Source::Patch(i) => {
                    let column = piece_of(&base.batches()[p.right_batch], c, p.right_offset, p.len);
                    match piece_patch.as_mut() {
                        Some(piece) => {
                            let value = &piece.patch.values[*i];
                            piece.apply(column, value)
                        }
                        None => Ok(column),
                    }
                }
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(|e| format!("table `{name}`: {e}"))?;
        batches.push(
            RecordBatch::try_new(base.schema().clone(), columns)
                .map_err(|e| format!("table `{name}`: {e}"))?,
        );
        start += p.len as u64;
    }
    Table::new(name, base.schema().clone(), batches).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, Int64Array, StringArray};

    use super::*;

    /// `ids` with `value` everywhere but where `bumped` says, and `name`.
    fn batch_with(
        ids: std::ops::Range<i64>,
        value: f64,
        bumped: impl Fn(i64) -> bool,
        name: &str,
    ) -> RecordBatch {
        let n = (ids.end - ids.start) as usize;
        let values: Vec<f64> = ids
            .clone()
            .map(|i| if bumped(i) { value + 1.0 } else { value })
            .collect();
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(ids)) as ArrayRef,
            ),
            ("v", Arc::new(Float64Array::from(values)) as _),
            ("s", Arc::new(StringArray::from(vec![name; n])) as _),
        ])
        .unwrap()
    }

    fn batch(ids: std::ops::Range<i64>, value: f64, name: &str) -> RecordBatch {
        batch_with(ids, value, |_| false, name)
    }

    fn table(batches: Vec<RecordBatch>) -> Table {
        Table::new("t", batches[0].schema(), batches).unwrap()
    }

    fn rows(t: &Table) -> RecordBatch {
        concat_batches(t.schema(), t.batches()).unwrap()
    }

    /// What the parent rebuilds from `base` and what `diff` sends.
    fn round_trip(base: &Table, new: &Table, diff: &TableDiff) -> Table {
        let whole = project("t", new, &diff.whole).unwrap();
        let patch: Vec<RecordBatch> = diff.patch.iter().cloned().collect();
        let received = Received {
            whole: &diff.whole,
            whole_batches: whole.batches(),
            patched: &diff.patched,
            patch_batches: &patch,
        };
        apply("t", base, &received).unwrap()
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
    fn a_column_changed_everywhere_travels_whole_and_the_rest_is_shared() {
        let base = table(vec![batch(0..4096, 1.0, "a"), batch(4096..8192, 1.0, "a")]);
        // Same ids and names (other buffers, same values), every value new.
        let new = table(vec![batch(0..8192, 2.0, "a")]);
        let diff = diff_table("t", &new, &base, false).unwrap();
        assert_eq!(
            (diff.whole.clone(), diff.patched.clone()),
            (vec![1], vec![])
        );
        let back = round_trip(&base, &new, &diff);
        assert_eq!(rows(&back), rows(&new));
        // Unchanged columns are the base's buffers, not copies.
        let shared = back.batches()[1].column(0).to_data();
        assert!(shared.ptr_eq(&base.batches()[1].column(0).to_data()));
    }

    #[test]
    fn a_column_changed_in_a_few_rows_travels_as_those_rows() {
        let base = table(vec![batch(0..4096, 1.0, "a"), batch(4096..8192, 1.0, "a")]);
        let new = table(vec![
            batch_with(0..4096, 1.0, |i| i % 10 == 3, "a"),
            batch_with(4096..8192, 1.0, |i| i % 10 == 3, "a"),
        ]);
        let diff = diff_table("t", &new, &base, false).unwrap();
        assert_eq!(
            (diff.whole.clone(), diff.patched.clone()),
            (vec![], vec![1])
        );
        let patch = diff.patch.as_ref().unwrap();
        assert_eq!(patch.num_rows(), 819);
        assert_eq!(patch.schema().field(0).name(), PATCH_ROW);
        let positions = patch
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap();
        assert_eq!(&positions.values()[..3], &[3, 13, 23]);
        let back = round_trip(&base, &new, &diff);
        assert_eq!(rows(&back), rows(&new));
    }

    #[test]
    fn whole_and_patched_columns_mix() {
        let base = table(vec![batch(0..5000, 1.0, "a")]);
        // `v` moves in a fifth of the rows, `s` everywhere.
        let new = table(vec![batch_with(0..5000, 1.0, |i| i % 5 == 0, "b")]);
        let diff = diff_table("t", &new, &base, false).unwrap();
        assert_eq!(
            (diff.whole.clone(), diff.patched.clone()),
            (vec![2], vec![1])
        );
        assert_eq!(rows(&round_trip(&base, &new, &diff)), rows(&new));
        // Two patched columns changing in different rows: one patch with
        // the rows of both, or one of them whole once the union is too big.
        let strings = |f: fn(i64) -> bool| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(
                (0..5000).map(|i| if f(i) { "x" } else { "a" }),
            ))
        };
        let two = |vf: fn(i64) -> bool, sf: fn(i64) -> bool| {
            let b = batch_with(0..5000, 1.0, vf, "a");
            table(vec![
                RecordBatch::try_new(
                    b.schema(),
                    vec![b.column(0).clone(), b.column(1).clone(), strings(sf)],
                )
                .unwrap(),
            ])
        };
        let small = two(|i| i % 10 == 0, |i| i % 10 == 5);
        let diff = diff_table("t", &small, &base, false).unwrap();
        assert_eq!(diff.patched, vec![1, 2]);
        assert_eq!(diff.patch.as_ref().unwrap().num_rows(), 1000);
        assert_eq!(rows(&round_trip(&base, &small, &diff)), rows(&small));
        let big = two(|i| i % 4 == 0, |i| i % 4 == 2);
        let diff = diff_table("t", &big, &base, false).unwrap();
        assert_eq!(
            (diff.whole.clone(), diff.patched.clone()),
            (vec![2], vec![1])
        );
        assert_eq!(rows(&round_trip(&base, &big, &diff)), rows(&big));
    }

    #[test]
    fn identical_tables_change_nothing() {
        let base = table(vec![batch(0..5000, 1.0, "a")]);
        let none = TableDiff {
            whole: vec![],
            patched: vec![],
            patch: None,
            realign: None,
        };
        assert_eq!(diff_table("t", &base, &base, false), Some(none.clone()));
        let equal_values = table(vec![batch(0..5000, 1.0, "a")]);
        assert_eq!(
            diff_table("t", &equal_values, &base, false),
            Some(none.clone())
        );
        assert_eq!(rows(&round_trip(&base, &equal_values, &none)), rows(&base));
    }

    #[test]
    fn tables_that_do_not_line_up_are_sent_whole() {
        let base = table(vec![batch(0..5000, 1.0, "a")]);
        let longer = table(vec![batch(0..5001, 1.0, "a")]);
        assert_eq!(diff_table("t", &longer, &base, false), None);
        let other_schema = RecordBatch::try_from_iter([(
            "id",
            Arc::new(Int64Array::from_iter_values(0..5000)) as ArrayRef,
        )])
        .unwrap();
        assert_eq!(
            diff_table("t", &table(vec![other_schema]), &base, false),
            None
        );
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
        assert_eq!(diff_table("t", &shifted(300), &shifted(600), false), None);
        // The same boundaries, however short the batches: the parent's copy
        // is laid out as the child's own table is.
        assert!(diff_table("t", &shifted(300), &shifted(300), false).is_some());
    }

    #[test]
    fn a_diff_that_does_not_fit_its_base_is_refused() {
        let base = table(vec![batch(0..100, 1.0, "a")]);
        let new = table(vec![batch(0..100, 2.0, "a")]);
        let sent = project("t", &new, &[1]).unwrap();
        let whole = |columns: &[usize], batches: &[RecordBatch]| {
            let received = Received {
                whole: columns,
                whole_batches: batches,
                patched: &[],
                patch_batches: &[],
            };
            apply("t", &base, &received)
        };
        // Wrong column: a float diff for the id column.
        assert!(whole(&[0], sent.batches()).is_err());
        // Out of range, out of order.
        assert!(whole(&[7], sent.batches()).is_err());
        assert!(whole(&[2, 1], sent.batches()).is_err());
        // Too few rows.
        let short = project("t", &table(vec![batch(0..50, 2.0, "a")]), &[1]).unwrap();
        assert!(whole(&[1], short.batches()).is_err());

        // Patches whose positions are not increasing rows of the base.
        let patch = |positions: Vec<u64>| {
            let n = positions.len();
            RecordBatch::try_new(
                patch_schema(base.schema(), &[1]),
                vec![
                    Arc::new(UInt64Array::from(positions)) as ArrayRef,
                    Arc::new(Float64Array::from(vec![9.0; n])) as _,
                ],
            )
            .unwrap()
        };
        let patched = |batch: RecordBatch, whole: &[usize]| {
            let batches = [batch];
            let received = Received {
                whole,
                whole_batches: if whole.is_empty() {
                    &[]
                } else {
                    sent.batches()
                },
                patched: &[1],
                patch_batches: &batches,
            };
            apply("t", &base, &received)
        };
        assert!(patched(patch(vec![5, 3]), &[]).is_err());
        assert!(patched(patch(vec![5, 5]), &[]).is_err());
        assert!(patched(patch(vec![100]), &[]).is_err());
        // A column both whole and patched.
        assert!(patched(patch(vec![1]), &[1]).is_err());
        let ok = patched(patch(vec![0, 99]), &[]).unwrap();
        let v = rows(&ok);
        let v = v.column(1).as_any().downcast_ref::<Float64Array>().unwrap();
        assert_eq!((v.value(0), v.value(1), v.value(99)), (9.0, 1.0, 9.0));
    }

    mod realign {
        use super::*;
        use proptest::prelude::*;

        /// A table of host runs: each `(host, rows, value)` gives `rows`
        /// rows of `_host = host`, `id` = row number in the run and `v` =
        /// `value`, cut into batches of `batch` rows.
        fn hosts_table(runs: &[(u8, usize, i64)], batch: usize) -> Table {
            let (mut ids, mut values, mut hosts) = (Vec::new(), Vec::new(), Vec::new());
            for (host, rows, value) in runs {
                for r in 0..*rows {
                    ids.push(r as i64);
                    values.push(*value);
                    hosts.push(format!("h{host}"));
                }
            }
            let all = RecordBatch::try_from_iter([
                ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
                ("v", Arc::new(Int64Array::from(values)) as _),
                (origin::HOST, Arc::new(StringArray::from(hosts)) as _),
            ])
            .unwrap();
            let n = all.num_rows();
            let batches = if n == 0 {
                vec![all.slice(0, 0)]
            } else {
                (0..n)
                    .step_by(batch.max(1))
                    .map(|s| all.slice(s, batch.max(1).min(n - s)))
                    .collect()
            };
            Table::new("t", all.schema(), batches).unwrap()
        }

        /// What the parent rebuilds from `base` and a diff that may be
        /// realigned.
        fn rebuild(base: &Table, new: &Table, diff: &TableDiff) -> Table {
            let aligned;
            let base = match &diff.realign {
                None => base,
                Some(r) => {
                    aligned = realigned("t", base, &r.runs, r.inserted.batches(), &[8192]).unwrap();
                    &aligned
                }
            };
            if diff.whole.is_empty() && diff.patched.is_empty() {
                return base.clone();
            }
            round_trip(base, new, diff)
        }

        #[test]
        fn only_the_machine_that_changed_length_travels() {
            let base = hosts_table(&[(1, 100, 0), (2, 100, 0), (3, 100, 0)], 64);
            let new = hosts_table(&[(1, 100, 0), (2, 103, 0), (3, 100, 0)], 64);
            assert_eq!(diff_table("t", &new, &base, false), None);
            let diff = diff_table("t", &new, &base, true).unwrap();
            let realign = diff.realign.as_ref().unwrap();
            assert_eq!(realign.inserted.num_rows(), 103);
            assert_eq!(
                realign.runs,
                vec![(Some(0), 100), (None, 103), (Some(200), 100)]
            );
            assert!(diff.whole.is_empty() && diff.patched.is_empty());
            assert_eq!(rows(&rebuild(&base, &new, &diff)), rows(&new));
        }

        fn host_runs() -> impl Strategy<Value = Vec<(u8, usize, i64)>> {
            proptest::collection::vec((0..40u8, 0..12usize, 0..3i64), 0..30).prop_map(|runs| {
                // One run per host, as tiers merge them.
                let mut seen = std::collections::HashSet::new();
                runs.into_iter()
                    .filter(|(h, _, _)| seen.insert(*h))
                    .collect()
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            /// Hosts inserted, deleted, reordered, grown, shrunk and
            /// changed: the diff applied is exactly the new table.
            #[test]
            fn a_realigned_diff_applied_gives_exactly_the_new_table(
                before in host_runs(),
                edits in proptest::collection::vec((0..5u8, any::<prop::sample::Index>(), 0..12usize, 0..3i64), 0..12),
                base_batch in 1..50usize,
                new_batch in 1..50usize,
            ) {
                let mut after = before.clone();
                for (op, at, rows, value) in edits {
                    let len = after.len();
                    match op {
                        0 if len > 0 => { after.remove(at.index(len)); }
                        1 => {
                            let host = 100 + after.len() as u8;
                            after.insert(at.index(len + 1), (host, rows, value));
                        }
                        2 if len > 0 => { after[at.index(len)].1 = rows; }
                        3 if len > 0 => { after[at.index(len)].2 = value; }
                        4 if len > 1 => { let i = at.index(len); after.swap(i, (i + 1) % len); }
                        _ => {}
                    }
                }
                let base = hosts_table(&before, base_batch);
                let new = hosts_table(&after, new_batch);
                if let Some(diff) = diff_table("t", &new, &base, true) {
                    let back = rebuild(&base, &new, &diff);
                    prop_assert_eq!(rows(&back), rows(&new));
                }
            }
        }
    }
}
