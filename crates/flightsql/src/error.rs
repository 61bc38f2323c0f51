use std::net::SocketAddr;

use fleetsql_sqlnode::SqlError;
use tonic::{Code, Status};

/// Errors of starting or serving the Flight SQL endpoint.
#[derive(Debug, thiserror::Error)]
pub enum FlightSqlError {
    #[error(
        "cannot listen for Flight SQL on {addr}: {source}; pick another --flightsql address (port 0 picks a free one)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the Flight SQL server must be started inside a tokio runtime")]
    NoRuntime,
    /// A programming error: a `SqlInfo` value of a type the protocol has not.
    #[error("the Flight SQL server information does not build: {0}")]
    SqlInfo(String),
}

/// The gRPC status a query error is sent as; the message is the node's
/// own (the same text pg and HTTP send) and the SQLSTATE rides along in
/// `x-fleetsql-sqlstate` for clients that map errors as Postgres does.
pub(crate) fn status_of(e: &SqlError) -> Status {
    // By SQLSTATE class, so a variant added to `SqlError` maps too.
    let code = match e.sqlstate() {
        "25006" | "42501" => Code::PermissionDenied,
        "42P01" => Code::NotFound,
        "57014" => Code::DeadlineExceeded,
        "55P02" => Code::FailedPrecondition,
        s if s.starts_with("57") => Code::Unavailable,
        s if s.starts_with("53") || s.starts_with("54") => Code::ResourceExhausted,
        _ => Code::InvalidArgument,
    };
    let mut status = Status::new(code, e.to_string());
    if let Ok(value) = e.sqlstate().parse() {
        status.metadata_mut().insert("x-fleetsql-sqlstate", value);
    }
    status
}
