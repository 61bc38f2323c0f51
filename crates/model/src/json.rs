//! Arrow rows as JSON, the one place every consumer (the HTTP answer,
//! alerts, reports, persistent-query events) turns batches into JSON, so
//! none of them needs the HTTP crate for it.

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{ArrowPrimitiveType, DataType, Float64Type, Int64Type, UInt64Type};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value;

/// Rows as JSON arrays in column order. Numbers stay numbers (integers stay
/// integral), booleans stay booleans, everything else is its display text.
pub fn batches_to_rows(
    batches: &[RecordBatch],
) -> Result<Vec<Vec<Value>>, arrow::error::ArrowError> {
    let mut rows = Vec::new();
    for batch in batches {
        let mut columns: Vec<std::vec::IntoIter<Value>> = batch
            .columns()
            .iter()
            .map(|c| column_values(c).map(Vec::into_iter))
            .collect::<Result<_, _>>()?;
        // Values move into their rows (a copy per value showed in profiles
        // of alert iterations).
        for _ in 0..batch.num_rows() {
            rows.push(
                columns
                    .iter_mut()
                    .map(|c| c.next().unwrap_or(Value::Null))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// Rows as JSON objects keyed by column name, the shape persistent-query
/// events take. Arrow's JSON writer decides the values (nulls are left out
/// of an object, timestamps are text).
pub fn batches_to_objects(batches: &[RecordBatch]) -> Result<Vec<Value>, arrow::error::ArrowError> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&bytes).map_err(|e| arrow::error::ArrowError::JsonError(e.to_string()))
}

fn column_values(array: &ArrayRef) -> Result<Vec<Value>, arrow::error::ArrowError> {
    let t = array.data_type();
    let values: Vec<Value> = if t.is_signed_integer() {
        widened::<Int64Type>(array, &DataType::Int64, Value::from)?
    } else if t.is_unsigned_integer() {
        widened::<UInt64Type>(array, &DataType::UInt64, Value::from)?
    } else if t.is_floating() {
        // NaN and infinities have no JSON number: null.
        widened::<Float64Type>(array, &DataType::Float64, |v| {
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
        })?
    } else if *t == DataType::Boolean {
        array
            .as_boolean()
            .iter()
            .map(|v| v.map_or(Value::Null, Value::Bool))
            .collect()
    } else if let Some(strings) = array.as_string_opt::<i32>() {
        // Strings are the common key columns of alert answers: taken as
        // they are instead of through the generic formatter.
        strings
            .iter()
            .map(|v| v.map_or(Value::Null, |s| Value::String(s.to_string())))
            .collect()
    } else {
        let options = FormatOptions::default();
        let formatter = ArrayFormatter::try_new(array.as_ref(), &options)?;
        // Logical nulls: an untyped `SELECT NULL` is a NullArray, which has
        // no validity buffer, so `is_null` would call its values present.
        let nulls = array.logical_nulls();
        (0..array.len())
            .map(|i| {
                if nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                    Value::Null
                } else {
                    Value::String(formatter.value(i).to_string())
                }
            })
            .collect()
    };
    Ok(values)
}

/// Casts `array` to the widest type of its kind and maps each value.
fn widened<T: ArrowPrimitiveType>(
    array: &ArrayRef,
    to: &DataType,
    value: impl Fn(T::Native) -> Value,
) -> Result<Vec<Value>, arrow::error::ArrowError> {
    let cast_array = cast(array, to)?;
    Ok(cast_array
        .as_primitive::<T>()
        .iter()
        .map(|v| v.map_or(Value::Null, &value))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn types_survive() {
        let batch = RecordBatch::try_from_iter([
            (
                "i",
                Arc::new(Int32Array::from(vec![Some(2), None])) as ArrayRef,
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![1.5, f64::NAN])) as ArrayRef,
            ),
            ("s", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
        ])
        .unwrap();
        let rows = batches_to_rows(&[batch]).unwrap();
        assert_eq!(
            rows[0],
            vec![Value::from(2), Value::from(1.5), Value::from("a")]
        );
        assert_eq!(rows[1][0], Value::Null);
        assert_eq!(rows[1][1], Value::Null);
    }

    #[test]
    fn objects_are_keyed_by_column() {
        let batch = RecordBatch::try_from_iter([
            (
                "i",
                Arc::new(Int32Array::from(vec![Some(2), None])) as ArrayRef,
            ),
            ("s", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
        ])
        .unwrap();
        let objects = batches_to_objects(&[batch.clone(), batch]).unwrap();
        assert_eq!(objects.len(), 4);
        assert_eq!(objects[0], serde_json::json!({"i": 2, "s": "a"}));
        assert_eq!(objects[1], serde_json::json!({"s": "b"}));
        assert!(batches_to_objects(&[]).unwrap().is_empty());
    }

    /// `SELECT NULL` answers a NullArray: JSON null, not an empty string.
    #[test]
    fn untyped_null_is_json_null() {
        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(arrow::array::NullArray::new(2)) as ArrayRef,
        )])
        .unwrap();
        let rows = batches_to_rows(&[batch]).unwrap();
        assert_eq!(rows, vec![vec![Value::Null], vec![Value::Null]]);
    }
}
