//! Errors of the persistent-query engine.

use thiserror::Error;

/// A position in EPL text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Pos {
    /// Line, starting at 1.
    pub line: u32,
    /// Column (in characters), starting at 1.
    pub col: u32,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.col)
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, Error)]
pub enum PqaError {
    /// The statement does not parse.
    #[error("syntax error at {pos}: expected {expected}, found {found}")]
    Parse {
        /// Where the parser stopped.
        pos: Pos,
        /// What the grammar allows there.
        expected: String,
        /// The token that was there instead.
        found: String,
    },
    /// The statement parses but does not make sense (unknown alias, aggregate in a filter...).
    #[error("invalid statement at {pos}: {message}")]
    Semantic {
        /// Where the offending construct starts.
        pos: Pos,
        /// What is wrong.
        message: String,
    },
    /// No persistent query has this id.
    #[error("no persistent query with id {0}")]
    UnknownQuery(String),
    /// An event could not be accepted (not a JSON object, bad NDJSON line...).
    #[error("bad event for stream {stream}: {message}")]
    BadEvent {
        /// The stream the event was posted to.
        stream: String,
        /// Why it was refused.
        message: String,
    },
    /// The request itself is malformed (bad publish mode, bad webhook URL...).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A request went over one of the node's limits (nesting depth, name
    /// length, registrations, subscribers...). Each names its setting so the
    /// operator knows what to raise, and the client what to shrink.
    #[error("{what} is over the limit of {max} (setting `{setting}`)")]
    Limit {
        /// What was too deep, too long or too many.
        what: String,
        /// The limit in force.
        max: usize,
        /// The `ServiceConfig` field that sets it.
        setting: &'static str,
    },
    /// A webhook URL the node will not call (not http(s), or a host the
    /// webhook policy does not allow).
    #[error("webhook {url} is refused: {rule}")]
    WebhookRefused {
        /// The URL as given.
        url: String,
        /// Which rule refused it.
        rule: String,
    },
    /// The file of durable registrations (see
    /// [`crate::PqaService::with_store`]) cannot be read at start, or a
    /// change cannot be written to it.
    #[error("the persistent-query store {}: {problem}; {fix}", path.display())]
    Store {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        problem: String,
        /// What the operator (or client) can do.
        fix: &'static str,
    },
    /// A sink failed to deliver a notification.
    #[error("sink {sink} failed: {message}")]
    Sink {
        /// The sink's name (e.g. the webhook URL).
        sink: String,
        /// What went wrong.
        message: String,
    },
}

impl PqaError {
    /// A short hint for clients on how to fix the problem.
    pub fn hint(&self) -> &'static str {
        match self {
            PqaError::Parse { .. } => {
                "check the EPL syntax near the given position (Esper EPL: select ... from Stream.win:time(20 sec) ...)"
            }
            PqaError::Semantic { .. } => "check stream aliases, aggregates and window parameters",
            PqaError::UnknownQuery(_) => "list registered queries with GET /v1/persistent-queries",
            PqaError::BadEvent { .. } => {
                "post one JSON object, or newline-delimited JSON objects, per request"
            }
            PqaError::BadRequest(_) => {
                "publish is one of all|current|max|min|avg; webhook must be an http(s) URL"
            }
            PqaError::Limit { .. } => {
                "simplify or split the request, delete unused queries, or ask the operator to raise the setting"
            }
            PqaError::WebhookRefused { .. } => {
                "use an http(s) URL of a public host; private, loopback and link-local targets need the operator's webhook_allow_hosts"
            }
            PqaError::Sink { .. } => "the sink is retried with backoff; check its endpoint",
            PqaError::Store { .. } => {
                "the node could not keep the registration on disk; try again, or tell the operator (the node's log has the file and the cause)"
            }
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = PqaError> = std::result::Result<T, E>;
