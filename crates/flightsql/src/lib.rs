//! Flight SQL on the SQL node, so ADBC, JDBC Flight SQL and BI tools read
//! answers as Arrow without the Postgres wire's row encoding.
//!
//! Every statement goes through the node's own API ([`SqlNode::prepare`],
//! [`SqlNode::pin_prepared_for`], [`SqlNode::plan`],
//! [`SqlNode::execute_plan`]), so the read-only check, time-out, memory pool
//! and Postgres output names are those of pg and HTTP.
//!
//! Clients log in as on pg and HTTP ([`FlightSqlSecurity`]): a password
//! in a `Handshake` (answered with a session token), a bearer token of the
//! tokens file, or a client certificate; the same roles, audit log and
//! failed-log-in throttle; TLS with the node's certificate.
//!
//! `GetFlightInfo` pins a generation and plans the statement there; the
//! ticket names that held plan, so `DoGet` reads the very generation the
//! `FlightInfo` described. A ticket redeemed twice, or after the plan was
//! dropped (held [`HELD_PLAN_TTL`]), runs its statement again on the newest
//! generation. Both say which generation they read as JSON of
//! [`GenerationInfo`](fleetsql_sqlnode::GenerationInfo): the `FlightInfo`'s
//! `app_metadata` and that of the stream's first message.
//!
//! [`SqlNode::prepare`]: fleetsql_sqlnode::SqlNode::prepare
//! [`SqlNode::pin_prepared_for`]: fleetsql_sqlnode::SqlNode::pin_prepared_for
//! [`SqlNode::plan`]: fleetsql_sqlnode::SqlNode::plan
//! [`SqlNode::execute_plan`]: fleetsql_sqlnode::SqlNode::execute_plan

mod error;
mod held;
mod security;
mod server;
mod service;

pub use error::FlightSqlError;
pub use held::{HELD_PLAN_TTL, MAX_HELD_PLANS, MAX_PREPARED};
pub use security::FlightSqlSecurity;
pub use server::FlightSqlServer;
pub use service::{server_name, server_version};
