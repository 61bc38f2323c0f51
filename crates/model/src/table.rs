use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{Field, Schema, SchemaRef};

use crate::schema::{conform_batch, unify_fields};
use crate::{ModelError, Result};

/// Batches of at least half this length pass through a merge untouched;
/// shorter runs are concatenated up to it, so a generation of 100k machines
/// is a thousand batches for the query engine rather than 100k tiny ones.
/// It is the query engine's own batch size: longer batches would buy it
/// nothing, while every row concatenated is a copy on the merge's critical
/// path (batches decoded from Flight are a few thousand rows each).
const TARGET_BATCH_ROWS: usize = 8192;

/// One table: record batches that all have `schema`.
#[derive(Debug, Clone)]
pub struct Table {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    num_rows: usize,
    /// `memory_size`, worked out on first use: `/metrics` and `fleet_nodes`
    /// ask for it on every scrape, and a table of 10M rows has thousands
    /// of batches to walk.
    data_bytes: OnceLock<usize>,
}

impl Table {
    /// A table of `batches`, each conformed to `schema`.
    pub fn new(name: &str, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Self> {
        let batches = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| conform_batch(name, b, &schema))
            .collect::<Result<Vec<_>>>()?;
        let num_rows = batches.iter().map(RecordBatch::num_rows).sum();
        Ok(Table {
            schema,
            batches,
            num_rows,
            data_bytes: OnceLock::new(),
        })
    }

    pub fn empty(schema: SchemaRef) -> Self {
        Table {
            schema,
            batches: Vec::new(),
            num_rows: 0,
            data_bytes: OnceLock::new(),
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    pub fn num_rows(&self) -> usize {
        self.num_rows
    }

    /// Bytes of Arrow data this table's rows hold. A batch sliced from a
    /// larger one, or decoded in place from a Flight message, counts only
    /// its own share of the buffers it points into.
    pub fn memory_size(&self) -> usize {
        *self
            .data_bytes
            .get_or_init(|| self.batches.iter().map(batch_data_bytes).sum())
    }
}

/// Bytes of data `batch`'s rows hold, counting a slice's share of its
/// buffers only (`RecordBatch::get_array_memory_size` counts whole buffers,
/// which for a slice can be many times its rows).
pub fn batch_data_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

/// Merges the parts of one table that several children sent.
///
/// Returns the merged table and the indexes of parts left out because their
/// schema conflicts with the parts before them (with the reason), so one
/// machine publishing a wrong type cannot take the table away from the
/// rest of the fleet.
pub fn merge_tables(name: &str, parts: &[&Table]) -> Result<(Table, Vec<(usize, ModelError)>)> {
    let mut fields: Vec<Field> = Vec::new();
    let mut accepted = Vec::with_capacity(parts.len());
    let mut rejected = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if accepted.is_empty() {
            fields = part
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            accepted.push(*part);
            continue;
        }
        let mut candidate = fields.clone();
        match unify_fields(name, &mut candidate, part.schema.fields()) {
            Ok(()) => {
                fields = candidate;
                accepted.push(*part);
            }
            Err(e) => rejected.push((i, e)),
        }
    }
    let schema = Arc::new(Schema::new(fields));
    if accepted.len() == 1 && accepted[0].schema.fields() == schema.fields() {
        return Ok(((*accepted[0]).clone(), rejected));
    }
    let mut batches = Vec::new();
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0;
    let flush = |pending: &mut Vec<RecordBatch>, batches: &mut Vec<RecordBatch>| -> Result<()> {
        match pending.len() {
            0 => {}
            1 => batches.append(pending),
            _ => {
                let joined = concat_batches(&schema, pending.iter())
                    .map_err(|e| ModelError::arrow(name, e))?;
                pending.clear();
                batches.push(joined);
            }
        }
        Ok(())
    };
    for part in &accepted {
        for batch in &part.batches {
            let batch = conform_batch(name, batch, &schema)?;
            if batch.num_rows() >= TARGET_BATCH_ROWS / 2 {
                batches.push(batch);
                continue;
            }
            pending_rows += batch.num_rows();
            pending.push(batch);
            if pending_rows >= TARGET_BATCH_ROWS {
                flush(&mut pending, &mut batches)?;
                pending_rows = 0;
            }
        }
    }
    flush(&mut pending, &mut batches)?;
    let num_rows = batches.iter().map(RecordBatch::num_rows).sum();
    Ok((
        Table {
            schema,
            batches,
            num_rows,
            data_bytes: OnceLock::new(),
        },
        rejected,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::DataType;

    fn table(cols: Vec<(&str, Arc<dyn Array>)>) -> Table {
        let batch = RecordBatch::try_from_iter(cols).unwrap();
        Table::new("t", batch.schema(), vec![batch]).unwrap()
    }

    #[test]
    fn merge_unifies_and_fills_nulls() {
        let a = table(vec![("x", Arc::new(Int64Array::from(vec![1, 2])))]);
        let b = table(vec![
            ("x", Arc::new(Float64Array::from(vec![0.5]))),
            ("y", Arc::new(StringArray::from(vec!["q"]))),
        ]);
        let (merged, rejected) = merge_tables("t", &[&a, &b]).unwrap();
        assert!(rejected.is_empty());
        assert_eq!(merged.num_rows(), 3);
        assert_eq!(merged.schema().field(0).data_type(), &DataType::Float64);
        let batch = &merged.batches()[0];
        assert_eq!(batch.column(1).null_count(), 2);
    }

    #[test]
    fn conflicting_part_is_left_out_not_the_table() {
        let a = table(vec![("x", Arc::new(Int64Array::from(vec![1])))]);
        let b = table(vec![("x", Arc::new(StringArray::from(vec!["oops"])))]);
        let c = table(vec![("x", Arc::new(Int64Array::from(vec![3])))]);
        let (merged, rejected) = merge_tables("t", &[&a, &b, &c]).unwrap();
        assert_eq!(merged.num_rows(), 2);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].0, 1);
    }

    #[test]
    fn small_batches_are_coalesced() {
        let parts: Vec<Table> = (0..100)
            .map(|i| table(vec![("x", Arc::new(Int64Array::from(vec![i; 10])))]))
            .collect();
        let refs: Vec<&Table> = parts.iter().collect();
        let (merged, _) = merge_tables("t", &refs).unwrap();
        assert_eq!(merged.num_rows(), 1000);
        assert_eq!(merged.batches().len(), 1);
    }
}
