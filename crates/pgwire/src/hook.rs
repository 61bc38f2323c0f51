use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::QueryHook;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use fleetsql_sqlnode::{GenerationInfo, SqlError, SqlNode};
use pgwire::api::ClientInfo;
use pgwire::api::portal::Format;
use pgwire::api::results::Response;
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
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        e.sqlstate().to_string(),
        e.to_string(),
    )))
}

fn notice(info: &GenerationInfo) -> PgWireBackendMessage {
    PgWireBackendMessage::NoticeResponse(NoticeResponse::from(ErrorInfo::new(
        "NOTICE".to_string(),
        "01000".to_string(),
        info.summary(),
    )))
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

#[async_trait]
impl QueryHook for FleetHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if is_session_statement(statement) {
            return None;
        }
        // Dashboards and alerting pipelines send the same SQL again and
        // again: planned once while the tables keep their schemas.
        let prepared = match self.node.prepare_statement(statement) {
            Ok(p) => p,
            Err(e) => return Some(Err(user_error(&e))),
        };
        let generation = match self.node.pin_prepared(&prepared).await {
            Ok(g) => g,
            Err(e) => return Some(Err(user_error(&e))),
        };
        let output = match self.node.execute_prepared(&prepared, generation).await {
            Ok(output) => output,
            Err(e) => return Some(Err(user_error(&e))),
        };
        if let Err(e) = client.send_message(notice(&output.generation)).await {
            return Some(Err(e));
        }
        let table = match MemTable::try_new(output.schema.clone(), vec![output.batches]) {
            Ok(t) => t,
            Err(e) => return Some(Err(PgWireError::ApiError(Box::new(e)))),
        };
        let frame = match session_context.read_table(Arc::new(table)) {
            Ok(f) => f,
            Err(e) => return Some(Err(PgWireError::ApiError(Box::new(e)))),
        };
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        Some(
            encode_dataframe(frame, &Format::UnifiedText, Some(options))
                .await
                .map(Response::Query),
        )
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if is_session_statement(statement) {
            return None;
        }
        // Request and wait for the tables now, so the protocol layer's own
        // planning finds them; planning itself stays with it so parameter
        // types are inferred the way drivers expect.
        match self.node.pin(statement).await {
            Ok(_) => None,
            Err(e) => Some(Err(user_error(&e))),
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if is_session_statement(statement) {
            return None;
        }
        let info = GenerationInfo::of(&self.node.current());
        if let Err(e) = client.send_message(notice(&info)).await {
            return Some(Err(e));
        }
        None
    }
}
