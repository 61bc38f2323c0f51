#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench configuration: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`fleetsql {role}` {reason}; its log is {log}")]
    Tier {
        role: &'static str,
        reason: String,
        log: String,
    },
    #[error("simulated fleet: {0}")]
    Sim(String),
    #[error("query `{name}` failed: {reason}")]
    Query { name: String, reason: String },
    #[error("apps on the SQL node: {0}")]
    Apps(String),
    #[error("DuckDB comparison failed: {0}")]
    DuckDb(String),
    #[error(
        "memory limit reached: the TLA, SQL node and bench hold {used_mib} MiB (limit {limit_mib} MiB); use fewer --machines or raise --max-rss"
    )]
    Memory { used_mib: u64, limit_mib: u64 },
    #[error("{0}")]
    Timeout(String),
}

impl BenchError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;
