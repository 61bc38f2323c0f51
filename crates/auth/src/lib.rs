//! Who may do what on a SQL node: users, tokens, roles and the audit log,
//! shared by every front end (Postgres wire, HTTP, console, XML-RPC).
//!
//! - [`UserStore`]: the users file (TOML), each user a [`Role`] and a
//!   salted SCRAM-SHA-256 verifier in PostgreSQL's format, never a
//!   password; pg runs a SCRAM exchange against it ([`ScramExchange`]),
//!   HTTP checks a password ([`UserStore::verify_password`]).
//! - [`TokenStore`]: the tokens file, bearer tokens `fsq_<id>_<secret>`
//!   stored as the SHA-256 of their secret, with role, optional scope and
//!   expiry.
//! - Both files are re-read when their content changes (`watch`); a file
//!   that does not parse leaves the previous version in use and is logged.
//!   `UsersFile` and `TokensFile` edit them (`fleetsql users|tokens`),
//!   written with mode 0600.
//! - [`Role::allows`] / [`Principal::allows`] with one [`Action`] enum is
//!   the single permission table every front end asks.
//! - [`AuditLog`]: bounded in memory (count, age, text length), also
//!   written to the log under `fleetsql::audit`; log-in refusals counted
//!   by front end and reason for `/metrics`; wrong guesses at a credential
//!   throttled per client address over every front end
//!   ([`AuditLog::admit_login`]).
//! - [`Credential`]: an `Authorization` header as every front end reads
//!   it; [`SessionStore`]: sessions a log-in opens (the console's cookie, a
//!   Flight SQL handshake's token).
//! - [`ServerTls`]: the node's client-facing certificate (pg and HTTP),
//!   optionally a client CA, re-read when the files change.

mod audit;
mod error;
mod file;
mod role;
mod scram;
mod session;
mod throttle;
mod tls;
mod tokens;
mod users;

pub use audit::{AuditConfig, AuditEntry, AuditLog, FrontEnd, Outcome};
pub use error::{AuthError, ParseError, StoreError};
pub use file::WatchHandle;
pub use role::{Action, AuthMethod, Principal, Role};
pub use scram::{DEFAULT_ITERATIONS, ScramError, ScramExchange, ScramVerifier};
pub use session::{Credential, CredentialError, Session, SessionStore};
pub use throttle::ThrottleConfig;
pub use tls::{HandshakeFailure, ServerTls, TlsError, TlsFiles, tls_incoming};
pub use tokens::{NewToken, TokenRecord, TokenStore, TokensFile, parse_duration, unix_now};
pub use users::{User, UserStore, UsersFile};
