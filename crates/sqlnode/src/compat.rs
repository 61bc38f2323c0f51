//! What PostgreSQL clients read about the server before they query:
//! drivers and ORMs (SQLAlchemy, pandas, JDBC) parse `SELECT version()` and
//! the `server_version` parameter as Postgres prints them, and refuse to
//! connect when they cannot.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::scalar::ScalarValue;

/// The PostgreSQL release whose wire protocol and catalogs we speak.
const POSTGRES_RELEASE: &str = "16.6";

/// `server_version` as Postgres reports it: the release, then what the
/// server really is in parentheses (as distributions add theirs).
pub fn server_version() -> String {
    format!(
        "{POSTGRES_RELEASE} (fleetsql {}, DataFusion {})",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    )
}

/// `server_version_num`: major * 10000 + minor, as Postgres 10+ gives it.
pub fn server_version_num() -> u32 {
    let mut parts = POSTGRES_RELEASE
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    major * 10_000 + minor
}

/// `SELECT version()`: `PostgreSQL 16.6 (fleetsql ..., DataFusion ...)`.
pub fn version_text() -> String {
    format!("PostgreSQL {}", server_version())
}

/// Replaces DataFusion's own `version()`, whose text no driver parses.
pub(crate) fn version_udf() -> ScalarUDF {
    let text = version_text();
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_reads_as_postgres_prints_it() {
        // SQLAlchemy's pattern: `PostgreSQL (\d+)\.?(\d+)?`.
        let text = version_text();
        let rest = text.strip_prefix("PostgreSQL ").unwrap();
        let (major, rest) = rest.split_once('.').unwrap();
        assert_eq!(major.parse::<u32>().unwrap(), 16);
        assert!(rest.starts_with(|c: char| c.is_ascii_digit()));
        assert!(text.contains("fleetsql"));
        assert_eq!(server_version_num(), 160006);
    }
}
