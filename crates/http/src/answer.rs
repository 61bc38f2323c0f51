//! `POST /v1/query` answers sent as they are computed.
//!
//! The node hands a query's batches on as it makes them
//! ([`QueryStream`]); each is written to the client at once, so an answer
//! need not fit in the node's memory and its first rows leave before its
//! last are computed. The status line waits for the first batch (or the
//! end of an empty answer): a query that fails before it (a parse error,
//! the memory limit of a sort or an aggregate, the time-out of a query
//! that had nothing to send yet) still gets its own status and JSON error.
//!
//! An error after the first batch can no longer change the status (200 is
//! sent). How each format says so:
//!
//! - JSON: the object ends with `"error"`, `"hint"` and `"sqlstate"` after
//!   the rows sent so far (`row_count` counts them), the same keys an
//!   error answer has, so a client that checks for `error` sees it.
//! - Arrow IPC: the stream stops without its end-of-stream marker (the
//!   connection is cut), which every IPC reader reports as a truncated
//!   stream rather than a complete answer; the JSON answer to the same
//!   query names the error.
//!
//! Either body fills in an [`AnswerProgress`] as it is written (rows sent,
//! the error that ended it, whether it ended), which the audit layer reads
//! when the body ends: a 200 status alone does not say the answer was
//! whole.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::body::{Body, Bytes};
use fleetsql_model::json::batches_to_rows;
use fleetsql_sqlnode::{GenerationInfo, QueryStream, SqlError};
use futures::{Stream, StreamExt};
use serde_json::json;

type Batches = Pin<Box<dyn Stream<Item = Result<RecordBatch, SqlError>> + Send>>;

/// How far a streamed answer got: rows written, the error that ended it
/// early, and whether its body ended (written whole, or with its error).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    pub rows: u64,
    /// `SQLSTATE: message` of an error after the status was sent.
    pub error: Option<String>,
    pub ended: bool,
}

/// A streamed answer's [`Progress`], shared by its body (which writes it)
/// and whoever reads it when the body ends (the audit layer finds it in
/// the response's extensions).
#[derive(Debug, Default, Clone)]
pub(crate) struct AnswerProgress(Arc<Mutex<Progress>>);

impl AnswerProgress {
    /// What has been written so far.
    pub(crate) fn get(&self) -> Progress {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        // The updates are plain stores that cannot panic; a poisoned lock
        // still holds readable counts.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn sent(&self, rows: usize) {
        self.lock().rows += rows as u64;
    }

    fn end(&self, error: Option<&SqlError>) {
        let mut progress = self.lock();
        progress.ended = true;
        if let Some(e) = error {
            progress.error = Some(format!("{}: {e}", e.sqlstate()));
        }
    }
}

/// An answer whose first batch (or whose end) has been computed.
pub(crate) struct Started {
    pub(crate) schema: SchemaRef,
    pub(crate) generation: GenerationInfo,
    first: Option<RecordBatch>,
    rest: Batches,
}

/// Waits for `answer`'s first batch: an error before it is the query's
/// error, answered with its own status.
pub(crate) async fn start(answer: QueryStream) -> Result<Started, SqlError> {
    let schema = answer.schema.clone();
    let generation = answer.generation.clone();
    let mut rest = answer.into_batches();
    let first = rest.next().await.transpose()?;
    Ok(Started {
        schema,
        generation,
        first,
        rest,
    })
}

impl Started {
    /// The batches: the first, then the rest as they come.
    fn batches(self) -> Batches {
        let first = futures::stream::iter(self.first.map(Ok));
        Box::pin(first.chain(self.rest))
    }
}

/// What the JSON body still has to write.
struct JsonBody {
    head: Option<String>,
    batches: Batches,
    rows: usize,
    began: Instant,
    done: bool,
    progress: AnswerProgress,
}

/// The JSON answer: `{"columns": [...], "generation": {...}, "rows": [...],
/// "row_count": n, "elapsed_ms": t}`, the rows written batch by batch; an
/// error after the first rows adds `error`, `hint` and `sqlstate` before
/// `row_count`. The keys are those of the answer collected whole (a
/// JSON object's key order carries no meaning; `row_count` and
/// `elapsed_ms` now come last because they are known last).
pub(crate) fn json_body(started: Started, began: Instant, progress: AnswerProgress) -> Body {
    let columns: Vec<_> = started
        .schema
        .fields()
        .iter()
        .map(|f| json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let head = format!(
        "{{\"columns\":{},\"generation\":{},\"rows\":[",
        serde_json::Value::from(columns),
        json!(started.generation),
    );
    let state = JsonBody {
        head: Some(head),
        batches: started.batches(),
        rows: 0,
        began,
        done: false,
        progress,
    };
    let chunks = futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        if let Some(head) = state.head.take() {
            return Some((Ok::<_, std::convert::Infallible>(Bytes::from(head)), state));
        }
        loop {
            let error = match state.batches.next().await {
                Some(Ok(batch)) => match json_rows(&batch, state.rows > 0) {
                    Ok((chunk, _)) if chunk.is_empty() => continue,
                    Ok((chunk, rows)) => {
                        state.rows += rows;
                        state.progress.sent(rows);
                        return Some((Ok(Bytes::from(chunk)), state));
                    }
                    Err(e) => Some(SqlError::Internal(format!(
                        "cannot write the answer as JSON: {e}"
                    ))),
                },
                Some(Err(e)) => Some(e),
                None => None,
            };
            state.done = true;
            // Dropping the batches stops the query now, not when the
            // client has read the tail.
            state.batches = Box::pin(futures::stream::empty());
            let tail = json_tail(error.as_ref(), state.rows, state.began);
            state.progress.end(error.as_ref());
            return Some((Ok(Bytes::from(tail)), state));
        }
    });
    Body::from_stream(chunks)
}

/// `batch`'s rows as JSON arrays, comma-separated (with a leading comma
/// after earlier rows), and how many.
fn json_rows(batch: &RecordBatch, after_rows: bool) -> Result<(Vec<u8>, usize), String> {
    let rows = batches_to_rows(std::slice::from_ref(batch)).map_err(|e| e.to_string())?;
    let mut chunk = Vec::with_capacity(rows.len() * 32);
    for (i, row) in rows.iter().enumerate() {
        if after_rows || i > 0 {
            chunk.push(b',');
        }
        serde_json::to_writer(&mut chunk, row).map_err(|e| e.to_string())?;
    }
    Ok((chunk, rows.len()))
}

/// The end of the JSON answer, with the error that ended it early.
fn json_tail(error: Option<&SqlError>, rows: usize, began: Instant) -> String {
    let elapsed_ms = began.elapsed().as_secs_f64() * 1000.0;
    let mut tail = String::from("]");
    if let Some(e) = error {
        let (_, hint) = crate::server::status_and_hint(e);
        tail.push_str(&format!(
            ",\"error\":{},\"hint\":{},\"sqlstate\":{}",
            json!(e.to_string()),
            json!(hint),
            json!(e.sqlstate()),
        ));
    }
    tail.push_str(&format!(
        ",\"row_count\":{rows},\"elapsed_ms\":{}}}",
        json!(elapsed_ms)
    ));
    tail
}

/// The Arrow IPC stream answer, one IPC message per batch as it comes.
pub(crate) fn arrow_body(started: Started, progress: AnswerProgress) -> Body {
    let writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &started.schema);
    let state = (writer.map_err(|e| e.to_string()), started.batches(), false);
    let chunks = futures::stream::unfold(state, move |(writer, mut batches, done)| {
        let progress = progress.clone();
        async move {
            if done {
                return None;
            }
            let mut writer = match writer {
                Ok(writer) => writer,
                Err(e) => {
                    progress.end(Some(&SqlError::Internal(e.clone())));
                    return Some((Err(cut(&e)), (Err(e), batches, true)));
                }
            };
            // The schema message, already written, leaves with the first batch.
            let written = match batches.next().await {
                Some(Ok(batch)) => writer.write(&batch).map(|()| {
                    progress.sent(batch.num_rows());
                    false
                }),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "a query failed after its first Arrow batch was sent; the stream was cut");
                    progress.end(Some(&e));
                    return Some((Err(cut(&e.to_string())), (Ok(writer), batches, true)));
                }
                None => writer.finish().map(|()| true),
            };
            match written {
                Ok(finished) => {
                    if finished {
                        progress.end(None);
                    }
                    let chunk = std::mem::take(writer.get_mut());
                    Some((Ok(Bytes::from(chunk)), (Ok(writer), batches, finished)))
                }
                Err(e) => {
                    let e = e.to_string();
                    progress.end(Some(&SqlError::Internal(e.clone())));
                    Some((Err(cut(&e)), (Err(e), batches, true)))
                }
            }
        }
    });
    Body::from_stream(chunks)
}

/// The error that cuts an Arrow answer short: the HTTP layer ends the
/// connection without the body's end, so no client reads it as complete.
fn cut(error: &str) -> std::io::Error {
    std::io::Error::other(format!("the answer failed after it began: {error}"))
}
