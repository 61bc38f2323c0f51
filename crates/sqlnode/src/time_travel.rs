//! Time travel on a live table name (`FROM sys FOR SYSTEM_TIME AS OF
//! TIMESTAMP '...'`, `FROM sys VERSION AS OF 1234`) and what a query read
//! of history, for its completeness notice.
//!
//! The node keeps no history itself: a component that does (the `history`
//! crate) installs a [`TimeTravel`] with [`SqlNode::set_time_travel`]
//! (crate::SqlNode::set_time_travel) and reports what its tables read with
//! [`note_history_read`]. A versioned table is rewritten, before planning,
//! into a subquery over `history.<table>` restricted to the kept generation
//! the [`TimeTravel`] picks.
//!
//! The node's SQL dialect (generic) does not read versioned tables, so a
//! statement that does not parse and mentions `AS OF` is parsed again with
//! the generic dialect plus table versioning ([`VersioningDialect`]);
//! nothing that parsed before reads differently.

use std::any::TypeId;
use std::fmt::Debug;
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{Array, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, ObjectName, ObjectNamePart, SetExpr, Statement, TableFactor, TableVersion, Value, Visit,
    VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use parking_lot::Mutex;
use serde::Serialize;

use crate::{Result, SqlError};

/// The schema history tables are served in.
pub const HISTORY_SCHEMA: &str = "history";

/// Which past state of a table a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The kept generation made at or before this time (ms since the epoch).
    TimeMs(i64),
    /// This generation id.
    Generation(u64),
}

/// The kept generation a [`TimeTravel`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PickedGeneration {
    pub generation: u64,
    pub made_at_ms: i64,
}

/// Why a versioned table cannot be read; the text is shown to the client.
pub type TimeTravelError = Box<dyn std::error::Error + Send + Sync>;

/// Picks the kept generation of a table a versioned name reads.
pub trait TimeTravel: Send + Sync + Debug {
    fn pick(&self, table: &str, at: AsOf) -> Result<PickedGeneration, TimeTravelError>;
}

/// What one query read of one history table: shown in its completeness
/// notice, so an answer over the past says which generations it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRead {
    pub table: String,
    /// Kept generations (files) read.
    pub generations: u64,
    pub first_generation: Option<u64>,
    pub last_generation: Option<u64>,
    /// Oldest and newest `_generation_time` read, ms since the epoch.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// Kept files left out because they could not be read.
    pub skipped_corrupt: u64,
}

impl HistoryRead {
    fn merge(&mut self, other: &HistoryRead) {
        self.generations += other.generations;
        self.skipped_corrupt += other.skipped_corrupt;
        self.first_generation = min_some(self.first_generation, other.first_generation);
        self.last_generation = self.last_generation.max(other.last_generation);
        self.first_ms = min_some(self.first_ms, other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
    }

    /// `sys: 3 generations (5..7), 2026-12-07T04:00:00Z to 04:00:10Z`.
    pub fn summary(&self) -> String {
        let time = |ms: Option<i64>| {
            ms.and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| "-".into())
        };
        let mut text = match (self.first_generation, self.last_generation) {
            (Some(a), Some(b)) if a == b => format!(
                "{}: generation {a} made {}",
                self.table,
                time(self.first_ms)
            ),
            (Some(a), Some(b)) => format!(
                "{}: {} generations ({a}..{b}) from {} to {}",
                self.table,
                self.generations,
                time(self.first_ms),
                time(self.last_ms)
            ),
            _ => format!("{}: no kept generation in range", self.table),
        };
        if self.skipped_corrupt > 0 {
            text.push_str(&format!(
                " ({} unreadable files skipped, INCOMPLETE)",
                self.skipped_corrupt
            ));
        }
        text
    }
}

fn min_some<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub(crate) type HistoryReads = Arc<Mutex<Vec<HistoryRead>>>;

tokio::task_local! {
    /// What the running query has read of history so far.
    pub(crate) static HISTORY_READS: HistoryReads;
}

/// Records that the query running on this task read `read` (called by
/// history tables when they are scanned). Outside a query, nothing.
pub fn note_history_read(read: HistoryRead) {
    let _ = HISTORY_READS.try_with(|reads| {
        let mut reads = reads.lock();
        match reads.iter_mut().find(|r| r.table == read.table) {
            Some(kept) => kept.merge(&read),
            None => reads.push(read),
        }
    });
}

/// Whether `plan` scans a table of the `history` schema (directly, or
/// through time travel's rewrite).
pub fn reads_history(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && scan.table_name.schema() == Some(HISTORY_SCHEMA)
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// What running `plan` reads of history, found by planning it (history
/// tables choose their files, and say so, while they are planned) without
/// running it. For front ends whose protocol layer runs a plan itself,
/// outside the scope [`note_history_read`] records into (the Postgres
/// extended protocol): their completeness notice names the history read
/// all the same. Nothing for a plan that reads no history.
pub async fn history_reads_of(
    ctx: &SessionContext,
    plan: &datafusion::logical_expr::LogicalPlan,
) -> Result<Vec<HistoryRead>> {
    if !reads_history(plan) {
        return Ok(Vec::new());
    }
    let reads = HistoryReads::default();
    let state = ctx.state();
    HISTORY_READS
        .scope(reads.clone(), state.create_physical_plan(plan))
        .await?;
    Ok(std::mem::take(&mut *reads.lock()))
}

/// The tables of the `history` schema of `ctx`'s default catalog: what
/// this node keeps (nothing when it keeps no history).
pub fn history_tables(ctx: &SessionContext) -> Vec<String> {
    let state = ctx.state();
    let catalog = state.config().options().catalog.default_catalog.clone();
    ctx.catalog(&catalog)
        .and_then(|c| c.schema(HISTORY_SCHEMA))
        .map(|s| s.table_names())
        .unwrap_or_default()
}

/// A copy of `statement` reading every table `kept` names (by a one-part
/// name, not a common table expression's) as of `at_ms`: `FOR
/// SYSTEM_TIME AS OF TIMESTAMP '...'`, so each picks its own kept
/// generation at or before that time. Also the names it versioned, in
/// order. For a report drawn from history: its live SQL, read as it
/// would have answered then. Each such table becomes a derived table
/// under its own name or alias, so the statement prints as SQL that
/// parses back.
pub fn read_as_of(
    statement: &Statement,
    kept: impl Fn(&str) -> bool,
    at_ms: i64,
) -> Result<(Statement, Vec<String>)> {
    let at = chrono::DateTime::from_timestamp_millis(at_ms)
        .ok_or_else(|| SqlError::Query(format!("{at_ms} ms is not a time")))?
        .format("TIMESTAMP '%Y-%m-%d %H:%M:%S%.3f'")
        .to_string();
    // A versioned table with an alias prints as `t a FOR SYSTEM_TIME ...`,
    // which does not parse back (the clause goes before the alias): each
    // kept table becomes `(SELECT * FROM "t" FOR SYSTEM_TIME AS OF ...) a`.
    let versioned_subquery = |table: &str| -> Result<TableFactor> {
        let quoted = table.replace('"', "\"\"");
        let sql = format!(
            "SELECT 1 FROM (SELECT * FROM \"{quoted}\" FOR SYSTEM_TIME AS OF {at}) AS \"{quoted}\""
        );
        let dialect = VersioningDialect::default();
        let statement = datafusion::sql::sqlparser::parser::Parser::new(&dialect)
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_statement())
            .map_err(|e| SqlError::Query(format!("{sql}: {e}")))?;
        if let Statement::Query(query) = statement
            && let SetExpr::Select(select) = *query.body
            && let Some(from) = select.from.into_iter().next()
        {
            return Ok(from.relation);
        }
        Err(SqlError::Query(format!("{sql} did not parse as one table")))
    };
    struct AsOfTime<F, S> {
        kept: F,
        subquery: S,
        ctes: std::collections::HashSet<String>,
        versioned: Vec<String>,
        error: Option<SqlError>,
    }
    impl<F: Fn(&str) -> bool, S: Fn(&str) -> Result<TableFactor>> VisitorMut for AsOfTime<F, S> {
        type Break = ();
        fn pre_visit_query(
            &mut self,
            query: &mut datafusion::sql::sqlparser::ast::Query,
        ) -> ControlFlow<()> {
            if let Some(with) = &query.with {
                self.ctes.extend(
                    with.cte_tables
                        .iter()
                        .map(|cte| cte.alias.name.value.to_lowercase()),
                );
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                alias,
                version: None,
                args: None,
                ..
            } = factor
            else {
                return ControlFlow::Continue(());
            };
            let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
                return ControlFlow::Continue(());
            };
            // Unquoted names are folded to lower case, as the planner does.
            let table = match ident.quote_style {
                Some(_) => ident.value.clone(),
                None => ident.value.to_lowercase(),
            };
            if self.ctes.contains(&table) || !(self.kept)(&table) {
                return ControlFlow::Continue(());
            }
            let alias = alias.clone();
            match (self.subquery)(&table) {
                Ok(mut derived) => {
                    if let TableFactor::Derived {
                        alias: derived_alias,
                        ..
                    } = &mut derived
                        && let Some(alias) = alias
                    {
                        *derived_alias = Some(alias);
                    }
                    *factor = derived;
                    self.versioned.push(table);
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    self.error = Some(e);
                    ControlFlow::Break(())
                }
            }
        }
    }
    let mut visitor = AsOfTime {
        kept,
        subquery: versioned_subquery,
        ctes: Default::default(),
        versioned: Vec::new(),
        error: None,
    };
    let mut statement = statement.clone();
    let _ = VisitMut::visit(&mut statement, &mut visitor);
    match visitor.error {
        Some(e) => Err(e),
        None => Ok((statement, visitor.versioned)),
    }
}

/// The generic dialect that also reads `FOR SYSTEM_TIME AS OF`,
/// `TIMESTAMP AS OF` and `VERSION AS OF` after a table name. It reports
/// itself as the generic dialect, so the parser's dialect checks read as
/// for the node's usual one.
#[derive(Debug, Default)]
pub(crate) struct VersioningDialect(GenericDialect);

macro_rules! delegate {
    ($($name:ident),* $(,)?) => {
        $(fn $name(&self) -> bool { self.0.$name() })*
    };
}

impl Dialect for VersioningDialect {
    fn dialect(&self) -> TypeId {
        TypeId::of::<GenericDialect>()
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.0.is_delimited_identifier_start(ch)
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        self.0.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        self.0.is_identifier_part(ch)
    }
    fn supports_table_versioning(&self) -> bool {
        true
    }
    delegate!(
        supports_unicode_string_literal,
        supports_partition_by_after_order_by,
        supports_array_join_syntax,
        supports_group_by_expr,
        supports_group_by_with_modifier,
        supports_left_associative_joins_without_parens,
        supports_connect_by,
        supports_match_recognize,
        supports_pipe_operator,
        supports_start_transaction_modifier,
        supports_window_function_null_treatment_arg,
        supports_dictionary_syntax,
        supports_window_clause_named_window_reference,
        supports_parenthesized_set_variables,
        supports_select_wildcard_except,
        support_map_literal_syntax,
        allow_extract_custom,
        allow_extract_single_quotes,
        supports_extract_comma_syntax,
        supports_create_view_comment_syntax,
        supports_parens_around_table_factor,
        supports_values_as_table_factor,
        supports_create_index_with_clause,
        supports_explain_with_utility_options,
        supports_limit_comma,
        supports_update_order_by,
        supports_from_first_select,
        supports_projection_trailing_commas,
        supports_asc_desc_in_column_definition,
        supports_try_convert,
        supports_bitwise_shift_operators,
        supports_comment_on,
        supports_load_extension,
        supports_named_fn_args_with_assignment_operator,
        supports_struct_literal,
        supports_empty_projections,
        supports_nested_comments,
        supports_multiline_comment_hints,
        supports_user_host_grantee,
        supports_string_escape_constant,
        supports_array_typedef_with_brackets,
        supports_match_against,
        supports_set_names,
        supports_comma_separated_set_assignments,
        supports_filter_during_aggregation,
        supports_select_wildcard_exclude,
        supports_data_type_signed_suffix,
        supports_interval_options,
        supports_quote_delimited_string,
        supports_select_wildcard_replace,
        supports_select_wildcard_ilike,
        supports_select_wildcard_rename,
        supports_optimize_table,
        supports_install,
        supports_detach,
        supports_prewhere,
        supports_with_fill,
        supports_limit_by,
        supports_interpolate,
        supports_settings,
        supports_select_format,
        supports_comment_optimizer_hint,
        supports_constraint_keyword_without_name,
        supports_key_column_option,
        supports_comma_separated_trim,
        supports_cte_without_as,
        supports_select_item_multi_column_alias,
        supports_xml_expressions,
    );
}

/// `sql` parsed with table versioning, when it mentions `AS OF` and
/// reads a versioned table; `None` otherwise (the caller reports its own
/// parse error).
pub fn parse_versioned(sql: &str, recursion_limit: usize) -> Option<Statement> {
    let upper = sql.to_ascii_uppercase();
    let words: Vec<&str> = upper.split_whitespace().collect();
    if !words.windows(2).any(|w| w == ["AS", "OF"]) {
        return None;
    }
    let dialect = VersioningDialect::default();
    let mut parser = DFParserBuilder::new(sql)
        .with_dialect(&dialect)
        .with_recursion_limit(recursion_limit)
        .build()
        .ok()?;
    let mut statements = parser.parse_statements().ok()?;
    if statements.len() != 1 {
        return None;
    }
    match statements.pop_front()? {
        DfStatement::Statement(statement) if !versioned_tables(&statement).is_empty() => {
            Some(*statement)
        }
        _ => None,
    }
}

/// One versioned table of a statement: its name and what it asks for.
#[derive(Debug, Clone)]
pub(crate) struct Versioned {
    pub(crate) table: String,
    pub(crate) version: TableVersion,
}

/// The versioned tables of `statement`, in the order they appear.
pub(crate) fn versioned_tables(statement: &Statement) -> Vec<Versioned> {
    struct Collect(Vec<Versioned>);
    impl Visitor for Collect {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name,
                version: Some(version),
                ..
            } = factor
            {
                self.0.push(Versioned {
                    table: table_name(name),
                    version: version.clone(),
                });
            }
            ControlFlow::Continue(())
        }
    }
    let mut collect = Collect(Vec::new());
    let _ = statement.visit(&mut collect);
    collect.0
}

/// The last part of a (possibly `history.`-qualified) name.
fn table_name(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => ident.value.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// A copy of `statement` whose versioned tables are named `history.<t>`,
/// so working out which fleet tables it reads leaves them out.
pub(crate) fn with_history_names(statement: &Statement) -> Statement {
    struct Rename;
    impl VisitorMut for Rename {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name,
                version: Some(_),
                ..
            } = factor
            {
                *name = ObjectName::from(vec![
                    datafusion::sql::sqlparser::ast::Ident::new(HISTORY_SCHEMA),
                    datafusion::sql::sqlparser::ast::Ident::with_quote('"', table_name(name)),
                ]);
            }
            ControlFlow::Continue(())
        }
    }
    let mut statement = statement.clone();
    let _ = VisitMut::visit(&mut statement, &mut Rename);
    statement
}

/// What a versioned table's clause asks for, before any expression is
/// evaluated: a generation id, or a time expression to evaluate.
pub(crate) enum Wanted {
    Generation(u64),
    Time(Box<Expr>),
}

pub(crate) fn wanted(version: &TableVersion) -> Result<Wanted, String> {
    match version {
        TableVersion::VersionAsOf(expr) => match expr {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse::<u64>().map(Wanted::Generation).map_err(|_| {
                    format!("VERSION AS OF {n}: a generation id is a whole number ≥ 0")
                }),
                other => Err(format!(
                    "VERSION AS OF {other}: give a generation id (a whole number)"
                )),
            },
            other => Err(format!(
                "VERSION AS OF {other}: give a generation id (a whole number)"
            )),
        },
        TableVersion::ForSystemTimeAsOf(expr) | TableVersion::TimestampAsOf(expr) => {
            Ok(Wanted::Time(Box::new(expr.clone())))
        }
        other => Err(format!(
            "`{other}` is not a time travel fleetsql reads; use FOR SYSTEM_TIME AS OF TIMESTAMP '...' or VERSION AS OF <generation>"
        )),
    }
}

/// Replaces the versioned tables of `statement`, in order, by subqueries
/// over `history.<table>` reading the picked generations.
pub(crate) fn rewrite(
    statement: &mut Statement,
    picked: &[PickedGeneration],
) -> Result<(), String> {
    struct Replace<'a> {
        picked: std::slice::Iter<'a, PickedGeneration>,
        error: Option<String>,
    }
    impl VisitorMut for Replace<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table {
                name,
                alias,
                version: Some(_),
                ..
            } = factor
            else {
                return ControlFlow::Continue(());
            };
            let Some(picked) = self.picked.next() else {
                self.error = Some("more versioned tables than picked generations".into());
                return ControlFlow::Break(());
            };
            let table = table_name(name);
            let alias = alias.clone();
            match history_subquery(&table, picked) {
                Ok(mut derived) => {
                    if let TableFactor::Derived {
                        alias: derived_alias,
                        ..
                    } = &mut derived
                        && let Some(alias) = alias
                    {
                        *derived_alias = Some(alias);
                    }
                    *factor = derived;
                    // The subquery's own tables are not versioned: no need
                    // to walk into it.
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    self.error = Some(e);
                    ControlFlow::Break(())
                }
            }
        }
    }
    let mut replace = Replace {
        picked: picked.iter(),
        error: None,
    };
    let _ = VisitMut::visit(statement, &mut replace);
    match replace.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `(SELECT * EXCLUDE (_generation, _generation_time) FROM
/// history."t" WHERE _generation = N AND _generation_time =
/// to_timestamp_millis(T)) AS "t"`, as a table factor. The time too:
/// generation ids start again at 1 when a process restarts, so history
/// kept across a restart holds the same id more than once.
fn history_subquery(table: &str, picked: &PickedGeneration) -> Result<TableFactor, String> {
    let quoted = table.replace('"', "\"\"");
    let (generation, made_at_ms) = (picked.generation, picked.made_at_ms);
    let sql = format!(
        "SELECT 1 FROM (SELECT * EXCLUDE (_generation, _generation_time) FROM {HISTORY_SCHEMA}.\"{quoted}\" WHERE _generation = {generation} AND _generation_time = to_timestamp_millis({made_at_ms})) AS \"{quoted}\""
    );
    let statement = datafusion::sql::sqlparser::parser::Parser::parse_sql(&GenericDialect, &sql)
        .map_err(|e| e.to_string())?
        .pop()
        .ok_or("no statement")?;
    if let Statement::Query(query) = statement
        && let SetExpr::Select(select) = *query.body
        && let Some(from) = select.from.into_iter().next()
    {
        return Ok(from.relation);
    }
    Err("the history subquery did not parse as one".into())
}

/// Rewrites the versioned tables of `statement` into reads of the kept
/// generations their clauses pick (nothing when it has none).
pub(crate) async fn travel(
    ctx: &SessionContext,
    travel: Option<Arc<dyn TimeTravel>>,
    statement: &mut Statement,
) -> Result<()> {
    let versioned = versioned_tables(statement);
    if versioned.is_empty() {
        return Ok(());
    }
    let Some(travel) = travel else {
        return Err(SqlError::Query(format!(
            "`{}` is read as of a past time, and this SQL node keeps no history; add the table to `history.tables` of this node's entry in the topology",
            versioned[0].table
        )));
    };
    let mut picked = Vec::with_capacity(versioned.len());
    for v in &versioned {
        let at = match wanted(&v.version).map_err(SqlError::Query)? {
            Wanted::Generation(id) => AsOf::Generation(id),
            Wanted::Time(expr) => AsOf::TimeMs(evaluate_time(ctx, &expr).await?),
        };
        let chosen = travel
            .pick(&v.table, at)
            .map_err(|e| SqlError::Query(e.to_string()))?;
        picked.push(chosen);
    }
    rewrite(statement, &picked).map_err(SqlError::Query)
}

/// The time `expr` (a timestamp, a string, `now() - INTERVAL ...`) stands
/// for, in ms since the epoch (a time without zone is UTC).
async fn evaluate_time(ctx: &SessionContext, expr: &Expr) -> Result<i64> {
    let sql = format!("SELECT CAST(({expr}) AS TIMESTAMP)");
    let not_a_time = |e: String| {
        SqlError::Query(format!(
            "AS OF {expr}: not a time ({e}); write e.g. TIMESTAMP '2026-01-31 12:00:00' (UTC) or now() - INTERVAL '1 hour'"
        ))
    };
    let frame = ctx
        .sql(&sql)
        .await
        .map_err(|e| not_a_time(e.strip_backtrace().to_string()))?;
    let batches = frame
        .collect()
        .await
        .map_err(|e| not_a_time(e.strip_backtrace().to_string()))?;
    let column = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| {
            cast(
                b.column(0),
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )
        })
        .transpose()
        .map_err(|e| not_a_time(e.to_string()))?;
    column
        .as_ref()
        .and_then(|a| a.as_any().downcast_ref::<TimestampMillisecondArray>())
        .filter(|a| !a.is_null(0))
        .map(|a| a.value(0))
        .ok_or_else(|| not_a_time("it is NULL".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_tables_parse_only_with_the_fallback() {
        let sql = "SELECT ip FROM sys FOR SYSTEM_TIME AS OF TIMESTAMP '2026-12-07 04:00:00' s WHERE ip <> ''";
        assert!(
            datafusion::sql::sqlparser::parser::Parser::parse_sql(&GenericDialect, sql).is_err()
        );
        let statement = parse_versioned(sql, 50).expect("parses with versioning");
        let versioned = versioned_tables(&statement);
        assert_eq!(versioned.len(), 1);
        assert_eq!(versioned[0].table, "sys");
        assert!(matches!(wanted(&versioned[0].version), Ok(Wanted::Time(_))));

        let statement = parse_versioned("SELECT * FROM sys VERSION AS OF 42", 50).unwrap();
        let versioned = versioned_tables(&statement);
        assert!(matches!(
            wanted(&versioned[0].version),
            Ok(Wanted::Generation(42))
        ));
        // Statements without a versioned table are not taken by the fallback.
        assert!(parse_versioned("SELECT 'as of' FROM sys WHERE", 50).is_none());
    }

    #[test]
    fn rewrite_reads_the_picked_generation_under_the_old_name() {
        let mut statement = parse_versioned(
            "SELECT a.ip, b.ip FROM sys VERSION AS OF 3 a JOIN sys ON a.ip = sys.ip, filesystem FOR SYSTEM_TIME AS OF now()",
            50,
        )
        .unwrap();
        let picked = [
            PickedGeneration {
                generation: 3,
                made_at_ms: 0,
            },
            PickedGeneration {
                generation: 9,
                made_at_ms: 0,
            },
        ];
        rewrite(&mut statement, &picked).unwrap();
        let text = statement.to_string();
        // The alias is printed as written: `sys VERSION AS OF 3 a` has no
        // `AS` (sqlparser keeps `TableAlias::explicit`), so neither has the
        // subquery that replaces it. The test expected `) AS a` before.
        assert!(
            text.contains(
                "FROM history.\"sys\" WHERE _generation = 3 AND _generation_time = to_timestamp_millis(0)) a "
            ),
            "{text}"
        );
        assert!(
            text.contains("FROM history.\"filesystem\" WHERE _generation = 9 AND _generation_time = to_timestamp_millis(0)) AS \"filesystem\""),
            "{text}"
        );
        assert!(text.contains("JOIN sys ON"), "{text}");
        assert!(versioned_tables(&statement).is_empty());
    }

    #[test]
    fn read_as_of_versions_only_kept_one_part_names() {
        let statement = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &GenericDialect,
            "WITH load_info AS (SELECT 1) SELECT * FROM sys s, region_data r, history.sys h, load_info",
        )
        .unwrap()
        .pop()
        .unwrap();
        let kept = |t: &str| ["sys", "load_info"].contains(&t);
        let (read, versioned) = read_as_of(&statement, kept, 1_796_616_000_123).unwrap();
        assert_eq!(versioned, ["sys"]);
        let text = read.to_string();
        assert!(
            text.contains(
                "(SELECT * FROM \"sys\" FOR SYSTEM_TIME AS OF TIMESTAMP '2026-12-07 04:00:00.123') s"
            ),
            "{text}"
        );
        assert!(text.contains("history.sys h"), "{text}");
        // What it prints, the node's versioning parser reads back.
        let again = parse_versioned(&text, 50).expect("parses with versioning");
        assert_eq!(versioned_tables(&again).len(), 1);
    }

    #[test]
    fn history_names_hide_versioned_tables() {
        let statement = parse_versioned("SELECT * FROM sys VERSION AS OF 3, sys s2", 50).unwrap();
        let renamed = with_history_names(&statement).to_string();
        assert!(
            renamed.contains("history.\"sys\" VERSION AS OF 3"),
            "{renamed}"
        );
        assert!(
            renamed.contains("sys AS s2") || renamed.contains("sys s2"),
            "{renamed}"
        );
    }
}
