use std::path::PathBuf;

/// What went wrong in an integration.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    /// The config file could not be read.
    #[error("cannot read integrations config {path}: {source}")]
    ConfigIo {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("invalid integrations config: {0}")]
    Config(String),
    /// An integration needs a part this process does not run.
    #[error("integration `{name}` needs {what}, which this process does not run")]
    Missing {
        /// The integration's name.
        name: String,
        /// The missing part.
        what: &'static str,
    },
    /// Talking to the outside server failed (connect, HTTP status, protocol).
    #[error("{0}")]
    Remote(String),
    /// The server answered with something unusable as a whole.
    #[error("bad input: {0}")]
    BadInput(String),
}

/// Result with [`IntegrationError`].
pub type Result<T, E = IntegrationError> = std::result::Result<T, E>;
