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
    /// The input is within the body size but over one of [`ParseLimits`].
    #[error("{what} is over the limit of {max} (setting `{setting}`)")]
    Limit {
        /// What was too deep or too many.
        what: String,
        /// The limit in force.
        max: usize,
        /// The agent setting that sets it.
        setting: &'static str,
    },
    #[error(transparent)]
    Name(#[from] crate::ModelError),
}

/// Bounds on one publish (an HTTP body or a drop file), beyond its size in
/// bytes: what a small body can still make the node allocate or recurse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParseLimits {
    /// Columns of one table.
    pub max_columns: usize,
    /// Rows of one publish.
    pub max_rows: usize,
    /// Nesting of NDJSON objects and arrays.
    pub max_json_depth: usize,
    /// Bytes an Arrow IPC stream may decode to: compressed buffers declare
    /// their uncompressed length and the reader allocates it up front, so
    /// a few bytes declaring 2^60 would abort the process.
    pub max_decoded_bytes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_columns: 1024,
            max_rows: 1_000_000,
            max_json_depth: 64,
            max_decoded_bytes: 256 * 1024 * 1024,
        }
    }
}

fn over(what: String, max: usize, setting: &'static str) -> ParseError {
    ParseError::Limit { what, max, setting }
}

fn malformed(format: &'static str, e: impl std::fmt::Display) -> ParseError {
    ParseError::Malformed {
        format,
        message: e.to_string(),
    }
}

/// Parses `body` into one batch under the default [`ParseLimits`].
/// Integers stay integers (Int64), so `(100*bavail)/blocks` keeps the
/// seed's whole-number arithmetic.
pub fn parse_rows(
    format: InputFormat,
    body: &[u8],
) -> std::result::Result<RecordBatch, ParseError> {
    parse_rows_limited(format, body, &ParseLimits::default())
}

/// [`parse_rows`] under `limits`.
pub fn parse_rows_limited(
    format: InputFormat,
    body: &[u8],
    limits: &ParseLimits,
) -> std::result::Result<RecordBatch, ParseError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let batch = match format {
        InputFormat::Csv => parse_delimited(body, b',', "CSV", limits)?,
        InputFormat::Tsv => parse_delimited(body, b'\t', "TSV", limits)?,
        InputFormat::NdJson => parse_ndjson(body, limits)?,
        InputFormat::ArrowStream => parse_arrow_stream(body, limits)?,
    };
    for field in batch.schema().fields() {
        validate_column_name(field.name())?;
    }
    Ok(batch)
}

fn check_columns(schema: &Schema, limits: &ParseLimits) -> std::result::Result<(), ParseError> {
    if schema.fields().len() > limits.max_columns {
        return Err(over(
            format!("{} columns", schema.fields().len()),
            limits.max_columns,
            "limits.max_columns",
        ));
    }
    Ok(())
}

fn parse_delimited(
    body: &[u8],
    delimiter: u8,
    name: &'static str,
    limits: &ParseLimits,
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
    check_columns(&schema, limits)?;
    let schema = Arc::new(schema);
    let reader = ReaderBuilder::new(schema.clone())
        .with_format(format)
        .build(Cursor::new(body))
        .map_err(|e| malformed(name, e))?;
    collect(schema, reader, name, limits)
}

/// Refuses JSON nested deeper than the limit before any parser sees it:
/// schema inference and the decoders recurse once per level. The scan
/// keeps a counter only (brackets inside strings do not count).
fn check_json_depth(body: &[u8], limits: &ParseLimits) -> std::result::Result<(), ParseError> {
    let (mut depth, mut line, mut in_string, mut escaped) = (0usize, 1usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limits.max_json_depth {
                    return Err(over(
                        format!("JSON nesting on line {line}"),
                        limits.max_json_depth,
                        "limits.max_json_depth",
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'\n' => {
                line += 1;
                // Each line is its own document.
                depth = 0;
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_ndjson(body: &[u8], limits: &ParseLimits) -> std::result::Result<RecordBatch, ParseError> {
    use arrow::json::ReaderBuilder;
    use arrow::json::reader::infer_json_schema_from_seekable;
    check_json_depth(body, limits)?;
    let (schema, _) = infer_json_schema_from_seekable(Cursor::new(body), None)
        .map_err(|e| malformed("NDJSON", e))?;
    if schema.fields().is_empty() {
        return Err(malformed(
            "NDJSON",
            "no fields: send one JSON object per line",
        ));
    }
    check_columns(&schema, limits)?;
    let schema = Arc::new(schema);
    let reader = ReaderBuilder::new(schema.clone())
        .build(Cursor::new(body))
        .map_err(|e| malformed("NDJSON", e))?;
    collect(schema, reader, "NDJSON", limits)
}

const IPC: &str = "Arrow IPC stream";

fn parse_arrow_stream(
    body: &[u8],
    limits: &ParseLimits,
) -> std::result::Result<RecordBatch, ParseError> {
    check_ipc(body, limits)?;
    // Arrow's IPC reader asserts on some malformed messages (a validity
    // buffer shorter than its column): a body anyone may post is an error,
    // never a panic.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(body), None)
            .map_err(|e| malformed(IPC, e))?;
        let schema = reader.schema();
        collect(schema, reader, IPC, limits)
    }))
    .unwrap_or_else(|panic| {
        Err(malformed(
            IPC,
            format!(
                "the decoder failed on a malformed message ({})",
                crate::panic_message(panic.as_ref())
            ),
        ))
    })
}

/// Walks the stream's messages before arrow's reader does and checks what
/// they declare against the body and the limits. The reader trusts the
/// declarations: it allocates each message's `bodyLength` and each
/// compressed buffer's uncompressed length up front (arrow-ipc has no
/// option to bound them), so a 100-byte body declaring 2^60 bytes would
/// abort the process on a failed allocation.
fn check_ipc(body: &[u8], limits: &ParseLimits) -> std::result::Result<(), ParseError> {
    use arrow::ipc::MessageHeader;
    let i32_at = |pos: usize| -> std::result::Result<i32, ParseError> {
        body.get(pos..pos + 4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_le_bytes)
            .ok_or_else(|| malformed(IPC, "the stream ends inside a message length"))
    };
    let mut pos = 0usize;
    let mut decoded = 0usize;
    let mut rows = 0usize;
    while pos < body.len() {
        let mut meta_len = i32_at(pos)?;
        pos += 4;
        // The continuation marker precedes the length since format 0.15.
        if meta_len == -1 {
            meta_len = i32_at(pos)?;
            pos += 4;
        }
        if meta_len == 0 {
            break;
        }
        let meta_len = usize::try_from(meta_len)
            .map_err(|_| malformed(IPC, format!("negative message length {meta_len}")))?;
        let meta = body.get(pos..pos.saturating_add(meta_len)).ok_or_else(|| {
            malformed(
                IPC,
                format!(
                    "a message declares {meta_len} bytes of metadata but {} follow",
                    body.len() - pos
                ),
            )
        })?;
        pos += meta_len;
        let message = arrow::ipc::root_as_message(meta)
            .map_err(|e| malformed(IPC, format!("unreadable message: {e}")))?;
        let body_len = usize::try_from(message.bodyLength())
            .ok()
            .filter(|l| *l <= body.len() - pos)
            .ok_or_else(|| {
                malformed(
                    IPC,
                    format!(
                        "a message declares a body of {} bytes but {} follow",
                        message.bodyLength(),
                        body.len() - pos
                    ),
                )
            })?;
        let message_body = &body[pos..pos + body_len];
        pos += body_len;
        match message.header_type() {
            MessageHeader::Schema => {
                let columns = message
                    .header_as_schema()
                    .and_then(|s| s.fields())
                    .map_or(0, |f| f.len());
                if columns > limits.max_columns {
                    return Err(over(
                        format!("{columns} columns"),
                        limits.max_columns,
                        "limits.max_columns",
                    ));
                }
            }
            MessageHeader::RecordBatch => {
                if let Some(batch) = message.header_as_record_batch() {
                    let length = usize::try_from(batch.length()).unwrap_or(usize::MAX);
                    rows = rows.saturating_add(length);
                    if rows > limits.max_rows {
                        return Err(over(
                            format!("a stream of at least {rows} rows"),
                            limits.max_rows,
                            "limits.max_rows",
                        ));
                    }
                    check_ipc_batch(&batch, message_body, limits, &mut decoded)?;
                }
            }
            MessageHeader::DictionaryBatch => {
                if let Some(batch) = message.header_as_dictionary_batch().and_then(|d| d.data()) {
                    check_ipc_batch(&batch, message_body, limits, &mut decoded)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks what one Arrow IPC message as Arrow Flight carries it (its
/// flatbuffer header and its body apart) declares, before arrow's decoder
/// allocates it: every buffer lies inside the body, and the bytes its
/// buffers decode to (a compressed buffer's declared uncompressed length)
/// stay within `max_decoded_bytes`. The decoder trusts those declarations,
/// and a failed allocation aborts the process, which no `catch_unwind` can
/// stop: a peer's 2^60-byte declaration must be refused here.
pub fn check_ipc_message(
    header: &[u8],
    body: &[u8],
    max_decoded_bytes: usize,
) -> std::result::Result<(), ParseError> {
    use arrow::ipc::MessageHeader;
    if header.is_empty() {
        return Ok(());
    }
    let message = arrow::ipc::root_as_message(header)
        .map_err(|e| malformed(IPC, format!("unreadable message: {e}")))?;
    let limits = ParseLimits {
        max_decoded_bytes,
        ..ParseLimits::default()
    };
    let mut decoded = 0;
    let batch = match message.header_type() {
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => {
            message.header_as_dictionary_batch().and_then(|d| d.data())
        }
        _ => None,
    };
    match batch {
        Some(batch) => check_ipc_batch(&batch, body, &limits, &mut decoded),
        None => Ok(()),
    }
}

fn check_ipc_batch(
    batch: &arrow::ipc::RecordBatch<'_>,
    body: &[u8],
    limits: &ParseLimits,
    decoded: &mut usize,
) -> std::result::Result<(), ParseError> {
    let too_big = |n: usize| {
        over(
            format!("a stream that decodes to at least {n} bytes"),
            limits.max_decoded_bytes,
            "limits.max_decoded_bytes",
        )
    };
    // Value counts of nested columns (a null column has no buffers to
    // check) are bounded like bytes: nothing real has more values than bytes.
    for node in batch.nodes().iter().flatten() {
        let values = usize::try_from(node.length()).unwrap_or(usize::MAX);
        if values > limits.max_decoded_bytes {
            return Err(over(
                format!("a column of {values} values"),
                limits.max_decoded_bytes,
                "limits.max_decoded_bytes",
            ));
        }
    }
    let compressed = batch.compression().is_some();
    for buffer in batch.buffers().iter().flatten() {
        let (Ok(offset), Ok(length)) = (
            usize::try_from(buffer.offset()),
            usize::try_from(buffer.length()),
        ) else {
            return Err(malformed(IPC, "a buffer with a negative offset or length"));
        };
        let Some(bytes) = body.get(offset..offset.saturating_add(length)) else {
            return Err(malformed(
                IPC,
                format!(
                    "a buffer at {offset}+{length} lies outside its message body of {} bytes",
                    body.len()
                ),
            ));
        };
        // A compressed buffer starts with its uncompressed length (-1:
        // stored uncompressed, the rest follows as is).
        let size = match bytes.get(..8).filter(|_| compressed) {
            Some(prefix) => {
                let declared = i64::from_le_bytes(prefix.try_into().unwrap_or([0; 8]));
                if declared < 0 {
                    length - 8
                } else {
                    usize::try_from(declared).unwrap_or(usize::MAX)
                }
            }
            None => length,
        };
        *decoded = decoded.saturating_add(size);
        if *decoded > limits.max_decoded_bytes {
            return Err(too_big(*decoded));
        }
    }
    Ok(())
}

fn collect(
    schema: SchemaRef,
    reader: impl Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>>,
    name: &'static str,
    limits: &ParseLimits,
) -> std::result::Result<RecordBatch, ParseError> {
    let mut batches = Vec::new();
    let mut rows = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| malformed(name, e))?;
        rows += batch.num_rows();
        // Stops reading at the first batch over: the rest is never decoded.
        if rows > limits.max_rows {
            return Err(over(
                format!("at least {rows} rows"),
                limits.max_rows,
                "limits.max_rows",
            ));
        }
        batches.push(batch);
    }
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

    fn limit_setting(e: ParseError) -> &'static str {
        match e {
            ParseError::Limit { setting, .. } => setting,
            other => panic!("not a limit: {other}"),
        }
    }

    #[test]
    fn limit_ndjson_nesting_just_over_is_refused() {
        let limits = ParseLimits {
            max_json_depth: 4,
            ..ParseLimits::default()
        };
        let at = b"{\"a\":{\"b\":[[1]]}}\n";
        parse_rows_limited(InputFormat::NdJson, at, &limits).unwrap();
        let over = b"{\"a\":{\"b\":[[[1]]]}}\n";
        let e = parse_rows_limited(InputFormat::NdJson, over, &limits).unwrap_err();
        assert!(e.to_string().contains("limit of 4"), "{e}");
        assert_eq!(limit_setting(e), "limits.max_json_depth");
        // Brackets inside strings are text.
        parse_rows_limited(InputFormat::NdJson, b"{\"a\":\"[[[[[[\\\"\"}\n", &limits).unwrap();
        // A million levels: refused by the scan, not by a stack overflow.
        let deep = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(1_000_000),
            "]".repeat(1_000_000)
        );
        let e = parse_rows(InputFormat::NdJson, deep.as_bytes()).unwrap_err();
        assert_eq!(limit_setting(e), "limits.max_json_depth");
    }

    #[test]
    fn limit_columns_and_rows_just_over_are_refused() {
        let limits = ParseLimits {
            max_columns: 3,
            max_rows: 2,
            ..ParseLimits::default()
        };
        parse_rows_limited(InputFormat::Csv, b"a,b,c\n1,2,3\n4,5,6\n", &limits).unwrap();
        let e = parse_rows_limited(InputFormat::Csv, b"a,b,c,d\n1,2,3,4\n", &limits).unwrap_err();
        assert_eq!(limit_setting(e), "limits.max_columns");
        let e = parse_rows_limited(InputFormat::Csv, b"a\n1\n2\n3\n", &limits).unwrap_err();
        assert!(e.to_string().contains("rows"), "{e}");
        assert_eq!(limit_setting(e), "limits.max_rows");
        let e = parse_rows_limited(
            InputFormat::NdJson,
            b"{\"a\":1,\"b\":1,\"c\":1,\"d\":1}\n",
            &limits,
        )
        .unwrap_err();
        assert_eq!(limit_setting(e), "limits.max_columns");
        let e = parse_rows_limited(
            InputFormat::NdJson,
            b"{\"a\":1}\n{\"a\":1}\n{\"a\":1}\n",
            &limits,
        )
        .unwrap_err();
        assert_eq!(limit_setting(e), "limits.max_rows");
        let wide = ipc(4, 1, None);
        let e = parse_rows_limited(InputFormat::ArrowStream, &wide, &limits).unwrap_err();
        assert_eq!(limit_setting(e), "limits.max_columns");
        let long = ipc(1, 3, None);
        let e = parse_rows_limited(InputFormat::ArrowStream, &long, &limits).unwrap_err();
        assert_eq!(limit_setting(e), "limits.max_rows");
        parse_rows_limited(InputFormat::ArrowStream, &ipc(3, 2, None), &limits).unwrap();
    }

    /// An IPC stream of `columns` Int64 columns of `rows` rows.
    fn ipc(
        columns: usize,
        rows: usize,
        compression: Option<arrow::ipc::CompressionType>,
    ) -> Vec<u8> {
        use arrow::array::Int64Array;
        use arrow::datatypes::Field;
        use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
        let fields: Vec<Field> = (0..columns)
            .map(|i| Field::new(format!("c{i}"), DataType::Int64, false))
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let arrays = (0..columns)
            .map(|_| Arc::new(Int64Array::from(vec![7; rows])) as arrow::array::ArrayRef)
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), arrays).unwrap();
        let options = IpcWriteOptions::default()
            .try_with_compression(compression)
            .unwrap();
        let mut out = Vec::new();
        let mut w = StreamWriter::try_new_with_options(&mut out, &schema, options).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        drop(w);
        out
    }

    /// Where each buffer of the stream's first record batch starts in `stream`.
    fn batch_buffers(stream: &[u8]) -> Vec<(usize, usize)> {
        let mut pos = 0;
        loop {
            let mut len = i32::from_le_bytes(stream[pos..pos + 4].try_into().unwrap());
            pos += 4;
            if len == -1 {
                len = i32::from_le_bytes(stream[pos..pos + 4].try_into().unwrap());
                pos += 4;
            }
            let meta = &stream[pos..pos + len as usize];
            pos += len as usize;
            let message = arrow::ipc::root_as_message(meta).unwrap();
            if let Some(batch) = message.header_as_record_batch() {
                return batch
                    .buffers()
                    .unwrap()
                    .iter()
                    .map(|b| (pos + b.offset() as usize, b.length() as usize))
                    .collect();
            }
            pos += message.bodyLength() as usize;
        }
    }

    #[test]
    fn limit_compressed_ipc_declaring_a_huge_length_is_refused_before_allocating() {
        for codec in [
            arrow::ipc::CompressionType::LZ4_FRAME,
            arrow::ipc::CompressionType::ZSTD,
        ] {
            let mut stream = ipc(2, 100, Some(codec));
            // Untouched, it reads.
            let b = parse_rows(InputFormat::ArrowStream, &stream).unwrap();
            assert_eq!(b.num_rows(), 100);
            let (at, len) = *batch_buffers(&stream)
                .iter()
                .find(|(_, l)| *l >= 8)
                .unwrap();
            assert!(len >= 8);
            // 2^60 bytes: the reader would try to allocate them at once.
            stream[at..at + 8].copy_from_slice(&(1i64 << 60).to_le_bytes());
            let e = parse_rows(InputFormat::ArrowStream, &stream).unwrap_err();
            assert!(e.to_string().contains("decodes to at least"), "{e}");
            assert_eq!(limit_setting(e), "limits.max_decoded_bytes");
            // Just over a small limit, too.
            let stream = ipc(2, 100, Some(codec));
            let limits = ParseLimits {
                max_decoded_bytes: 2 * 100 * 8 - 1,
                ..ParseLimits::default()
            };
            let e = parse_rows_limited(InputFormat::ArrowStream, &stream, &limits).unwrap_err();
            assert_eq!(limit_setting(e), "limits.max_decoded_bytes");
        }
    }

    #[test]
    fn ipc_declaring_more_body_than_it_has_is_malformed_not_allocated() {
        let stream = ipc(1, 10, None);
        for cut in [3, 7, 20, stream.len() - 20] {
            let e = parse_rows(InputFormat::ArrowStream, &stream[..cut]).unwrap_err();
            assert!(matches!(e, ParseError::Malformed { .. }), "{cut}: {e}");
        }
    }
}
