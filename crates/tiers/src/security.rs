//! A SQL node's client-facing security, from its topology entry: users
//! (pg SCRAM, console and Flight SQL log-in), tokens (HTTP, Flight SQL),
//! its certificate for pg, HTTP and Flight SQL, and a client CA. Every file is polled for changes while the
//! [`ClientSecurity`] lives.

use std::sync::Arc;
use std::time::Duration;

use fleetsql_auth::{ServerTls, TlsFiles, TokenStore, UserStore, WatchHandle};
use fleetsql_pgwire::PgSecurity;

use crate::topology::SqlNodeEntry;
use crate::{Result, TiersError};

/// How often the users, tokens and certificate files are checked.
const POLL: Duration = Duration::from_secs(1);

/// What a SQL node's front ends authenticate against; `users` `None` means
/// authentication is off (every client is let in, as before).
#[derive(Debug, Default)]
pub struct ClientSecurity {
    pub users: Option<Arc<UserStore>>,
    pub tokens: Option<Arc<TokenStore>>,
    /// The certificate and key for client-facing ports, with the client
    /// CA when one is set (its ALPN is the Postgres wire's).
    pub pg_tls: Option<Arc<ServerTls>>,
    /// The files as given, for front ends that build their own TLS
    /// configuration (another ALPN).
    pub tls_files: Option<TlsFiles>,
    /// The same certificate for HTTPS (ALPN `http/1.1`).
    pub http_tls: Option<Arc<ServerTls>>,
    /// The same certificate for Flight SQL (gRPC: ALPN `h2`).
    pub flightsql_tls: Option<Arc<ServerTls>>,
    watches: Vec<WatchHandle>,
}

impl ClientSecurity {
    /// Loads the entry's files; a file that does not load stops the start
    /// with the reason (a node must not come up with less security than
    /// configured).
    pub fn load(name: &str, entry: &SqlNodeEntry) -> Result<ClientSecurity> {
        let config = |reason: String| TiersError::Config {
            path: format!("sqlnodes.{name}"),
            reason,
        };
        let tls_files = match (&entry.tls_cert, &entry.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: entry.client_ca.clone(),
            }),
            (None, None) if entry.client_ca.is_some() => {
                return Err(config(
                    "client_ca needs tls_cert and tls_key: client certificates come only over TLS"
                        .into(),
                ));
            }
            (None, None) => None,
            _ => {
                return Err(config(
                    "tls_cert and tls_key go together: give both (or neither)".into(),
                ));
            }
        };
        let mut security = ClientSecurity {
            tls_files: tls_files.clone(),
            ..ClientSecurity::default()
        };
        if let Some(path) = &entry.users {
            let users = Arc::new(UserStore::open(path)?);
            security.watches.push(users.watch(POLL));
            security.users = Some(users);
        }
        if let Some(path) = &entry.tokens {
            let tokens = Arc::new(TokenStore::open(path)?);
            security.watches.push(tokens.watch(POLL));
            security.tokens = Some(tokens);
        }
        if let Some(files) = tls_files {
            let http = ServerTls::load(files.clone(), fleetsql_http::http_alpn())?;
            security.watches.push(http.watch(POLL));
            security.http_tls = Some(http);
            let grpc = ServerTls::load(files.clone(), vec![b"h2".to_vec()])?;
            security.watches.push(grpc.watch(POLL));
            security.flightsql_tls = Some(grpc);
            let tls = ServerTls::load(files, vec![b"postgresql".to_vec()])?;
            security.watches.push(tls.watch(POLL));
            security.pg_tls = Some(tls);
        }
        Ok(security)
    }

    /// What the HTTP port asks of its clients; `audit` is the node's.
    pub fn http(&self, audit: Arc<fleetsql_auth::AuditLog>) -> fleetsql_http::HttpSecurity {
        fleetsql_http::HttpSecurity {
            users: self.users.clone(),
            tokens: self.tokens.clone(),
            tls: self.http_tls.clone(),
            ..fleetsql_http::HttpSecurity::new(audit)
        }
    }

    /// What the Flight SQL port asks of its clients; `audit` is the node's.
    pub fn flightsql(
        &self,
        audit: Arc<fleetsql_auth::AuditLog>,
    ) -> fleetsql_flightsql::FlightSqlSecurity {
        fleetsql_flightsql::FlightSqlSecurity {
            users: self.users.clone(),
            tokens: self.tokens.clone(),
            tls: self.flightsql_tls.clone(),
            ..fleetsql_flightsql::FlightSqlSecurity::new(audit)
        }
    }

    /// What the Postgres port asks of its clients.
    pub fn pg(&self) -> PgSecurity {
        PgSecurity {
            users: self.users.clone(),
            tls: self.pg_tls.clone(),
        }
    }
}
