use std::net::SocketAddr;
use std::path::PathBuf;

use fleetsql_model::ModelError;
use fleetsql_model::parse::ParseError;

/// Errors of the agent. Publish errors name the table and publisher so the
/// HTTP layer can tell the caller exactly what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid agent config `{field}`: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("rows for table `{table}` could not be read: {source}")]
    Parse {
        table: String,
        #[source]
        source: ParseError,
    },
    #[error("{0}")]
    InvalidName(#[source] ModelError),
    #[error("{0}")]
    SchemaConflict(#[source] ModelError),
    #[error("invalid publisher `{publisher}`: {reason}")]
    InvalidPublisher { publisher: String, reason: String },
    #[error("unsupported content type `{content_type}`")]
    UnsupportedContentType { content_type: String },
    #[error("{what} is over the limit of {max} (setting `{setting}`)")]
    Limit {
        what: String,
        max: usize,
        setting: &'static str,
    },
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error(
        "publisher `{publisher}` of table `{table}` is shed by the agent's watchdog: {reason}; \
         its rows are refused until it keeps within its share for a whole tick"
    )]
    Shed {
        table: String,
        publisher: String,
        reason: String,
    },
    #[error(
        "the agent's resident memory, {rss} bytes, is over its watchdog ceiling of {max} bytes \
         (watchdog.max_rss_bytes); publishes are refused until it is back under"
    )]
    OverMemory { rss: u64, max: u64 },
    #[error("the body could not be read: {reason}")]
    Body { reason: String },
    #[error(
        "publishing is only allowed from this machine (loopback); the request came from {peer}"
    )]
    NotLoopback { peer: SocketAddr },
    #[error("publisher `{publisher}` has no rows in table `{table}`")]
    NotPublished { table: String, publisher: String },
    #[error("host collector `{collector}` failed: {reason}")]
    Collector {
        collector: &'static str,
        reason: String,
    },
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Aggregator(#[from] fleetsql_aggregator::AggregatorError),
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

impl AgentError {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        AgentError::Config {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn collector(collector: &'static str, reason: impl std::fmt::Display) -> Self {
        AgentError::Collector {
            collector,
            reason: reason.to_string(),
        }
    }

    /// Sorts model errors into the kinds a publisher must tell apart.
    pub(crate) fn from_model(e: ModelError) -> Self {
        match e {
            ModelError::SchemaConflict { .. } => AgentError::SchemaConflict(e),
            ModelError::InvalidTableName { .. } | ModelError::InvalidColumnName { .. } => {
                AgentError::InvalidName(e)
            }
            other => AgentError::Model(other),
        }
    }
}
