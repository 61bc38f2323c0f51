use std::net::SocketAddr;

use fleetsql_aggregator::AggregatorError;

/// Errors of serving or fetching generations over Flight. Each variant names
/// the peer (endpoint or address) so a log line says which link broke.
#[derive(Debug, thiserror::Error)]
pub enum FlightError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the Flight server must be started inside a tokio runtime")]
    NoRuntime,
    #[error(
        "cannot start the Flight server's own threads for {addr}: {source} (lower own_threads, or raise the process's thread limit)"
    )]
    Threads {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid endpoint `{endpoint}`: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("{endpoint} answered {code:?}: {message}")]
    Status {
        endpoint: String,
        code: tonic::Code,
        message: String,
    },
    #[error("{endpoint} did not answer within {timeout_ms} ms")]
    Timeout { endpoint: String, timeout_ms: u64 },
    /// The stream broke the wire contract: corrupt or truncated data, a
    /// missing header, rows that do not add up.
    #[error("bad stream from {endpoint}: {reason}")]
    Protocol { endpoint: String, reason: String },
    #[error("bad ticket: {reason}")]
    Ticket { reason: String },
    #[error("encoding table `{table}`: {reason}")]
    Encode { table: String, reason: String },
    /// TLS material that does not load (unreadable, not PEM, a key that
    /// does not match its certificate).
    #[error("TLS {what} {}: {reason}", path.display())]
    Tls {
        what: &'static str,
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("Flight server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: tonic::transport::Error,
    },
}

pub type Result<T, E = FlightError> = std::result::Result<T, E>;

impl FlightError {
    /// The error as the aggregator reports a failed child: a timeout stays a
    /// timeout (so `visibility` says "did not answer"), everything else is a
    /// child failure carrying the whole cause.
    pub fn into_aggregator(self, child: &str) -> AggregatorError {
        match self {
            FlightError::Timeout { timeout_ms, .. } => AggregatorError::Timeout {
                child: child.to_string(),
                timeout_ms,
            },
            other => AggregatorError::Child {
                child: child.to_string(),
                reason: other.to_string(),
            },
        }
    }
}
