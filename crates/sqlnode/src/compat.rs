//! What PostgreSQL clients read about the server before they query:
//! drivers and ORMs (SQLAlchemy, pandas, JDBC) parse `SELECT version()` and
//! the `server_version` parameter as Postgres prints them, and refuse to
//! connect when they cannot.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::exec_err;
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

/// OIDs of the built-in types a name can mean (`integer` is `int4`).
fn builtin_type_oid(name: &str) -> Option<i32> {
    let name = name.trim().trim_start_matches("pg_catalog.").to_lowercase();
    Some(match name.as_str() {
        "bool" | "boolean" => 16,
        "bytea" => 17,
        "name" => 19,
        "int8" | "bigint" => 20,
        "int2" | "smallint" => 21,
        "int4" | "integer" | "int" => 23,
        "text" => 25,
        "oid" => 26,
        "json" => 114,
        "float4" | "real" => 700,
        "float8" | "double precision" => 701,
        "varchar" | "character varying" => 1043,
        "date" => 1082,
        "time" | "time without time zone" => 1083,
        "timestamp" | "timestamp without time zone" => 1114,
        "timestamptz" | "timestamp with time zone" => 1184,
        "interval" => 1186,
        "numeric" | "decimal" => 1700,
        "uuid" => 2950,
        "jsonb" => 3802,
        _ => return None,
    })
}

/// `to_regtype(name)`: the type's OID, or NULL when there is no such type.
/// Drivers ask it at connect time for optional types (psycopg and
/// SQLAlchemy look for `hstore`, `json`), and treat NULL as "not here".
pub(crate) fn to_regtype_udf() -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let names = match args.first() {
                Some(ColumnarValue::Scalar(value)) => value.to_array()?,
                Some(ColumnarValue::Array(array)) => array.clone(),
                None => return exec_err!("to_regtype takes one argument, a type name"),
            };
            let names = datafusion::arrow::compute::cast(&names, &DataType::Utf8)?;
            let oids: Int32Array = names
                .as_string::<i32>()
                .iter()
                .map(|name| name.and_then(builtin_type_oid))
                .collect();
            let oids: ArrayRef = Arc::new(oids);
            if matches!(args.first(), Some(ColumnarValue::Scalar(_))) {
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &oids, 0,
                )?))
            } else {
                Ok(ColumnarValue::Array(oids))
            }
        }),
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

    #[test]
    fn unknown_types_have_no_oid() {
        assert_eq!(builtin_type_oid("hstore"), None);
        assert_eq!(builtin_type_oid("integer"), Some(23));
        assert_eq!(builtin_type_oid("pg_catalog.text"), Some(25));
    }
}
