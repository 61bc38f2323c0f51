//! A session's own `statement_timeout`: `SET statement_timeout = '100ms'`
//! lowers that connection's time-out and no other's. It never raises it:
//! the node's `query_timeout` bounds every query whatever a client sets,
//! so a session value at or above it changes nothing.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr, Set, Statement, Value};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use fleetsql_sqlnode::SqlError;
use futures::StreamExt;
use pgwire::api::ClientInfo;
use pgwire::api::results::{Response, Tag};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use tokio::time::Instant;

/// Where the protocol layer keeps a connection's `statement_timeout` (it
/// answers `SHOW statement_timeout` from there): milliseconds, absent for
/// none.
const METADATA_KEY: &str = "statement_timeout_ms";

/// Answers `SET statement_timeout` on both protocols, with Postgres's
/// units (`us`, `ms`, `s`, `min`, `h`, `d`; a bare number is ms; 0 or
/// `DEFAULT` is none) and a clear error for a value it cannot read, where
/// the protocol layer's own hook silently dropped it.
#[derive(Debug)]
pub(crate) struct StatementTimeoutHook;

/// The value of a `SET statement_timeout`, or `None` for any other
/// statement.
fn assignment(statement: &Statement) -> Option<&[Expr]> {
    let Statement::Set(Set::SingleAssignment {
        variable, values, ..
    }) = statement
    else {
        return None;
    };
    variable
        .to_string()
        .eq_ignore_ascii_case("statement_timeout")
        .then_some(values.as_slice())
}

/// `values` as a time-out: `Ok(None)` for none.
fn parse_values(values: &[Expr]) -> PgWireResult<Option<Duration>> {
    let text = match values {
        [Expr::Value(v)] => match &v.value {
            Value::Number(n, _) => n.clone(),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        [Expr::Identifier(i)] => i.value.clone(),
        other => other
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
    };
    parse_timeout(&text)
}

/// Postgres's reading of a time setting whose default unit is ms.
pub(crate) fn parse_timeout(text: &str) -> PgWireResult<Option<Duration>> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("default") {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let ms_per_unit = match unit.trim() {
        "" | "ms" => Some(1.0),
        "us" => Some(0.001),
        "s" => Some(1_000.0),
        "min" => Some(60_000.0),
        "h" => Some(3_600_000.0),
        "d" => Some(86_400_000.0),
        _ => None,
    };
    let ms = number
        .parse::<f64>()
        .ok()
        .zip(ms_per_unit)
        .map(|(n, unit)| n * unit)
        .filter(|ms| ms.is_finite() && *ms >= 0.0 && *ms < 1e12);
    let Some(ms) = ms else {
        return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_string(),
            // invalid_parameter_value
            "22023".to_string(),
            format!(
                "invalid value for parameter \"statement_timeout\": \"{text}\"; give a duration such as '500ms', '5s' or '2min' (0 or DEFAULT: the node's query_timeout)"
            ),
        ))));
    };
    // Postgres rounds a fraction of a millisecond up to one.
    let ms = ms.ceil() as u64;
    Ok((ms > 0).then(|| Duration::from_millis(ms)))
}

fn set(client: &mut dyn HookClient, values: &[Expr]) -> PgWireResult<Response> {
    let timeout = parse_values(values)?;
    let metadata = client.metadata_mut();
    match timeout {
        Some(t) => metadata.insert(METADATA_KEY.to_string(), t.as_millis().to_string()),
        None => metadata.remove(METADATA_KEY),
    };
    Ok(Response::Execution(Tag::new("SET")))
}

#[async_trait]
impl QueryHook for StatementTimeoutHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let values = assignment(statement)?;
        Some(set(client, values))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // A bad value is refused at Parse; the protocol layer's own hook
        // plans the statement (an empty relation) otherwise.
        let values = assignment(statement)?;
        parse_values(values).err().map(Err)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let values = assignment(statement)?;
        Some(set(client, values))
    }
}

/// The connection's own time-out when it is below the node's.
pub(crate) fn session_timeout(
    client: &(impl ClientInfo + ?Sized),
    node: Duration,
) -> Option<Duration> {
    let ms = client.metadata().get(METADATA_KEY)?.parse::<u64>().ok()?;
    let session = Duration::from_millis(ms);
    (session < node).then_some(session)
}

/// Runs `query` (which stops itself at the node's `query_timeout`) under
/// the session's lower time-out, if it set one. Dropping the query when
/// the time is up cancels its execution.
pub(crate) async fn within_session_timeout<T>(
    session: Option<Duration>,
    node: Duration,
    query: impl Future<Output = Result<T, SqlError>>,
) -> PgWireResult<Result<T, SqlError>> {
    let Some(limit) = session else {
        return Ok(query.await);
    };
    tokio::time::timeout(limit, query)
        .await
        .map_err(|_| timeout_error(Some(limit), node))
}

/// The answer to a statement stopped by its time-out: the session's own
/// (`Some`) or the node's.
pub(crate) fn timeout_error(session: Option<Duration>, node: Duration) -> PgWireError {
    let Some(limit) = session else {
        return crate::hook::user_error(&SqlError::Timeout {
            timeout_ms: node.as_millis() as u64,
        });
    };
    let mut info = ErrorInfo::new(
        "ERROR".to_string(),
        // query_canceled, as Postgres answers a statement_timeout
        "57014".to_string(),
        format!(
            "canceling statement due to statement timeout: this session's statement_timeout is {} ms (the node's query_timeout, {} ms, is the most a session may have)",
            limit.as_millis(),
            node.as_millis()
        ),
    );
    info.hint = Some(
        "narrow the query (WHERE, LIMIT, fewer tables), or SET statement_timeout higher (0 or DEFAULT: the node's)".to_string(),
    );
    PgWireError::UserError(Box::new(info))
}

/// An answer whose rows stop with the time-out error once `deadline`
/// passes: the protocol layer's extended-protocol plans run while their
/// rows are sent, after the handler returned.
pub(crate) fn rows_until(response: Response, deadline: Instant, error: PgWireError) -> Response {
    let Response::Query(mut query) = response else {
        return response;
    };
    let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
    query.data_rows = Box::pin(futures::stream::unfold(
        (rows, Some(error)),
        move |(mut rows, error)| async move {
            let error = error?;
            // The deadline first: rows that are always ready (a CPU-bound
            // plan's) would otherwise keep a timer polled after them
            // from ever firing.
            if Instant::now() >= deadline {
                return Some((Err(error), (rows, None)));
            }
            match tokio::time::timeout_at(deadline, rows.next()).await {
                Ok(Some(row)) => Some((row, (rows, Some(error)))),
                Ok(None) => None,
                Err(_) => Some((Err(error), (rows, None))),
            }
        },
    ));
    Response::Query(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_units_are_read_and_nonsense_is_refused() {
        let ms = |t: &str| parse_timeout(t).unwrap().map(|d| d.as_millis());
        assert_eq!(ms("100ms"), Some(100));
        assert_eq!(ms("100"), Some(100));
        assert_eq!(ms("1.5s"), Some(1500));
        assert_eq!(ms("2 min"), Some(120_000));
        assert_eq!(ms("1h"), Some(3_600_000));
        assert_eq!(ms("500us"), Some(1));
        assert_eq!(ms("0"), None);
        assert_eq!(ms("DEFAULT"), None);
        for bad in ["abc", "5 parsecs", "-1s", "", "1e400"] {
            let Err(PgWireError::UserError(info)) = parse_timeout(bad) else {
                panic!("{bad:?} accepted");
            };
            assert_eq!(info.code, "22023");
            assert!(
                info.message.contains("statement_timeout"),
                "{}",
                info.message
            );
        }
    }
}
