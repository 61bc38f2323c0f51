use std::path::PathBuf;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum TiersError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error("no {role} named `{name}` in the topology; it has: {known}")]
    UnknownNode {
        role: &'static str,
        name: String,
        known: String,
    },
    #[error("{role} `{name}` has no `{field}` address; set it in the topology or pass --{field}")]
    MissingAddress {
        role: &'static str,
        name: String,
        field: &'static str,
    },
    #[error(transparent)]
    Agent(#[from] fleetsql_agent::AgentError),
    #[error(transparent)]
    Join(#[from] crate::membership::JoinError),
    #[error(transparent)]
    Aggregator(#[from] fleetsql_aggregator::AggregatorError),
    #[error(transparent)]
    Flight(#[from] fleetsql_flight::FlightError),
    #[error(transparent)]
    Sql(#[from] fleetsql_sqlnode::SqlError),
    #[error(transparent)]
    Pg(#[from] fleetsql_pgwire::PgServerError),
    #[error(transparent)]
    Http(#[from] fleetsql_http::HttpServerError),
    #[error(transparent)]
    FlightSql(#[from] fleetsql_flightsql::FlightSqlError),
    #[error(transparent)]
    AuthFile(#[from] fleetsql_auth::StoreError),
    #[error(transparent)]
    Tls(#[from] fleetsql_auth::TlsError),
    #[error(transparent)]
    History(#[from] fleetsql_history::HistoryError),
    #[error("SQL node `{name}`'s apps")]
    Apps {
        name: String,
        #[source]
        source: Box<fleetsql_apps::AppsError>,
    },
}

pub type Result<T, E = TiersError> = std::result::Result<T, E>;
