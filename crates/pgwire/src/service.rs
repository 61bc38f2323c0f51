//! Which parse of a client's SQL the hooks see.
//!
//! The protocol layer parses every statement with `datafusion-pg-catalog`'s
//! `PostgresCompatibilityParser`, whose rewrites make psql's and drivers'
//! catalog queries plannable but change the meaning of ordinary ones: a
//! correlated scalar subquery in the select list becomes NULL, any other
//! gets `LIMIT 1`, `x = ANY (subquery)` becomes `array_has`, and
//! DataFusion-only syntax (`SELECT * EXCLUDE (...)`) does not parse in its
//! Postgres dialect. So a statement that reads fleet tables is parsed here
//! as the node parses HTTP queries (the session's dialect, no rewrites) and
//! reaches the hooks as typed; catalog and session statements keep the
//! protocol layer's parse, rewrites and blacklist.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser, QueryHook};
use fleetsql_auth::{Action, AuditLog};
use fleetsql_sqlnode::{QueryPermit, SqlError, SqlNode};
use futures::{FutureExt, Sink, StreamExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionHandle, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::Execute;

use crate::audit;
use crate::copy::Copy;
use crate::hook::reads_no_fleet_data;

/// The protocol layer's prepared statement: the SQL text as planned, the
/// statement and its plan.
type PgStatement = (String, Option<(Statement, LogicalPlan)>);

/// Whether `statement` goes to the hooks as typed: a query naming a table
/// outside the catalogs. Catalog-only and table-less queries are what
/// clients send to introspect, and session statements are answered by the
/// protocol layer's hooks; those keep the compatibility rewrites.
fn as_typed(statement: &Statement) -> bool {
    matches!(statement, Statement::Query(_)) && !reads_no_fleet_data(statement)
}

/// Parses client SQL for both protocols.
pub(crate) struct FleetParser {
    ctx: Arc<SessionContext>,
    compat: PostgresCompatibilityParser,
}

impl FleetParser {
    pub(crate) fn new(ctx: Arc<SessionContext>) -> FleetParser {
        FleetParser {
            ctx,
            compat: PostgresCompatibilityParser::new(),
        }
    }

    /// `sql` in the session's dialect without rewrites, as `SqlNode::parse`
    /// reads an HTTP query; `None` when it does not parse that way or holds
    /// a DataFusion-only statement (`EXPLAIN`, `COPY`, ...).
    fn parse_as_typed(&self, sql: &str) -> Option<Vec<Statement>> {
        let state = self.ctx.state();
        let options = &state.config().options().sql_parser;
        let dialect = dialect_from_str(options.dialect)?;
        let parsed = DFParserBuilder::new(sql)
            .with_dialect(dialect.as_ref())
            .with_recursion_limit(options.recursion_limit.get())
            .build()
            .ok()?
            .parse_statements();
        let statements = match parsed {
            Ok(statements) => statements,
            // `FOR SYSTEM_TIME AS OF` / `VERSION AS OF` read only with the
            // SQL node's versioning parser, as HTTP reads them.
            Err(_) => {
                let versioned =
                    fleetsql_sqlnode::parse_versioned(sql, options.recursion_limit.get())?;
                return Some(vec![versioned]);
            }
        };
        statements
            .into_iter()
            .map(|s| match s {
                DfStatement::Statement(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    /// The statements of `sql` as the hooks should see them, or `None` when
    /// none reads fleet tables: then the protocol layer parses and runs the
    /// text itself, exactly as it would without fleetsql.
    fn statements(&self, sql: &str) -> PgWireResult<Option<Vec<Statement>>> {
        let Some(typed) = self.parse_as_typed(sql) else {
            return Ok(None);
        };
        if !typed.iter().any(as_typed) {
            return Ok(None);
        }
        let compat = match self.compat.parse(sql) {
            Ok(compat) => compat,
            // Syntax only the session's dialect reads: every statement as
            // typed, as HTTP would take them.
            Err(_) => return Ok(Some(typed)),
        };
        if compat.len() != typed.len() {
            // The parses disagree on where statements end (a blacklist
            // entry spanning a `;`): no pairing to choose from, so the
            // protocol layer keeps the text as it always did.
            return Ok(None);
        }
        Ok(Some(
            typed
                .into_iter()
                .zip(compat)
                .map(|(typed, compat)| if as_typed(&typed) { typed } else { compat })
                .collect(),
        ))
    }
}

/// The protocol layer's session service with fleetsql's parse in front.
pub(crate) struct FleetService {
    inner: Arc<DfSessionService>,
    parser: Arc<FleetQueryParser>,
    audit: Arc<AuditLog>,
    /// The node's `query_timeout`: the extended protocol's plans run in
    /// the protocol layer, which knows only a session's own time-out.
    query_timeout: Duration,
    /// Admits the extended protocol's fleet queries among those running
    /// at once, as the node admits its own runs.
    node: Arc<SqlNode>,
}

impl FleetService {
    pub(crate) fn new(
        ctx: Arc<SessionContext>,
        hooks: Vec<Arc<dyn QueryHook>>,
        audit: Arc<AuditLog>,
        query_timeout: Duration,
        node: Arc<SqlNode>,
    ) -> FleetService {
        let inner = Arc::new(DfSessionService::new_with_hooks(ctx.clone(), hooks.clone()));
        let parser = Arc::new(FleetQueryParser {
            inner: inner.query_parser(),
            parser: FleetParser::new(ctx.clone()),
            ctx,
            hooks,
        });
        FleetService {
            inner,
            parser,
            audit,
            query_timeout,
            node,
        }
    }

    /// The statement's audit record, or a refusal when the connection has
    /// no principal: the startup handler sets one on every connection it
    /// lets in, so a statement without one came from a client that never
    /// finished logging in.
    fn audited<C: ClientInfo>(&self, client: &C, text: &str) -> PgWireResult<audit::Statement> {
        let principal = crate::auth::principal(client)
            .filter(|p| p.allows(Action::RunSql))
            .ok_or_else(|| {
                PgWireError::UserError(Box::new(ErrorInfo::new(
                    "FATAL".to_string(),
                    "28000".to_string(),
                    "not authenticated: log in before sending statements".to_string(),
                )))
            })?;
        Ok(audit::Statement {
            audit: self.audit.clone(),
            principal,
            peer: client.socket_addr(),
            text: text.to_string(),
            started: Instant::now(),
        })
    }
}

#[async_trait]
impl SimpleQueryHandler for FleetService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let audited = self.audited(client, query)?;
        let handle = client.session_extensions().get::<Arc<ConnectionHandle>>();
        audited.responses(
            caught(self.simple_query(client, query))
                .await
                .map(|responses| {
                    responses
                        .into_iter()
                        .map(|r| crate::text_times::in_response(caught_rows(r)))
                        .map(|r| cancellable(r, handle.as_deref()))
                        .collect()
                }),
        )
    }
}

/// Rows of a simple-protocol answer that stop at a cancel request
/// (`pg_cancel_backend`, psql's Ctrl-C, a driver's cancel) with SQLSTATE
/// 57014. The protocol layer heeds one only until the handler returns,
/// before the first row: a streamed answer ran on to its end or its
/// time-out. Stopping drops the rows, so the query stops and frees its
/// place among those running at once (`execute.rs` does the same for the
/// extended protocol).
fn cancellable(response: Response, handle: Option<&Arc<ConnectionHandle>>) -> Response {
    let Some(handle) = handle.cloned() else {
        return response;
    };
    let Response::Query(mut query) = response else {
        return response;
    };
    let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
    let state = Some((rows, None));
    query.data_rows = Box::pin(futures::stream::unfold(state, move |state| {
        let handle = handle.clone();
        async move {
            let (mut rows, cancel) = state?;
            // Armed when the first row is asked for: the protocol layer's
            // own receiver (the handler's) is gone by then, and a new one
            // takes its place for this answer.
            let cancel = match cancel {
                Some(cancel) => cancel,
                None => handle.start_query().await,
            };
            match futures::future::select(rows.next(), cancel).await {
                futures::future::Either::Left((Some(row), cancel)) => {
                    Some((row, Some((rows, Some(cancel)))))
                }
                futures::future::Either::Left((None, _)) => None,
                futures::future::Either::Right(_) => Some((Err(PgWireError::QueryCanceled), None)),
            }
        }
    }));
    Response::Query(query)
}

/// A panic while answering one client's statement (a bug) becomes that
/// client's error, SQLSTATE XX000, logged; the connection and every other
/// one go on. Without it the connection's task ends with no answer.
async fn caught<T>(answer: impl std::future::Future<Output = PgWireResult<T>>) -> PgWireResult<T> {
    match std::panic::AssertUnwindSafe(answer).catch_unwind().await {
        Ok(answer) => answer,
        Err(panic) => Err(panicked(panic.as_ref())),
    }
}

/// Rows of an answer are encoded while the protocol layer sends them,
/// after the handler returned (the protocol layer's own plans run lazily):
/// a panic there ends that answer with the same XX000 error.
fn caught_rows(response: Response) -> Response {
    match response {
        Response::Query(mut query) => {
            let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
            query.data_rows = Box::pin(std::panic::AssertUnwindSafe(rows).catch_unwind().map(
                |row| match row {
                    Ok(row) => row,
                    Err(panic) => Err(panicked(panic.as_ref())),
                },
            ));
            Response::Query(query)
        }
        other => other,
    }
}

/// A DataFusion error from the protocol layer's execution as the node
/// phrases it, with its SQLSTATE (53200 and a hint for a query over the
/// memory limit) where the protocol layer would say XX000.
fn node_error(e: PgWireError) -> PgWireError {
    match e {
        PgWireError::ApiError(e) => match e.downcast::<DataFusionError>() {
            Ok(e) => crate::hook::user_error(&SqlError::from(*e)),
            Err(e) => PgWireError::ApiError(e),
        },
        other => other,
    }
}

/// [`node_error`] for the errors among an answer's rows.
fn node_errors(response: Response) -> Response {
    match response {
        Response::Query(mut query) => {
            let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
            query.data_rows = Box::pin(rows.map(|row| row.map_err(node_error)));
            Response::Query(query)
        }
        other => other,
    }
}

/// An answer whose rows hold `permit` (a place among the queries running
/// at once) until they end or are dropped.
fn holding(response: Response, permit: Option<QueryPermit>) -> Response {
    let Some(permit) = permit else {
        return response;
    };
    let Response::Query(mut query) = response else {
        return response;
    };
    let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
    query.data_rows = Box::pin(rows.map(move |row| {
        let _held = &permit;
        row
    }));
    Response::Query(query)
}

/// The error a panicking statement answers, logged once here.
fn panicked(panic: &(dyn std::any::Any + Send)) -> PgWireError {
    let message = fleetsql_model::panic_message(panic);
    tracing::error!(
        panic = message,
        "a Postgres statement panicked; answered XX000"
    );
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        "XX000".to_string(),
        "internal error: the statement failed inside the node (a bug; see its log); the node is still running, retry or report it".to_string(),
    )))
}

impl FleetService {
    async fn simple_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(copy) = crate::copy::parse(query) {
            return Ok(vec![self.copy(client, copy).await?]);
        }
        let Some(statements) = self.parser.parser.statements(query)? else {
            let query = crate::search_path::resolved(query);
            return SimpleQueryHandler::do_query(self.inner.as_ref(), client, &query).await;
        };
        let mut results = Vec::with_capacity(statements.len());
        'statement: for statement in statements {
            for hook in &self.parser.hooks {
                if let Some(result) = hook
                    .handle_simple_query(&statement, &self.parser.ctx, client)
                    .await
                {
                    results.push(result?);
                    continue 'statement;
                }
            }
            // No hook answers a fleet query; only a catalog or session
            // statement sent with one can get here, and the protocol layer
            // runs it as it would have on its own.
            let text = statement.to_string();
            results.extend(SimpleQueryHandler::do_query(self.inner.as_ref(), client, &text).await?);
        }
        Ok(results)
    }
}

impl FleetService {
    /// A `COPY ... TO STDOUT`: its query answered by the hooks as a simple
    /// query would be (so with every check, limit and NOTICE), its rows
    /// written in COPY's form.
    async fn copy<C>(&self, client: &mut C, copy: Copy) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (query, options) = match copy {
            Copy::Refused(e) => return Err(e),
            Copy::Out { query, options } => (query, options),
        };
        let statements = match self.parser.parser.statements(&query)? {
            Some(statements) => statements,
            None => self
                .parser
                .parser
                .compat
                .parse(&query)
                .map_err(|e| PgWireError::ApiError(Box::new(e)))?,
        };
        let [statement] = statements.as_slice() else {
            return Err(copy_error("COPY takes one query"));
        };
        for hook in &self.parser.hooks {
            if let Some(answer) = hook
                .handle_simple_query(statement, &self.parser.ctx, client)
                .await
            {
                return match answer? {
                    Response::Query(answer) => Ok(Response::CopyOut(crate::copy::copy_out(
                        crate::text_times::in_query(answer),
                        options,
                    ))),
                    _ => Err(copy_error(
                        "COPY (...) TO STDOUT needs a query that returns rows (SELECT, SHOW, EXPLAIN)",
                    )),
                };
            }
        }
        Err(copy_error(
            "COPY (...) TO STDOUT needs a query that returns rows (SELECT, SHOW, EXPLAIN)",
        ))
    }
}

fn copy_error(message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        "0A000".to_string(),
        message.to_string(),
    )))
}

#[async_trait]
impl ExtendedQueryHandler for FleetService {
    type Statement = PgStatement;
    type QueryParser = FleetQueryParser;

    fn query_parser(&self) -> Arc<FleetQueryParser> {
        self.parser.clone()
    }

    /// A fleet query's rows are sent as they are computed (see
    /// `execute.rs`: the protocol layer would collect them all first).
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match crate::execute::unstarted_portal(client, &message).await {
            Some(portal) if matches!(&portal.statement.statement.1, Some((s, _)) if as_typed(s)) => {
                crate::execute::execute_streaming(self, client, portal).await
            }
            _ => self._on_execute(client, message).await,
        }
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let audited = self.audited(client, &portal.statement.statement.0)?;
        // A fleet query takes its place among the queries running at once
        // (or waits, or is refused) before the protocol layer runs it, and
        // holds it until its last row has been sent.
        let permit = match &portal.statement.statement.1 {
            Some((statement, _)) if as_typed(statement) => match self.node.admit_query().await {
                Ok(permit) => Some(permit),
                Err(e) => return audited.response(Err(crate::hook::user_error(&e))),
            },
            _ => None,
        };
        // Parsing decided the statement; running it (the hooks, then the
        // plan) is the protocol layer's. Its plan runs while the rows are
        // sent, so the time-out (the node's, or the session's lower one)
        // covers both.
        let session = crate::timeout::session_timeout(client, self.query_timeout);
        let deadline = tokio::time::Instant::now() + session.unwrap_or(self.query_timeout);
        let timed_out = || crate::timeout::timeout_error(session, self.query_timeout);
        let answer = tokio::time::timeout_at(
            deadline,
            caught(ExtendedQueryHandler::do_query(
                self.inner.as_ref(),
                client,
                portal,
                max_rows,
            )),
        )
        .await
        .unwrap_or_else(|_| Err(timed_out()))
        .map_err(node_error);
        audited.response(answer.map(|r| {
            holding(
                node_errors(crate::timeout::rows_until(
                    crate::text_times::in_response(caught_rows(r)),
                    deadline,
                    timed_out(),
                )),
                permit,
            )
        }))
    }
}

/// The extended protocol's parser: fleet queries as typed, the rest
/// through the protocol layer's own parser.
pub(crate) struct FleetQueryParser {
    inner: Arc<Parser>,
    parser: FleetParser,
    ctx: Arc<SessionContext>,
    hooks: Vec<Arc<dyn QueryHook>>,
}

#[async_trait]
impl QueryParser for FleetQueryParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        caught(self.parse_caught(client, sql, types)).await
    }

    fn get_parameter_types(&self, statement: &PgStatement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(statement)
    }

    fn get_result_schema(
        &self,
        statement: &PgStatement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(statement, column_format)
    }
}

impl FleetQueryParser {
    async fn parse_caught<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let Some(statements) = self.parser.statements(sql)? else {
            let sql = crate::search_path::resolved(sql);
            return self.inner.parse_sql(client, &sql, types).await;
        };
        // One statement per Parse message, as the protocol layer takes it.
        let Some(statement) = statements.into_iter().next() else {
            return Ok(None);
        };
        let query = statement.to_string();
        for hook in &self.hooks {
            if let Some(plan) = hook
                .handle_extended_parse_query(&statement, &self.ctx, client)
                .await
            {
                return Ok(Some((query, Some((statement, plan?)))));
            }
        }
        if !as_typed(&statement) {
            return self.inner.parse_sql(client, &query, types).await;
        }
        let plan = self
            .ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
            .await
            .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        Ok(Some((query, Some((statement, plan)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser as SqlParser;

    fn parser() -> FleetParser {
        FleetParser::new(Arc::new(SessionContext::new()))
    }

    fn plain(sql: &str) -> Vec<Statement> {
        SqlParser::parse_sql(&GenericDialect {}, sql).expect("test SQL parses")
    }

    #[test]
    fn a_fleet_query_reaches_the_hooks_as_typed() {
        for sql in [
            "SELECT hostname, (SELECT count(*) FROM processes p WHERE p.ip = s.ip) FROM sys s",
            "SELECT (SELECT pid FROM processes)",
            "SELECT pid FROM processes WHERE ip = ANY (SELECT ip FROM machinerole)",
            "SELECT * EXCLUDE (ip) FROM sys",
            "WITH t AS (SELECT ip FROM sys) SELECT (SELECT count(*) FROM t) FROM t",
        ] {
            let statements = parser().statements(sql).expect("parses");
            assert_eq!(statements, Some(plain(sql)), "{sql}");
        }
    }

    #[test]
    fn catalog_and_session_statements_keep_the_protocol_layers_parse() {
        for sql in [
            "SELECT c.relname, (SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE n.oid = c.relnamespace) FROM pg_catalog.pg_class c",
            "SELECT version()",
            "WITH t AS (SELECT oid FROM pg_catalog.pg_class) SELECT (SELECT count(*) FROM t) FROM t",
            "SET application_name = 'x'",
            "SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(sys)$'",
            // Grafana's search-path expansion: functions in FROM.
            "SELECT table_name FROM information_schema.tables WHERE table_schema IN (SELECT trim(s[i]) FROM generate_series(1, 2) AS i, string_to_array(current_setting('search_path'), ',') s)",
        ] {
            assert_eq!(parser().statements(sql).expect("parses"), None, "{sql}");
        }
    }

    #[test]
    fn a_catalog_statement_sent_with_a_fleet_query_is_still_rewritten() {
        let catalog =
            "SELECT (SELECT relname FROM pg_catalog.pg_class) FROM pg_catalog.pg_namespace";
        let fleet = "SELECT (SELECT pid FROM processes) FROM sys";
        let statements = parser()
            .statements(&format!("{catalog}; {fleet}"))
            .expect("parses")
            .expect("holds a fleet query");
        let rewritten = PostgresCompatibilityParser::new()
            .parse(catalog)
            .expect("parses");
        assert_eq!(statements[0], rewritten[0]);
        assert_ne!(statements[0], plain(catalog)[0]);
        assert_eq!(statements[1], plain(fleet)[0]);
    }
}
