//! The extended protocol's `Execute` of a fleet query, with its rows sent
//! as they are computed.
//!
//! The protocol layer's own `Execute` (pgwire's `_on_execute`) puts the
//! answer in the portal and then fetches it, and a fetch of "all rows"
//! (`max_rows` 0, what every driver sends unless it asks for a cursor)
//! collects every row before the first is sent: an answer had to fit in
//! memory, its first rows waited for its last, and an answer stopped by
//! its time-out reached the client as the error alone. Here the rows of
//! such an `Execute` go to the client one by one as the plan yields them;
//! an `Execute` with a row limit (a cursor-style fetch) keeps the protocol
//! layer's portal, which suspends after that many rows.
//!
//! A cancel request (`pg_cancel_backend`, psql's Ctrl-C) stops the rows
//! too, where the protocol layer heeds it only until the answer starts.

use std::fmt::Debug;
use std::sync::Arc;

use datafusion_postgres::pgwire;
use futures::future::{Either, select};
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::portal::{Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, send_execution_response};
use pgwire::api::results::{Response, Tag};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, DEFAULT_NAME, PgWireConnectionState, copy,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::response::EmptyQueryResponse;

/// The portal an `Execute` of every row names, when it has not run yet;
/// `None` sends the `Execute` to the protocol layer as it is.
pub(crate) async fn unstarted_portal<S, C>(client: &C, message: &Execute) -> Option<Arc<Portal<S>>>
where
    C: ClientInfo + ClientPortalStore,
    C::PortalStore: PortalStore<Statement = S>,
{
    if message.max_rows != 0 || !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
        return None;
    }
    let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
    let Some(Entry::Value(portal)) = client.portal_store().get_portal(name) else {
        return None;
    };
    let initial = matches!(*portal.state.lock().await, PortalExecutionState::Initial);
    initial.then_some(portal)
}

/// Runs `portal` with `handler.do_query` and sends its rows as they come,
/// then `CommandComplete`; every other kind of answer is sent as the
/// protocol layer sends it.
pub(crate) async fn execute_streaming<H, C>(
    handler: &H,
    client: &mut C,
    portal: Arc<Portal<H::Statement>>,
) -> PgWireResult<()>
where
    H: ExtendedQueryHandler,
    C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::PortalStore: PortalStore<Statement = H::Statement>,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let mut transaction_status = client.transaction_status();
    client.set_state(PgWireConnectionState::QueryInProgress);
    let mut cancel = match client.session_extensions().get::<Arc<ConnectionHandle>>() {
        Some(handle) => Either::Left(handle.start_query().await),
        None => Either::Right(futures::future::pending()),
    };
    let response = match select(handler.do_query(client, portal.as_ref(), 0), &mut cancel).await {
        Either::Left((response, _)) => response?,
        Either::Right(_) => return Err(PgWireError::QueryCanceled),
    };
    match response {
        Response::Query(mut answer) => {
            // Run once: a second `Execute` of this portal finds it done,
            // as the protocol layer's portal would be.
            *portal.state.lock().await = PortalExecutionState::Finished;
            let tag = answer.command_tag().to_owned();
            let rows = answer.data_rows();
            let mut sent = 0usize;
            loop {
                let row = match select(rows.next(), &mut cancel).await {
                    Either::Left((Some(row), _)) => row?,
                    Either::Left((None, _)) => break,
                    // Dropping the rows stops the query (and frees its
                    // place among those running at once).
                    Either::Right(_) => return Err(PgWireError::QueryCanceled),
                };
                // `feed` writes out whenever the connection's buffer is
                // full, so rows leave while the next are computed.
                client.feed(PgWireBackendMessage::DataRow(row)).await?;
                sent += 1;
            }
            let tag = Tag::new(&tag).with_rows(sent);
            client
                .send(PgWireBackendMessage::CommandComplete(tag.into()))
                .await?;
        }
        Response::EmptyQuery => {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }
        Response::Execution(tag) => send_execution_response(client, tag).await?,
        Response::TransactionStart(tag) => {
            send_execution_response(client, tag).await?;
            transaction_status = transaction_status.to_in_transaction_state();
        }
        Response::TransactionEnd(tag) => {
            send_execution_response(client, tag).await?;
            transaction_status = transaction_status.to_idle_state();
            client.portal_store().rm_portal(DEFAULT_NAME);
        }
        Response::Error(e) => {
            client
                .send(PgWireBackendMessage::ErrorResponse((*e).into()))
                .await?;
            transaction_status = transaction_status.to_error_state();
        }
        Response::CopyIn(result) => {
            client.set_state(PgWireConnectionState::CopyInProgress(true));
            copy::send_copy_in_response(client, result).await?;
        }
        Response::CopyOut(result) => copy::send_copy_out_response(client, result).await?,
        Response::CopyBoth(result) => {
            client.set_state(PgWireConnectionState::CopyInProgress(true));
            copy::send_copy_both_response(client, result).await?;
        }
    }
    if !matches!(client.state(), PgWireConnectionState::CopyInProgress(_)) {
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(transaction_status);
    }
    Ok(())
}
