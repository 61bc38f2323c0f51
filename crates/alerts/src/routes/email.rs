use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;

use super::describe_event;

/// Sends one message for one alert's batch of events to every `to`.
pub async fn send_email(
    smtp: &str,
    from: &str,
    to: &[String],
    payload: &Value,
) -> Result<(), String> {
    let (host, port) = smtp
        .rsplit_once(':')
        .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
        .ok_or_else(|| format!("smtp `{smtp}` is not host:port"))?;
    let from: Mailbox = from
        .parse()
        .map_err(|e| format!("`from` address `{from}`: {e}"))?;
    let alert = payload["alert"].as_str().unwrap_or("?");
    let severity = payload["severity"].as_str().unwrap_or("?");
    let events = payload["events"].as_array().cloned().unwrap_or_default();
    let count = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
    let mut subject = format!("[fleetsql {severity}] {alert}:");
    for (kind, word) in [
        ("fired", "fired"),
        ("cleared", "cleared"),
        ("nodata", "no data"),
    ] {
        let n = count(kind);
        if n > 0 {
            subject.push_str(&format!(" {n} {word}"));
        }
    }
    let mut body = String::new();
    if let Some(d) = payload["description"].as_str().filter(|d| !d.is_empty()) {
        body.push_str(d);
        body.push_str("\n\n");
    }
    body.push_str(&format!("{} instance(s):\n", events.len()));
    for event in &events {
        body.push_str("  ");
        body.push_str(&describe_event(event));
        body.push('\n');
    }
    if let Some(p) = payload["procedure"].as_str().filter(|p| !p.is_empty()) {
        body.push_str("\nProcedure:\n");
        body.push_str(p);
        body.push('\n');
    }
    body.push_str(&format!(
        "\nnotification {} from {}\n",
        payload["id"], payload["node"]
    ));
    let mut builder = Message::builder()
        .from(from)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for address in to {
        let mailbox: Mailbox = address
            .parse()
            .map_err(|e| format!("`to` address `{address}`: {e}"))?;
        builder = builder.to(mailbox);
    }
    let message = builder.body(body).map_err(|e| e.to_string())?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .timeout(Some(std::time::Duration::from_secs(10)))
        .build();
    transport
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP to {smtp}: {e}"))
}
