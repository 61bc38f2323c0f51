//! The Flight SQL commands, each over the node's own query API.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::{DictionaryHandling, FlightDataEncoderBuilder};
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    SqlSupportedCaseSensitivity, SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::logical_expr::LogicalPlan;
use datafusion::scalar::ScalarValue;
use fleetsql_auth::{Action as AuthAction, AuditEntry, FrontEnd, Outcome, Principal};
use fleetsql_model::Generation;
use fleetsql_sqlnode::{GenerationInfo, Prepared, QueryStream, SqlError, SqlNode};
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

/// What the bound parameters of one prepared-statement execution may
/// decode to: a few values, never megabytes.
const MAX_PARAMETER_BYTES: usize = 16 << 20;

use crate::FlightSqlError;
use crate::error::status_of;
use crate::held::{Held, MAX_HELD_PLANS, TicketBody, handle_bytes, handle_number};
use crate::security::{FlightSqlSecurity, Gate};

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;
type HandshakeStream =
    Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send + 'static>>;

/// The catalog, schema and table type fleet tables are listed under.
const TABLE: &str = "TABLE";
/// Tables of DataFusion's and Postgres's catalog schemas.
const SYSTEM_TABLE: &str = "SYSTEM TABLE";
const FLEET_SCHEMA: &str = "public";

/// `SqlInfo`'s server name.
pub fn server_name() -> &'static str {
    "fleetsql"
}

/// `SqlInfo`'s server version: fleetsql's, then the engine's.
pub fn server_version() -> String {
    format!(
        "{} (DataFusion {})",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    )
}

/// One row of `GetTables`.
#[derive(Debug)]
struct TableRow {
    catalog: String,
    schema: String,
    table: String,
    kind: &'static str,
    /// Asked for, and known (a fleet table is known once collected).
    columns: Option<SchemaRef>,
}

pub(crate) struct Service {
    node: Arc<SqlNode>,
    held: Held,
    sql_info: SqlInfoData,
    gate: Gate,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("node", &self.node.name())
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

fn sql_info(node: &SqlNode) -> Result<SqlInfoData, FlightError> {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, server_name());
    info.append(SqlInfo::FlightSqlServerVersion, server_version().as_str());
    // The Arrow format version (Schema.fbs), not a library's.
    info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    info.append(SqlInfo::FlightSqlServerReadOnly, true);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(
        SqlInfo::FlightSqlServerStatementTimeout,
        i32::try_from(node.config().query_timeout.as_millis()).unwrap_or(i32::MAX),
    );
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, false);
    info.append(SqlInfo::SqlDdlTable, false);
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    info.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    info.build()
}

fn client_ip<T>(request: &Request<T>) -> Option<IpAddr> {
    request.remote_addr().map(|a| a.ip())
}

/// The schema as sent: the plan's own (dictionaries are sent as such).
fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| {
            Status::internal(format!("cannot encode the answer's schema: {e}"))
        })?;
    Ok(bytes)
}

fn generation_json(info: &GenerationInfo) -> bytes::Bytes {
    serde_json::to_vec(info).unwrap_or_default().into()
}

/// The positional parameters (`$1`, `$2`, ...) of `plan`, in order; a
/// type DataFusion could not infer is `Null` (any value binds).
fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, SqlError> {
    let types = plan.get_parameter_types()?;
    let mut numbered: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .filter_map(|(id, t)| Some((id.strip_prefix('$')?.parse().ok()?, t)))
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    Ok(Schema::new(
        numbered
            .into_iter()
            .map(|(n, t)| Field::new(format!("${n}"), t.unwrap_or(DataType::Null), true))
            .collect::<Vec<_>>(),
    ))
}

/// `plan` with `params` bound, each cast to the type its placeholder was
/// inferred as (a client binds an `int64` where the column is `int32`).
fn bind(plan: LogicalPlan, params: &[ScalarValue]) -> Result<LogicalPlan, SqlError> {
    let wanted = parameter_schema(&plan)?;
    if wanted.fields().is_empty() && params.is_empty() {
        return Ok(plan);
    }
    if params.len() != wanted.fields().len() {
        return Err(SqlError::Query(format!(
            "the statement has {} parameter(s) and {} value(s) were bound; bind one value per $n before executing",
            wanted.fields().len(),
            params.len()
        )));
    }
    let mut values = Vec::with_capacity(params.len());
    for (value, field) in params.iter().zip(wanted.fields()) {
        let target = field.data_type();
        if target == &DataType::Null || value.data_type() == *target {
            values.push(value.clone());
            continue;
        }
        values.push(value.cast_to(target).map_err(|e| {
            SqlError::Query(format!(
                "parameter {} is {} and cannot be read as {target}: {}",
                field.name(),
                value.data_type(),
                e.strip_backtrace()
            ))
        })?);
    }
    Ok(plan.with_param_values(values)?)
}

/// The parameter values of one row of a bound batch, by position.
fn row_values(batches: &[RecordBatch]) -> Result<Vec<ScalarValue>, Status> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows > 1 {
        return Err(Status::invalid_argument(format!(
            "{rows} rows of parameters were bound; fleetsql runs queries, which take one row of parameters per execution"
        )));
    }
    let Some(batch) = batches.iter().find(|b| b.num_rows() == 1) else {
        return Ok(Vec::new());
    };
    batch
        .columns()
        .iter()
        .map(|column| ScalarValue::try_from_array(column, 0))
        .collect::<Result<_, _>>()
        .map_err(|e| Status::invalid_argument(format!("cannot read a bound parameter: {e}")))
}

/// A `%`/`_` pattern as Flight SQL's filters give them (`\` escapes).
fn like(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('_', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some(('\\', rest)) if !rest.is_empty() => {
                t.first() == Some(&rest[0]) && go(&rest[1..], &t[1..])
            }
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

fn stream_of(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    metadata: Option<bytes::Bytes>,
) -> DoGetStream {
    let mut encoder = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_dictionary_handling(DictionaryHandling::Resend);
    if let Some(metadata) = metadata {
        encoder = encoder.with_metadata(metadata);
    }
    let stream = encoder
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Box::pin(stream)
}

/// A query's answer as Flight data, each batch encoded and sent as the
/// node computes it (an answer need not fit in memory, and its first
/// batches leave before its last is made). An error after the first
/// batches (the time-out, the memory limit) ends the stream with its
/// status, as one before them would. The generation rides in the first
/// message's `app_metadata`. A client that goes away drops the stream,
/// which stops the query and frees its place among those running.
fn stream_answer(answer: QueryStream) -> DoGetStream {
    let metadata = generation_json(&answer.generation);
    let schema = answer.schema.clone();
    let batches = answer
        .into_batches()
        .map_err(|e| FlightError::Tonic(Box::new(status_of(&e))));
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .with_dictionary_handling(DictionaryHandling::Resend)
        .with_metadata(metadata)
        .build(batches)
        .map_err(Status::from);
    Box::pin(stream)
}

fn one_batch(batch: Result<RecordBatch, FlightError>) -> Result<DoGetStream, Status> {
    let batch = batch.map_err(|e| Status::internal(format!("cannot build the listing: {e}")))?;
    Ok(stream_of(batch.schema(), vec![batch], None))
}

fn info_for(
    command: impl ProstMessageExt,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let ticket = Ticket::new(command.as_any().encode_to_vec());
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode the listing's schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

impl Service {
    pub(crate) fn new(
        node: Arc<SqlNode>,
        security: FlightSqlSecurity,
    ) -> Result<Service, FlightSqlError> {
        let sql_info = sql_info(&node).map_err(|e| FlightSqlError::SqlInfo(e.to_string()))?;
        Ok(Service {
            node,
            held: Held::default(),
            sql_info,
            gate: Gate::new(security),
        })
    }

    /// Who sent `request`, if they may run SQL here (role, token scope,
    /// the set's domain).
    async fn caller<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let principal = self.gate.principal(request, AuthAction::RunSql).await?;
        self.node.admit(&principal).map_err(|e| status_of(&e))?;
        Ok(principal)
    }

    /// Records a statement in the node's audit log, as pg and HTTP do.
    fn audit<T>(
        &self,
        principal: &Principal,
        peer: Option<std::net::SocketAddr>,
        sql: &str,
        started: Instant,
        outcome: &Result<T, Status>,
    ) {
        let mut entry = AuditEntry::new(principal, FrontEnd::FlightSql, AuthAction::RunSql);
        entry.peer = peer;
        entry.text = sql.to_string();
        entry.duration = started.elapsed();
        if let Err(status) = outcome {
            entry.outcome = Outcome::Error(status.message().to_string());
        }
        self.gate.audit().record(entry);
    }

    /// Pins the generation `prepared` reads and plans it there with
    /// `params` bound, under the node's time-out.
    async fn pin_and_plan(
        &self,
        prepared: &Prepared,
        params: &[ScalarValue],
        client: Option<IpAddr>,
    ) -> Result<(LogicalPlan, Arc<Generation>), SqlError> {
        let generation = self.node.pin_prepared_for(prepared, client).await?;
        let timeout = self.node.config().query_timeout;
        let plan = tokio::time::timeout(
            timeout,
            self.node
                .plan(prepared.statement().clone(), generation.clone()),
        )
        .await
        .map_err(|_| SqlError::Timeout {
            timeout_ms: timeout.as_millis() as u64,
        })??;
        Ok((bind(plan, params)?, generation))
    }

    /// Holds `plan` for its `DoGet` and describes it: schema, a ticket
    /// naming the held plan, the generation in `app_metadata`.
    fn flight_info(
        &self,
        plan: LogicalPlan,
        generation: Arc<Generation>,
        mut body: TicketBody,
        descriptor: FlightDescriptor,
        owner: &Principal,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = plan.schema().as_arrow().clone();
        let info = GenerationInfo::of(&generation);
        body.generation = info.id;
        body.plan = self.held.hold_plan(plan, generation, &owner.name).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "{MAX_HELD_PLANS} answers are waiting for their DoGet already; read them (or wait a minute for them to expire) and try again"
            ))
        })?;
        let ticket = TicketStatementQuery {
            statement_handle: serde_json::to_vec(&body)
                .map_err(|e| Status::internal(format!("cannot encode the ticket: {e}")))?
                .into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode the answer's schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor)
            .with_ordered(true)
            .with_app_metadata(generation_json(&info));
        Ok(Response::new(info))
    }

    /// Runs what a ticket names: its held plan, or its statement again on
    /// the newest generation when the plan is gone.
    async fn run_ticket(
        &self,
        body: TicketBody,
        client: Option<IpAddr>,
        principal: &Principal,
    ) -> Result<QueryStream, Status> {
        if let Some(held) = self.held.take_plan(body.plan, &principal.name) {
            return self
                .node
                .stream_plan_shared(held.plan, held.generation)
                .await
                .map_err(|e| status_of(&e));
        }
        let (prepared, params) = match (&body.sql, body.prepared) {
            (Some(sql), _) => (
                self.node.prepare(sql).map_err(|e| status_of(&e))?,
                Vec::new(),
            ),
            (None, Some(number)) => {
                let statement = self.open_statement(number, principal)?;
                (statement.prepared, statement.params)
            }
            (None, None) => {
                return Err(Status::not_found(
                    "this ticket's answer was read already or expired; call GetFlightInfo again",
                ));
            }
        };
        self.node
            .admit_statement(principal, prepared.statement())
            .map_err(|e| status_of(&e))?;
        let (plan, generation) = self
            .pin_and_plan(&prepared, &params, client)
            .await
            .map_err(|e| status_of(&e))?;
        self.node
            .stream_plan_shared(plan, generation)
            .await
            .map_err(|e| status_of(&e))
    }

    /// An open statement of `owner`'s (another principal's number finds
    /// nothing).
    fn open_statement(
        &self,
        number: u64,
        owner: &Principal,
    ) -> Result<crate::held::OpenStatement, Status> {
        self.held.statement(number, &owner.name).ok_or_else(|| {
            Status::not_found(format!(
                "prepared statement {number} is not open (closed, or dropped for newer ones); prepare it again"
            ))
        })
    }

    fn statement_number(handle: &[u8]) -> Result<u64, Status> {
        handle_number(handle).ok_or_else(|| {
            Status::invalid_argument(
                "not a prepared statement handle of this server; prepare the statement again",
            )
        })
    }

    /// Every (catalog, schema, table, type) of the node's session, with
    /// the table's schema when `with_schema` (tables named by the filters
    /// only: building a system table's schema costs a scan of it).
    async fn tables(&self, query: &CommandGetTables) -> Vec<TableRow> {
        let ctx = self.node.session_context();
        let mut rows = Vec::new();
        for catalog_name in ctx.catalog_names() {
            if query.catalog.as_ref().is_some_and(|c| c != &catalog_name) {
                continue;
            }
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                if query
                    .db_schema_filter_pattern
                    .as_ref()
                    .is_some_and(|p| !like(p, &schema_name))
                {
                    continue;
                }
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                let kind = if schema_name == FLEET_SCHEMA {
                    TABLE
                } else {
                    SYSTEM_TABLE
                };
                if !query.table_types.is_empty() && !query.table_types.iter().any(|t| t == kind) {
                    continue;
                }
                for table_name in schema.table_names() {
                    if query
                        .table_name_filter_pattern
                        .as_ref()
                        .is_some_and(|p| !like(p, &table_name))
                    {
                        continue;
                    }
                    let table_schema = if query.include_schema {
                        // A fleet table not collected yet has no columns
                        // until a query names it.
                        match schema.table(&table_name).await {
                            Ok(Some(table)) => Some(table.schema()),
                            _ => None,
                        }
                    } else {
                        None
                    };
                    rows.push(TableRow {
                        catalog: catalog_name.clone(),
                        schema: schema_name.clone(),
                        table: table_name,
                        kind,
                        columns: table_schema,
                    });
                }
            }
        }
        rows
    }
}

#[tonic::async_trait]
impl FlightSqlService for Service {
    type FlightService = Service;

    /// A log-in: a password opens a session whose token the answer's
    /// `authorization` header carries, for the client to send as its
    /// bearer. Without users configured anyone may connect, so a
    /// handshake (some clients always send one) succeeds with no token.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let (_, session) = self.gate.handshake(&request).await?;
        let answer = HandshakeResponse {
            protocol_version: 0,
            payload: session.clone().unwrap_or_default().into(),
        };
        let mut response: Response<HandshakeStream> =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        if let Some(session) = session {
            let bearer = format!("Bearer {session}")
                .parse()
                .map_err(|_| Status::internal("the session token is not a header value"))?;
            response.metadata_mut().insert("authorization", bearer);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.caller(&request).await?;
        let started = Instant::now();
        let client = client_ip(&request);
        let peer = request.remote_addr();
        let planned = async {
            let prepared = self.node.prepare(&query.query).map_err(|e| status_of(&e))?;
            self.node
                .admit_statement(&principal, prepared.statement())
                .map_err(|e| status_of(&e))?;
            self.pin_and_plan(&prepared, &[], client)
                .await
                .map_err(|e| status_of(&e))
        }
        .await;
        self.audit(&principal, peer, &query.query, started, &planned);
        let (plan, generation) = planned?;
        let body = TicketBody {
            plan: 0,
            generation: 0,
            sql: Some(query.query),
            prepared: None,
        };
        self.flight_info(plan, generation, body, request.into_inner(), &principal)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = self.caller(&request).await?;
        let started = Instant::now();
        let client = client_ip(&request);
        let number = Self::statement_number(&query.prepared_statement_handle)?;
        let statement = self.open_statement(number, &principal)?;
        let planned = match self
            .node
            .admit_statement(&principal, statement.prepared.statement())
        {
            Ok(()) => self
                .pin_and_plan(&statement.prepared, &statement.params, client)
                .await
                .map_err(|e| status_of(&e)),
            Err(e) => Err(status_of(&e)),
        };
        self.audit(
            &principal,
            request.remote_addr(),
            &statement.prepared.statement().to_string(),
            started,
            &planned,
        );
        let (plan, generation) = planned?;
        let body = TicketBody {
            plan: 0,
            generation: 0,
            sql: None,
            prepared: Some(number),
        };
        self.flight_info(plan, generation, body, request.into_inner(), &principal)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.caller(&request).await?;
        let body: TicketBody = serde_json::from_slice(&ticket.statement_handle).map_err(|e| {
            Status::invalid_argument(format!(
                "not a ticket of this server ({e}); use the ticket GetFlightInfo answered"
            ))
        })?;
        let answer = self
            .run_ticket(body, client_ip(&request), &principal)
            .await?;
        Ok(Response::new(stream_answer(answer)))
    }

    /// A client that uses the command itself as the ticket: executed on a
    /// newly pinned generation.
    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let principal = self.caller(&request).await?;
        let number = Self::statement_number(&query.prepared_statement_handle)?;
        let body = TicketBody {
            plan: 0,
            generation: 0,
            sql: None,
            prepared: Some(number),
        };
        let answer = self
            .run_ticket(body, client_ip(&request), &principal)
            .await?;
        Ok(Response::new(stream_answer(answer)))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = self.caller(&request).await?;
        let client = client_ip(&request);
        let prepared = self.node.prepare(&query.query).map_err(|e| status_of(&e))?;
        self.node
            .admit_statement(&principal, prepared.statement())
            .map_err(|e| status_of(&e))?;
        // Planned now for the schemas the client asks about; each
        // execution pins and plans again, so it reads fresh rows.
        let generation = self
            .node
            .pin_prepared_for(&prepared, client)
            .await
            .map_err(|e| status_of(&e))?;
        let timeout = self.node.config().query_timeout;
        let plan = tokio::time::timeout(
            timeout,
            self.node.plan(prepared.statement().clone(), generation),
        )
        .await
        .map_err(|_| {
            status_of(&SqlError::Timeout {
                timeout_ms: timeout.as_millis() as u64,
            })
        })?
        .map_err(|e| status_of(&e))?;
        let parameters = parameter_schema(&plan).map_err(|e| status_of(&e))?;
        let dataset = plan.schema().as_arrow().clone();
        let number = self.held.open(prepared, &principal.name);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle_bytes(number),
            dataset_schema: ipc_schema(&dataset)?,
            parameter_schema: ipc_schema(&parameters)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let principal = self.caller(&request).await?;
        // Closing twice, or a statement dropped for newer ones, is fine.
        if let Some(number) = handle_number(&query.prepared_statement_handle) {
            self.held.close(number, &principal.name);
        }
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let principal = self.caller(&request).await?;
        let number = Self::statement_number(&query.prepared_statement_handle)?;
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request
                    .into_inner()
                    .map_err(FlightError::from)
                    .and_then(|data| {
                        // Checked before decoding: a declared size the decoder
                        // would allocate must not abort the node.
                        std::future::ready(
                            fleetsql_model::parse::check_ipc_message(
                                &data.data_header,
                                &data.data_body,
                                MAX_PARAMETER_BYTES,
                            )
                            .map(|()| data)
                            .map_err(|e| FlightError::ProtocolError(e.to_string())),
                        )
                    }),
            )
            .try_collect()
            .await
            .map_err(|e| {
                Status::invalid_argument(format!("cannot read the bound parameters: {e}"))
            })?;
        let values = row_values(&batches)?;
        if !self.held.bind(number, &principal.name, values) {
            return Err(self
                .open_statement(number, &principal)
                .err()
                .unwrap_or_else(|| {
                    Status::not_found("the prepared statement was closed while binding")
                }));
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    /// Statements that change data: refused with the read-only message
    /// (an `INSERT` sent here fails the node's own check).
    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(&request).await?;
        self.node
            .prepare(&command.query)
            .map_err(|e| status_of(&e))?;
        Err(Status::invalid_argument(
            "ExecuteUpdate is for statements that change data, and fleetsql is read-only; run queries with Execute (CommandStatementQuery)",
        ))
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(&request).await?;
        Err(Status::invalid_argument(
            "ExecuteUpdate is for statements that change data, and fleetsql is read-only; execute a prepared query with GetFlightInfo and DoGet",
        ))
    }

    async fn do_put_statement_ingest(
        &self,
        _command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.caller(&request).await?;
        Err(status_of(&SqlError::ReadOnly {
            statement: "bulk ingestion".into(),
        }))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.into_builder().schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request).await?;
        let mut builder = query.into_builder();
        let mut names = self.node.session_context().catalog_names();
        names.sort();
        for name in names {
            builder.append(name);
        }
        Ok(Response::new(one_batch(builder.build())?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.clone().into_builder().schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request).await?;
        let ctx = self.node.session_context();
        let mut builder = query.into_builder();
        let mut names = ctx.catalog_names();
        names.sort();
        for catalog_name in names {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            let mut schemas = catalog.schema_names();
            schemas.sort();
            for schema_name in schemas {
                builder.append(&catalog_name, schema_name);
            }
        }
        Ok(Response::new(one_batch(builder.build())?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.clone().into_builder().schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request).await?;
        let rows = self.tables(&query).await;
        let mut builder = query.into_builder();
        let no_columns = Schema::empty();
        for row in rows {
            let columns = row.columns.as_deref().unwrap_or(&no_columns);
            builder
                .append(row.catalog, row.schema, row.table, row.kind, columns)
                .map_err(|e| Status::internal(format!("cannot list table columns: {e}")))?;
        }
        Ok(Response::new(one_batch(builder.build())?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.into_builder().schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request).await?;
        let mut builder = query.into_builder();
        builder.append(SYSTEM_TABLE);
        builder.append(TABLE);
        Ok(Response::new(one_batch(builder.build())?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        info_for(query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request).await?;
        let builder = query.into_builder(&self.sql_info);
        Ok(Response::new(one_batch(builder.build())?))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!(
            "fleetsql's Flight SQL does not serve {}; it serves statements, prepared statements, catalogs, schemas, tables, table types and SQL info",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_follows_flight_sql_patterns() {
        assert!(like("%", ""));
        assert!(like("s%", "sys"));
        assert!(like("s_s", "sys"));
        assert!(!like("s_s", "syss"));
        assert!(like("fleet\\_%", "fleet_nodes"));
        assert!(!like("fleet\\_%", "fleetxnodes"));
        assert!(!like("sys", "Sys"));
    }

    #[test]
    fn one_row_of_parameters_binds_by_position() {
        use arrow::array::{Int64Array, StringArray};
        let batch = RecordBatch::try_from_iter([
            ("a", Arc::new(Int64Array::from(vec![7])) as _),
            ("b", Arc::new(StringArray::from(vec!["x"])) as _),
        ])
        .unwrap();
        assert_eq!(
            row_values(std::slice::from_ref(&batch)).unwrap(),
            vec![
                ScalarValue::Int64(Some(7)),
                ScalarValue::Utf8(Some("x".into()))
            ]
        );
        let two = arrow::compute::concat_batches(&batch.schema(), [&batch, &batch]).unwrap();
        let refused = row_values(&[two]).unwrap_err();
        assert!(refused.message().contains("one row"), "{refused}");
        assert!(row_values(&[]).unwrap().is_empty());
    }

    #[test]
    fn server_info_is_fleetsqls() {
        assert_eq!(server_name(), "fleetsql");
        assert!(server_version().starts_with(env!("CARGO_PKG_VERSION")));
        assert!(server_version().contains("DataFusion"));
    }
}
