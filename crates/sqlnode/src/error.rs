use datafusion::error::DataFusionError;

/// What went wrong with a query, phrased for the person who sent it.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("{0}")]
    Parse(String),
    #[error(
        "fleetsql is read-only: {statement} is not allowed; only SELECT, EXPLAIN, SHOW and SET are"
    )]
    ReadOnly { statement: String },
    #[error(
        "table `{table}` is not published by any machine this node can see ({machines_seen} machines); known tables: {known}"
    )]
    UnknownTable {
        table: String,
        machines_seen: u64,
        known: String,
    },
    #[error(
        "table `{table}` is being collected but no generation had it after {waited_ms} ms; try again shortly"
    )]
    NotYetCollected { table: String, waited_ms: u64 },
    #[error(
        "no generation received yet from `{source_name}`; the node is still starting or its TLA is unreachable"
    )]
    NoGeneration { source_name: String },
    #[error(
        "query cancelled after the time-out of {timeout_ms} ms; narrow it or raise query_timeout"
    )]
    Timeout { timeout_ms: u64 },
    #[error(
        "cannot SET {name}: the node's settings are shared by every client and come from its configuration; a session may set statement_timeout, application_name, DateStyle, IntervalStyle, extra_float_digits, search_path and bytea_output"
    )]
    SharedSetting { name: String },
    /// A client asked for more than a node limit allows; the node goes on.
    #[error("{what}: over the limit of {max} (setting `{setting}`)")]
    Limit {
        what: String,
        max: usize,
        setting: &'static str,
        sqlstate: &'static str,
    },
    #[error(
        "set `{set}` does not answer ad-hoc queries of role {role}; it serves {serves}. Ask a SQL node of another set (this query was not sent anywhere else)"
    )]
    OutsideDomain {
        set: String,
        role: &'static str,
        serves: String,
    },
    #[error(
        "`{table}` is readable by {needs}s only (you log in as a {role}); ask an admin, or leave it out of the query"
    )]
    NotReadable {
        table: String,
        role: &'static str,
        needs: &'static str,
    },
    #[error(
        "this SQL node serves none of {tables} here: subset `{subset}` of set `{set}` does ({})",
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
    )]
    ServedElsewhere {
        set: String,
        subset: String,
        tables: String,
        nodes: Vec<crate::Peer>,
    },
    #[error(
        "no subset of set `{set}` serves all the tables this query reads ({detail}); split it into one query per subset"
    )]
    NoSubset { set: String, detail: String },
    #[error("cannot forward the query to SQL node `{node}`: {reason}")]
    Forward { node: String, reason: String },
    #[error("SQL node `{node}`, which serves these tables, answered: {error}")]
    Remote { node: String, error: String },
    #[error("query needs more memory than its limit: {0}")]
    ResourcesExhausted(String),
    #[error("{0}")]
    Query(String),
    /// A bug met while computing the answer (a panic, caught): this query
    /// fails, the node goes on.
    #[error("internal error while computing the answer (a bug; the node's log has it): {0}")]
    Internal(String),
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(msg) => SqlError::ResourcesExhausted(msg.clone()),
            DataFusionError::SQL(err, _) => SqlError::Parse(err.to_string()),
            root => SqlError::Query(root.to_string()),
        }
    }
}

impl SqlError {
    /// True for errors caused by the query text itself (a client error).
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            SqlError::NoGeneration { .. } | SqlError::NotYetCollected { .. }
        )
    }

    /// The Postgres SQLSTATE for this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SqlError::Parse(_) => "42601",
            SqlError::ReadOnly { .. } => "25006",
            SqlError::UnknownTable { .. } => "42P01",
            SqlError::NotYetCollected { .. } | SqlError::NoGeneration { .. } => "57P03",
            SqlError::Timeout { .. } => "57014",
            SqlError::ResourcesExhausted(_) => "53200",
            // insufficient_privilege
            // insufficient_privilege
            SqlError::OutsideDomain { .. } | SqlError::NotReadable { .. } => "42501",
            // feature_not_supported: the client must split the query.
            SqlError::NoSubset { .. } | SqlError::ServedElsewhere { .. } => "0A000",
            SqlError::Forward { .. } => "08006",
            SqlError::Remote { .. } => "XX000",
            // configuration_limit_exceeded, name_too_long
            SqlError::Limit { sqlstate, .. } => sqlstate,
            // cant_change_runtime_param
            SqlError::SharedSetting { .. } => "55P02",
            SqlError::Query(_) | SqlError::Internal(_) => "XX000",
        }
    }
}
