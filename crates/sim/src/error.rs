/// Errors of the simulator: only a configuration it cannot honour.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator setting `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
}

pub type Result<T, E = SimError> = std::result::Result<T, E>;
