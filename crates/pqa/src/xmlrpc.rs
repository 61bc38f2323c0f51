//! XML-RPC query management at `POST /RPC2`, as the seed's query manager:
//!
//! - `pqa.register(epl [, publish [, webhook]])` → `{id, topic}`
//! - `pqa.delete(id)` → `true`
//! - `pqa.list()` → `[{id, epl, publish, topic, refs, error?}]` (`error`: why a
//!   query restored after a restart does not run)
//!
//! `registerQuery`, `deleteQuery` and `listQueries` are accepted as aliases.
//! Errors are XML-RPC faults: 1 bad statement or request, 2 unknown query.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use dxr::{Fault, FaultResponse, MethodCall, MethodResponse, Value};

use crate::error::PqaError;
use crate::service::{PqaService, Publish};

fn fault(code: i32, msg: String) -> Response {
    let body = FaultResponse {
        fault: Fault::new(code, msg),
    }
    .to_xml()
    .unwrap_or_else(|_| "<methodResponse><fault/></methodResponse>".into());
    xml(body)
}

fn xml(body: String) -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml")],
        format!("<?xml version=\"1.0\"?>\n{body}"),
    )
        .into_response()
}

fn err_fault(e: PqaError) -> Response {
    let code = if matches!(e, PqaError::UnknownQuery(_)) {
        2
    } else {
        1
    };
    fault(code, format!("{e} (hint: {})", e.hint()))
}

fn string_param(params: &[Value], i: usize, what: &str) -> Result<Option<String>, Box<Response>> {
    match params.get(i) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Box::new(fault(
            1,
            format!("parameter {} ({what}) must be a string", i + 1),
        ))),
    }
}

/// Refuses XML nested deeper than `max_depth` elements before it reaches
/// the XML-RPC decoder, which recurses once per `value`/`array`/`struct`:
/// a body of a million nested arrays would overflow the stack and abort
/// the process. The scan itself keeps only a counter.
pub(crate) fn check_depth(body: &str, max_depth: usize) -> Result<(), PqaError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(body);
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => {
                depth += 1;
                if depth > max_depth {
                    return Err(PqaError::Limit {
                        what: format!(
                            "XML-RPC element nesting at byte {}",
                            reader.buffer_position()
                        ),
                        max: max_depth,
                        setting: "limits.max_xmlrpc_depth",
                    });
                }
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Eof) => return Ok(()),
            Ok(_) => {}
            // Malformed XML: the decoder says what is wrong with it.
            Err(_) => return Ok(()),
        }
    }
}

pub(crate) async fn handle(State(svc): State<PqaService>, body: String) -> Response {
    if let Err(e) = check_depth(&body, svc.limits().max_xmlrpc_depth) {
        return err_fault(e);
    }
    let call = match MethodCall::from_xml(&body) {
        Ok(c) => c,
        Err(e) => return fault(1, format!("not an XML-RPC method call: {e}")),
    };
    let value = match call.name.as_ref() {
        "pqa.register" | "registerQuery" => {
            let epl = match string_param(&call.params, 0, "epl") {
                Ok(Some(s)) => s,
                Ok(None) => return fault(1, "pqa.register needs the EPL statement".into()),
                Err(r) => return *r,
            };
            let publish = match string_param(&call.params, 1, "publish") {
                Ok(p) => p,
                Err(r) => return *r,
            };
            let webhook = match string_param(&call.params, 2, "webhook") {
                Ok(w) => w.filter(|w| !w.is_empty()),
                Err(r) => return *r,
            };
            let publish: Publish = match publish.as_deref().unwrap_or("all").parse() {
                Ok(p) => p,
                Err(e) => return err_fault(e),
            };
            if let Some(url) = &webhook
                && let Err(e) = svc.webhook_policy().check_resolved(url).await
            {
                return err_fault(e);
            }
            match svc.register(&epl, publish, webhook.as_deref()) {
                Ok(r) => {
                    let mut m = BTreeMap::new();
                    m.insert("id".to_string(), Value::String(r.id));
                    m.insert("topic".to_string(), Value::String(r.topic));
                    Value::Struct(m)
                }
                Err(e) => return err_fault(e),
            }
        }
        "pqa.delete" | "deleteQuery" => {
            let id = match string_param(&call.params, 0, "id") {
                Ok(Some(s)) => s,
                Ok(None) => return fault(1, "pqa.delete needs the query id".into()),
                Err(r) => return *r,
            };
            match svc.delete(&id) {
                Ok(_) => Value::Boolean(true),
                Err(e) => return err_fault(e),
            }
        }
        "pqa.list" | "listQueries" => Value::Array(
            svc.list()
                .into_iter()
                .map(|q| {
                    let mut m = BTreeMap::new();
                    m.insert("id".to_string(), Value::String(q.id));
                    m.insert("epl".to_string(), Value::String(q.epl));
                    m.insert(
                        "publish".to_string(),
                        Value::String(format!("{:?}", q.publish).to_lowercase()),
                    );
                    m.insert("topic".to_string(), Value::String(q.topic));
                    m.insert("refs".to_string(), Value::Integer(q.refs as i32));
                    if let Some(error) = q.error {
                        m.insert("error".to_string(), Value::String(error));
                    }
                    Value::Struct(m)
                })
                .collect(),
        ),
        other => {
            return fault(
                1,
                format!("unknown method {other} (pqa.register, pqa.delete, pqa.list)"),
            );
        }
    };
    match (MethodResponse { value }).to_xml() {
        Ok(s) => xml(s),
        Err(e) => fault(1, format!("could not encode the response: {e}")),
    }
}
