//! Property tests of the publish decoders (issue 17 item 7): random bytes
//! and mutations of valid CSV, TSV, NDJSON and Arrow IPC bodies, each
//! answered Ok or an error, never a panic, and within the limits (the
//! limits are small here, so bounded memory is checked too).

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::ipc::CompressionType;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use fleetsql_model::parse::{InputFormat, ParseLimits, parse_rows_limited};
use proptest::prelude::*;

const FORMATS: [InputFormat; 4] = [
    InputFormat::Csv,
    InputFormat::Tsv,
    InputFormat::NdJson,
    InputFormat::ArrowStream,
];

fn limits() -> ParseLimits {
    ParseLimits {
        max_columns: 16,
        max_rows: 64,
        max_json_depth: 8,
        max_decoded_bytes: 1 << 20,
    }
}

/// Holds if `batch` is within `limits`: an answer never exceeds them.
fn within(batch: &RecordBatch, limits: &ParseLimits) -> bool {
    batch.num_columns() <= limits.max_columns && batch.num_rows() <= limits.max_rows
}

fn decode(format: InputFormat, body: &[u8]) {
    let limits = limits();
    if let Ok(batch) = parse_rows_limited(format, body, &limits) {
        assert!(
            within(&batch, &limits),
            "{format:?} answered over its limits"
        );
    }
}

/// A small valid body of each format.
fn valid(format: InputFormat, rows: usize, compression: Option<CompressionType>) -> Vec<u8> {
    match format {
        InputFormat::Csv | InputFormat::Tsv => {
            let sep = if matches!(format, InputFormat::Csv) {
                ","
            } else {
                "\t"
            };
            let mut body = format!("host{sep}load{sep}n\n");
            for i in 0..rows {
                body.push_str(&format!("h{i}{sep}{}.5{sep}{i}\n", i % 7));
            }
            body.into_bytes()
        }
        InputFormat::NdJson => (0..rows)
            .map(|i| format!("{{\"host\":\"h{i}\",\"load\":{i}.5,\"tags\":{{\"a\":[{i},2]}}}}\n"))
            .collect::<String>()
            .into_bytes(),
        InputFormat::ArrowStream => {
            let columns: Vec<(&str, ArrayRef)> = vec![
                (
                    "host",
                    Arc::new(StringArray::from_iter_values(
                        (0..rows).map(|i| format!("h{i}")),
                    )),
                ),
                (
                    "load",
                    Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64))),
                ),
                ("n", Arc::new(Int64Array::from_iter_values(0..rows as i64))),
            ];
            let batch = RecordBatch::try_from_iter(columns).expect("test batch");
            let options = IpcWriteOptions::default()
                .try_with_compression(compression)
                .expect("compression");
            let mut body = Vec::new();
            let mut writer =
                StreamWriter::try_new_with_options(&mut body, &batch.schema(), options)
                    .expect("writer");
            writer.write(&batch).expect("write");
            writer.finish().expect("finish");
            drop(writer);
            body
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bits: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// Overwrites 8 bytes with a huge little-endian number: declared
    /// lengths, counts and offsets.
    Huge {
        at: usize,
        value: u64,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Mutation::Flip { at, bits }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..32usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (
            any::<usize>(),
            prop_oneof![Just(u64::MAX), Just(1 << 60), Just(1 << 31), any::<u64>()]
        )
            .prop_map(|(at, value)| Mutation::Huge { at, value }),
    ]
}

fn mutate(body: &mut Vec<u8>, mutation: &Mutation) {
    let len = body.len().max(1);
    match mutation {
        Mutation::Flip { at, bits } => {
            if let Some(b) = body.get_mut(at % len) {
                *b ^= bits;
            }
        }
        Mutation::Insert { at, bytes } => {
            let at = at % (body.len() + 1);
            body.splice(at..at, bytes.iter().copied());
        }
        Mutation::Delete { at, len: n } => {
            let at = at % len;
            let end = (at + n).min(body.len());
            if at < end {
                body.drain(at..end);
            }
        }
        Mutation::Truncate { at } => body.truncate(at % len),
        Mutation::Huge { at, value } => {
            if body.len() >= 8 {
                let at = at % (body.len() - 7);
                body[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
    }
}

fn format() -> impl Strategy<Value = InputFormat> {
    proptest::sample::select(FORMATS.to_vec())
}

fn compression() -> impl Strategy<Value = Option<CompressionType>> {
    proptest::sample::select(vec![
        None,
        Some(CompressionType::LZ4_FRAME),
        Some(CompressionType::ZSTD),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_an_answer_or_an_error(
        format in format(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        decode(format, &body);
    }

    #[test]
    fn mutated_valid_bodies_are_an_answer_or_an_error(
        format in format(),
        rows in 1..80usize,
        compression in compression(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let mut body = valid(format, rows, compression);
        for m in &mutations {
            mutate(&mut body, m);
        }
        decode(format, &body);
    }

    #[test]
    fn deep_or_wide_text_is_an_answer_or_an_error(
        depth in 0..200usize,
        columns in 1..40usize,
        open in proptest::sample::select(vec!["[", "{\"a\":"]),
    ) {
        let close = if open == "[" { "]" } else { "}" };
        let nested = format!("{{\"x\":{}1{}}}\n", open.repeat(depth), close.repeat(depth));
        decode(InputFormat::NdJson, nested.as_bytes());
        let header: Vec<String> = (0..columns).map(|c| format!("c{c}")).collect();
        let csv = format!("{}\n{}\n", header.join(","), vec!["1"; columns].join(","));
        decode(InputFormat::Csv, csv.as_bytes());
    }
}

#[test]
fn the_valid_bodies_parse() {
    for format in FORMATS {
        let batch = parse_rows_limited(format, &valid(format, 5, None), &limits())
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(batch.num_rows(), 5, "{format:?}");
    }
    for compression in [CompressionType::LZ4_FRAME, CompressionType::ZSTD] {
        let body = valid(InputFormat::ArrowStream, 5, Some(compression));
        parse_rows_limited(InputFormat::ArrowStream, &body, &limits()).expect("compressed");
    }
}
