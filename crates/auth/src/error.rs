use std::path::PathBuf;

/// A refused credential. The message is safe to show the client: it never
/// says whether a user exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("password authentication failed for user \"{0}\"")]
    BadPassword(String),
    #[error("no password was given for user \"{0}\"; this server requires one")]
    NoPassword(String),
    #[error(
        "the token is not of the form fsq_<id>_<secret>; send the whole string `fleetsql tokens create` printed"
    )]
    MalformedToken,
    #[error("unknown or revoked token {0}; ask an admin for a new one (`fleetsql tokens create`)")]
    UnknownToken(String),
    #[error("token {0} expired; ask an admin for a new one (`fleetsql tokens create`)")]
    ExpiredToken(String),
    #[error(
        "too many failed log-ins from {address}; try again in {retry_after_secs} s (each address may fail a few times in a row, then once every few seconds)"
    )]
    Throttled {
        address: std::net::IpAddr,
        retry_after_secs: u64,
    },
    #[error("role {role} may not {action}; ask an admin for a role that may")]
    Forbidden {
        role: crate::Role,
        action: crate::Action,
    },
}

impl AuthError {
    /// A short fixed reason, for metrics labels and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::BadPassword(_) => "bad_password",
            AuthError::NoPassword(_) => "no_password",
            AuthError::MalformedToken => "malformed_token",
            AuthError::UnknownToken(_) => "unknown_token",
            AuthError::ExpiredToken(_) => "expired_token",
            AuthError::Throttled { .. } => "throttled",
            AuthError::Forbidden { .. } => "forbidden",
        }
    }
}

/// A value that did not parse (command-line arguments, file fields).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown role `{0}`; use reader, operator or admin")]
    Role(String),
    #[error(
        "unknown action `{0}`; use one of login, run_sql, subscribe, register_query, delete_query, ack_alert, manage_users, manage_tokens"
    )]
    Action(String),
    #[error(
        "`{0}` is not a SCRAM-SHA-256 verifier; expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (base64), as `fleetsql users add` writes"
    )]
    Verifier(String),
    #[error("`{0}` is not a duration; use a number with s, m, h, d or w (e.g. 30d), or `never`")]
    Duration(String),
    #[error("user name `{0}` is not allowed; use letters, digits, `.`, `_`, `-` and `@` (1 to 63)")]
    UserName(String),
}

/// A users or tokens file that cannot be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid {what} file: {message}; fix it (the previous contents stay in use)"
    )]
    Invalid {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("{what} `{name}` is not in {path}")]
    NotFound {
        path: PathBuf,
        what: &'static str,
        name: String,
    },
    #[error("the system random source failed; cannot make a salt or token")]
    Random,
}
