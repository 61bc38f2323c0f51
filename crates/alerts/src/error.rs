use std::path::PathBuf;

/// What went wrong in the alert system, phrased for the person who runs it.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("cannot read alert definition {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("alert definition {path} is invalid: {reason}")]
    Definition { path: PathBuf, reason: String },
    #[error("alert state database {path}: {source}; check the path is writable")]
    Store {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("alert `{alert}`: query failed: {reason}")]
    Query { alert: String, reason: String },
    #[error("route `{route}`: {reason}")]
    Route { route: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = AlertError> = std::result::Result<T, E>;
