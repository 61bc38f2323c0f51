//! Schema union across publishers: the rules users rely on, documented in
//! the README ("Schemas"). Columns keep first-seen order; a column missing
//! from some rows becomes nullable and reads as null there; integers of
//! different widths widen to Int64, integers meeting floats widen to
//! Float64; a column that is all null (type Null) takes the other type.
//! Every other disagreement is a conflict.

use std::sync::Arc;

use arrow::array::{RecordBatch, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};

use crate::{ModelError, Result};

fn is_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
    )
}

fn is_float(t: &DataType) -> bool {
    matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64)
}

/// The type both sides fit in, or `None` when they do not fit together.
fn unify_types(a: &DataType, b: &DataType) -> Option<DataType> {
    if a == b {
        return Some(a.clone());
    }
    match (a, b) {
        (DataType::Null, other) | (other, DataType::Null) => Some(other.clone()),
        (x, y) if is_int(x) && is_int(y) => Some(DataType::Int64),
        (x, y) if (is_int(x) || is_float(x)) && (is_int(y) || is_float(y)) => {
            Some(DataType::Float64)
        }
        (DataType::Utf8, DataType::LargeUtf8) | (DataType::LargeUtf8, DataType::Utf8) => {
            Some(DataType::LargeUtf8)
        }
        (DataType::Utf8View, DataType::Utf8) | (DataType::Utf8, DataType::Utf8View) => {
            Some(DataType::Utf8)
        }
        _ => None,
    }
}

/// Unifies two field lists into `into`, naming `table` in a conflict.
pub fn unify_fields(table: &str, into: &mut Vec<Field>, incoming: &[FieldRef]) -> Result<()> {
    let present_before: Vec<String> = into.iter().map(|f| f.name().clone()).collect();
    for field in incoming {
        match into.iter_mut().find(|f| f.name() == field.name()) {
            Some(existing) => {
                let unified =
                    unify_types(existing.data_type(), field.data_type()).ok_or_else(|| {
                        ModelError::SchemaConflict {
                            table: table.to_string(),
                            column: field.name().clone(),
                            existing: existing.data_type().clone(),
                            incoming: field.data_type().clone(),
                        }
                    })?;
                let nullable = existing.is_nullable() || field.is_nullable();
                *existing = Field::new(existing.name(), unified, nullable);
            }
            None => {
                // Rows already merged lack this column: they read as null.
                let nullable = field.is_nullable() || !present_before.is_empty();
                into.push(Field::new(
                    field.name(),
                    field.data_type().clone(),
                    nullable,
                ));
            }
        }
    }
    // Columns the incoming rows lack read as null there.
    let incoming_names: Vec<&String> = incoming.iter().map(|f| f.name()).collect();
    for field in into.iter_mut() {
        if !incoming_names.contains(&field.name()) && !field.is_nullable() {
            *field = field.clone().with_nullable(true);
        }
    }
    Ok(())
}

/// The union of `schemas` under the rules above.
pub fn unify_schemas<'a>(
    table: &str,
    schemas: impl IntoIterator<Item = &'a SchemaRef>,
) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = Vec::new();
    let mut first = true;
    for schema in schemas {
        if first {
            fields = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            first = false;
            continue;
        }
        unify_fields(table, &mut fields, schema.fields())?;
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Rewrites `batch` to `target`: casts widened columns and fills absent
/// ones with nulls. Zero-copy when the batch already has the target schema.
pub fn conform_batch(table: &str, batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == target.fields() {
        return Ok(batch
            .clone()
            .with_schema(target.clone())
            .unwrap_or_else(|_| batch.clone()));
    }
    let source = batch.schema();
    let mut columns = Vec::with_capacity(target.fields().len());
    for field in target.fields() {
        let column = match source.index_of(field.name()) {
            Ok(i) => {
                let column = batch.column(i);
                if column.data_type() == field.data_type() {
                    column.clone()
                } else {
                    cast(column, field.data_type()).map_err(|e| ModelError::arrow(table, e))?
                }
            }
            Err(_) => new_null_array(field.data_type(), batch.num_rows()),
        };
        columns.push(column);
    }
    RecordBatch::try_new(target.clone(), columns).map_err(|e| ModelError::arrow(table, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), false))
                .collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn widens_ints_to_floats_and_keeps_order() {
        let a = schema(&[("a", DataType::Int64), ("b", DataType::Utf8)]);
        let b = schema(&[("c", DataType::Int32), ("a", DataType::Float64)]);
        let u = unify_schemas("t", [&a, &b]).unwrap();
        let names: Vec<_> = u.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(u.field(0).data_type(), &DataType::Float64);
        assert!(
            u.field(1).is_nullable(),
            "b is missing from the second schema"
        );
        assert!(
            u.field(2).is_nullable(),
            "c is missing from the first schema"
        );
        assert!(!u.field(0).is_nullable(), "a is present everywhere");
    }

    #[test]
    fn string_meeting_int_is_a_conflict_naming_the_column() {
        let a = schema(&[("a", DataType::Int64)]);
        let b = schema(&[("a", DataType::Utf8)]);
        let err = unify_schemas("disks", [&a, &b]).unwrap_err().to_string();
        assert!(err.contains("`a`") && err.contains("`disks`"), "{err}");
    }

    #[test]
    fn null_takes_the_other_type() {
        let a = schema(&[("a", DataType::Null)]);
        let b = schema(&[("a", DataType::Utf8)]);
        let u = unify_schemas("t", [&a, &b]).unwrap();
        assert_eq!(u.field(0).data_type(), &DataType::Utf8);
    }
}
