//! What PostgreSQL clients read about the server before they query:
//! drivers and ORMs (SQLAlchemy, pandas, JDBC) parse `SELECT version()` and
//! the `server_version` parameter as Postgres prints them, and refuse to
//! connect when they cannot.

use std::sync::Arc;

use std::ops::ControlFlow;

use datafusion::arrow::array::{ArrayRef, AsArray, Int32Array, StringArray, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::exec_err;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{
    AccessExpr, Expr, Ident, ObjectName, SetExpr, Statement, TableAliasColumnDef, TableFactor,
    Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

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
fn version_udf() -> ScalarUDF {
    let text = version_text();
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
}

/// `current_setting(name)` for the settings clients read before they
/// query (Grafana asks `server_version_num` to pick its SQL dialect, and
/// `search_path` to list the tables it may name unqualified); NULL for
/// any other, as `current_setting(name, true)` answers a missing one.
fn setting_value(name: &str) -> Option<String> {
    Some(match name.trim().to_lowercase().as_str() {
        "server_version" => server_version(),
        "server_version_num" => server_version_num().to_string(),
        "search_path" => "public".to_string(),
        "standard_conforming_strings" | "integer_datetimes" => "on".to_string(),
        "client_encoding" | "server_encoding" => "UTF8".to_string(),
        "datestyle" => "ISO, MDY".to_string(),
        "timezone" => "UTC".to_string(),
        "max_identifier_length" => "63".to_string(),
        "transaction_read_only" | "default_transaction_read_only" => "on".to_string(),
        _ => return None,
    })
}

fn current_setting_udf() -> ScalarUDF {
    create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let Some(arg) = args.first() else {
                return exec_err!("current_setting takes a setting's name");
            };
            let names = arg.to_array(1)?;
            let names = datafusion::arrow::compute::cast(&names, &DataType::Utf8)?;
            let values: StringArray = names
                .as_string::<i32>()
                .iter()
                .map(|name| name.and_then(setting_value))
                .collect();
            let values: ArrayRef = Arc::new(values);
            Ok(match arg {
                ColumnarValue::Scalar(_) => {
                    ColumnarValue::Scalar(ScalarValue::try_from_array(&values, 0)?)
                }
                ColumnarValue::Array(_) => ColumnarValue::Array(values),
            })
        }),
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
fn to_regtype_udf() -> ScalarUDF {
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

/// The Postgres name of a type as DataFusion's `information_schema` prints
/// it (`Utf8`, `Int64`, `Timestamp(µs, "UTC")`): tools that introspect
/// before they query (JDBC, SQLAlchemy, DBeaver, Grafana) know only these.
fn postgres_type_name(arrow: &str) -> String {
    let base = arrow.split('(').next().unwrap_or(arrow);
    match base {
        "Utf8" | "LargeUtf8" | "Utf8View" | "Null" => "text",
        "Int64" | "UInt32" => "bigint",
        "Int32" | "UInt16" => "integer",
        "Int16" | "Int8" | "UInt8" => "smallint",
        "UInt64" | "Decimal32" | "Decimal64" | "Decimal128" | "Decimal256" => "numeric",
        "Float64" => "double precision",
        "Float32" | "Float16" => "real",
        "Boolean" => "boolean",
        "Timestamp" if arrow.contains(',') => "timestamp with time zone",
        "Timestamp" => "timestamp without time zone",
        "Date32" | "Date64" => "date",
        "Time32" | "Time64" => "time without time zone",
        "Interval" | "Duration" => "interval",
        "Binary" | "LargeBinary" | "BinaryView" | "FixedSizeBinary" => "bytea",
        "List" | "LargeList" | "FixedSizeList" | "ListView" => "ARRAY",
        _ => "USER-DEFINED",
    }
    .to_string()
}

fn postgres_type_name_udf() -> ScalarUDF {
    create_udf(
        POSTGRES_TYPE_NAME,
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let Some(arg) = args.first() else {
                return exec_err!("{POSTGRES_TYPE_NAME} takes one argument");
            };
            let names = arg.to_array(1)?;
            let names = datafusion::arrow::compute::cast(&names, &DataType::Utf8)?;
            let mapped: StringArray = names
                .as_string::<i32>()
                .iter()
                .map(|name| name.map(postgres_type_name))
                .collect();
            let mapped: ArrayRef = Arc::new(mapped);
            Ok(match arg {
                ColumnarValue::Scalar(_) => {
                    ColumnarValue::Scalar(ScalarValue::try_from_array(&mapped, 0)?)
                }
                ColumnarValue::Array(_) => ColumnarValue::Array(mapped),
            })
        }),
    )
}

const POSTGRES_TYPE_NAME: &str = "fleetsql_postgres_type_name";

/// `information_schema.columns` as Postgres has it: Postgres type names,
/// positions from 1. DataFusion's own table stays underneath.
const POSTGRES_COLUMNS: &str = "SELECT * FROM (SELECT table_catalog, table_schema, table_name, \
    column_name, CAST(ordinal_position + 1 AS INT) AS ordinal_position, column_default, \
    is_nullable, fleetsql_postgres_type_name(data_type) AS data_type, \
    character_maximum_length, character_octet_length, numeric_precision, \
    numeric_precision_radix, numeric_scale, datetime_precision, interval_type \
    FROM information_schema.columns) AS columns";

/// `information_schema._pg_expandarray(array)`, which pgjdbc's
/// `DatabaseMetaData.getPrimaryKeys` calls on `pg_index.indkey` and reads
/// as a composite `(x, n)`: each element and its position. In Postgres it
/// returns a set; here it is a scalar whose fields are NULL, so the query
/// plans and lists no key columns. Fleet tables have no keys, and the
/// catalog's own (`pg_catalog` tables in `pg_index`) are not reported.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgExpandArray {
    signature: Signature,
    aliases: Vec<String>,
}

impl PgExpandArray {
    fn fields() -> Fields {
        Fields::from(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("n", DataType::Int64, true),
        ])
    }
}

impl ScalarUDFImpl for PgExpandArray {
    fn name(&self) -> &str {
        "_pg_expandarray"
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Struct(Self::fields()))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let nulls = new_null_array(&DataType::Struct(Self::fields()), args.number_rows);
        Ok(ColumnarValue::Array(nulls))
    }
}

fn pg_expandarray_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(PgExpandArray {
        signature: Signature::any(1, Volatility::Immutable),
        // DataFusion names a qualified call by its whole text.
        aliases: vec!["information_schema._pg_expandarray".to_string()],
    })
}

/// Registers the functions above on a node's session.
pub(crate) fn register(ctx: &datafusion::prelude::SessionContext) {
    ctx.register_udf(version_udf());
    ctx.register_udf(pg_expandarray_udf());
    ctx.register_udf(to_regtype_udf());
    ctx.register_udf(current_setting_udf());
    ctx.register_udf(postgres_type_name_udf());
    if cfg!(debug_assertions) && std::env::var_os(TEST_PANIC_ENV).is_some() {
        ctx.register_udf(test_panic_udf());
    }
}

/// Set in a debug build's environment, `SELECT fleetsql_test_panic()`
/// panics inside the query: how tests prove every front end answers a
/// panicking request with an error and goes on serving. Release builds
/// never have the function.
pub const TEST_PANIC_ENV: &str = "FLEETSQL_TEST_PANIC";

fn test_panic_udf() -> ScalarUDF {
    create_udf(
        "fleetsql_test_panic",
        vec![],
        DataType::Int64,
        Volatility::Volatile,
        Arc::new(|_| panic!("fleetsql_test_panic() called ({TEST_PANIC_ENV} is set)")),
    )
}

/// Functions Postgres lets a query call in FROM although they return one
/// value (an array), not rows: the relation is one row whose one column
/// is named after the alias. Grafana's table and column pickers expand
/// the search path with `string_to_array(current_setting('search_path'),
/// ',') s` and index `s[i]`.
const SCALARS_IN_FROM: &[&str] = &[
    "string_to_array",
    "regexp_split_to_array",
    "parse_ident",
    "current_schemas",
];

/// Table functions whose one column Postgres names after the relation's
/// alias (`generate_series(1, 3) AS i` has a column `i`); DataFusion names
/// it `value`.
const ALIAS_NAMED_TABLE_FUNCTIONS: &[&str] = &["generate_series", "range"];

/// The last part of a function's name, lower case (`pg_catalog.x` is `x`).
fn function_name(name: &ObjectName) -> String {
    name.0
        .last()
        .map(|p| {
            p.as_ident()
                .map_or_else(|| p.to_string(), |i| i.value.clone())
                .to_lowercase()
        })
        .unwrap_or_default()
}

/// The names called as functions in FROM (`generate_series(1, 3)`,
/// `string_to_array(...) s`): DataFusion's table references list them
/// too, but they are no fleet table to collect.
pub(crate) fn table_function_names(statement: &Statement) -> std::collections::BTreeSet<String> {
    struct Functions(std::collections::BTreeSet<String>);
    impl Visitor for Functions {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name,
                args: Some(_),
                ..
            } = factor
            {
                self.0.insert(function_name(name));
            }
            ControlFlow::Continue(())
        }
    }
    let mut functions = Functions(Default::default());
    let _ = statement.visit(&mut functions);
    functions.0
}

/// A function called in FROM as Postgres reads it (see [`SCALARS_IN_FROM`]
/// and [`ALIAS_NAMED_TABLE_FUNCTIONS`]); `None` leaves `factor` as it is.
fn postgres_function_in_from(factor: &TableFactor) -> Option<TableFactor> {
    let TableFactor::Table {
        name,
        alias,
        args: Some(args),
        ..
    } = factor
    else {
        return None;
    };
    let function = function_name(name);
    if ALIAS_NAMED_TABLE_FUNCTIONS.contains(&function.as_str()) {
        let alias = alias.as_ref().filter(|a| a.columns.is_empty())?;
        let mut named = factor.clone();
        if let TableFactor::Table {
            alias: Some(slot), ..
        } = &mut named
        {
            slot.columns = vec![TableAliasColumnDef {
                name: alias.name.clone(),
                data_type: None,
            }];
        }
        return Some(named);
    }
    if !SCALARS_IN_FROM.contains(&function.as_str()) {
        return None;
    }
    let column = match alias {
        Some(a) => a.columns.first().map_or(&a.name, |c| &c.name).clone(),
        None => Ident::new(function),
    };
    let arguments: Vec<String> = args.args.iter().map(ToString::to_string).collect();
    let sql = format!(
        "SELECT * FROM (SELECT {name}({}) AS {column})",
        arguments.join(", ")
    );
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, &sql).ok()?;
    let Statement::Query(query) = statements.pop()? else {
        return None;
    };
    let SetExpr::Select(select) = *query.body else {
        return None;
    };
    let mut derived = select.from.into_iter().next()?.relation;
    if let TableFactor::Derived { alias: slot, .. } = &mut derived {
        *slot =
            Some(
                alias
                    .clone()
                    .unwrap_or_else(|| datafusion::sql::sqlparser::ast::TableAlias {
                        explicit: true,
                        name: column.clone(),
                        columns: vec![],
                        at: None,
                    }),
            );
    }
    Some(derived)
}

/// `(expr).field`, Postgres's access to a field of a composite value
/// (pgjdbc's `(information_schema._pg_expandarray(i.indkey)).n` and
/// `(result.KEYS).x`), as `get_field(expr, 'field')`: DataFusion reads
/// dots after a column name only.
fn postgres_field_access(expr: &Expr) -> Option<Expr> {
    let Expr::CompoundFieldAccess { root, access_chain } = expr else {
        return None;
    };
    if !matches!(**root, Expr::Nested(_)) {
        return None;
    }
    let mut text = root.to_string();
    for access in access_chain {
        let AccessExpr::Dot(Expr::Identifier(field)) = access else {
            return None;
        };
        text = format!(
            "get_field({text}, '{}')",
            field.value.to_lowercase().replace('\'', "''")
        );
    }
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&text)
        .ok()?
        .parse_expr()
        .ok()
}

/// Reads `information_schema.columns` through [`POSTGRES_COLUMNS`], and
/// functions called in FROM and composite fields as Postgres reads them.
pub(crate) fn postgres_information_schema(statement: &mut Statement) {
    struct Columns;
    impl VisitorMut for Columns {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Some(postgres) = postgres_field_access(expr) {
                *expr = postgres;
            }
            ControlFlow::Continue(())
        }
        fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            if let Some(postgres) = postgres_function_in_from(factor) {
                *factor = postgres;
                return ControlFlow::Continue(());
            }
            let TableFactor::Table { name, alias, .. } = factor else {
                return ControlFlow::Continue(());
            };
            let parts: Vec<String> = name
                .0
                .iter()
                .map(|p| p.to_string().to_lowercase())
                .collect();
            let is_columns = matches!(
                parts
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .as_slice(),
                ["information_schema", "columns"] | [_, "information_schema", "columns"]
            );
            if !is_columns {
                return ControlFlow::Continue(());
            }
            let alias = alias.clone();
            if let Some(mut derived) = postgres_columns() {
                if let (TableFactor::Derived { alias: slot, .. }, Some(alias)) =
                    (&mut derived, alias)
                {
                    *slot = Some(alias);
                }
                *factor = derived;
            }
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Columns);
}

fn postgres_columns() -> Option<TableFactor> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, POSTGRES_COLUMNS).ok()?;
    let Statement::Query(query) = statements.pop()? else {
        return None;
    };
    let SetExpr::Select(select) = *query.body else {
        return None;
    };
    select.from.into_iter().next().map(|from| from.relation)
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
    fn arrow_types_get_postgres_names() {
        assert_eq!(postgres_type_name("Utf8"), "text");
        assert_eq!(postgres_type_name("Int64"), "bigint");
        assert_eq!(postgres_type_name("Float64"), "double precision");
        assert_eq!(postgres_type_name("Boolean"), "boolean");
        assert_eq!(
            postgres_type_name("Timestamp(µs, \"UTC\")"),
            "timestamp with time zone"
        );
        assert_eq!(
            postgres_type_name("Timestamp(ms)"),
            "timestamp without time zone"
        );
        assert!(postgres_columns().is_some());
    }

    #[test]
    fn settings_clients_read_answer_as_postgres_does() {
        assert_eq!(
            setting_value("server_version_num").as_deref(),
            Some("160006")
        );
        assert_eq!(setting_value("search_path").as_deref(), Some("public"));
        assert_eq!(setting_value("no_such_setting"), None);
    }

    fn rewritten(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        postgres_information_schema(&mut statement);
        statement.to_string()
    }

    #[test]
    fn functions_in_from_read_as_postgres_reads_them() {
        assert_eq!(
            rewritten("SELECT s[i] FROM generate_series(1, 2) AS i, string_to_array('a,b', ',') s"),
            "SELECT s[i] FROM generate_series(1, 2) AS i (i), (SELECT string_to_array('a,b', ',') AS s) s"
        );
        assert_eq!(
            rewritten("SELECT (f(k)).n, (r.keys).x FROM t r"),
            "SELECT get_field((f(k)), 'n'), get_field((r.keys), 'x') FROM t r"
        );
        // Column names given, or none at all: left as DataFusion has them.
        for unchanged in [
            "SELECT x FROM generate_series(1, 2) AS i(x)",
            "SELECT value FROM generate_series(1, 2)",
            "SELECT * FROM sys AS s",
        ] {
            let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, unchanged)
                .unwrap()
                .remove(0);
            let before = statement.to_string();
            postgres_information_schema(&mut statement);
            assert_eq!(statement.to_string(), before);
        }
        let statement = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT * FROM sys, generate_series(1, 2) AS i, pg_catalog.string_to_array('a', ',') s",
        )
        .unwrap()
        .remove(0);
        assert_eq!(
            table_function_names(&statement)
                .into_iter()
                .collect::<Vec<_>>(),
            ["generate_series", "string_to_array"]
        );
    }

    #[test]
    fn unknown_types_have_no_oid() {
        assert_eq!(builtin_type_oid("hstore"), None);
        assert_eq!(builtin_type_oid("integer"), Some(23));
        assert_eq!(builtin_type_oid("pg_catalog.text"), Some(25));
    }
}
