use std::path::PathBuf;

/// Why a SQL node's apps could not start, phrased for whoever runs it.
#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    /// The configuration contradicts itself or names impossible values.
    #[error("{what}; {fix}")]
    Config { what: String, fix: String },
    #[error("cannot create the state directory {dir}; check its parent is writable")]
    StateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the alerts from {dir}")]
    Alerts {
        dir: PathBuf,
        #[source]
        source: fleetsql_alerts::AlertError,
    },
    #[error("cannot start the views")]
    Views {
        #[source]
        source: fleetsql_views::ViewsError,
    },
    /// The source names the store file and what to do about it.
    #[error("cannot restore the persistent queries")]
    PersistentQueries {
        #[source]
        source: fleetsql_pqa::PqaError,
    },
    #[error("cannot start the reports from {dir}")]
    Reports {
        dir: PathBuf,
        #[source]
        source: fleetsql_reports::ReportsError,
    },
    #[error("cannot use the integrations file {file}")]
    IntegrationsFile {
        file: PathBuf,
        #[source]
        source: fleetsql_integrations::IntegrationError,
    },
    /// `hint` says which process runs the kinds this one refused.
    #[error("cannot start the integrations ({hint})")]
    Integrations {
        hint: &'static str,
        #[source]
        source: fleetsql_integrations::IntegrationError,
    },
}

pub type Result<T, E = AppsError> = std::result::Result<T, E>;
