//! The Postgres wire front end of a SQL node, so `psql`, Grafana and any pg
//! driver can ask fleet questions.
//!
//! Protocol handling, `pg_catalog` (for `\d`, `\dt`) and result encoding come
//! from `datafusion-postgres`; fleetsql adds one [`QueryHook`] in front of its
//! hooks that (1) refuses anything but reads, (2) pins each statement to one
//! generation through [`SqlNode::pin`], requesting and waiting for tables
//! not collected yet, (3) runs simple queries under the node's time-out and
//! (4) sends the answer's completeness and age as a NOTICE. In front of the
//! protocol layer's parser, statements that read fleet tables are parsed
//! as HTTP parses them, so its Postgres-compatibility rewrites (meant for
//! catalog queries) never change a fleet query's answer.
//!
//! With a users file ([`PgSecurity`]) clients log in with SCRAM-SHA-256
//! (or a client certificate), over TLS when the node has a certificate;
//! refusals are counted in the node's [`AuditLog`], and every statement is
//! recorded there with its principal, peer, outcome and duration once its
//! answer has been sent (`fleet_audit`).
//!
//! [`AuditLog`]: fleetsql_auth::AuditLog
//!
//! [`QueryHook`]: datafusion_postgres::QueryHook

mod audit;
mod auth;
mod copy;
mod execute;
mod hook;
mod search_path;
mod server;
mod service;
mod text_times;
mod timeout;

pub use auth::PgSecurity;
pub use server::{PgServer, PgServerError};
