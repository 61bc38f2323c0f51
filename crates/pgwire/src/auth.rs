//! Who a Postgres client is: SCRAM-SHA-256 against the node's users file,
//! or a client certificate signed by the configured client CA, over TLS
//! when the node has a certificate. Without a users file every client is
//! let in as before, under the name it gave.
//!
//! Each connection's state lives in its session extensions: the SCRAM
//! exchange while it runs, then the [`Principal`] every statement is
//! audited under. A connection that leaves before finishing is counted as
//! a refusal (`no_password`: what psql without a password does).

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use datafusion_postgres::pgwire;
use fleetsql_auth::{
    AuditLog, AuthMethod, FrontEnd, Principal, Role, ScramError, ScramExchange, ScramVerifier,
    ServerTls, UserStore,
};
use futures::{Sink, SinkExt};
use parking_lot::Mutex;
use pgwire::api::auth::StartupHandler;
use pgwire::api::{ClientInfo, METADATA_USER, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::{Authentication, Startup};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// What the Postgres port asks of its clients.
#[derive(Debug, Clone, Default)]
pub struct PgSecurity {
    /// Users and their verifiers; `None`: authentication off.
    pub users: Option<Arc<UserStore>>,
    /// The node's certificate; with it, plaintext connections are refused
    /// (when users are set) and client certificates accepted when it has
    /// a client CA.
    pub tls: Option<Arc<ServerTls>>,
}

/// A refused log-in: FATAL, so the protocol layer closes the connection
/// after sending it.
fn refusal(code: &str, message: String, hint: Option<&str>) -> PgWireError {
    let mut info = ErrorInfo::new("FATAL".to_string(), code.to_string(), message);
    info.hint = hint.map(str::to_string);
    PgWireError::UserError(Box::new(info))
}

/// One connection's SCRAM exchange, kept until it ends either way.
struct Pending {
    audit: Arc<AuditLog>,
    peer: SocketAddr,
    user: String,
    startup: Option<Startup>,
    verifier: ScramVerifier,
    role: Option<Role>,
    exchange: Option<ScramExchange>,
    /// Set when the exchange ended with an answer (success or refusal):
    /// what remains unset at drop is a client that went away.
    done: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.audit.refused(
                FrontEnd::Pg,
                Some(self.peer),
                &self.user,
                "no_password",
                "the client closed the connection without sending a password",
            );
        }
    }
}

struct PendingSlot(Mutex<Option<Pending>>);

/// The principal of an authenticated connection.
pub(crate) fn principal<C: ClientInfo>(client: &C) -> Option<Arc<Principal>> {
    client.session_extensions().get::<Principal>()
}

/// The startup handler: authenticates, then lets `inner` (the
/// no-authentication handler) send the parameters and ReadyForQuery.
pub(crate) struct AuthStartup<S> {
    pub(crate) inner: S,
    pub(crate) security: PgSecurity,
    pub(crate) audit: Arc<AuditLog>,
}

impl<S> AuthStartup<S> {
    fn refuse(
        &self,
        peer: SocketAddr,
        user: &str,
        reason: &'static str,
        code: &str,
        message: String,
        hint: Option<&str>,
    ) -> PgWireError {
        tracing::info!(%peer, user, reason, "postgres log-in refused");
        self.audit
            .refused(FrontEnd::Pg, Some(peer), user, reason, &message);
        refusal(code, message, hint)
    }
}

/// The user names a client certificate carries: its subject CN.
fn certificate_names(der: &[u8]) -> Vec<String> {
    x509_certificate::CapturedX509Certificate::from_der(der.to_vec())
        .ok()
        .and_then(|c| c.subject_common_name())
        .into_iter()
        .collect()
}

fn copy_startup(startup: &Startup) -> Startup {
    let mut copy = Startup::new();
    copy.protocol_number_major = startup.protocol_number_major;
    copy.protocol_number_minor = startup.protocol_number_minor;
    copy.parameters = startup.parameters.clone();
    copy
}

#[async_trait::async_trait]
impl<S: StartupHandler> StartupHandler for AuthStartup<S> {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => self.startup(client, startup).await,
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let slot = client
                    .session_extensions()
                    .get::<PendingSlot>()
                    .ok_or(PgWireError::InvalidSASLState)?;
                let mut pending = slot.0.lock().take().ok_or(PgWireError::InvalidSASLState)?;
                // Whatever happens next answers the client, unless the
                // exchange goes on (set back below).
                pending.done = true;
                let peer = pending.peer;
                let user = pending.user.clone();
                match pending.exchange.take() {
                    None => {
                        let initial = msg.into_sasl_initial_response()?;
                        if initial.auth_method != SCRAM_SHA_256 {
                            return Err(self.refuse(
                                peer,
                                &user,
                                "unsupported_mechanism",
                                "28000",
                                format!(
                                    "authentication method {} is not supported; this server offers SCRAM-SHA-256",
                                    initial.auth_method
                                ),
                                None,
                            ));
                        }
                        let first = initial
                            .data
                            .as_ref()
                            .and_then(|d| std::str::from_utf8(d).ok())
                            .unwrap_or_default();
                        let exchange = match ScramExchange::start(pending.verifier.clone(), first) {
                            Ok(exchange) => exchange,
                            Err(e) => {
                                return Err(self.scram_refusal(peer, &user, e));
                            }
                        };
                        let server_first = exchange.server_first().as_bytes().to_vec();
                        pending.exchange = Some(exchange);
                        pending.done = false;
                        *slot.0.lock() = Some(pending);
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(server_first.into()),
                            ))
                            .await?;
                        Ok(())
                    }
                    Some(exchange) => {
                        let response = msg.into_sasl_response()?;
                        let last = std::str::from_utf8(&response.data).unwrap_or_default();
                        let server_final = match (exchange.finish(last), pending.role) {
                            (Ok(server_final), Some(_)) => server_final,
                            // An unknown user's mock verifier matches no
                            // proof; answered exactly as a wrong password.
                            (Ok(_), None) => {
                                return Err(self.scram_refusal(peer, &user, ScramError::Proof));
                            }
                            (Err(e), _) => return Err(self.scram_refusal(peer, &user, e)),
                        };
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(server_final.into_bytes().into()),
                            ))
                            .await?;
                        let role = pending.role.unwrap_or(Role::Reader);
                        let startup = pending.startup.take().unwrap_or_default();
                        drop(pending);
                        self.admit(
                            client,
                            Principal::new(user, role, AuthMethod::Password),
                            startup,
                        )
                        .await
                    }
                }
            }
            _ => Ok(()),
        }
    }
}

impl<S: StartupHandler> AuthStartup<S> {
    fn scram_refusal(&self, peer: SocketAddr, user: &str, e: ScramError) -> PgWireError {
        match e {
            ScramError::Proof => self.refuse(
                peer,
                user,
                "bad_password",
                "28P01",
                format!("password authentication failed for user \"{user}\""),
                Some("check the password; an admin sets it with `fleetsql users add NAME --role ROLE --file USERS`"),
            ),
            other => self.refuse(
                peer,
                user,
                "bad_scram",
                "28000",
                format!("SCRAM authentication failed for user \"{user}\": {other}"),
                None,
            ),
        }
    }

    async fn admit<C>(
        &self,
        client: &mut C,
        principal: Principal,
        startup: Startup,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.session_extensions().insert(principal);
        self.inner
            .on_startup(client, PgWireFrontendMessage::Startup(startup))
            .await
    }

    async fn startup<C>(&self, client: &mut C, startup: Startup) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = startup
            .parameters
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        let peer = client.socket_addr();
        let Some(users) = &self.security.users else {
            return self
                .admit(client, Principal::unauthenticated(user), startup)
                .await;
        };
        if self.security.tls.is_some() && !client.is_secure() {
            return Err(self.refuse(
                peer,
                &user,
                "tls_required",
                "28000",
                "this server accepts only TLS connections".to_string(),
                Some("connect with sslmode=verify-full (or require)"),
            ));
        }
        if user.is_empty() {
            return Err(self.refuse(
                peer,
                &user,
                "no_user",
                "28000",
                "no user name was given".to_string(),
                Some("connect with user=NAME"),
            ));
        }
        let client_certs = self.security.tls.as_ref().is_some_and(|t| t.client_certs());
        let presented = client
            .client_certificates()
            .and_then(|certs| certs.first())
            .map(|cert| certificate_names(cert.as_ref()));
        if let (true, Some(names)) = (client_certs, presented) {
            // rustls verified the chain against the client CA already;
            // what is left is whether it names this user.
            return match users.user(&user) {
                Some(known) if names.contains(&user) => {
                    self.admit(client, Principal::new(user, known.role, AuthMethod::Cert), startup)
                        .await
                }
                _ => Err(self.refuse(
                    peer,
                    &user,
                    "cert_user_mismatch",
                    "28000",
                    format!(
                        "certificate authentication failed for user \"{user}\": the client certificate names {}",
                        if names.is_empty() { "no user".to_string() } else { names.join(", ") }
                    ),
                    Some("connect as the user the certificate names (its CN), who must be in the node's users file"),
                )),
            };
        }
        if let Err(throttled) = self.audit.admit_login(FrontEnd::Pg, Some(peer), &user) {
            // Counted and recorded by `admit_login`; 28000 as Postgres
            // answers a refused log-in it cannot say more about.
            return Err(refusal(
                "28000",
                throttled.to_string(),
                Some("wait, then log in with the right password"),
            ));
        }
        let (verifier, role) = users.verifier(&user);
        client.set_state(PgWireConnectionState::AuthenticationInProgress);
        client
            .session_extensions()
            .insert(PendingSlot(Mutex::new(Some(Pending {
                audit: self.audit.clone(),
                peer,
                user,
                startup: Some(copy_startup(&startup)),
                verifier,
                role,
                exchange: None,
                done: false,
            }))));
        client
            .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                vec![SCRAM_SHA_256.to_string()],
            )))
            .await?;
        Ok(())
    }
}
