//! How a planned query runs: admitted among the queries running at once
//! (`max_concurrent_queries`, with a bounded queue), its operators made to
//! yield so its time-out fires on time, and its batches handed to the
//! front end as they are computed rather than collected first.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::{GenerationInfo, Result, SqlError};

/// Queries that may run at once on a node whose configuration says
/// nothing: enough for a few dashboards and alerts, few enough that a
/// flood cannot hold every core and the whole memory pool.
pub const DEFAULT_MAX_CONCURRENT_QUERIES: usize = 16;

/// Queries that may wait for a place, by default; one more is refused.
pub const DEFAULT_MAX_QUEUED_QUERIES: usize = 64;

/// The node's admission of queries: `max` run at once, `max_queued` more
/// wait (each at most its time-out), and any further one is refused at
/// once with SQLSTATE 53300, so a flood gets a clear answer instead of an
/// ever longer wait.
#[derive(Debug)]
pub(crate) struct Admission {
    permits: Arc<Semaphore>,
    max: usize,
    max_queued: usize,
    queued: AtomicUsize,
}

/// A place among the queries running at once; the query holds it until
/// its last batch has been handed on (or it is dropped).
#[derive(Debug)]
pub struct QueryPermit(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl QueryPermit {
    /// A permit for a node without a limit.
    pub(crate) fn unlimited() -> QueryPermit {
        QueryPermit(None)
    }
}

/// Takes one place in the queue; given back when the wait ends either way.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub(crate) fn new(max: usize, max_queued: usize) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(max)),
            max,
            max_queued,
            queued: AtomicUsize::new(0),
        }
    }

    /// Queries holding a place now, and queries waiting for one.
    pub(crate) fn load(&self) -> (usize, usize) {
        (
            self.max - self.permits.available_permits(),
            self.queued.load(Ordering::Acquire),
        )
    }

    /// A place now, or after waiting in the queue for at most `wait`.
    /// `who` names the node or set in the refusal.
    pub(crate) async fn admit(&self, who: &str, wait: Duration) -> Result<QueryPermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(QueryPermit(Some(permit)));
        }
        let refused = |detail: String| SqlError::Limit {
            what: format!("queries running at once on {who} ({detail})"),
            max: self.max,
            setting: "max_concurrent_queries",
            // too_many_connections: the closest Postgres has.
            sqlstate: "53300",
        };
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(refused(format!(
                "and {} waiting, the most `max_queued_queries` allows; retry in a moment",
                self.max_queued
            )));
        }
        let _queued = Queued(&self.queued);
        match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(QueryPermit(Some(permit))),
            // The semaphore is never closed; a closed one refuses like a
            // full queue.
            Ok(Err(_)) => Err(refused("the node is shutting down".to_string())),
            Err(_) => Err(refused(format!(
                "no place came free within the query time-out of {} ms while queued; retry in a moment",
                wait.as_millis()
            ))),
        }
    }
}

/// Wraps the output of every join in DataFusion's `CooperativeExec`, which
/// spends a unit of the task's Tokio budget per batch. A join over
/// batches it already holds (a nested-loop join probing its buffered
/// side) otherwise never returns to the runtime between batches, so
/// neither the query's time-out nor a client's cancel could fire until it
/// finished (a five-way cross join held its worker for 80 s). With the
/// budget spent, the task yields every so many batches, the time-out
/// fires, and dropping the query stops it at its next batch.
#[derive(Debug, Default)]
pub(crate) struct YieldingJoins;

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.name().contains("Join") && !node.children().is_empty() {
                let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
                Ok(Transformed::yes(wrapped))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "fleetsql_yielding_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A query's answer as it is computed: each batch reaches the front end
/// as soon as it is made, so an answer bigger than memory can still be
/// sent, and its first rows leave before its last are computed. The
/// stream ends with [`SqlError::Timeout`] when the query's time-out
/// passes, and holds the query's place among those running at once until
/// it ends or is dropped (which stops the query).
pub struct QueryStream {
    pub schema: SchemaRef,
    pub generation: GenerationInfo,
    batches: Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>,
}

impl std::fmt::Debug for QueryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("schema", &self.schema)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl QueryStream {
    /// An answer already computed (a shared one), as a stream.
    pub(crate) fn of_batches(
        schema: SchemaRef,
        generation: GenerationInfo,
        batches: Vec<RecordBatch>,
    ) -> QueryStream {
        QueryStream {
            schema,
            generation,
            batches: Box::pin(futures::stream::iter(batches.into_iter().map(Ok))),
        }
    }

    /// The batches, for a front end that sends them as they come.
    pub fn into_batches(self) -> Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>> {
        self.batches
    }

    /// Hands every batch to `done` once the stream has ended without an
    /// error, when together they take no more than `max_bytes` (an answer
    /// identical queries may share); a bigger one is not kept.
    pub(crate) fn tee(
        self,
        max_bytes: usize,
        done: impl FnOnce(SchemaRef, GenerationInfo, Vec<RecordBatch>) + Send + 'static,
    ) -> QueryStream {
        let schema = self.schema.clone();
        let generation = self.generation.clone();
        let mut kept = Some((Vec::new(), 0usize));
        let mut done = Some(done);
        let mut inner = self.batches;
        let batches = futures::stream::poll_fn(move |cx| {
            let item = std::task::ready!(inner.as_mut().poll_next(cx));
            match &item {
                Some(Ok(batch)) => {
                    if let Some((batches, bytes)) = kept.as_mut() {
                        *bytes += batch.get_array_memory_size();
                        batches.push(batch.clone());
                        if *bytes > max_bytes {
                            kept = None;
                        }
                    }
                }
                Some(Err(_)) => kept = None,
                None => {
                    if let (Some((batches, _)), Some(done)) = (kept.take(), done.take()) {
                        done(schema.clone(), generation.clone(), batches);
                    }
                }
            }
            Poll::Ready(item)
        });
        QueryStream {
            schema: self.schema,
            generation: self.generation,
            batches: Box::pin(batches),
        }
    }

    /// Every batch, for callers that need the whole answer.
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        let mut stream = self.batches;
        while let Some(batch) = stream.next().await {
            batches.push(batch?);
        }
        Ok(batches)
    }
}

/// Aborts the task computing a query when its reader goes away.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Batches received from the computing task, until `deadline`.
struct Received {
    receiver: mpsc::Receiver<Result<RecordBatch>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout_ms: u64,
    done: bool,
    _task: AbortOnDrop,
    _permit: QueryPermit,
}

impl Stream for Received {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        // The deadline first: a query whose batches are always ready (a
        // reader as fast as the computation) must still stop on time.
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.done = true;
            let timeout_ms = self.timeout_ms;
            return Poll::Ready(Some(Err(SqlError::Timeout { timeout_ms })));
        }
        let item = std::task::ready!(self.receiver.poll_recv(cx));
        if item.is_none() {
            self.done = true;
        }
        Poll::Ready(item)
    }
}

/// Drives `stream` on a task of its own (under `scope`, which keeps the
/// query's task-locals) and hands its batches on through a channel of two:
/// the computation runs at most two batches ahead of the client, and the
/// reader's task (a connection's) is never the one computing, so its
/// time-out fires however long one batch takes to compute.
pub(crate) fn spawn_stream<F>(
    stream: SendableRecordBatchStream,
    schema: SchemaRef,
    scope: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    generation: GenerationInfo,
    deadline: tokio::time::Instant,
    timeout_ms: u64,
    permit: QueryPermit,
) -> QueryStream
where
    F: Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::channel(2);
    let drive: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
        let mut stream = stream;
        loop {
            // A panic in an operator (a bug) must reach the reader as an
            // error: unseen, the task's end reads as a complete answer.
            let batch = match std::panic::AssertUnwindSafe(stream.next())
                .catch_unwind()
                .await
            {
                Ok(None) => break,
                Ok(Some(batch)) => batch.map_err(SqlError::from),
                Err(panic) => {
                    let message = fleetsql_model::panic_message(panic.as_ref());
                    tracing::error!(panic = %message, "a query panicked; answered its client an error");
                    Err(SqlError::Internal(message.to_string()))
                }
            };
            let failed = batch.is_err();
            if sender.send(batch).await.is_err() || failed {
                break;
            }
        }
    });
    let task = tokio::spawn(scope(drive));
    QueryStream {
        schema,
        generation,
        batches: Box::pin(Received {
            receiver,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout_ms,
            done: false,
            _task: AbortOnDrop(task),
            _permit: permit,
        }),
    }
}
