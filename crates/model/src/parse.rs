//! Turning publisher input (CSV, TSV, NDJSON, Arrow IPC stream) into one
//! record batch with inferred types. Shared by the agent's publish API, its
//! file-drop directory and the TLA's static tables, so a file means the same
//! wherever it is dropped.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::{Schema, SchemaRef};

use crate::validate_column_name;

/// Input formats a publisher may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Csv,
    Tsv,
    NdJson,
    ArrowStream,
}

impl InputFormat {
    /// From an HTTP `Content-Type` (parameters such as `charset` ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let mime = content_type.split(';').next().unwrap_or("").trim();
        match mime.to_ascii_lowercase().as_str() {
            "text/csv" => Some(InputFormat::Csv),
            "text/tab-separated-values" => Some(InputFormat::Tsv),
            "application/x-ndjson" | "application/jsonl" | "application/json" => {
                Some(InputFormat::NdJson)
            }
            "application/vnd.apache.arrow.stream" => Some(InputFormat::ArrowStream),
            _ => None,
        }
    }

    /// From a file extension (`csv`, `tsv`, `jsonl`, `ndjson`, `json`, `arrows`).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "csv" => Some(InputFormat::Csv),
            "tsv" => Some(InputFormat::Tsv),
            "jsonl" | "ndjson" | "json" => Some(InputFormat::NdJson),
            "arrows" => Some(InputFormat::ArrowStream),
            _ => None,
        }
    }
}

/// Why input could not be read, in words a publisher can act on.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the body is empty; send at least one row")]
    Empty,
    #[error("malformed {format}: {message}")]
    Malformed {
        format: &'static str,
        message: String,
    },
    #[error(transparent)]
    Name(#[from] crate::ModelError),
}

fn malformed(format: &'static str, e: impl std::fmt::Display) -> ParseError {
    ParseError::Malformed {
        format,
        message: e.to_string(),
    }
}

/// Parses `body` into one batch. Integers stay integers (Int64), so
/// `(100*bavail)/blocks` keeps the seed's whole-number arithmetic.
pub fn parse_rows(
    format: InputFormat,
    body: &[u8],
) -> std::result::Result<RecordBatch, ParseError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let batch = match format {
        InputFormat::Csv => parse_delimited(body, b',', "CSV")?,
        InputFormat::Tsv => parse_delimited(body, b'\t', "TSV")?,
        InputFormat::NdJson => parse_ndjson(body)?,
        InputFormat::ArrowStream => parse_arrow_stream(body)?,
    };
    for field in batch.schema().fields() {
        validate_column_name(field.name())?;
    }
    Ok(batch)
}

fn parse_delimited(
    body: &[u8],
    delimiter: u8,
    name: &'static str,
) -> std::result::Result<RecordBatch, ParseError> {
    use arrow::csv::ReaderBuilder;
    use arrow::csv::reader::Format;
    let format = Format::default()
        .with_header(true)
        .with_delimiter(delimiter);
    let (schema, _) = format
        .infer_schema(Cursor::new(body), None)
        .map_err(|e| malformed(name, e))?;
    if schema.fields().is_empty() {
        return Err(malformed(name, "no header line"));
    }
    let schema = Arc::new(schema);
    let reader = ReaderBuilder::new(schema.clone())
        .with_format(format)
        .build(Cursor::new(body))
        .map_err(|e| malformed(name, e))?;
    collect(schema, reader, name)
}

fn parse_ndjson(body: &[u8]) -> std::result::Result<RecordBatch, ParseError> {
    use arrow::json::ReaderBuilder;
    use arrow::json::reader::infer_json_schema_from_seekable;
    let (schema, _) = infer_json_schema_from_seekable(Cursor::new(body), None)
        .map_err(|e| malformed("NDJSON", e))?;
    if schema.fields().is_empty() {
        return Err(malformed(
            "NDJSON",
            "no fields: send one JSON object per line",
        ));
    }
    let schema = Arc::new(schema);
    let reader = ReaderBuilder::new(schema.clone())
        .build(Cursor::new(body))
        .map_err(|e| malformed("NDJSON", e))?;
    collect(schema, reader, "NDJSON")
}

fn parse_arrow_stream(body: &[u8]) -> std::result::Result<RecordBatch, ParseError> {
    let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(body), None)
        .map_err(|e| malformed("Arrow IPC stream", e))?;
    let schema = reader.schema();
    collect(schema, reader, "Arrow IPC stream")
}

fn collect(
    schema: SchemaRef,
    reader: impl Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>>,
    name: &'static str,
) -> std::result::Result<RecordBatch, ParseError> {
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| malformed(name, e))?;
    concat_batches(&schema, &batches).map_err(|e| malformed(name, e))
}

/// An empty batch of `schema`; handy for publishers with nothing to say.
pub fn empty_batch(schema: &Schema) -> RecordBatch {
    RecordBatch::new_empty(Arc::new(schema.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;

    #[test]
    fn csv_keeps_integers() {
        let b = parse_rows(InputFormat::Csv, b"ip,rss\n10.0.0.1,100\n10.0.0.2,200\n").unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.schema().field(1).data_type(), &DataType::Int64);
    }

    #[test]
    fn ndjson_widens_mixed_numbers_and_rejects_conflicts() {
        let b = parse_rows(InputFormat::NdJson, b"{\"a\":1}\n{\"a\":2.5}\n").unwrap();
        assert_eq!(b.schema().field(0).data_type(), &DataType::Float64);
        assert!(parse_rows(InputFormat::NdJson, b"{\"a\":1}\n{\"a\":\n").is_err());
    }

    #[test]
    fn empty_and_reserved_columns_are_refused() {
        assert!(matches!(
            parse_rows(InputFormat::Csv, b"  \n"),
            Err(ParseError::Empty)
        ));
        assert!(parse_rows(InputFormat::Csv, b"_host,x\na,1\n").is_err());
    }
}
