//! Every statement a client sends, recorded in the node's [`AuditLog`]
//! when its answer has been sent (or the client went away), so the
//! duration and outcome include streaming the rows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use datafusion_postgres::pgwire;
use fleetsql_auth::{Action, AuditEntry, AuditLog, FrontEnd, Outcome, Principal};
use futures::StreamExt;
use parking_lot::Mutex;
use pgwire::api::results::Response;
use pgwire::error::{PgWireError, PgWireResult};

/// One statement's entry, recorded when the last clone is dropped: after
/// every row stream of the answer has ended.
struct Pending {
    audit: Arc<AuditLog>,
    entry: Mutex<Option<AuditEntry>>,
    started: Instant,
    /// Rows sent, once an answer with rows was watched.
    rows: AtomicU64,
    has_rows: AtomicBool,
}

impl Pending {
    fn fail(&self, message: String) {
        if let Some(entry) = self.entry.lock().as_mut()
            && entry.outcome == Outcome::Ok
        {
            entry.outcome = Outcome::Error(message);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut entry) = self.entry.get_mut().take() {
            entry.duration = self.started.elapsed();
            if *self.has_rows.get_mut() {
                entry.rows = Some(*self.rows.get_mut());
            }
            self.audit.record(entry);
        }
    }
}

/// What a statement is audited as, taken before it runs.
pub(crate) struct Statement {
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) principal: Arc<Principal>,
    pub(crate) peer: SocketAddr,
    pub(crate) text: String,
    pub(crate) started: Instant,
}

impl Statement {
    fn pending(self) -> Arc<Pending> {
        let mut entry = AuditEntry::new(&self.principal, FrontEnd::Pg, Action::RunSql);
        entry.peer = Some(self.peer);
        entry.text = self.text;
        Arc::new(Pending {
            audit: self.audit,
            entry: Mutex::new(Some(entry)),
            started: self.started,
            rows: AtomicU64::new(0),
            has_rows: AtomicBool::new(false),
        })
    }

    /// Records `answer` (many responses, the simple protocol).
    pub(crate) fn responses(
        self,
        answer: PgWireResult<Vec<Response>>,
    ) -> PgWireResult<Vec<Response>> {
        let pending = self.pending();
        match answer {
            Ok(mut responses) => {
                for response in &mut responses {
                    watch(&pending, response);
                }
                Ok(responses)
            }
            Err(e) => {
                pending.fail(error_text(&e));
                Err(e)
            }
        }
    }

    /// Records `answer` (one response, the extended protocol).
    pub(crate) fn response(self, answer: PgWireResult<Response>) -> PgWireResult<Response> {
        let pending = self.pending();
        match answer {
            Ok(mut response) => {
                watch(&pending, &mut response);
                Ok(response)
            }
            Err(e) => {
                pending.fail(error_text(&e));
                Err(e)
            }
        }
    }
}

fn error_text(e: &PgWireError) -> String {
    match e {
        PgWireError::UserError(info) => format!("{}: {}", info.code, info.message),
        other => other.to_string(),
    }
}

/// Ties the entry to `response`: an error response fails it, a row
/// stream keeps it open until the stream ends and fails it on an error.
fn watch(pending: &Arc<Pending>, response: &mut Response) {
    match response {
        Response::Error(info) => pending.fail(format!("{}: {}", info.code, info.message)),
        Response::Query(query) => {
            let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
            let pending = pending.clone();
            pending.has_rows.store(true, Ordering::Relaxed);
            query.data_rows = Box::pin(rows.map(move |row| {
                match &row {
                    Ok(_) => {
                        pending.rows.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => pending.fail(error_text(e)),
                }
                row
            }));
        }
        _ => {}
    }
}
