use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Ticket};
use async_trait::async_trait;
use fleetsql_aggregator::{Child, FetchRequest};
use fleetsql_model::Generation;
use futures::StreamExt;
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::history::{
    Assembler, HISTORY_LIST_ACTION, HistoryFileInfo, HistoryListRequest, HistoryTicket,
    HistoryWanted,
};
use crate::server::{HEALTH_ACTION, HealthReport};
use crate::stats::TransferStats;
use crate::tls::{self, TlsContext};
use crate::wire::{self, FetchTicket};
use crate::{FlightError, Result};

/// How a [`FlightChild`] talks to its server.
/// HTTP/2 flow-control window of a Flight stream, bytes.
pub(crate) const FLOW_WINDOW: u32 = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct FlightChildOptions {
    /// How long establishing the TCP + HTTP/2 connection may take.
    pub connect_timeout: Duration,
    /// How long one call may take beyond the long-poll wait it asked for
    /// (connecting, the child's own collection, transfer).
    pub request_timeout: Duration,
    /// Largest single `FlightData` message accepted; must exceed the
    /// server's `max_message_bytes`.
    pub max_message_bytes: usize,
    /// Mutual TLS with this node's certificate; the child must present a
    /// certificate for its own name. `None`: plaintext.
    pub tls: Option<Arc<TlsContext>>,
}

impl Default for FlightChildOptions {
    fn default() -> Self {
        FlightChildOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_message_bytes: 64 * 1024 * 1024,
            tls: None,
        }
    }
}

/// A remote tier as a [`Child`]: each `fetch` is one `DoGet` whose ticket
/// carries the parent's request, answered with a whole generation or an
/// error, never part of one.
///
/// The connection is made on first use and dropped after any failure, so
/// the next fetch reconnects: a restarted server is picked up without
/// operator action, and a dead one costs one connect timeout per fetch.
#[derive(Debug)]
pub struct FlightChild {
    name: String,
    endpoint: String,
    options: FlightChildOptions,
    target: Endpoint,
    client: Mutex<Option<FlightServiceClient<Channel>>>,
    /// The last generation received with its rows: named as
    /// `base_generation`, so the server may send a diff against it, and the
    /// source of the columns a diff leaves out.
    base: Mutex<Option<Arc<Generation>>>,
    stats: Arc<TransferStats>,
}

impl FlightChild {
    /// A child reached at `endpoint` (`http://host:port`). Does not connect.
    pub fn new(
        name: impl Into<String>,
        endpoint: String,
        options: FlightChildOptions,
    ) -> Result<FlightChild> {
        let invalid = |reason: String| FlightError::InvalidEndpoint {
            endpoint: endpoint.clone(),
            reason,
        };
        let target = Endpoint::from_shared(endpoint.clone())
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            // Notices a child that vanished without closing the socket
            // while we sit in a long poll.
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            // A generation is hundreds of megabytes on one stream. HTTP/2's
            // default 64 KiB window makes the sender wait for a window
            // update every 64 KiB, so one stream moves a few tens of MB/s
            // on a busy host; windows of the size of a batch keep it
            // streaming.
            .initial_stream_window_size(FLOW_WINDOW)
            .initial_connection_window_size(FLOW_WINDOW * 2);
        Ok(FlightChild {
            name: name.into(),
            endpoint,
            options,
            target,
            client: Mutex::new(None),
            base: Mutex::new(None),
            stats: Arc::new(TransferStats::new()),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Bytes and rows received per table, for `/metrics`.
    pub fn stats(&self) -> Arc<TransferStats> {
        self.stats.clone()
    }

    /// Fetches over Flight with this crate's error type (the [`Child`]
    /// impl maps it to an aggregator error).
    pub async fn fetch_generation(&self, request: &FetchRequest) -> Result<Arc<Generation>> {
        let limit = request.wait.unwrap_or_default() + self.options.request_timeout;
        let attempt = tokio::time::timeout(limit, self.call(request)).await;
        let result = match attempt {
            Ok(result) => result,
            Err(_) => Err(FlightError::Timeout {
                endpoint: self.endpoint.clone(),
                timeout_ms: limit.as_millis() as u64,
            }),
        };
        self.stats.add_call();
        match &result {
            Ok(generation) => {
                if !request.meta_only {
                    *self.base.lock() = Some(generation.clone());
                }
            }
            Err(e) => {
                self.stats.add_failure();
                // Whatever broke, the next call starts from a new connection
                // and asks for whole tables, so a diff that cannot be
                // applied here is never asked for twice.
                *self.client.lock() = None;
                *self.base.lock() = None;
                if matches!(e, FlightError::Protocol { .. }) {
                    tracing::error!(child = %self.name, error = %e, "rejected a Flight stream");
                } else {
                    tracing::warn!(child = %self.name, error = %e, "Flight fetch failed");
                }
            }
        }
        result
    }

    /// Asks the server for its newest generation's producer and id.
    pub async fn health(&self) -> Result<HealthReport> {
        let call = async {
            let mut client = self.client().await?;
            let action = Action {
                r#type: HEALTH_ACTION.into(),
                body: Default::default(),
            };
            let mut stream = client
                .do_action(action)
                .await
                .map_err(|s| wire::status_error(&self.endpoint, &s))?
                .into_inner();
            let first = stream
                .next()
                .await
                .ok_or_else(|| self.protocol("empty health answer"))?
                .map_err(|s| wire::status_error(&self.endpoint, &s))?;
            serde_json::from_slice(&first.body)
                .map_err(|e| self.protocol(&format!("health answer is not JSON: {e}")))
        };
        let limit = self.options.request_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(e)) => {
                *self.client.lock() = None;
                Err(e)
            }
            Err(_) => {
                *self.client.lock() = None;
                Err(FlightError::Timeout {
                    endpoint: self.endpoint.clone(),
                    timeout_ms: limit.as_millis() as u64,
                })
            }
        }
    }

    /// The kept history files of `table` on the child (a TLA keeping
    /// history), oldest first.
    pub async fn history_list(&self, table: &str) -> Result<Vec<HistoryFileInfo>> {
        let call = async {
            let mut client = self.client().await?;
            let body = serde_json::to_vec(&HistoryListRequest {
                table: table.to_string(),
            })
            .map_err(|e| self.protocol(&e.to_string()))?;
            let action = Action {
                r#type: HISTORY_LIST_ACTION.into(),
                body: body.into(),
            };
            let mut stream = client
                .do_action(action)
                .await
                .map_err(|s| wire::status_error(&self.endpoint, &s))?
                .into_inner();
            let first = stream
                .next()
                .await
                .ok_or_else(|| self.protocol("empty history list"))?
                .map_err(|s| wire::status_error(&self.endpoint, &s))?;
            serde_json::from_slice(&first.body)
                .map_err(|e| self.protocol(&format!("history list is not JSON: {e}")))
        };
        self.timed(self.options.request_timeout, call).await
    }

    /// Kept history files `files` of `table` (at most
    /// [`MAX_FILES_PER_TICKET`](crate::MAX_FILES_PER_TICKET)), each whole:
    /// `(name, bytes)` in the order asked, less those the child no longer
    /// keeps.
    pub async fn history_files(
        &self,
        table: &str,
        files: Vec<String>,
    ) -> Result<Vec<(String, bytes::Bytes)>> {
        let ticket = HistoryTicket {
            history: HistoryWanted {
                table: table.to_string(),
                files,
            },
        };
        let call = async {
            let mut client = self.client().await?;
            let mut stream = client
                .do_get(Ticket {
                    ticket: ticket.to_bytes(),
                })
                .await
                .map_err(|s| wire::status_error(&self.endpoint, &s))?
                .into_inner();
            let mut assembler = Assembler::default();
            while let Some(message) = stream.next().await {
                let message = message.map_err(|s| wire::status_error(&self.endpoint, &s))?;
                assembler.push(&message).map_err(|r| self.protocol(&r))?;
            }
            assembler.finish().map_err(|r| self.protocol(&r))
        };
        // Files are larger than a generation's header: a few times the
        // call limit.
        self.timed(self.options.request_timeout * 3, call).await
    }

    /// `call` within `limit`; any failure drops the connection, so the
    /// next call reconnects.
    async fn timed<T>(
        &self,
        limit: Duration,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                *self.client.lock() = None;
                Err(e)
            }
            Err(_) => {
                *self.client.lock() = None;
                Err(FlightError::Timeout {
                    endpoint: self.endpoint.clone(),
                    timeout_ms: limit.as_millis() as u64,
                })
            }
        }
    }

    async fn call(&self, request: &FetchRequest) -> Result<Arc<Generation>> {
        let mut client = self.client().await?;
        let base = self.base.lock().clone();
        let ticket = Ticket {
            ticket: FetchTicket::from_request(request, base.as_deref()).to_bytes(),
        };
        let stream = client
            .do_get(ticket)
            .await
            .map_err(|s| wire::status_error(&self.endpoint, &s))?
            .into_inner();
        wire::decode_generation(&self.endpoint, stream, &self.stats, base.as_deref())
            .await
            .map(Arc::new)
    }

    /// The cached client, or a new connection. The lock is never held
    /// across the connect, so concurrent fetches do not queue behind it.
    async fn client(&self) -> Result<FlightServiceClient<Channel>> {
        if let Some(client) = self.client.lock().clone() {
            return Ok(client);
        }
        let connected = match &self.options.tls {
            Some(tls) => {
                let (tls, child) = (tls.clone(), self.name.clone());
                let connector =
                    tower::service_fn(move |uri| tls_connect(tls.clone(), child.clone(), uri));
                self.target.connect_with_connector(connector).await
            }
            None => self.target.connect().await,
        };
        let channel = connected.map_err(|e| FlightError::Connect {
            endpoint: self.endpoint.clone(),
            reason: error_chain(&e),
        })?;
        let client = FlightServiceClient::new(channel)
            .max_decoding_message_size(self.options.max_message_bytes);
        *self.client.lock() = Some(client.clone());
        Ok(client)
    }

    fn protocol(&self, reason: &str) -> FlightError {
        FlightError::Protocol {
            endpoint: self.endpoint.clone(),
            reason: reason.to_string(),
        }
    }
}

#[async_trait]
impl Child for FlightChild {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, request: &FetchRequest) -> fleetsql_aggregator::Result<Arc<Generation>> {
        self.fetch_generation(request)
            .await
            .map_err(|e| e.into_aggregator(&self.name))
    }
}

/// Dials a child over TCP and TLS, expecting a certificate for `child`
/// (its node name) and presenting this node's; each new connection takes
/// the certificate of the moment.
async fn tls_connect(
    tls: Arc<TlsContext>,
    child: String,
    uri: tonic::transport::Uri,
) -> std::io::Result<hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>
{
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let host = uri
        .host()
        .ok_or_else(|| invalid(format!("no host in {uri}")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri
        .port_u16()
        .ok_or_else(|| invalid(format!("no port in {uri}")))?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(child.clone())
        .map_err(|e| invalid(format!("`{child}` is not a DNS name for TLS: {e}")))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let peer = format!("child `{child}` at {host}:{port}");
    let connector = tokio_rustls::TlsConnector::from(tls.client_config());
    match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(hyper_util::rt::TokioIo::new(stream)),
        Ok(Err(e)) => {
            tls.handshake_failed(tls::Link::Outgoing, &peer, &e);
            Err(e)
        }
        Err(_) => {
            let e = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{peer} did not complete a TLS handshake"),
            );
            tls.handshake_failed(tls::Link::Outgoing, &peer, &e);
            Err(e)
        }
    }
}

/// `transport error: connection refused` rather than just `transport error`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
