use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    ObjectName, ObjectNamePart, Query, Statement, TableFactor, Visit, Visitor,
};
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use fleetsql_auth::Principal;
use fleetsql_sqlnode::{GenerationInfo, QueryOutput, QueryStream, SqlError, SqlNode};
use futures::StreamExt;
use pgwire::api::ClientInfo;
use pgwire::api::portal::Format;
use pgwire::api::results::{QueryResponse, Response, Tag};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::NoticeResponse;
use pgwire::types::format::FormatOptions;

/// The fleetsql hook: read-only, pinned, timed, annotated.
#[derive(Debug)]
pub(crate) struct FleetHook {
    pub(crate) node: Arc<SqlNode>,
}

pub(crate) fn user_error(e: &SqlError) -> PgWireError {
    let mut info = ErrorInfo::new("ERROR".to_string(), e.sqlstate().to_string(), e.to_string());
    if let SqlError::ResourcesExhausted(_) = e {
        info.hint = Some(
            "the node's query_memory_mib is shared by the queries running at once: narrow the query (WHERE, LIMIT, fewer columns or groups, no ORDER BY over everything), try again when the node is less busy, or raise query_memory_mib".to_string(),
        );
    }
    PgWireError::UserError(Box::new(info))
}

fn notice(info: &GenerationInfo) -> PgWireBackendMessage {
    PgWireBackendMessage::NoticeResponse(NoticeResponse::from(ErrorInfo::new(
        "NOTICE".to_string(),
        "01000".to_string(),
        info.summary(),
    )))
}

/// The node's set refuses roles outside its domain, and node tables
/// refuse roles that may not read them; a connection without a principal
/// never gets here (the service refuses it first).
fn admit(
    node: &SqlNode,
    principal: Option<Arc<Principal>>,
    statement: &Statement,
) -> Result<(), SqlError> {
    match principal {
        Some(principal) => node.admit_statement(&principal, statement),
        None => node.admit_statement(&Principal::unauthenticated("anonymous"), statement),
    }
}

/// Statements the protocol layer's own hooks answer (session settings,
/// transactions, cursors): nothing to read from the fleet.
fn is_session_statement(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Declare { .. }
            | Statement::Fetch { .. }
            | Statement::Close { .. }
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
    )
}

/// `SHOW server_version` / `server_version_num` as Postgres answers them
/// (the protocol layer's own answer is not in a form drivers parse).
fn show_server_version(statement: &Statement) -> Option<PgWireResult<RecordBatch>> {
    let Statement::ShowVariable { variable } = statement else {
        return None;
    };
    let [name] = variable.as_slice() else {
        return None;
    };
    let name = name.value.to_lowercase();
    let value = match name.as_str() {
        "server_version" => fleetsql_sqlnode::server_version(),
        "server_version_num" => fleetsql_sqlnode::server_version_num().to_string(),
        _ => return None,
    };
    let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]));
    let column: ArrayRef = Arc::new(StringArray::from(vec![value]));
    Some(RecordBatch::try_new(schema, vec![column]).map_err(|e| PgWireError::ApiError(Box::new(e))))
}

fn encode_batch(batch: RecordBatch, options: Arc<FormatOptions>) -> PgWireResult<Response> {
    let fields = Arc::new(arrow_schema_to_pg_fields(
        &batch.schema(),
        &Format::UnifiedText,
        Some(options),
    )?);
    let rows: Vec<_> = encode_recordbatch(fields.clone(), batch).collect();
    Ok(Response::Query(QueryResponse::new(
        fields,
        futures::stream::iter(rows),
    )))
}

/// Rows as the node computed them, named as it named them: columns that
/// share a name (`SELECT *` over a join) stay apart, which a round trip
/// through a DataFusion table would refuse.
fn encode_output(output: QueryOutput, options: Arc<FormatOptions>) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(arrow_schema_to_pg_fields(
        &output.schema,
        &Format::UnifiedText,
        Some(options),
    )?);
    let rows_fields = fields.clone();
    let rows = futures::stream::iter(
        output
            .batches
            .into_iter()
            .flat_map(move |batch| encode_recordbatch(rows_fields.clone(), batch)),
    );
    Ok(QueryResponse::new(fields, rows))
}

/// [`encode_output`] for an answer still being computed: each batch is
/// encoded as it arrives; an error (the time-out, the memory limit) ends
/// the rows with its SQLSTATE.
fn encode_stream(answer: QueryStream, options: Arc<FormatOptions>) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(arrow_schema_to_pg_fields(
        &answer.schema,
        &Format::UnifiedText,
        Some(options),
    )?);
    let rows_fields = fields.clone();
    let rows = answer.into_batches().flat_map(move |batch| {
        let rows: Box<dyn Iterator<Item = PgWireResult<_>> + Send + Sync> = match batch {
            Ok(batch) => encode_recordbatch(rows_fields.clone(), batch),
            Err(e) => Box::new(std::iter::once(Err(user_error(&e)))),
        };
        futures::stream::iter(rows)
    });
    Ok(QueryResponse::new(fields, rows))
}

/// Whether `statement` reads nothing but the catalogs (`pg_catalog`,
/// `information_schema`) or no table at all: what psql's `\d` and
/// drivers' introspection send, several queries per command. The
/// completeness NOTICE speaks of fleet data, so those go without it, and
/// only those get the protocol layer's Postgres-compatibility rewrites.
/// A common table expression's name is no fleet table: introspection
/// queries name their sub-results.
pub(crate) fn reads_no_fleet_data(statement: &Statement) -> bool {
    let mut visitor = CatalogOnly::default();
    let _ = statement.visit(&mut visitor);
    visitor.catalog_only
}

struct CatalogOnly {
    catalog_only: bool,
    ctes: HashSet<String>,
    /// The next relation is a function called in FROM
    /// (`generate_series(1, 3)`, Grafana's `string_to_array(...) s`),
    /// which reads no fleet data.
    function_call: bool,
}

impl Default for CatalogOnly {
    fn default() -> Self {
        CatalogOnly {
            catalog_only: true,
            ctes: HashSet::new(),
            function_call: false,
        }
    }
}

impl Visitor for CatalogOnly {
    type Break = ();

    // A query is visited before its WITH clause and body, so its CTEs'
    // names are known by the time the body's relations are.
    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            self.ctes.extend(
                with.cte_tables
                    .iter()
                    .map(|cte| cte.alias.name.value.to_lowercase()),
            );
        }
        ControlFlow::Continue(())
    }

    // A table factor is visited before its name (then its arguments).
    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        self.function_call = matches!(factor, TableFactor::Table { args: Some(_), .. });
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<()> {
        if std::mem::take(&mut self.function_call) {
            return ControlFlow::Continue(());
        }
        let part = |p: &ObjectNamePart| {
            p.as_ident()
                .map_or_else(|| p.to_string(), |i| i.value.clone())
                .to_lowercase()
        };
        let first = name.0.first().map(part);
        let last = name.0.last().map(part);
        let single = name.0.len() == 1;
        let in_catalog = matches!(first.as_deref(), Some("pg_catalog" | "information_schema"))
            || (single && last.as_ref().is_some_and(|t| t.starts_with("pg_")))
            || (single && last.is_some_and(|t| self.ctes.contains(&t)));
        self.catalog_only &= in_catalog;
        ControlFlow::Continue(())
    }
}

/// Savepoints, which drivers and ORMs (SQLAlchemy over psycopg) set around
/// their own statements: a read-only node has nothing to save or undo, so
/// they succeed and the transaction stays open.
fn savepoint_tag(statement: &Statement) -> Option<Tag> {
    match statement {
        Statement::Savepoint { .. } => Some(Tag::new("SAVEPOINT")),
        Statement::ReleaseSavepoint { .. } => Some(Tag::new("RELEASE")),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Some(Tag::new("ROLLBACK")),
        _ => None,
    }
}

#[async_trait]
impl QueryHook for FleetHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(tag) = savepoint_tag(statement) {
            return Some(Ok(Response::Execution(tag)));
        }
        if let Some(answer) = show_server_version(statement) {
            let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            return Some(answer.and_then(|batch| encode_batch(batch, options)));
        }
        if let Err(e) = fleetsql_sqlnode::check_setting(statement) {
            return Some(Err(user_error(&e)));
        }
        if is_session_statement(statement) {
            return None;
        }
        if let Err(e) = admit(
            &self.node,
            client.session_extensions().get::<Principal>(),
            statement,
        ) {
            return Some(Err(user_error(&e)));
        }
        // Dashboards and alerting pipelines send the same SQL again and
        // again: planned once while the tables keep their schemas.
        let prepared = match self.node.prepare_statement(statement) {
            Ok(p) => p,
            Err(e) => return Some(Err(user_error(&e))),
        };
        let peer = Some(client.socket_addr().ip());
        let generation = match self.node.pin_prepared_for(&prepared, peer).await {
            Ok(g) => g,
            // Another subset of the set serves these tables: it runs the
            // query and this connection sends its answer, the NOTICE
            // naming the node that computed it.
            Err(SqlError::ServedElsewhere { nodes, .. }) => {
                let output = match self.node.forward(&nodes, &statement.to_string()).await {
                    Ok(output) => output,
                    Err(e) => return Some(Err(user_error(&e))),
                };
                if let Err(e) = client.send_message(notice(&output.generation)).await {
                    return Some(Err(e));
                }
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                return Some(encode_output(output, options).map(Response::Query));
            }
            Err(e) => return Some(Err(user_error(&e))),
        };
        // The answer is sent batch by batch as it is computed: it need not
        // fit in memory, and its first rows leave before its last are made.
        let node_timeout = self.node.config().query_timeout;
        let session = crate::timeout::session_timeout(client, node_timeout);
        let session_deadline = session.map(|t| tokio::time::Instant::now() + t);
        let answer = match crate::timeout::within_session_timeout(
            session,
            node_timeout,
            self.node.stream_prepared(&prepared, generation),
        )
        .await
        {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Some(Err(user_error(&e))),
            Err(e) => return Some(Err(e)),
        };
        if !reads_no_fleet_data(statement)
            && let Err(e) = client.send_message(notice(&answer.generation)).await
        {
            return Some(Err(e));
        }
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let response = encode_stream(answer, options).map(Response::Query);
        // A session's own lower time-out stops the rows too; the node's
        // ends the batches itself.
        Some(match session_deadline {
            Some(deadline) => response.map(|r| {
                crate::timeout::rows_until(
                    r,
                    deadline,
                    crate::timeout::timeout_error(session, node_timeout),
                )
            }),
            None => response,
        })
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if savepoint_tag(statement).is_some() {
            return Some(Ok(LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(DFSchema::empty()),
            })));
        }
        if let Err(e) = fleetsql_sqlnode::check_setting(statement) {
            return Some(Err(user_error(&e)));
        }
        if is_session_statement(statement) {
            return None;
        }
        if let Err(e) = admit(
            &self.node,
            client.session_extensions().get::<Principal>(),
            statement,
        ) {
            return Some(Err(user_error(&e)));
        }
        // Request and wait for the tables now, then plan as the simple
        // protocol does (read-only check, Postgres's column names); the
        // protocol layer infers parameter types from this plan and runs it.
        let peer = Some(client.socket_addr().ip());
        let generation = match self.node.pin_for(statement, peer).await {
            Ok(g) => g,
            Err(e) => return Some(Err(user_error(&e))),
        };
        Some(
            self.node
                .plan(statement.clone(), generation)
                .await
                .map_err(|e| user_error(&e)),
        )
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        logical_plan: &LogicalPlan,
        params: &ParamValues,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(tag) = savepoint_tag(statement) {
            return Some(Ok(Response::Execution(tag)));
        }
        if is_session_statement(statement) {
            return None;
        }
        let mut info = GenerationInfo::of(&self.node.current());
        // The protocol layer runs the plan itself, outside the node's
        // history-read scope: what it reads of history (time travel,
        // `history.<table>`) is found by planning it here, so the NOTICE
        // names the kept generations as over the simple protocol.
        if fleetsql_sqlnode::reads_history(logical_plan) {
            let plan = match logical_plan.clone().replace_params_with_values(params) {
                Ok(plan) => plan,
                Err(e) => return Some(Err(PgWireError::ApiError(Box::new(e)))),
            };
            match fleetsql_sqlnode::history_reads_of(&self.node.session_context(), &plan).await {
                Ok(reads) => info.history = reads,
                Err(e) => return Some(Err(user_error(&e))),
            }
        }
        if !reads_no_fleet_data(statement)
            && let Err(e) = client.send_message(notice(&info)).await
        {
            return Some(Err(e));
        }
        None
    }
}
