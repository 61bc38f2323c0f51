use std::net::SocketAddr;
use std::sync::Arc;

use datafusion_postgres::QueryHook;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire;
use fleetsql_auth::FrontEnd;
use fleetsql_sqlnode::SqlNode;
use futures::{Sink, SinkExt};
use pgwire::api::auth::StartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ClientInfo, ConnectionManager, ErrorHandler, PgWireServerHandlers};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::auth::{AuthStartup, PgSecurity};
use crate::hook::FleetHook;
use crate::service::FleetService;
use crate::timeout::StatementTimeoutHook;

#[derive(Debug, thiserror::Error)]
pub enum PgServerError {
    #[error(
        "cannot listen for Postgres clients on {addr}: {source}; pick another --pg-port (0 picks a free one)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up pg_catalog: {0}")]
    Catalog(String),
}

struct Startup {
    connections: Arc<ConnectionManager>,
}

#[async_trait::async_trait]
impl NoopStartupHandler for Startup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }

    /// Restates `server_version` in Postgres's own form: the protocol
    /// layer's default names itself in a way version parsers reject, and a
    /// client keeps the last value a server reports.
    async fn post_startup<C>(
        &self,
        client: &mut C,
        _message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client
            .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                "server_version".to_string(),
                fleetsql_sqlnode::server_version(),
            )))
            .await?;
        Ok(())
    }
}

struct Handlers {
    service: Arc<FleetService>,
    startup: Arc<AuthStartup<Startup>>,
    cancel: Arc<DefaultCancelHandler>,
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, _client: &C, error: &mut PgWireError) {
        tracing::debug!(error = %error, "query failed");
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
}

/// The refusal reason of a connection that failed in its TLS handshake:
/// the client refused this node's certificate (its CA is not the one the
/// client trusts, or the name differs), or the client's certificate was
/// not signed by the client CA; `None` for any other error.
fn tls_refusal(e: &std::io::Error) -> Option<&'static str> {
    use tokio_rustls::rustls::Error as TlsError;
    let tls = e.get_ref()?.downcast_ref::<TlsError>()?;
    Some(match tls {
        TlsError::AlertReceived(_) => "tls_client_refused_certificate",
        TlsError::InvalidCertificate(_) | TlsError::NoCertificatesPresented => {
            "bad_client_certificate"
        }
        _ => "tls_handshake",
    })
}

/// A running Postgres listener; `shutdown` (or drop) closes it and every
/// open connection.
#[derive(Debug)]
pub struct PgServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgServer {
    /// Listens on `addr` (port 0 picks one) and serves `node` to anyone,
    /// in plaintext.
    pub async fn start(node: Arc<SqlNode>, addr: SocketAddr) -> Result<PgServer, PgServerError> {
        PgServer::start_secure(node, addr, PgSecurity::default()).await
    }

    /// Listens on `addr` and serves `node` to the clients `security`
    /// admits; every statement is recorded in the node's audit log.
    pub async fn start_secure(
        node: Arc<SqlNode>,
        addr: SocketAddr,
        security: PgSecurity,
    ) -> Result<PgServer, PgServerError> {
        if security.users.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "the Postgres port is open to the network WITHOUT AUTHENTICATION: anyone who can reach it can query the fleet; give the node a users file (`users` in its topology entry, `fleetsql users add`) and a certificate (`tls_cert`, `tls_key`)"
            );
        }
        let audit = node.audit().clone();
        let query_timeout = node.config().query_timeout;
        let ctx = node.session_context();
        if ctx
            .catalog("datafusion")
            .and_then(|c| c.schema("pg_catalog"))
            .is_none()
        {
            setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider)
                .map_err(|e| PgServerError::Catalog(e.to_string()))?;
        }
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(FleetHook { node: node.clone() }),
            Arc::new(StatementTimeoutHook),
            Arc::new(CursorStatementHook),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let connections = Arc::new(ConnectionManager::new());
        let handlers = Arc::new(Handlers {
            service: Arc::new(FleetService::new(
                ctx,
                hooks,
                audit.clone(),
                query_timeout,
                node,
            )),
            startup: Arc::new(AuthStartup {
                inner: Startup {
                    connections: connections.clone(),
                },
                security: security.clone(),
                audit: audit.clone(),
            }),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        });
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| PgServerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| PgServerError::Bind { addr, source })?;
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, peer)) => {
                            let handlers = handlers.clone();
                            let tls = security.tls.as_ref().map(|t| t.acceptor());
                            let audit = audit.clone();
                            connections.spawn(async move {
                                if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                                    if let Some(reason) = tls_refusal(&e) {
                                        tracing::info!(%peer, reason, error = %e, "postgres TLS handshake failed");
                                        audit.refused(FrontEnd::Pg, Some(peer), "", reason, &e.to_string());
                                    } else {
                                        tracing::debug!(%peer, error = %e, "postgres connection ended with an error");
                                    }
                                }
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "accepting a postgres connection failed"),
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(PgServer { local_addr, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub async fn shutdown(self) {
        self.task.abort();
    }
}
