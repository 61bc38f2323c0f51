use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use fleetsql_aggregator::{AggregatorError, Child, FetchRequest};
use fleetsql_model::Generation;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use crate::history::{
    self as history, HISTORY_LIST_ACTION, HistoryFiles, HistoryListRequest, HistoryTicket,
    HistoryWanted, MAX_FILES_PER_TICKET,
};
use crate::stats::TransferStats;
use crate::tls::{self, TlsContext};
use crate::wire::{self, Compression, FetchTicket};
use crate::{FlightError, Result};
use fleetsql_auth::{HandshakeFailure, tls_incoming};

/// The `DoAction` type answered with a small JSON health report.
pub const HEALTH_ACTION: &str = "health";

/// How a [`FlightServer`] serves.
#[derive(Debug, Clone)]
pub struct FlightServerConfig {
    /// IPC body compression of every table sent.
    pub compression: Compression,
    /// The longest a long poll may hold a call, whatever the ticket asks:
    /// a parent that vanished mid-poll ties up a call for at most this.
    pub max_wait: Duration,
    /// Approximate size of one `FlightData` message; larger batches are
    /// split. Must stay below the clients' decoding limit.
    pub max_message_bytes: usize,
    /// Messages encoded ahead of the network (memory bound per call).
    pub send_buffer: usize,
    /// How long [`FlightServer::shutdown`] lets calls in flight finish.
    pub shutdown_grace: Duration,
    /// Serve from this many threads of the server's own instead of the
    /// caller's runtime. A TLA's runtime is busy decoding a hundred
    /// children's streams at once; there, the one stream to a SQL node
    /// would get a hundredth of it and a generation would take a tick or
    /// more to leave. Own threads get their share from the OS instead.
    pub own_threads: Option<usize>,
    /// Mutual TLS: only parents the context names may connect. `None`:
    /// plaintext, anyone may.
    pub tls: Option<Arc<TlsContext>>,
    /// Kept history served to parents (`history` tickets, see
    /// `src/history.rs`): a TLA keeping history. `None`: such calls are
    /// refused with a message naming the setting.
    pub history: Option<Arc<dyn HistoryFiles>>,
}

impl Default for FlightServerConfig {
    fn default() -> Self {
        FlightServerConfig {
            compression: Compression::Lz4,
            max_wait: Duration::from_secs(60),
            max_message_bytes: 2 * 1024 * 1024,
            send_buffer: 8,
            shutdown_grace: Duration::from_secs(5),
            own_threads: None,
            tls: None,
            history: None,
        }
    }
}

/// What the `health` action answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub producer: String,
    pub generation_id: u64,
    pub made_at_ms: i64,
}

/// A running Flight endpoint serving one [`Child`] (usually an aggregator's
/// [`as_child`](fleetsql_aggregator::Aggregator::as_child)) to its parents.
/// Dropping it stops serving at once; [`FlightServer::shutdown`] drains.
#[derive(Debug)]
pub struct FlightServer {
    local_addr: SocketAddr,
    stats: Arc<TransferStats>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    grace: Duration,
    /// The server's own runtime, with [`FlightServerConfig::own_threads`].
    own_runtime: Option<tokio::runtime::Runtime>,
}

impl FlightServer {
    /// Binds `addr` (port 0 picks a free port) and serves `source` with the
    /// default configuration. Must be called inside a tokio runtime.
    pub fn start(source: Arc<dyn Child>, addr: SocketAddr) -> Result<FlightServer> {
        Self::start_with(source, addr, FlightServerConfig::default())
    }

    pub fn start_with(
        source: Arc<dyn Child>,
        addr: SocketAddr,
        config: FlightServerConfig,
    ) -> Result<FlightServer> {
        let caller = tokio::runtime::Handle::try_current().map_err(|_| FlightError::NoRuntime)?;
        // Bind synchronously so the caller knows the port (and a taken port
        // is an error here, not a log line from a background task).
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|source| FlightError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| FlightError::Bind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| FlightError::Bind { addr, source })?;
        let write_options = config.compression.write_options()?;
        // Made after every other fallible step: a runtime dropped inside
        // the caller's runtime would panic instead of returning the error.
        let own_runtime = match config.own_threads {
            Some(threads) => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads.max(1))
                    .thread_name("flight-serve")
                    .enable_all()
                    .build()
                    .map_err(|source| FlightError::Threads { addr, source })?,
            ),
            None => None,
        };
        let runtime = own_runtime.as_ref().map_or(caller, |r| r.handle().clone());
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
        };
        let listener = match listener {
            Ok(listener) => listener,
            Err(source) => {
                if let Some(runtime) = own_runtime {
                    runtime.shutdown_background();
                }
                return Err(FlightError::Bind { addr, source });
            }
        };
        let stats = Arc::new(TransferStats::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let service = Service {
            source,
            config: config.clone(),
            write_options,
            stats: stats.clone(),
            shutdown: shutdown_rx.clone(),
            sent: Arc::new(Mutex::new(SentMemory::default())),
        };
        let mut signal = shutdown_rx.clone();
        let tls = config.tls.clone();
        let task = runtime.spawn(async move {
            let router = tonic::transport::Server::builder()
                // Notices a parent that vanished without closing the socket.
                .http2_keepalive_interval(Some(Duration::from_secs(20)))
                // See `FLOW_WINDOW`: the window a client grants is what
                // paces our sending, and the one we grant paces theirs.
                .initial_stream_window_size(Some(crate::client::FLOW_WINDOW))
                .initial_connection_window_size(Some(crate::client::FLOW_WINDOW * 2))
                .add_service(FlightServiceServer::new(service));
            let stop = async move {
                let _ = signal.wait_for(|stop| *stop).await;
            };
            let served = match tls {
                None => {
                    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                    router.serve_with_incoming_shutdown(incoming, stop).await
                }
                Some(tls) => {
                    // A peer the verifier refuses never reaches the
                    // service (logged and counted by the context).
                    let acceptor_tls = tls.clone();
                    let failed = move |peer: std::net::SocketAddr, failure| match failure {
                        HandshakeFailure::Refused(e) => {
                            tls.handshake_failed(tls::Link::Incoming, &format!("{peer}"), &e)
                        }
                        HandshakeFailure::TimedOut => {
                            tls.handshake_timed_out(tls::Link::Incoming, peer)
                        }
                    };
                    let incoming = tls_incoming(
                        listener,
                        move || tokio_rustls::TlsAcceptor::from(acceptor_tls.server_config()),
                        tls::HANDSHAKE_TIMEOUT,
                        failed,
                        shutdown_rx,
                    );
                    router.serve_with_incoming_shutdown(incoming, stop).await
                }
            };
            if let Err(source) = served {
                let e = FlightError::Serve {
                    addr: local_addr,
                    source,
                };
                tracing::error!(error = %e, "Flight server stopped");
            }
        });
        tracing::info!(addr = %local_addr, "Flight server listening");
        Ok(FlightServer {
            local_addr,
            stats,
            shutdown,
            task: Some(task),
            grace: config.shutdown_grace,
            own_runtime,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Bytes and rows sent per table, for `/metrics`.
    pub fn stats(&self) -> Arc<TransferStats> {
        self.stats.clone()
    }

    /// Stops accepting calls, ends waiting long polls with `unavailable`
    /// (the parent retries elsewhere or later), lets streams being sent
    /// finish for up to `shutdown_grace`, then closes the port.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(self.grace, &mut task).await.is_err()
        {
            tracing::warn!(addr = %self.local_addr, "Flight server did not drain in time; aborted");
            task.abort();
            let _ = task.await;
        }
        // `Drop` then stops the server's own runtime, if it has one.
    }
}

impl Drop for FlightServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = self.shutdown.send(true);
            task.abort();
        }
        if let Some(runtime) = self.own_runtime.take() {
            // Dropping a runtime inside another one's task would panic.
            runtime.shutdown_background();
        }
    }
}

struct Service {
    source: Arc<dyn Child>,
    config: FlightServerConfig,
    write_options: arrow::ipc::writer::IpcWriteOptions,
    stats: Arc<TransferStats>,
    shutdown: watch::Receiver<bool>,
    sent: Arc<Mutex<SentMemory>>,
}

/// What was last sent to each parent, so the next answer can be a diff
/// against what that parent holds.
///
/// Two per parent: when a parent drops an answer (it failed to read it,
/// or gave up on the call) it still holds the one before, and the next
/// answer can still be a diff. The generations are shared with the tier's
/// own (tables are `Arc`s), so this holds little beyond the previous
/// generation's changed columns.
#[derive(Debug, Default)]
struct SentMemory {
    parents: HashMap<String, SentTo>,
}

#[derive(Debug)]
struct SentTo {
    last_call: Instant,
    generations: VecDeque<Arc<Generation>>,
}

impl SentMemory {
    const PER_PARENT: usize = 2;
    /// Requesters are parents' node names, a handful per tier; the bound
    /// only stops a misbehaving client from growing the map.
    const MAX_PARENTS: usize = 64;
    /// A parent polls every tick or two; one silent for this long has gone
    /// (or switched to another child), and what it was sent would only
    /// keep old columns alive. If it comes back, it gets whole tables.
    const FORGET_AFTER: Duration = Duration::from_secs(60);

    fn find(&mut self, requester: &str, id: u64) -> Option<Arc<Generation>> {
        let to = self.parents.get_mut(requester)?;
        to.last_call = Instant::now();
        to.generations.iter().find(|g| g.meta.id == id).cloned()
    }

    fn remember(&mut self, requester: &str, generation: Arc<Generation>) {
        let now = Instant::now();
        self.parents
            .retain(|_, to| now.duration_since(to.last_call) < Self::FORGET_AFTER);
        if !self.parents.contains_key(requester)
            && self.parents.len() >= Self::MAX_PARENTS
            && let Some(oldest) = self
                .parents
                .iter()
                .min_by_key(|(_, to)| to.last_call)
                .map(|(name, _)| name.clone())
        {
            self.parents.remove(&oldest);
        }
        let to = self
            .parents
            .entry(requester.to_string())
            .or_insert_with(|| SentTo {
                last_call: now,
                generations: VecDeque::new(),
            });
        to.last_call = now;
        to.generations.retain(|g| g.meta.id != generation.meta.id);
        to.generations.push_back(generation);
        while to.generations.len() > Self::PER_PARENT {
            to.generations.pop_front();
        }
    }
}

impl Service {
    /// Calls the source, giving up when the server shuts down so a long
    /// poll does not hold the shutdown for its whole wait.
    async fn fetch(&self, request: &FetchRequest) -> Result<Arc<Generation>, Status> {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            answer = self.source.fetch(request) => answer.map_err(|e| {
                tracing::warn!(source = self.source.name(), requester = %request.requester, error = %e, "source fetch failed");
                aggregator_status(&e)
            }),
            _ = shutdown.wait_for(|stop| *stop) => Err(Status::unavailable("server is shutting down")),
        }
    }
}

impl Service {
    /// [`Service::fetch`], a panic in the source answered as an internal
    /// error: the server goes on serving every other call.
    async fn fetch_caught(&self, request: &FetchRequest) -> Result<Arc<Generation>, Status> {
        match std::panic::AssertUnwindSafe(self.fetch(request))
            .catch_unwind()
            .await
        {
            Ok(answer) => answer,
            Err(panic) => Err(panicked("fetching", panic.as_ref())),
        }
    }
}

/// The status of a call that panicked, logged once here.
fn panicked(doing: &str, panic: &(dyn std::any::Any + Send)) -> Status {
    let message = fleetsql_model::panic_message(panic);
    tracing::error!(
        panic = message,
        doing,
        "a Flight call panicked; answered an internal error"
    );
    Status::internal(format!(
        "internal error while {doing} the answer (a bug; see the server's log); the server is still serving"
    ))
}

fn aggregator_status(e: &AggregatorError) -> Status {
    match e {
        AggregatorError::Timeout { .. } => Status::deadline_exceeded(e.to_string()),
        AggregatorError::ShuttingDown { .. } => Status::unavailable(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!(
        "fleetsql serves generations through DoGet only; {method} is not supported"
    ))
}

type BoxResponse<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightService for Service {
    type HandshakeStream = BoxResponse<HandshakeResponse>;
    type ListFlightsStream = BoxResponse<FlightInfo>;
    type DoGetStream = BoxResponse<FlightData>;
    type DoPutStream = BoxResponse<PutResult>;
    type DoActionStream = BoxResponse<arrow_flight::Result>;
    type ListActionsStream = BoxResponse<ActionType>;
    type DoExchangeStream = BoxResponse<FlightData>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.stats.add_call();
        if let Some(ticket) = HistoryTicket::from_bytes(&request.get_ref().ticket) {
            return self.serve_history(ticket.history);
        }
        let ticket = FetchTicket::from_bytes(&request.get_ref().ticket).map_err(|e| {
            self.stats.add_failure();
            Status::invalid_argument(e.to_string())
        })?;
        let fetch = ticket.to_request(self.config.max_wait);
        let generation = self
            .fetch_caught(&fetch)
            .await
            .inspect_err(|_| self.stats.add_failure())?;
        let base = match ticket.base_generation {
            Some(id) if ticket.accept_diff && !ticket.meta_only => self
                .sent
                .lock()
                .find(&ticket.requester, id)
                .map(|sent| Arc::new(sent.restricted(&ticket.base_tables))),
            _ => None,
        };
        let diff_version = ticket.diff_version.min(wire::DIFF_VERSION);
        let (tx, rx) = mpsc::channel(self.config.send_buffer.max(1));
        let options = self.write_options.clone();
        let max_message = self.config.max_message_bytes;
        let stats = self.stats.clone();
        let sent = (!ticket.meta_only).then(|| (self.sent.clone(), ticket.requester));
        // Diffing compares columns and encoding compresses every buffer:
        // CPU work, done on a blocking thread and handed to the network
        // through a bounded channel.
        tokio::task::spawn_blocking(move || {
            let outgoing = Outgoing {
                options,
                max_message,
                stats: &stats,
                tx: &tx,
            };
            let sent_all = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                outgoing.send(&generation, base.as_deref(), diff_version)
            }));
            match sent_all {
                Ok(true) => {
                    if let Some((memory, requester)) = sent {
                        memory.lock().remember(&requester, generation);
                    }
                }
                Ok(false) => {}
                // The parent must see a failed call, never a short
                // generation.
                Err(panic) => {
                    stats.add_failure();
                    let _ = tx.blocking_send(Err(panicked("encoding", panic.as_ref())));
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        if request.get_ref().r#type == HISTORY_LIST_ACTION {
            return self.list_history(&request.get_ref().body);
        }
        if request.get_ref().r#type != HEALTH_ACTION {
            return Err(Status::unimplemented(format!(
                "unknown action `{}`; the actions are `{HEALTH_ACTION}` and `{HISTORY_LIST_ACTION}`",
                request.get_ref().r#type
            )));
        }
        let generation = self
            .fetch_caught(&FetchRequest {
                requester: "_health".into(),
                ..Default::default()
            })
            .await?;
        let report = HealthReport {
            producer: generation.meta.producer.clone(),
            generation_id: generation.meta.id,
            made_at_ms: generation.meta.made_at_ms,
        };
        let body = serde_json::to_vec(&report).map_err(|e| Status::internal(e.to_string()))?;
        let result = arrow_flight::Result { body: body.into() };
        let stream: BoxStream<'static, _> = Box::pin(futures::stream::iter([Ok(result)]));
        Ok(Response::new(stream))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let action = ActionType {
            r#type: HEALTH_ACTION.into(),
            description: "producer and id of the newest generation, as JSON".into(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(action)]))))
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(unimplemented("Handshake"))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(unimplemented("ListFlights"))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(unimplemented("GetFlightInfo"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(unimplemented("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(unimplemented("GetSchema"))
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(unimplemented("DoPut"))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(unimplemented("DoExchange"))
    }
}

impl Service {
    fn history_source(&self) -> Result<Arc<dyn HistoryFiles>, Status> {
        self.config.history.clone().ok_or_else(|| {
            Status::failed_precondition(
                "this node keeps no history; add `history` (tables, dir) to its [tlas.NAME] entry in the topology",
            )
        })
    }

    /// `history-list`: the kept files of one table, as JSON.
    fn list_history(
        &self,
        body: &[u8],
    ) -> Result<Response<BoxResponse<arrow_flight::Result>>, Status> {
        let source = self.history_source()?;
        let request: HistoryListRequest = serde_json::from_slice(body).map_err(|e| {
            Status::invalid_argument(format!(
                "`{HISTORY_LIST_ACTION}` takes {{\"table\": \"NAME\"}}: {e}"
            ))
        })?;
        let files = source
            .list(&request.table)
            .map_err(|e| Status::not_found(e.to_string()))?;
        let body = serde_json::to_vec(&files).map_err(|e| Status::internal(e.to_string()))?;
        let result = arrow_flight::Result { body: body.into() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }

    /// A `history` ticket: the files asked for, read and sent on a
    /// blocking thread through a bounded channel (as generations are).
    fn serve_history(
        &self,
        wanted: HistoryWanted,
    ) -> Result<Response<BoxResponse<FlightData>>, Status> {
        let source = self.history_source()?;
        if wanted.files.len() > MAX_FILES_PER_TICKET {
            return Err(Status::invalid_argument(format!(
                "a history ticket asks for at most {MAX_FILES_PER_TICKET} files ({} asked); ask again for the rest",
                wanted.files.len()
            )));
        }
        let (tx, rx) = mpsc::channel(self.config.send_buffer.max(1));
        let stats = self.stats.clone();
        tokio::task::spawn_blocking(move || {
            let label = format!("history.{}", wanted.table);
            for name in &wanted.files {
                let bytes = match source.read(&wanted.table, name) {
                    Ok(Some(bytes)) => bytes,
                    // Thinned since it was listed: left out.
                    Ok(None) => continue,
                    Err(e) => {
                        stats.add_failure();
                        let _ = tx.blocking_send(Err(Status::unavailable(format!(
                            "history file `{name}` of `{}`: {e}",
                            wanted.table
                        ))));
                        return;
                    }
                };
                let messages = match history::file_messages(name, &bytes) {
                    Ok(messages) => messages,
                    Err(e) => {
                        stats.add_failure();
                        let _ = tx.blocking_send(Err(Status::internal(e.to_string())));
                        return;
                    }
                };
                for message in messages {
                    stats.add_sent(&label, wire::message_bytes(&message), 0);
                    if tx.blocking_send(Ok(message)).is_err() {
                        return;
                    }
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Where and how one answer is sent.
struct Outgoing<'a> {
    options: arrow::ipc::writer::IpcWriteOptions,
    max_message: usize,
    stats: &'a TransferStats,
    tx: &'a mpsc::Sender<Result<FlightData, Status>>,
}

impl Outgoing<'_> {
    /// Encodes and sends one answer, as a diff against `base` (what this
    /// parent holds) where tables line up with it. True when every message
    /// was handed to the network; stops quietly when the parent hangs up.
    fn send(&self, generation: &Generation, base: Option<&Generation>, diff_version: u32) -> bool {
        let fail = |e: FlightError| {
            tracing::error!(producer = %generation.meta.producer, error = %e, "cannot encode generation");
            self.stats.add_failure();
            // An error item makes tonic end the call with this status, so
            // the parent sees a failed call, never a short generation.
            let _ = self.tx.blocking_send(Err(Status::internal(e.to_string())));
            false
        };
        let plan = wire::plan(generation, base, diff_version);
        let header = match wire::header_message(generation, base.map(|b| b.meta.id), &plan) {
            Ok(header) => header,
            Err(e) => return fail(e),
        };
        self.stats.add_header_sent(wire::message_bytes(&header));
        if self.tx.blocking_send(Ok(header)).is_err() {
            return false;
        }
        let mut diffs = 0;
        for (name, table) in &generation.tables {
            let Some(table_plan) = plan.get(name) else {
                continue;
            };
            // `plan` makes diffs only against a base.
            if matches!(table_plan, wire::TablePlan::Diff(_)) {
                diffs += 1;
            }
            let segments = match wire::segments(name, table, table_plan) {
                Ok(segments) => segments,
                Err(e) => return fail(e),
            };
            for segment in &segments {
                let messages = match wire::table_messages(
                    name,
                    segment,
                    self.options.clone(),
                    self.max_message,
                ) {
                    Ok(messages) => messages,
                    Err(e) => return fail(e),
                };
                for message in messages {
                    let message = match message {
                        Ok(message) => message,
                        Err(e) => {
                            return fail(FlightError::Encode {
                                table: name.clone(),
                                reason: e.to_string(),
                            });
                        }
                    };
                    self.stats.add_sent(name, wire::message_bytes(&message), 0);
                    if self.tx.blocking_send(Ok(message)).is_err() {
                        return false;
                    }
                }
            }
            self.stats.add_sent(name, 0, table.num_rows() as u64);
        }
        self.stats.add_diff_sent(diffs);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(id: u64) -> Arc<Generation> {
        let mut g = Generation::empty("child");
        g.meta.id = id;
        Arc::new(g)
    }

    #[test]
    fn the_last_two_answers_per_parent_are_remembered() {
        let mut memory = SentMemory::default();
        for id in 1..=3 {
            memory.remember("sql-a", generation(id));
        }
        memory.remember("sql-b", generation(7));
        assert!(memory.find("sql-a", 1).is_none(), "only the last two");
        assert_eq!(memory.find("sql-a", 2).map(|g| g.meta.id), Some(2));
        assert_eq!(memory.find("sql-a", 3).map(|g| g.meta.id), Some(3));
        // Parents are kept apart: another's answers are not a base.
        assert!(memory.find("sql-b", 3).is_none());
        assert!(memory.find("nobody", 7).is_none());
        // The same generation again is one entry, not two.
        memory.remember("sql-b", generation(7));
        memory.remember("sql-b", generation(8));
        assert_eq!(memory.find("sql-b", 7).map(|g| g.meta.id), Some(7));
    }

    #[test]
    fn a_client_naming_ever_new_parents_cannot_grow_the_memory() {
        let mut memory = SentMemory::default();
        for i in 0..(SentMemory::MAX_PARENTS + 10) {
            memory.remember(&format!("parent-{i}"), generation(1));
        }
        assert_eq!(memory.parents.len(), SentMemory::MAX_PARENTS);
        let newest = format!("parent-{}", SentMemory::MAX_PARENTS + 9);
        assert!(memory.find(&newest, 1).is_some());
    }
}
