//! The wire contract between a parent and a child tier.
//!
//! Request: a `DoGet` [`Ticket`] whose bytes are JSON ([`FetchTicket`]).
//!
//! Answer, in order:
//! 1. one metadata-only `FlightData` (no IPC header, no body) whose
//!    `app_metadata` is the [`GenerationMeta`] as JSON, with one extra key,
//!    `stream`, describing what follows (wire format, encoding, the tables
//!    and their row counts). A reader that only wants the generation's
//!    metadata can parse it as a plain `GenerationMeta`.
//! 2. per table, in the order the header lists them: an Arrow IPC schema
//!    message whose `app_metadata` is `{"table": name, "rows": n}`, then
//!    its record batches (IPC bodies compressed with lz4 or zstd).
//!
//! A diff (`"encoding": "diff"`, only to a parent whose ticket says
//! `accept_diff` and names a `base_generation` the child remembers sending
//! it) differs for the tables whose header entry carries `changed`: their
//! messages are, in this order, a schema and batches of just the `changed`
//! columns (if any), then a schema and batches of the patch (if `patched`
//! is not empty: a `_row` UInt64 column of row positions, then the new
//! values of the `patched` columns, `patch_rows` rows). Every other column
//! is the base's. `changed: []` without `patched` means the table equals
//! the base's and no messages follow for it. Tables without `changed` are
//! sent whole as above. See `src/diff.rs`.
//!
//! Diff version 2 (a ticket with `"diff_version": 2`; a ticket without it
//! is version 1 and never gets what follows): a diffed table's entry may
//! carry `runs`, a list of `[start, len]` (`len` rows of the base from row
//! `start`) and `[null, len]` (the next `len` inserted rows), and
//! `inserted_rows`; its messages then begin with a schema and batches of
//! the inserted rows (every column), and `changed`/`patched` apply to the
//! table the runs describe. Rows line up by origin (`_host` runs), so a
//! machine whose row count changed costs only its own rows.
//!
//! The header's table list and row counts are what make a truncated stream
//! detectable: a stream that ends early, skips a table or loses batches
//! does not add up and is rejected as a whole.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{MutableArrayData, RecordBatch, make_array};
use arrow::datatypes::SchemaRef;
use arrow::ipc::CompressionType;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::FlightData;
use arrow_flight::decode::{DecodedPayload, FlightDataDecoder};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError as ArrowFlightError;
use bytes::Bytes;
use fleetsql_aggregator::FetchRequest;
use fleetsql_model::{Generation, GenerationMeta, Table, batch_data_bytes};
use futures::{FutureExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::diff;
use crate::stats::TransferStats;
use crate::{FlightError, Result};

/// The wire format this crate writes and reads. A reader rejects any other
/// value instead of guessing.
pub const WIRE_FORMAT: u32 = 1;

/// What one message of a child's answer may decode to. Senders split
/// tables into messages of about `max_message_bytes` (2 MiB by default), so
/// a real message is far below this; a declaration above it is corrupt or
/// hostile, and believing it would abort the parent on a failed allocation.
pub(crate) const MAX_DECODED_MESSAGE_BYTES: usize = 1 << 30;

/// Every table whole.
pub const ENCODING_FULL: &str = "full";

/// Some tables as the columns that changed since `base_generation`.
pub const ENCODING_DIFF: &str = "diff";

/// The newest diff version this crate reads and writes: 1 compares rows by
/// position, 2 realigns them by origin first. A parent names the version it
/// reads in its ticket; a child sends nothing newer.
pub const DIFF_VERSION: u32 = 2;

/// What a parent asks a child for: the JSON body of a `DoGet` ticket.
///
/// Unknown fields are ignored so that later fields (diffs, redirects) can
/// be added without breaking older peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchTicket {
    /// Who asks: the child keeps each requester's table set apart.
    pub requester: String,
    /// Every table the requester wants from now on (also the tables the
    /// child starts collecting if it had not been asked for them).
    #[serde(default)]
    pub tables: BTreeSet<String>,
    /// The newest generation the requester holds from this child.
    #[serde(default)]
    pub since_generation: Option<u64>,
    /// Long poll: how long the child may hold the call waiting for a
    /// generation newer than `since_generation` (capped by the server).
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// The generation the requester holds (with every table it was sent),
    /// against which the child may send a diff.
    #[serde(default)]
    pub base_generation: Option<u64>,
    /// The requester reads diffs. Peers that predate diffs do not send it
    /// and always get whole tables.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_diff: bool,
    /// The tables of `base_generation` the requester holds: only these may
    /// be diffs. (The child may have sent more under that id in an answer
    /// the requester never read, e.g. a call it gave up on.)
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub base_tables: BTreeSet<String>,
    /// The newest diff version the requester reads ([`DIFF_VERSION`]);
    /// absent (0) with `accept_diff` means version 1.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub diff_version: u32,
    /// A probe: note the tables, answer with the generation header only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub meta_only: bool,
}

impl FetchTicket {
    /// The ticket for `request` from a requester holding `base`.
    pub fn from_request(request: &FetchRequest, base: Option<&Generation>) -> Self {
        FetchTicket {
            requester: request.requester.clone(),
            tables: request.tables.clone(),
            since_generation: request.since_generation,
            wait_ms: request.wait.map(|w| w.as_millis() as u64),
            base_generation: base.map(|b| b.meta.id),
            accept_diff: base.is_some(),
            base_tables: base
                .map(|b| b.tables.keys().cloned().collect())
                .unwrap_or_default(),
            diff_version: if base.is_some() { DIFF_VERSION } else { 0 },
            meta_only: request.meta_only,
        }
    }

    /// The request to pass to the served [`Child`](fleetsql_aggregator::Child),
    /// with the wait capped at `max_wait` so a client cannot pin a call.
    pub fn to_request(&self, max_wait: Duration) -> FetchRequest {
        FetchRequest {
            requester: self.requester.clone(),
            tables: self.tables.clone(),
            since_generation: self.since_generation,
            wait: self
                .wait_ms
                .map(|ms| Duration::from_millis(ms).min(max_wait)),
            meta_only: self.meta_only,
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        // Serializing a struct of strings and integers cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| FlightError::Ticket {
            reason: e.to_string(),
        })
    }
}

/// IPC body compression of the tables a server sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Fast and cheap on CPU: the default between tiers.
    #[default]
    Lz4,
    /// Smaller on the wire for more CPU: for thin links between sites.
    Zstd,
    None,
}

impl Compression {
    pub(crate) fn write_options(self) -> Result<IpcWriteOptions> {
        let kind = match self {
            Compression::Lz4 => Some(CompressionType::LZ4_FRAME),
            Compression::Zstd => Some(CompressionType::ZSTD),
            Compression::None => None,
        };
        IpcWriteOptions::default()
            .try_with_compression(kind)
            .map_err(|e| FlightError::Encode {
                table: String::new(),
                reason: e.to_string(),
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StreamHeader {
    #[serde(flatten)]
    meta: GenerationMeta,
    stream: StreamLayout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StreamLayout {
    format: u32,
    encoding: String,
    /// The base a diff was computed against; always `None` for `"full"`.
    base_generation: Option<u64>,
    tables: Vec<TableHeader>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TableHeader {
    table: String,
    rows: u64,
    /// Diffs only: the columns sent whole; with `patched`, every column
    /// named in neither comes from the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changed: Option<Vec<usize>>,
    /// Diffs only: the columns rebuilt from the base and a patch of
    /// `patch_rows` rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    patched: Vec<usize>,
    #[serde(default, skip_serializing_if = "is_zero")]
    patch_rows: u64,
    /// Diff version 2 only: where the rows come from (see the module
    /// comment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runs: Option<Vec<diff::RowRun>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    inserted_rows: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl TableHeader {
    /// The segments (schema message plus batches) that follow for this
    /// table, in order, with their row counts; none for a table equal to
    /// the base's.
    fn segments(&self) -> Vec<(Segment, u64)> {
        match &self.changed {
            None => vec![(Segment::Whole, self.rows)],
            Some(changed) => {
                let mut out = Vec::new();
                if self.runs.is_some() && self.inserted_rows > 0 {
                    out.push((Segment::Inserted, self.inserted_rows));
                }
                if !changed.is_empty() {
                    out.push((Segment::Columns, self.rows));
                }
                if !self.patched.is_empty() {
                    out.push((Segment::Patch, self.patch_rows));
                }
                out
            }
        }
    }
}

/// What one run of a table's messages holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    /// Every column.
    Whole,
    /// A diff's whole columns.
    Columns,
    /// A diff's patch.
    Patch,
    /// A realigned diff's inserted rows.
    Inserted,
}

/// How one table of an answer travels.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TablePlan {
    Whole,
    /// What changed of a table the parent holds.
    Diff(diff::TableDiff),
}

/// What to send of `generation` to a parent holding `base`: per table,
/// whole or as a diff. CPU work (columns compared by value where they are
/// not the same buffers, patches cut out): call it off the IO runtime.
pub(crate) fn plan(
    generation: &Generation,
    base: Option<&Generation>,
    diff_version: u32,
) -> BTreeMap<String, TablePlan> {
    generation
        .tables
        .iter()
        .map(|(name, table)| {
            let width = table.schema().fields().len();
            let plan = base
                .and_then(|b| b.tables.get(name))
                .and_then(|held| diff::diff_table(name, table, held, diff_version >= 2))
                // Every column sent whole: a diff would only add a lookup.
                .filter(|d| d.whole.len() < width)
                .map_or(TablePlan::Whole, TablePlan::Diff);
            (name.clone(), plan)
        })
        .collect()
}

/// The tables to encode, in wire order, for one table of an answer: the
/// table itself, or for a diff its whole columns (if any) then its patch
/// (if any).
pub(crate) fn segments(name: &str, table: &Arc<Table>, plan: &TablePlan) -> Result<Vec<Table>> {
    let encode = |reason: String| FlightError::Encode {
        table: name.to_string(),
        reason,
    };
    match plan {
        TablePlan::Whole => Ok(vec![table.as_ref().clone()]),
        TablePlan::Diff(d) => {
            let mut out = Vec::new();
            if let Some(realign) = &d.realign
                && realign.inserted.num_rows() > 0
            {
                out.push(realign.inserted.clone());
            }
            if !d.whole.is_empty() {
                out.push(diff::project(name, table, &d.whole).map_err(encode)?);
            }
            if let Some(patch) = &d.patch {
                out.push(
                    Table::new(name, patch.schema(), vec![patch.clone()])
                        .map_err(|e| encode(e.to_string()))?,
                );
            }
            Ok(out)
        }
    }
}

/// Bytes a message takes on the wire, give or take protobuf framing.
pub(crate) fn message_bytes(data: &FlightData) -> u64 {
    (data.data_header.len() + data.data_body.len() + data.app_metadata.len()) as u64
}

/// The first message of an answer: metadata only. `base` is the
/// generation a diff `plan` was made against.
pub(crate) fn header_message(
    generation: &Generation,
    base: Option<u64>,
    plan: &BTreeMap<String, TablePlan>,
) -> Result<FlightData> {
    let is_diff = base.is_some() && plan.values().any(|p| matches!(p, TablePlan::Diff(_)));
    let table_header = |name: &String, table: &Arc<Table>| {
        let mut header = TableHeader {
            table: name.clone(),
            rows: table.num_rows() as u64,
            changed: None,
            patched: Vec::new(),
            patch_rows: 0,
            runs: None,
            inserted_rows: 0,
        };
        if let (true, Some(TablePlan::Diff(d))) = (is_diff, plan.get(name)) {
            header.changed = Some(d.whole.clone());
            header.patched = d.patched.clone();
            header.patch_rows = d.patch.as_ref().map_or(0, |p| p.num_rows() as u64);
            if let Some(realign) = &d.realign {
                header.runs = Some(realign.runs.clone());
                header.inserted_rows = realign.inserted.num_rows() as u64;
            }
        }
        header
    };
    let header = StreamHeader {
        meta: generation.meta.clone(),
        stream: StreamLayout {
            format: WIRE_FORMAT,
            encoding: if is_diff {
                ENCODING_DIFF
            } else {
                ENCODING_FULL
            }
            .to_string(),
            base_generation: base.filter(|_| is_diff),
            tables: generation
                .tables
                .iter()
                .map(|(name, table)| table_header(name, table))
                .collect(),
        },
    };
    let json = serde_json::to_vec(&header).map_err(|e| FlightError::Encode {
        table: String::new(),
        reason: format!("generation header: {e}"),
    })?;
    Ok(FlightData::new().with_app_metadata(json))
}

/// One table's messages: schema (carrying the table header) then batches.
///
/// The encoder's input is an in-memory iterator, so the returned iterator
/// never waits: the server drives it on a blocking thread, keeping
/// compression off the IO runtime.
pub(crate) fn table_messages(
    name: &str,
    table: &Table,
    options: IpcWriteOptions,
    max_message_bytes: usize,
) -> Result<impl Iterator<Item = Result<FlightData, ArrowFlightError>> + use<>> {
    let header = TableHeader {
        table: name.to_string(),
        rows: table.num_rows() as u64,
        changed: None,
        patched: Vec::new(),
        patch_rows: 0,
        runs: None,
        inserted_rows: 0,
    };
    let json = serde_json::to_vec(&header).map_err(|e| FlightError::Encode {
        table: name.to_string(),
        reason: e.to_string(),
    })?;
    let batches: Vec<Result<RecordBatch, ArrowFlightError>> = table
        .batches()
        .iter()
        .flat_map(|b| split_for_messages(b, max_message_bytes))
        .map(Ok)
        .collect();
    let encoder = FlightDataEncoderBuilder::new()
        .with_options(options)
        // Split above by the bytes the rows really hold; the encoder's own
        // split counts whole buffers, which for a slice (or an array
        // decoded in place from a larger message) is far more than the
        // slice, and would cut batches into slivers.
        .with_max_flight_data_size(usize::MAX)
        .with_schema(table.schema().clone())
        .with_metadata(Bytes::from(json))
        .build(futures::stream::iter(batches));
    Ok(futures::executor::block_on_stream(encoder))
}

/// `batch` cut into row ranges of about `max_bytes` each (zero-copy
/// slices; the IPC writer writes only a slice's share of each buffer).
fn split_for_messages(batch: &RecordBatch, max_bytes: usize) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    let bytes = batch_data_bytes(batch);
    if rows <= 1 || bytes <= max_bytes {
        return vec![batch.clone()];
    }
    let parts = bytes.div_ceil(max_bytes.max(1)).min(rows);
    let per_part = rows.div_ceil(parts);
    (0..rows)
        .step_by(per_part)
        .map(|start| batch.slice(start, per_part.min(rows - start)))
        .collect()
}

/// A table being received.
struct Incoming {
    name: String,
    segment: Segment,
    expected_rows: u64,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    rows: u64,
    bytes: u64,
}

/// Reads one answer back into a [`Generation`], all or nothing.
///
/// Counters are updated only once the whole stream has been accepted, so a
/// rejected stream shows as a failure, not as rows received.
///
/// `base` is the generation this parent holds from the child: a diff must
/// name it, and its tables supply the columns a diff leaves out.
pub(crate) async fn decode_generation<S>(
    endpoint: &str,
    stream: S,
    stats: &TransferStats,
    base: Option<&Generation>,
) -> Result<Generation>
where
    S: Stream<Item = Result<FlightData, tonic::Status>> + Send + Unpin + 'static,
{
    let protocol = |reason: String| FlightError::Protocol {
        endpoint: endpoint.to_string(),
        reason,
    };
    let mut stream = stream;
    let first = match stream.next().await {
        None => return Err(protocol("stream ended before the generation header".into())),
        Some(Err(status)) => return Err(status_error(endpoint, &status)),
        Some(Ok(first)) => first,
    };
    if first.app_metadata.is_empty() || !first.data_header.is_empty() {
        return Err(protocol(
            "first message is not a generation header (metadata only)".into(),
        ));
    }
    let header: StreamHeader = serde_json::from_slice(&first.app_metadata)
        .map_err(|e| protocol(format!("generation header is not valid JSON: {e}")))?;
    if header.stream.format != WIRE_FORMAT {
        return Err(protocol(format!(
            "wire format {} is not supported (this node reads {WIRE_FORMAT})",
            header.stream.format
        )));
    }
    let base = match header.stream.encoding.as_str() {
        ENCODING_FULL => None,
        ENCODING_DIFF => match (base, header.stream.base_generation) {
            (Some(held), Some(id)) if held.meta.id == id => Some(held),
            (held, id) => {
                return Err(protocol(format!(
                    "diff against generation {} but this node holds {}",
                    id.map_or("none".to_string(), |id| id.to_string()),
                    held.map_or("none".to_string(), |g| g.meta.id.to_string())
                )));
            }
        },
        other => return Err(protocol(format!("encoding `{other}` is not supported"))),
    };
    let header_bytes = message_bytes(&first);
    // In a full answer every table is whole, whatever its entry says.
    let tables_header: Vec<TableHeader> = header
        .stream
        .tables
        .iter()
        .cloned()
        .map(|mut t| {
            if base.is_none() {
                t.changed = None;
                t.patched.clear();
                t.patch_rows = 0;
            }
            if t.changed.is_none() {
                t.runs = None;
                t.inserted_rows = 0;
            }
            t
        })
        .collect();
    // A diff of a table the base lacks cannot be applied.
    if let Some(held) = base
        && let Some(missing) = tables_header
            .iter()
            .find(|t| t.changed.is_some() && !held.tables.contains_key(&t.table))
    {
        return Err(protocol(format!(
            "diff of table `{}`, which generation {} does not hold",
            missing.table, held.meta.id
        )));
    }

    let rest = stream.map(|item| {
        let data = item.map_err(|status| ArrowFlightError::Tonic(Box::new(status)))?;
        fleetsql_model::parse::check_ipc_message(
            &data.data_header,
            &data.data_body,
            MAX_DECODED_MESSAGE_BYTES,
        )
        .map_err(|e| ArrowFlightError::ProtocolError(e.to_string()))?;
        Ok(data)
    });
    let mut decoder = FlightDataDecoder::new(rest);
    let mut expected = tables_header
        .iter()
        .flat_map(|t| t.segments().into_iter().map(move |(s, rows)| (t, s, rows)));
    let mut done: Vec<Incoming> = Vec::new();
    let mut current: Option<Incoming> = None;
    loop {
        // Arrow's IPC reader asserts on some malformed messages (a
        // validity buffer shorter than its column, found by the property
        // tests below): whatever a child sends is an error, never a panic
        // in the parent's fetch.
        let item = match std::panic::AssertUnwindSafe(decoder.next())
            .catch_unwind()
            .await
        {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(panic) => {
                return Err(protocol(format!(
                    "corrupt Arrow data: the decoder failed on a malformed message ({})",
                    fleetsql_model::panic_message(panic.as_ref())
                )));
            }
        };
        let decoded = match item {
            Ok(decoded) => decoded,
            Err(ArrowFlightError::Tonic(status)) => return Err(status_error(endpoint, &status)),
            Err(e) => return Err(protocol(format!("corrupt Arrow data: {e}"))),
        };
        let bytes = message_bytes(&decoded.inner);
        match decoded.payload {
            DecodedPayload::Schema(schema) => {
                let table: TableHeader = serde_json::from_slice(&decoded.inner.app_metadata)
                    .map_err(|e| protocol(format!("table header is not valid JSON: {e}")))?;
                let Some((next, segment, rows)) = expected.next() else {
                    return Err(protocol(format!(
                        "table `{}` was not announced in the generation header",
                        table.table
                    )));
                };
                if next.table != table.table {
                    return Err(protocol(format!(
                        "expected table `{}`, got `{}`",
                        next.table, table.table
                    )));
                }
                if let Some(previous) = current.take() {
                    done.push(finish(previous).map_err(protocol)?);
                }
                current = Some(Incoming {
                    name: table.table,
                    segment,
                    expected_rows: rows,
                    schema,
                    batches: Vec::new(),
                    rows: 0,
                    bytes,
                });
            }
            DecodedPayload::RecordBatch(batch) => {
                let Some(table) = current.as_mut() else {
                    return Err(protocol("record batch before any table schema".into()));
                };
                if batch.schema().fields() != table.schema.fields() {
                    return Err(protocol(format!(
                        "table `{}`: batch does not match its schema",
                        table.name
                    )));
                }
                table.rows += batch.num_rows() as u64;
                table.bytes += bytes;
                let batch = if matches!(table.segment, Segment::Whole | Segment::Inserted) {
                    own_buffers(&batch)
                        .map_err(|e| protocol(format!("table `{}`: {e}", table.name)))?
                } else {
                    batch
                };
                table.batches.push(batch);
            }
            DecodedPayload::None => {
                return Err(protocol("unexpected message without payload".into()));
            }
        }
    }
    if let Some(last) = current.take() {
        done.push(finish(last).map_err(protocol)?);
    }
    if let Some((missing, _, _)) = expected.next() {
        return Err(protocol(format!(
            "stream ended before table `{}` (truncated)",
            missing.table
        )));
    }

    let mut received: BTreeMap<String, Vec<Incoming>> = BTreeMap::new();
    for incoming in done {
        received
            .entry(incoming.name.clone())
            .or_default()
            .push(incoming);
    }
    let mut tables = BTreeMap::new();
    let mut counted = Vec::with_capacity(tables_header.len());
    let mut diffs = 0;
    for entry in &tables_header {
        let parts = received.remove(&entry.table).unwrap_or_default();
        counted.push((
            entry.table.clone(),
            parts.iter().map(|p| p.bytes).sum::<u64>(),
            entry.rows,
        ));
        let held = base.and_then(|b| b.tables.get(&entry.table));
        let built = match (&entry.changed, held) {
            (Some(whole), Some(held)) => {
                diffs += 1;
                let batches_of = |segment: Segment| {
                    parts
                        .iter()
                        .find(|p| p.segment == segment)
                        .map_or(&[][..], |p| p.batches.as_slice())
                };
                let realigned;
                let held = match &entry.runs {
                    None => held,
                    Some(runs) => {
                        // One batch per ~8k rows, as a merge lays tables out.
                        let layout = vec![8192; (entry.rows as usize).div_ceil(8192)];
                        realigned = Arc::new(
                            diff::realigned(
                                &entry.table,
                                held,
                                runs,
                                batches_of(Segment::Inserted),
                                &layout,
                            )
                            .map_err(|e| protocol(format!("cannot realign: {e}")))?,
                        );
                        &realigned
                    }
                };
                if whole.is_empty() && entry.patched.is_empty() {
                    if held.num_rows() as u64 != entry.rows {
                        return Err(protocol(format!(
                            "table `{}`: announced {} rows as unchanged, the base has {}",
                            entry.table,
                            entry.rows,
                            held.num_rows()
                        )));
                    }
                    tables.insert(entry.table.clone(), held.clone());
                    continue;
                }
                let diff = diff::Received {
                    whole,
                    whole_batches: batches_of(Segment::Columns),
                    patched: &entry.patched,
                    patch_batches: batches_of(Segment::Patch),
                };
                diff::apply(&entry.table, held, &diff)
                    .map_err(|e| protocol(format!("cannot apply diff: {e}")))?
            }
            _ => {
                let Some(whole) = parts.into_iter().find(|p| p.segment == Segment::Whole) else {
                    return Err(protocol(format!(
                        "table `{}` was announced but not sent",
                        entry.table
                    )));
                };
                Table::new(&entry.table, whole.schema, whole.batches)
                    .map_err(|e| protocol(format!("table `{}`: {e}", entry.table)))?
            }
        };
        tables.insert(entry.table.clone(), Arc::new(built));
    }
    stats.add_header_received(header_bytes);
    stats.add_diff_received(diffs);
    for (name, bytes, rows) in counted {
        stats.add_received(&name, bytes, rows);
    }
    Ok(Generation {
        meta: header.meta,
        tables,
    })
}

/// `batch` in buffers of its own. Arrays decoded from a message point into
/// the receive buffer that held it, which also holds the message's other
/// columns (and may hold parts of the messages around it): once later
/// diffs replace the columns that change, the columns that stay would keep
/// the whole buffer alive, a generation's worth of memory that no table
/// uses. One copy when a table arrives whole lets the rest go.
fn own_buffers(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            let data = column.to_data();
            let mut copy = MutableArrayData::new(vec![&data], false, data.len());
            copy.try_extend(0, 0, data.len())?;
            Ok(make_array(copy.freeze()))
        })
        .collect::<Result<Vec<_>, arrow::error::ArrowError>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

fn finish(table: Incoming) -> Result<Incoming, String> {
    if table.rows != table.expected_rows {
        return Err(format!(
            "table `{}`: announced {} rows, received {} (truncated or corrupt)",
            table.name, table.expected_rows, table.rows
        ));
    }
    Ok(table)
}

pub(crate) fn status_error(endpoint: &str, status: &tonic::Status) -> FlightError {
    FlightError::Status {
        endpoint: endpoint.to_string(),
        code: status.code(),
        message: status.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn batches_split_by_the_bytes_their_rows_hold() {
        let big = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from_iter_values(0..1_000_000)) as _,
        )])
        .unwrap();
        // A slice of a large array is small, whatever buffer it points into.
        let slice = big.slice(10, 1000);
        assert_eq!(split_for_messages(&slice, 64 * 1024).len(), 1);
        // 8 MB of rows in 1 MB messages: eight slices covering every row.
        let parts = split_for_messages(&big, 1024 * 1024);
        assert_eq!(parts.len(), 8);
        assert_eq!(
            parts.iter().map(RecordBatch::num_rows).sum::<usize>(),
            1_000_000
        );
        assert!(parts.iter().all(|p| batch_data_bytes(p) <= 1024 * 1024));
    }

    fn generation() -> Generation {
        let mut g = Generation::empty("p");
        g.meta.id = 7;
        g.meta.available.insert("t".into());
        let batch = RecordBatch::try_from_iter([
            ("x", Arc::new(Int64Array::from(vec![1, 2, 3])) as _),
            ("s", Arc::new(StringArray::from(vec!["a", "b", "c"])) as _),
        ])
        .unwrap();
        let table = Table::new("t", batch.schema(), vec![batch.clone(), batch]).unwrap();
        g.tables.insert("t".into(), Arc::new(table));
        let empty =
            RecordBatch::try_from_iter([("y", Arc::new(Int64Array::from(Vec::<i64>::new())) as _)])
                .unwrap();
        g.tables
            .insert("u".into(), Arc::new(Table::empty(empty.schema())));
        g
    }

    fn encode(g: &Generation, compression: Compression) -> Vec<FlightData> {
        encode_against(g, None, compression)
    }

    /// What the server sends, as a diff against `base` where it can.
    fn encode_against(
        g: &Generation,
        base: Option<&Generation>,
        compression: Compression,
    ) -> Vec<FlightData> {
        encode_version(g, base, compression, DIFF_VERSION)
    }

    /// What a server sends to a parent reading `diff_version`.
    fn encode_version(
        g: &Generation,
        base: Option<&Generation>,
        compression: Compression,
        diff_version: u32,
    ) -> Vec<FlightData> {
        let plan = plan(g, base, diff_version);
        let mut out = vec![header_message(g, base.map(|b| b.meta.id), &plan).unwrap()];
        for (name, table) in &g.tables {
            for sent in segments(name, table, &plan[name]).unwrap() {
                let options = compression.write_options().unwrap();
                out.extend(
                    table_messages(name, &sent, options, 1 << 20)
                        .unwrap()
                        .map(|m| m.unwrap()),
                );
            }
        }
        out
    }

    async fn decode(messages: Vec<FlightData>) -> Result<Generation> {
        decode_on(messages, None).await
    }

    async fn decode_on(messages: Vec<FlightData>, base: Option<&Generation>) -> Result<Generation> {
        let stream = futures::stream::iter(messages.into_iter().map(Ok));
        decode_generation("test", stream, &TransferStats::new(), base).await
    }

    /// `generation()` one tick later: same ids and names, new `x` values in
    /// `t`; `u` untouched.
    fn next_tick(g: &Generation) -> Generation {
        let mut next = g.clone();
        next.meta.id = 8;
        let old = g.tables["t"].batches()[0].clone();
        let batch = RecordBatch::try_new(
            old.schema(),
            vec![
                Arc::new(Int64Array::from(vec![10, 20, 30])) as _,
                old.column(1).clone(),
            ],
        )
        .unwrap();
        let table = Table::new("t", batch.schema(), vec![batch.clone(), batch]).unwrap();
        next.tables.insert("t".into(), Arc::new(table));
        next
    }

    fn column_values(g: &Generation, table: &str, column: usize) -> Vec<String> {
        let t = &g.tables[table];
        let all = arrow::compute::concat_batches(t.schema(), t.batches()).unwrap();
        let col = all.column(column);
        (0..col.len())
            .map(|i| arrow::util::display::array_value_to_string(col, i).unwrap())
            .collect()
    }

    /// A generation with one table of `hosts` (name, rows), a `v` column
    /// of `value + row`.
    fn hosts_generation(id: u64, hosts: &[(&str, usize)], value: i64) -> Generation {
        let mut names = Vec::new();
        let mut values = Vec::new();
        for (host, rows) in hosts {
            for r in 0..*rows {
                names.push(host.to_string());
                values.push(value + r as i64);
            }
        }
        let batch = RecordBatch::try_from_iter([
            ("v", Arc::new(Int64Array::from(values)) as _),
            (
                fleetsql_model::origin::HOST,
                Arc::new(StringArray::from(names)) as _,
            ),
        ])
        .unwrap();
        let mut g = Generation::empty("p");
        g.meta.id = id;
        let table = Table::new("t", batch.schema(), vec![batch]).unwrap();
        g.tables.insert("t".into(), Arc::new(table));
        g
    }

    fn bytes(messages: &[FlightData]) -> u64 {
        messages.iter().map(message_bytes).sum()
    }

    fn header_of(messages: &[FlightData]) -> StreamHeader {
        serde_json::from_slice(&messages[0].app_metadata).unwrap()
    }

    #[tokio::test]
    async fn a_machine_whose_row_count_changed_costs_only_its_own_rows() {
        let hosts: Vec<(String, usize)> = (0..50).map(|h| (format!("m{h:02}"), 100)).collect();
        fn as_ref(hosts: &[(String, usize)]) -> Vec<(&str, usize)> {
            hosts.iter().map(|(h, n)| (h.as_str(), *n)).collect()
        }
        let base = hosts_generation(1, &as_ref(&hosts), 0);
        // One machine gained three processes, one left, one joined.
        let mut changed = hosts.clone();
        changed[7].1 = 103;
        changed.remove(20);
        changed.push(("new".into(), 40));
        let next = hosts_generation(2, &as_ref(&changed), 0);
        let v2 = encode_version(&next, Some(&base), Compression::None, DIFF_VERSION);
        let header = header_of(&v2);
        let entry = &header.stream.tables[0];
        assert_eq!(
            entry.inserted_rows, 143,
            "only m07's and the newcomer's rows"
        );
        assert!(entry.runs.is_some());
        let back = decode_on(v2.clone(), Some(&base)).await.unwrap();
        assert_eq!(column_values(&back, "t", 0), column_values(&next, "t", 0));
        assert_eq!(column_values(&back, "t", 1), column_values(&next, "t", 1));
        let whole = encode_version(&next, None, Compression::None, DIFF_VERSION);
        assert!(
            bytes(&v2) * 5 < bytes(&whole),
            "{} vs {}",
            bytes(&v2),
            bytes(&whole)
        );

        // A parent that reads version 1 only (a ticket without
        // `diff_version`) gets the table whole, which it reads.
        let v1 = encode_version(&next, Some(&base), Compression::None, 1);
        let header = header_of(&v1);
        assert!(header.stream.tables[0].changed.is_none());
        assert!(header.stream.tables[0].runs.is_none());
        let back = decode_on(v1, Some(&base)).await.unwrap();
        assert_eq!(column_values(&back, "t", 1), column_values(&next, "t", 1));
        // A ticket from before diff versions parses as version 1.
        let old: FetchTicket = serde_json::from_str(
            r#"{"requester":"tla","tables":["t"],"base_generation":1,"accept_diff":true}"#,
        )
        .unwrap();
        assert_eq!(old.diff_version, 0);

        // Runs that do not fit the base are refused, not applied.
        let mut bad = v2.clone();
        let mut header = header_of(&bad);
        header.stream.tables[0].runs = Some(vec![(Some(4990), 100), (None, 143)]);
        bad[0].app_metadata = Bytes::from(serde_json::to_vec(&header).unwrap());
        assert!(decode_on(bad, Some(&base)).await.is_err());
    }

    #[tokio::test]
    async fn a_diff_sends_changed_columns_and_rebuilds_the_generation() {
        let base = generation();
        let next = next_tick(&base);
        for compression in [Compression::Lz4, Compression::None] {
            let full = encode(&next, compression);
            let diff = encode_against(&next, Some(&base), compression);
            let header: StreamHeader = serde_json::from_slice(&diff[0].app_metadata).unwrap();
            assert_eq!(header.stream.encoding, ENCODING_DIFF);
            assert_eq!(header.stream.base_generation, Some(7));
            let entry = |name: &str| {
                let found = header.stream.tables.iter().find(|t| t.table == name);
                found.unwrap().clone()
            };
            let t = entry("t");
            assert_eq!(t.changed, Some(vec![0]));
            // `u` is the very table the base holds: nothing of it travels.
            let u = entry("u");
            assert_eq!(u.changed, Some(vec![]));
            let bytes = |m: &[FlightData]| m.iter().map(message_bytes).sum::<u64>();
            assert!(bytes(&diff) < bytes(&full), "a diff is smaller");

            let back = decode_on(diff, Some(&base)).await.unwrap();
            assert_eq!(back.meta, next.meta);
            assert_eq!(
                column_values(&back, "t", 0),
                ["10", "20", "30", "10", "20", "30"]
            );
            assert_eq!(column_values(&back, "t", 1), ["a", "b", "c", "a", "b", "c"]);
            assert_eq!(back.tables["u"].schema(), next.tables["u"].schema());
        }
    }

    #[tokio::test]
    async fn a_whole_table_keeps_none_of_the_receive_buffers() {
        let g = generation();
        let messages = encode(&g, Compression::None);
        let bodies: Vec<std::ops::Range<usize>> = messages
            .iter()
            .map(|m| {
                let start = m.data_body.as_ptr() as usize;
                start..start + m.data_body.len()
            })
            .collect();
        let back = decode(messages).await.unwrap();
        for batch in back.tables["t"].batches() {
            for column in batch.columns() {
                for buffer in column.to_data().buffers() {
                    let at = buffer.as_ptr() as usize;
                    assert!(
                        !bodies.iter().any(|body| body.contains(&at)),
                        "a decoded column still points into a message"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn an_unchanged_table_travels_as_its_name_only() {
        let base = generation();
        let mut same = base.clone();
        same.meta.id = 8;
        let messages = encode_against(&same, Some(&base), Compression::Lz4);
        assert_eq!(messages.len(), 1, "the header alone");
        let back = decode_on(messages, Some(&base)).await.unwrap();
        assert!(Arc::ptr_eq(&back.tables["t"], &base.tables["t"]));
        assert_eq!(back.meta.id, 8);
    }

    #[tokio::test]
    async fn a_diff_against_another_base_is_rejected() {
        let base = generation();
        let next = next_tick(&base);
        let diff = encode_against(&next, Some(&base), Compression::Lz4);
        // No base at all, or a different generation than the diff's.
        let err = decode_on(diff.clone(), None).await.unwrap_err();
        assert!(
            err.to_string().contains("diff against generation 7"),
            "{err}"
        );
        let mut other = base.clone();
        other.meta.id = 6;
        assert!(decode_on(diff.clone(), Some(&other)).await.is_err());
        // A base that lacks the table the diff is of.
        let mut without = base.clone();
        without.tables.remove("t");
        let err = decode_on(diff.clone(), Some(&without)).await.unwrap_err();
        assert!(err.to_string().contains("does not hold"), "{err}");
        // A base whose table has other rows.
        let mut shorter = base.clone();
        let one = base.tables["t"].batches()[0].clone();
        shorter.tables.insert(
            "t".into(),
            Arc::new(Table::new("t", one.schema(), vec![one]).unwrap()),
        );
        assert!(decode_on(diff.clone(), Some(&shorter)).await.is_err());
        // Every truncation of a diff is rejected too.
        for cut in 0..diff.len() {
            assert!(
                decode_on(diff[..cut].to_vec(), Some(&base)).await.is_err(),
                "cut {cut}"
            );
        }
    }

    #[tokio::test]
    async fn round_trip_with_each_compression() {
        let g = generation();
        for compression in [Compression::Lz4, Compression::Zstd, Compression::None] {
            let back = decode(encode(&g, compression)).await.unwrap();
            assert_eq!(back.meta, g.meta);
            assert_eq!(back.tables["t"].num_rows(), 6);
            assert_eq!(back.tables["t"].batches()[0], g.tables["t"].batches()[0]);
            assert_eq!(back.tables["u"].num_rows(), 0);
            assert_eq!(back.tables["u"].schema(), g.tables["u"].schema());
        }
    }

    #[tokio::test]
    async fn header_parses_as_plain_generation_meta() {
        let first = header_message(&generation(), None, &BTreeMap::new()).unwrap();
        let meta: GenerationMeta = serde_json::from_slice(&first.app_metadata).unwrap();
        assert_eq!(meta.id, 7);
    }

    #[tokio::test]
    async fn truncated_or_corrupt_streams_are_rejected() {
        let full = encode(&generation(), Compression::Lz4);
        // Every proper prefix is a truncation, including the empty stream.
        for cut in 0..full.len() {
            let err = decode(full[..cut].to_vec()).await.unwrap_err();
            assert!(
                matches!(err, FlightError::Protocol { .. }),
                "cut {cut}: {err}"
            );
        }
        // No header: the stream starts with a table.
        assert!(decode(full[1..].to_vec()).await.is_err());
        // Garbage body in a record batch.
        let mut corrupt = full.clone();
        // Keep the 8-byte uncompressed-length prefix of the first buffer (a
        // garbage length would make arrow allocate whatever it says) and
        // scramble the lz4 frames behind it.
        let mut body = corrupt[2].data_body.to_vec();
        for byte in body.iter_mut().skip(8) {
            *byte ^= 0x5A;
        }
        corrupt[2].data_body = Bytes::from(body);
        assert!(decode(corrupt).await.is_err());
        // A compressed buffer declaring 2^60 bytes: arrow would allocate
        // that and abort the process; it is refused before decoding.
        let mut huge = full.clone();
        let mut body = huge[2].data_body.to_vec();
        body[..8].copy_from_slice(&(1i64 << 60).to_le_bytes());
        huge[2].data_body = Bytes::from(body);
        let err = decode(huge).await.unwrap_err();
        assert!(
            matches!(err, FlightError::Protocol { .. }) && err.to_string().contains("bytes"),
            "{err}"
        );
        // Garbage IPC header.
        let mut corrupt = full.clone();
        corrupt[2].data_header = Bytes::from_static(b"not flatbuffers");
        assert!(decode(corrupt).await.is_err());
        // Garbage generation header.
        let mut corrupt = full;
        corrupt[0].app_metadata = Bytes::from_static(b"{\"id\": ");
        assert!(decode(corrupt).await.is_err());
    }

    #[test]
    fn ticket_round_trip_and_unknown_fields() {
        let ticket = FetchTicket {
            requester: "tla".into(),
            tables: ["sys".to_string()].into(),
            since_generation: Some(3),
            wait_ms: Some(60_000),
            base_generation: Some(3),
            accept_diff: true,
            base_tables: ["sys".to_string()].into(),
            meta_only: true,
            diff_version: DIFF_VERSION,
        };
        let back = FetchTicket::from_bytes(&ticket.to_bytes()).unwrap();
        assert_eq!(back, ticket);
        let request = back.to_request(Duration::from_secs(5));
        assert_eq!(request.wait, Some(Duration::from_secs(5)));
        let later = FetchTicket::from_bytes(br#"{"requester":"x","redirect":true}"#).unwrap();
        assert_eq!(later.requester, "x");
        assert!(FetchTicket::from_bytes(b"garbage").is_err());
    }

    /// Property tests (issue 17 item 7): a parent decodes whatever a child
    /// (or anyone reaching its Flight port) sends; mutated answers, whole
    /// or diffs, and random tickets are an answer or an error, never a
    /// panic.
    mod proptests {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Mutation {
            Flip {
                message: usize,
                part: u8,
                at: usize,
                bits: u8,
            },
            Huge {
                message: usize,
                part: u8,
                at: usize,
                value: u64,
            },
            Truncate {
                message: usize,
                part: u8,
                at: usize,
            },
            Drop {
                message: usize,
            },
            Duplicate {
                message: usize,
            },
            Swap {
                a: usize,
                b: usize,
            },
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            prop_oneof![
                (any::<usize>(), 0..3u8, any::<usize>(), 1..=255u8).prop_map(
                    |(message, part, at, bits)| Mutation::Flip {
                        message,
                        part,
                        at,
                        bits
                    }
                ),
                (
                    any::<usize>(),
                    0..3u8,
                    any::<usize>(),
                    prop_oneof![Just(u64::MAX), Just(1 << 60), any::<u64>()]
                )
                    .prop_map(|(message, part, at, value)| Mutation::Huge {
                        message,
                        part,
                        at,
                        value
                    }),
                (any::<usize>(), 0..3u8, any::<usize>())
                    .prop_map(|(message, part, at)| Mutation::Truncate { message, part, at }),
                any::<usize>().prop_map(|message| Mutation::Drop { message }),
                any::<usize>().prop_map(|message| Mutation::Duplicate { message }),
                (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap { a, b }),
            ]
        }

        fn part(data: &mut FlightData, part: u8) -> &mut Bytes {
            match part {
                0 => &mut data.data_header,
                1 => &mut data.data_body,
                _ => &mut data.app_metadata,
            }
        }

        fn edit(bytes: &mut Bytes, f: impl FnOnce(&mut Vec<u8>)) {
            let mut v = bytes.to_vec();
            f(&mut v);
            *bytes = Bytes::from(v);
        }

        fn mutate(messages: &mut Vec<FlightData>, m: &Mutation) {
            if messages.is_empty() {
                return;
            }
            let n = messages.len();
            match m {
                Mutation::Flip {
                    message,
                    part: p,
                    at,
                    bits,
                } => edit(part(&mut messages[message % n], *p), |v| {
                    let len = v.len();
                    if let Some(b) = v.get_mut(at % len.max(1)) {
                        *b ^= bits;
                    }
                }),
                Mutation::Huge {
                    message,
                    part: p,
                    at,
                    value,
                } => edit(part(&mut messages[message % n], *p), |v| {
                    if v.len() >= 8 {
                        let at = at % (v.len() - 7);
                        v[at..at + 8].copy_from_slice(&value.to_le_bytes());
                    }
                }),
                Mutation::Truncate {
                    message,
                    part: p,
                    at,
                } => edit(part(&mut messages[message % n], *p), |v| {
                    let len = v.len().max(1);
                    v.truncate(at % len)
                }),
                Mutation::Drop { message } => {
                    messages.remove(message % n);
                }
                Mutation::Duplicate { message } => {
                    let copy = messages[message % n].clone();
                    messages.insert(message % n, copy);
                }
                Mutation::Swap { a, b } => messages.swap(a % n, b % n),
            }
        }

        fn runtime() -> tokio::runtime::Runtime {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("test runtime")
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn mutated_answers_whole_or_diffs_are_a_generation_or_an_error(
                as_diff in any::<bool>(),
                compression in proptest::sample::select(vec![Compression::Lz4, Compression::Zstd, Compression::None]),
                mutations in proptest::collection::vec(mutation(), 1..5),
            ) {
                let base = generation();
                let next = next_tick(&base);
                let mut messages = encode_against(&next, as_diff.then_some(&base), compression);
                for m in &mutations {
                    mutate(&mut messages, m);
                }
                let decoded = runtime().block_on(decode_on(messages, Some(&base)));
                if let Ok(g) = decoded {
                    // What was accepted is whole: every table's batches
                    // agree with its schema.
                    for table in g.tables.values() {
                        for batch in table.batches() {
                            prop_assert_eq!(batch.schema().fields().len(), table.schema().fields().len());
                        }
                    }
                }
            }

            #[test]
            fn random_messages_are_an_error(
                messages in proptest::collection::vec(
                    (proptest::collection::vec(any::<u8>(), 0..64),
                     proptest::collection::vec(any::<u8>(), 0..64),
                     proptest::collection::vec(any::<u8>(), 0..64)),
                    0..5,
                ),
            ) {
                let messages: Vec<FlightData> = messages
                    .into_iter()
                    .map(|(header, body, meta)| FlightData {
                        data_header: header.into(),
                        data_body: body.into(),
                        app_metadata: meta.into(),
                        ..FlightData::default()
                    })
                    .collect();
                let base = generation();
                let _ = runtime().block_on(decode_on(messages, Some(&base)));
            }

            #[test]
            fn random_and_mutated_tickets_are_a_ticket_or_an_error(
                bytes in proptest::collection::vec(any::<u8>(), 0..256),
                flip in any::<usize>(),
                bits in 1..=255u8,
                text in "\\PC{0,200}",
            ) {
                let _ = FetchTicket::from_bytes(&bytes);
                let _ = FetchTicket::from_bytes(text.as_bytes());
                let valid = FetchTicket {
                    requester: "tla".into(),
                    tables: ["sys".to_string()].into(),
                    since_generation: Some(3),
                    wait_ms: Some(u64::MAX),
                    base_generation: Some(3),
                    accept_diff: true,
                    base_tables: ["sys".to_string()].into(),
                    meta_only: false,
                    diff_version: DIFF_VERSION,
                };
                let mut bytes = valid.to_bytes().to_vec();
                let at = flip % bytes.len();
                bytes[at] ^= bits;
                if let Ok(ticket) = FetchTicket::from_bytes(&bytes) {
                    // A ticket's own wait is bounded by the server's.
                    let request = ticket.to_request(Duration::from_secs(5));
                    prop_assert!(request.wait.is_none_or(|w| w <= Duration::from_secs(5)));
                }
            }
        }
    }
}
