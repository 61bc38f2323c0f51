use std::path::PathBuf;

/// What went wrong keeping or reading history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A setting of `history` that cannot work; `setting` is its path in
    /// the node's entry (`history.keep[1].every`).
    #[error("`{setting}`: {reason}")]
    Config { setting: String, reason: String },
    #[error("history directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing history file {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error(
        "history stops writing: {path} has {free_mib} MiB free, under `history.min_free_mib` = {min_free_mib}; free disk space (or lower the setting) and it resumes within a minute"
    )]
    DiskFull {
        path: PathBuf,
        free_mib: u64,
        min_free_mib: u64,
    },
    #[error(
        "table `{table}` is not kept in history on this node; add it to `history.tables` of this node's entry in the topology (kept: {kept})"
    )]
    NotKept { table: String, kept: String },
    #[error("history.{table}: {reason}")]
    NoGeneration { table: String, reason: String },
}

impl HistoryError {
    /// Whether it is the disk being full: under `min_free_mib`, or a
    /// write refused for want of space (ENOSPC, EDQUOT).
    pub fn is_disk_full(&self) -> bool {
        match self {
            HistoryError::DiskFull { .. } => true,
            HistoryError::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(28 | 122))
            }
            // Parquet's writer hands the I/O error on as text.
            HistoryError::Write { reason, .. } => {
                reason.contains("No space left") || reason.contains("os error 28")
            }
            _ => false,
        }
    }
}

pub type Result<T, E = HistoryError> = std::result::Result<T, E>;
