//! Output column names as PostgreSQL gives them, on every front end.
//!
//! DataFusion names an unaliased expression after its text (`count(*)`,
//! `max(sys.rss)`) and refuses a projection with two equal names (`SELECT
//! ip, ip`). Postgres, psql users and every driver expect `count`, `max`,
//! `?column?`, and duplicate names are legal there. So, before planning,
//! unnamed expressions get Postgres's name as an alias, and items whose
//! names would collide get a unique placeholder alias that carries the
//! wanted name; after planning one projection on top gives the
//! placeholders their names back. Duplicate names are legal in an Arrow
//! schema, and in a DataFusion schema as long as each has its own
//! qualifier, which that projection gives them.

use std::collections::HashMap;

use datafusion::common::{Column, Result as DfResult, TableReference};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::sql::sqlparser::ast::{
    CastKind, DataType, Expr as SqlExpr, Ident, ObjectNamePart, OrderBy, OrderByKind, Query,
    SelectItem, SetExpr, Statement,
};

/// Placeholder aliases start with this; what follows the second `__` is
/// the wanted name.
const PLACEHOLDER: &str = "__fleetsql_name_";

/// Postgres's name for an unnamed output expression it cannot name.
const UNNAMED: &str = "?column?";

/// Rewrites the projection of `statement`'s outermost query (every branch
/// of a set operation, as each is planned on its own) so that planning
/// gives Postgres's names. Statements other than queries are left alone.
pub(crate) fn name_outputs(statement: &mut Statement) {
    if let Statement::Query(query) = statement {
        name_query_outputs(query);
    }
}

fn name_query_outputs(query: &mut Query) {
    let aliased = name_set_outputs(&mut query.body);
    // `ORDER BY upper(role)` of a `SELECT DISTINCT upper(role)` must name
    // an output column once that column has an alias: it names the alias.
    if let Some(OrderBy {
        kind: OrderByKind::Expressions(order),
        ..
    }) = &mut query.order_by
    {
        for item in order {
            if let Some((_, alias)) = aliased.iter().find(|(expr, _)| *expr == item.expr) {
                item.expr = SqlExpr::Identifier(alias.clone());
            }
        }
    }
}

/// Returns the items of a plain SELECT body that got an alias, with the
/// expressions they alias.
fn name_set_outputs(body: &mut SetExpr) -> Vec<(SqlExpr, Ident)> {
    match body {
        SetExpr::Select(select) => name_items(&mut select.projection),
        SetExpr::Query(query) => {
            name_query_outputs(query);
            Vec::new()
        }
        SetExpr::SetOperation { left, right, .. } => {
            name_set_outputs(left);
            name_set_outputs(right);
            Vec::new()
        }
        _ => Vec::new(),
    }
}

fn name_items(items: &mut [SelectItem]) -> Vec<(SqlExpr, Ident)> {
    let mut aliased = Vec::new();
    let has_wildcard = items.iter().any(|item| {
        matches!(
            item,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    });
    let names: Vec<Option<String>> = items.iter().map(item_name).collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for name in names.iter().flatten() {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    for (index, (item, name)) in items.iter_mut().zip(&names).enumerate() {
        let Some(name) = name else { continue };
        // Beside a wildcard any explicit column may repeat one of the
        // columns it expands to, which only planning knows.
        let collides = counts[name.as_str()] > 1 || has_wildcard;
        let alias = if collides {
            format!("{PLACEHOLDER}{index}__{name}")
        } else {
            match item {
                // A plain column keeps the name DataFusion gives it, which
                // is already Postgres's (and an alias would change how
                // DISTINCT ... ORDER BY resolves it).
                SelectItem::UnnamedExpr(SqlExpr::Identifier(_))
                | SelectItem::UnnamedExpr(SqlExpr::CompoundIdentifier(_)) => continue,
                SelectItem::UnnamedExpr(_) => name.clone(),
                _ => continue,
            }
        };
        let alias = Ident::with_quote('"', alias);
        *item = match std::mem::replace(item, SelectItem::Wildcard(Default::default())) {
            SelectItem::UnnamedExpr(expr) => {
                aliased.push((expr.clone(), alias.clone()));
                SelectItem::ExprWithAlias { expr, alias }
            }
            SelectItem::ExprWithAlias { expr, .. } => SelectItem::ExprWithAlias { expr, alias },
            other => other,
        };
    }
    aliased
}

/// The output name of one select item, `None` for wildcards (their columns
/// keep their own names).
fn item_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::UnnamedExpr(expr) => Some(expr_name(expr).unwrap_or_else(|| UNNAMED.into())),
        SelectItem::ExprWithAlias { expr, alias } => {
            Some(compat_alias_column(expr, alias).unwrap_or_else(|| ident_name(alias)))
        }
        SelectItem::ExprWithAliases { .. }
        | SelectItem::QualifiedWildcard(..)
        | SelectItem::Wildcard(_) => None,
    }
}

/// The Postgres compatibility layer of the wire front end renames a plain
/// column beside a wildcard to `__alias_<column>`, so DataFusion accepts
/// the projection; we give it its own name back (and a placeholder alias).
fn compat_alias_column(expr: &SqlExpr, alias: &Ident) -> Option<String> {
    let rest = alias.value.strip_prefix("__alias_")?;
    let column = match expr {
        SqlExpr::Identifier(ident) => ident,
        SqlExpr::CompoundIdentifier(parts) => parts.last()?,
        _ => return None,
    };
    (column.value == rest).then(|| ident_name(column))
}

/// An identifier as the planner normalises it: unquoted ones fold to
/// lower case, as in Postgres.
fn ident_name(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// Postgres's `FigureColname`: a column's name, a function's name, the
/// type of a cast of something nameless, a sub-select's single column;
/// `None` where Postgres says `?column?`.
fn expr_name(expr: &SqlExpr) -> Option<String> {
    match expr {
        SqlExpr::Identifier(ident) => Some(ident_name(ident)),
        SqlExpr::CompoundIdentifier(parts) => parts.last().map(ident_name),
        SqlExpr::Nested(inner) => expr_name(inner),
        SqlExpr::Function(function) => function.name.0.last().map(|part| match part {
            ObjectNamePart::Identifier(ident) => ident_name(ident),
            other => other.to_string().to_lowercase(),
        }),
        SqlExpr::Cast {
            expr,
            data_type,
            kind,
            ..
        } => expr_name(expr).or_else(|| match kind {
            CastKind::Cast | CastKind::DoubleColon | CastKind::TryCast | CastKind::SafeCast => {
                Some(type_name(data_type))
            }
        }),
        SqlExpr::TypedString(typed) => Some(type_name(&typed.data_type)),
        SqlExpr::Interval(_) => Some("interval".into()),
        SqlExpr::Case { .. } => Some("case".into()),
        SqlExpr::Exists { .. } => Some("exists".into()),
        SqlExpr::Array(_) => Some("array".into()),
        SqlExpr::Extract { .. } => Some("extract".into()),
        SqlExpr::Position { .. } => Some("position".into()),
        SqlExpr::Substring { .. } => Some("substring".into()),
        SqlExpr::Trim { .. } => Some("btrim".into()),
        SqlExpr::Ceil { .. } => Some("ceil".into()),
        SqlExpr::Floor { .. } => Some("floor".into()),
        SqlExpr::Overlay { .. } => Some("overlay".into()),
        SqlExpr::Subquery(query) => subquery_name(query),
        _ => None,
    }
}

fn subquery_name(query: &Query) -> Option<String> {
    let mut body = query.body.as_ref();
    loop {
        match body {
            SetExpr::Select(select) => return select.projection.first().and_then(item_name),
            SetExpr::Query(inner) => body = inner.body.as_ref(),
            SetExpr::SetOperation { left, .. } => body = left.as_ref(),
            _ => return None,
        }
    }
}

/// The type name Postgres gives a cast column (its internal names).
fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) => "int4".into(),
        DataType::BigInt(_) | DataType::Int8(_) => "int8".into(),
        DataType::SmallInt(_) | DataType::Int2(_) => "int2".into(),
        DataType::Double(_) | DataType::DoublePrecision | DataType::Float8 => "float8".into(),
        DataType::Real | DataType::Float4 => "float4".into(),
        DataType::Boolean | DataType::Bool => "bool".into(),
        DataType::Varchar(_) | DataType::CharacterVarying(_) => "varchar".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        other => other
            .to_string()
            .split(['(', ' '])
            .next()
            .unwrap_or(UNNAMED)
            .to_lowercase(),
    }
}

/// Gives placeholder-aliased output columns of `plan` their wanted names;
/// a plan without placeholders is returned as it is.
pub(crate) fn restore_names(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    let schema = plan.schema().clone();
    if !schema
        .fields()
        .iter()
        .any(|f| f.name().starts_with(PLACEHOLDER))
    {
        return Ok(plan);
    }
    let exprs: Vec<Expr> = schema
        .iter()
        .enumerate()
        .map(|(index, (qualifier, field))| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            let wanted = field
                .name()
                .strip_prefix(PLACEHOLDER)
                .and_then(|rest| rest.split_once("__"))
                .map(|(_, name)| name.to_string());
            match (wanted, qualifier) {
                // Each column gets a qualifier of its own, so equal names
                // are never ambiguous within the schema.
                (Some(name), _) => column.alias_qualified(Some(own_qualifier(index)), name),
                (None, None) => {
                    column.alias_qualified(Some(own_qualifier(index)), field.name().clone())
                }
                (None, Some(_)) => column,
            }
        })
        .collect();
    LogicalPlanBuilder::from(plan).project(exprs)?.build()
}

fn own_qualifier(index: usize) -> TableReference {
    TableReference::bare(format!("{PLACEHOLDER}column_{index}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> String {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        name_outputs(&mut statement);
        statement.to_string()
    }

    #[test]
    fn unnamed_expressions_get_postgres_names() {
        assert_eq!(
            rewritten("SELECT count(*), max(rss), 1 + 2, ip FROM t"),
            "SELECT count(*) AS \"count\", max(rss) AS \"max\", 1 + 2 AS \"?column?\", ip FROM t"
        );
        assert_eq!(
            rewritten("SELECT CAST(x AS INT), CAST(1 AS BIGINT), (SELECT min(a) FROM u) FROM t"),
            "SELECT CAST(x AS INT) AS \"x\", CAST(1 AS BIGINT) AS \"int8\", (SELECT min(a) FROM u) AS \"min\" FROM t"
        );
    }

    #[test]
    fn duplicates_get_placeholders_that_carry_the_name() {
        assert_eq!(
            rewritten("SELECT ip, IP, a.ip AS x, b.x FROM t"),
            "SELECT ip AS \"__fleetsql_name_0__ip\", IP AS \"__fleetsql_name_1__ip\", a.ip AS \"__fleetsql_name_2__x\", b.x AS \"__fleetsql_name_3__x\" FROM t"
        );
        assert_eq!(
            rewritten("SELECT *, ip FROM t"),
            "SELECT *, ip AS \"__fleetsql_name_1__ip\" FROM t"
        );
        // As the wire front end's compatibility rules hand it over.
        assert_eq!(
            rewritten("SELECT *, ip AS __alias_ip FROM t"),
            "SELECT *, ip AS \"__fleetsql_name_1__ip\" FROM t"
        );
    }

    #[test]
    fn other_statements_are_untouched() {
        assert_eq!(rewritten("SHOW ALL"), "SHOW ALL");
        assert_eq!(rewritten("SELECT a AS b FROM t"), "SELECT a AS b FROM t");
    }
}
