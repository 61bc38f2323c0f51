//! Who a Flight SQL client is, checked as pg and HTTP check it: the same
//! users and tokens files, roles, audit log and failed-log-in throttle.
//!
//! Flight SQL clients (ADBC, JDBC Flight SQL, arrow-flight's own) log in
//! with a `Handshake` carrying `Authorization: Basic`; the answer's
//! `authorization: Bearer <session>` header is what they send on every
//! later call. A token of the tokens file works as the bearer directly
//! (ADBC's `adbc.flight.sql.authorization_header`), and with a client CA a
//! client certificate whose CN is a user logs that user in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleetsql_auth::{
    Action, AuditEntry, AuditLog, AuthError, AuthMethod, Credential, FrontEnd, Outcome, Principal,
    ServerTls, SessionStore, TokenStore, UserStore,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// Prefix of the tokens file's tokens; any other bearer is a session.
const TOKEN_PREFIX: &str = "fsq_";

/// What the Flight SQL port asks of its clients and where it records them.
#[derive(Debug, Clone)]
pub struct FlightSqlSecurity {
    /// Passwords (handshake with HTTP basic) and certificate users.
    pub users: Option<Arc<UserStore>>,
    /// Bearer tokens.
    pub tokens: Option<Arc<TokenStore>>,
    /// TLS with this certificate (ALPN `h2`), re-read when its files change.
    pub tls: Option<Arc<ServerTls>>,
    /// The node's audit log (`SqlNode::audit`), shared with pg and HTTP.
    pub audit: Arc<AuditLog>,
    /// How long a handshake's session token lasts.
    pub session_ttl: Duration,
    /// Sessions kept at once; the oldest goes first.
    pub max_sessions: usize,
}

impl FlightSqlSecurity {
    /// No authentication and no TLS; statements are still audited.
    pub fn new(audit: Arc<AuditLog>) -> FlightSqlSecurity {
        FlightSqlSecurity {
            users: None,
            tokens: None,
            tls: None,
            audit,
            session_ttl: Duration::from_secs(12 * 3600),
            max_sessions: 10_000,
        }
    }

    /// Whether clients must show who they are (a users or tokens file).
    pub fn authenticates(&self) -> bool {
        self.users.is_some() || self.tokens.is_some()
    }
}

/// The names a client certificate carries: its subject CN.
fn certificate_names(der: &[u8]) -> Vec<String> {
    x509_certificate::CapturedX509Certificate::from_der(der.to_vec())
        .ok()
        .and_then(|c| c.subject_common_name())
        .into_iter()
        .collect()
}

pub(crate) struct Gate {
    security: FlightSqlSecurity,
    sessions: SessionStore,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("authenticates", &self.security.authenticates())
            .field("tls", &self.security.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A refusal as the client sees it: what was wrong and what to do.
fn unauthenticated(message: impl Into<String>) -> Status {
    Status::unauthenticated(message.into())
}

impl Gate {
    pub(crate) fn new(security: FlightSqlSecurity) -> Gate {
        Gate {
            sessions: SessionStore::new(security.session_ttl, security.max_sessions),
            security,
        }
    }

    pub(crate) fn audit(&self) -> &Arc<AuditLog> {
        &self.security.audit
    }

    fn refuse(
        &self,
        peer: Option<SocketAddr>,
        user: &str,
        reason: &'static str,
        message: String,
    ) -> Status {
        tracing::info!(peer = ?peer, user, reason, "Flight SQL log-in refused");
        self.security
            .audit
            .refused(FrontEnd::FlightSql, peer, user, reason, &message);
        unauthenticated(message)
    }

    /// The principal of a certificate the TLS handshake verified against
    /// the client CA, when it names a user.
    fn certificate_user<T>(&self, request: &Request<T>) -> Option<Principal> {
        let tls = self.security.tls.as_ref()?;
        if !tls.client_certs() {
            return None;
        }
        let users = self.security.users.as_ref()?;
        let certs = request.peer_certs()?;
        let names = certificate_names(certs.first()?.as_ref());
        names.into_iter().find_map(|name| {
            users
                .user(&name)
                .map(|user| Principal::new(name, user.role, AuthMethod::Cert))
        })
    }

    /// Who sent `request`, able to `action`; refused with
    /// `Unauthenticated` or `PermissionDenied` saying why.
    pub(crate) async fn principal<T>(
        &self,
        request: &Request<T>,
        action: Action,
    ) -> Result<Principal, Status> {
        let peer = request.remote_addr();
        let principal = if !self.security.authenticates() {
            Principal::unauthenticated("anonymous")
        } else if let Some(value) = authorization(request.metadata()) {
            self.verify(&value, peer).await?
        } else if let Some(principal) = self.certificate_user(request) {
            principal
        } else {
            return Err(self.refuse(
                peer,
                "-",
                "no_credentials",
                "this Flight SQL endpoint needs a credential; none was sent: log in with a user and password (the client's username/password options, sent as a Handshake), or send `authorization: Bearer fsq_...` (a token from `fleetsql tokens create`)".to_string(),
            ));
        };
        if !principal.allows(action) {
            let e = AuthError::Forbidden {
                role: principal.role,
                action,
            };
            let mut entry = AuditEntry::new(&principal, FrontEnd::FlightSql, action);
            entry.peer = peer;
            entry.outcome = Outcome::Error(e.to_string());
            self.security.audit.refused_request(entry, e.reason());
            return Err(Status::permission_denied(e.to_string()));
        }
        Ok(principal)
    }

    /// A handshake: the caller's principal and, for a password, a session
    /// token to send as the bearer from now on (a token or certificate
    /// needs none).
    pub(crate) async fn handshake<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(Principal, Option<String>), Status> {
        let principal = self.principal(request, Action::Login).await?;
        if principal.how != AuthMethod::Password {
            return Ok((principal, None));
        }
        let (session, _) = self.sessions.start(principal.clone()).map_err(|e| {
            Status::internal(format!("{e}; retry, and report it with the node's log"))
        })?;
        let mut entry = AuditEntry::new(&principal, FrontEnd::FlightSql, Action::Login);
        entry.peer = request.remote_addr();
        self.security.audit.record(entry);
        Ok((principal, Some(session)))
    }

    async fn verify(&self, value: &str, peer: Option<SocketAddr>) -> Result<Principal, Status> {
        let credential = Credential::parse(value)
            .map_err(|e| self.refuse(peer, "-", e.reason(), e.to_string()))?;
        if let Credential::Basic { user, .. } = &credential {
            self.security
                .audit
                .admit_login(FrontEnd::FlightSql, peer, user)
                .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        }
        match credential {
            Credential::Bearer(token) if token.starts_with(TOKEN_PREFIX) => {
                let Some(tokens) = &self.security.tokens else {
                    return Err(self.refuse(
                        peer,
                        "-",
                        "unknown_token",
                        "this node accepts no tokens (its entry names no tokens file); log in with a user and password".to_string(),
                    ));
                };
                tokens
                    .verify(&token)
                    .map_err(|e| self.refuse(peer, "-", e.reason(), e.to_string()))
            }
            Credential::Bearer(session) => self
                .sessions
                .get(&session, self.security.users.as_deref())
                .map(|s| s.principal)
                .ok_or_else(|| {
                    self.refuse(
                        peer,
                        "-",
                        "expired_session",
                        "the session token expired or is not this node's; log in again (Handshake)"
                            .to_string(),
                    )
                }),
            Credential::Basic { user, password } => {
                let Some(users) = self.security.users.clone() else {
                    return Err(self.refuse(
                        peer,
                        &user,
                        "bad_password",
                        "this node has no users file, so it takes no passwords; send `authorization: Bearer fsq_...`".to_string(),
                    ));
                };
                let name = user.clone();
                // One PBKDF2 per log-in: off the IO threads.
                let verified =
                    tokio::task::spawn_blocking(move || users.verify_password(&user, &password))
                        .await
                        .unwrap_or_else(|_| Err(AuthError::BadPassword(name.clone())));
                verified.map_err(|e| self.refuse(peer, &name, e.reason(), e.to_string()))
            }
        }
    }
}

fn authorization(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
