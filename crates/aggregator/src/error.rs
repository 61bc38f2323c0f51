/// Errors of the tier loop and of fetching from children.
#[derive(Debug, thiserror::Error)]
pub enum AggregatorError {
    #[error("child `{child}` did not answer within {timeout_ms} ms")]
    Timeout { child: String, timeout_ms: u64 },
    #[error("child `{child}` failed: {reason}")]
    Child { child: String, reason: String },
    #[error("`{node}` is shutting down")]
    ShuttingDown { node: String },
    #[error("static tables index `{path}`: {reason}")]
    StaticTables { path: String, reason: String },
    #[error(transparent)]
    Model(#[from] fleetsql_model::ModelError),
}

pub type Result<T, E = AggregatorError> = std::result::Result<T, E>;
