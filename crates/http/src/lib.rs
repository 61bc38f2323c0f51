//! The HTTP front end of a SQL node: `POST /v1/query`, `/health`, and the
//! mount point for other HTTP surfaces (persistent queries, console).
//!
//! A query answer is JSON `{columns, rows, row_count, elapsed_ms,
//! generation}` where `generation` says how complete and how old the data
//! are, or an Arrow IPC stream when the client asks for
//! `application/vnd.apache.arrow.stream` (the CLI does, to keep exact
//! types); then the generation travels in the `x-fleetsql-generation`
//! header. Errors are `{error, hint}` with a status that says whose fault
//! it was. Answers are sent as they are computed (`answer.rs`): an error
//! after the first rows ends a JSON answer with `error`, `hint` and
//! `sqlstate` (status 200 already sent) and cuts an Arrow stream short.

mod answer;
mod auth;
mod guard;
mod server;
mod shape;
mod tls;

pub use auth::{CSRF_COOKIE, CSRF_HEADER, HttpSecurity, SESSION_COOKIE};
/// Kept here for front ends that already name it; it lives in the model.
pub use fleetsql_model::json::batches_to_rows;
pub use guard::{BODY_TYPES, HttpAccess};
pub use server::{
    ARROW_STREAM, GENERATION_HEADER, HttpServer, HttpServerError, QueryRequest, router,
    router_with_limits,
};
pub use shape::{QueryLimits, sql_expression_depth};
pub use tls::http_alpn;
