//! A SQL node's client-facing security, from its topology entry: users
//! (pg SCRAM, console and Flight SQL log-in), tokens (HTTP, Flight SQL),
//! its certificate for pg, HTTP and Flight SQL, and a client CA. Every file is polled for changes while the
//! [`ClientSecurity`] lives.

use std::path::PathBuf;
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

/// The security files a SQL node's entry names. The files' contents are
/// re-read while the node runs; which files it reads is fixed at start, so
/// a re-read topology naming others is reported as waiting for a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityFiles {
    pub users: Option<PathBuf>,
    pub tokens: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

impl SecurityFiles {
    pub fn of(entry: &SqlNodeEntry) -> SecurityFiles {
        SecurityFiles {
            users: entry.users.clone(),
            tokens: entry.tokens.clone(),
            tls_cert: entry.tls_cert.clone(),
            tls_key: entry.tls_key.clone(),
            client_ca: entry.client_ca.clone(),
        }
    }

    /// Writes the files this names over `entry`'s (command-line flags over
    /// the topology file); the entry keeps the others.
    pub fn write_over(&self, entry: &mut SqlNodeEntry) {
        let fields = [
            (&self.users, &mut entry.users),
            (&self.tokens, &mut entry.tokens),
            (&self.tls_cert, &mut entry.tls_cert),
            (&self.tls_key, &mut entry.tls_key),
            (&self.client_ca, &mut entry.client_ca),
        ];
        for (given, field) in fields {
            if given.is_some() {
                field.clone_from(given);
            }
        }
    }

    /// The settings whose file differs from `other`'s.
    pub(crate) fn differences(&self, other: &SecurityFiles) -> Vec<&'static str> {
        [
            ("users", self.users != other.users),
            ("tokens", self.tokens != other.tokens),
            ("tls_cert", self.tls_cert != other.tls_cert),
            ("tls_key", self.tls_key != other.tls_key),
            ("client_ca", self.client_ca != other.client_ca),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_only_other_files_count_as_changed() {
        let file = SqlNodeEntry {
            users: Some("file-users.toml".into()),
            tokens: Some("tokens.toml".into()),
            ..SqlNodeEntry::default()
        };
        let flags = SecurityFiles {
            users: Some("flag-users.toml".into()),
            ..SecurityFiles::default()
        };
        let mut started = file.clone();
        flags.write_over(&mut started);
        let started = SecurityFiles::of(&started);
        assert_eq!(started.users, Some("flag-users.toml".into()));
        assert_eq!(started.tokens, Some("tokens.toml".into()));

        // The same file re-read: nothing changed, though its users differ
        // from the flag's.
        let mut reread = file.clone();
        flags.write_over(&mut reread);
        assert!(SecurityFiles::of(&reread).differences(&started).is_empty());

        // The file names another tokens file and a client CA.
        let mut edited = SqlNodeEntry {
            tokens: Some("other-tokens.toml".into()),
            client_ca: Some("ca.crt".into()),
            ..file
        };
        flags.write_over(&mut edited);
        assert_eq!(
            SecurityFiles::of(&edited).differences(&started),
            ["tokens", "client_ca"]
        );
    }
}
