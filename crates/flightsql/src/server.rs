use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use fleetsql_auth::{FrontEnd, HandshakeFailure, tls_incoming};
use fleetsql_sqlnode::SqlNode;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::FlightSqlError;
use crate::security::FlightSqlSecurity;
use crate::service::Service;

/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`FlightSqlServer::shutdown`] lets answers being sent finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running Flight SQL endpoint of one SQL node. Dropping it stops
/// serving at once; [`FlightSqlServer::shutdown`] drains.
#[derive(Debug)]
pub struct FlightSqlServer {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl FlightSqlServer {
    /// Binds `addr` (port 0 picks a free port) and serves `node`. Must be
    /// called inside a tokio runtime.
    pub fn start(node: Arc<SqlNode>, addr: SocketAddr) -> Result<FlightSqlServer, FlightSqlError> {
        let security = FlightSqlSecurity::new(node.audit().clone());
        FlightSqlServer::start_secure(node, addr, security)
    }

    /// [`FlightSqlServer::start`] asking clients what `security` says:
    /// credentials checked against the users and tokens files, TLS with
    /// the node's certificate (every connection then TLS).
    pub fn start_secure(
        node: Arc<SqlNode>,
        addr: SocketAddr,
        security: FlightSqlSecurity,
    ) -> Result<FlightSqlServer, FlightSqlError> {
        let tls = security.tls.clone();
        let audit = security.audit.clone();
        let service = Service::new(node, security)?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| FlightSqlError::NoRuntime)?;
        // Bound here, so a taken port is the caller's error, not a log line.
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| FlightSqlError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| FlightSqlError::Bind { addr, source })?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|source| FlightSqlError::Bind { addr, source })?
        };
        let (shutdown, mut signal) = watch::channel(false);
        let service = FlightServiceServer::new(service)
            // Parameters and answers are Arrow batches; tonic's 4 MiB
            // default would refuse an ordinary answer's message.
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(usize::MAX);
        let accepting = signal.clone();
        let task = runtime.spawn(async move {
            let router = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(20)))
                .add_service(service);
            let stop = async move {
                let _ = signal.wait_for(|stop| *stop).await;
            };
            let served = match tls {
                None => {
                    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                    router.serve_with_incoming_shutdown(incoming, stop).await
                }
                Some(tls) => {
                    let failed = move |peer, failure| match failure {
                        HandshakeFailure::Refused(e) => {
                            tracing::info!(%peer, error = %e, "Flight SQL TLS handshake failed");
                            audit.refused(
                                FrontEnd::FlightSql,
                                Some(peer),
                                "",
                                "tls_handshake",
                                &format!("TLS handshake failed: {e}"),
                            );
                        }
                        HandshakeFailure::TimedOut => {
                            tracing::info!(%peer, "Flight SQL TLS handshake timed out");
                        }
                    };
                    let incoming = tls_incoming(
                        listener,
                        move || tls.acceptor(),
                        HANDSHAKE_TIMEOUT,
                        failed,
                        accepting,
                    );
                    router.serve_with_incoming_shutdown(incoming, stop).await
                }
            };
            if let Err(e) = served {
                tracing::error!(addr = %local_addr, error = %e, "Flight SQL server stopped");
            }
        });
        tracing::info!(addr = %local_addr, "Flight SQL listening");
        Ok(FlightSqlServer {
            local_addr,
            shutdown,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting calls, lets answers being sent finish for a few
    /// seconds, then closes the port.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            tracing::warn!(addr = %self.local_addr, "Flight SQL server did not drain in time; aborted");
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for FlightSqlServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = self.shutdown.send(true);
            task.abort();
        }
    }
}
