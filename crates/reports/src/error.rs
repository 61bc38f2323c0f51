use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportsError {
    #[error(
        "cannot read the reports directory {dir}: {source}; create it or pass another directory"
    )]
    Directory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("report file {file}: {message}")]
    Definition { file: PathBuf, message: String },
    #[error(
        "two report files define `{name}` ({first} and {second}); names must be unique, set `name` in one of them"
    )]
    DuplicateName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("cannot open the report store {path}: {source}; check the path and its permissions")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the report store failed: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("no report is named `{0}`; GET /v1/reports lists them")]
    UnknownReport(String),
    #[error("report `{name}` cannot be drawn from history: {message}")]
    History { name: String, message: String },
    #[error("report `{name}` failed: {message}")]
    Run { name: String, message: String },
}

pub type Result<T> = std::result::Result<T, ReportsError>;
