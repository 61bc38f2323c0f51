//! Where notifications go. Each route delivers one outbox entry: a batch
//! of one alert's events from one iteration. The console is not a route
//! here: it reads the live state (see `console`).

mod alertmanager;
mod email;
mod snmp;
mod webhook;
mod xmpp;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

pub use alertmanager::{alertmanager_alerts, post_alertmanager};
pub use email::send_email;
pub use snmp::{encode_trap, send_traps};
pub use webhook::post_webhook;
pub use xmpp::publish_xmpp;

fn default_community() -> String {
    "public".to_string()
}

fn default_enterprise() -> String {
    // The net-snmp "experimental" arc: no registered enterprise number needed.
    "1.3.6.1.4.1.8072.9999.42".to_string()
}

fn default_retries() -> u32 {
    3
}

fn default_backoff() -> String {
    "500ms".to_string()
}

/// Alertmanager's own default `resolve_timeout` is 5 minutes; every
/// active instance is sent again well inside it.
fn default_resend() -> String {
    "1m".to_string()
}

fn default_xmpp_port() -> u16 {
    5222
}

fn default_from() -> String {
    "fleetsql-alerts@localhost".to_string()
}

/// One configured route in `routes.toml`, e.g.
/// `[route.noc]` `kind = "webhook"` `url = "http://..."`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RouteConfig {
    /// One e-mail per alert and iteration, listing its instances.
    Email {
        /// `host:port` of the SMTP server (plain SMTP; use a local relay).
        smtp: String,
        #[serde(default = "default_from")]
        from: String,
        to: Vec<String>,
    },
    /// A JSON POST per alert and iteration, retried with backoff.
    Webhook {
        url: String,
        #[serde(default = "default_retries")]
        retries: u32,
        /// First retry delay; doubles each retry.
        #[serde(default = "default_backoff")]
        backoff: String,
    },
    /// Prometheus Alertmanager (API v2): an alert per instance, labelled
    /// by the alert's name, severity and `_key` columns; active instances
    /// are sent again every `resend`.
    Alertmanager {
        /// Alertmanager's base URL, e.g. `http://127.0.0.1:9093`.
        url: String,
        /// How often active instances are sent again (less than
        /// Alertmanager's `resolve_timeout`).
        #[serde(default = "default_resend")]
        resend: String,
        /// Labels added to every alert, e.g. `{ team = "ops" }`.
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default = "default_retries")]
        retries: u32,
        #[serde(default = "default_backoff")]
        backoff: String,
    },
    /// An SNMPv2c trap per event.
    Snmp {
        /// `host:port` of the trap receiver (usually port 162).
        target: String,
        #[serde(default = "default_community")]
        community: String,
        /// Traps are `<enterprise>.1` fired, `.2` cleared, `.3` no data.
        #[serde(default = "default_enterprise")]
        enterprise_oid: String,
    },
    /// An XEP-0060 pubsub item per alert and iteration (the batch as JSON
    /// in a XEP-0335 container), on a node created at first use. The
    /// connection uses STARTTLS and verifies the server's certificate.
    Xmpp {
        /// Server host.
        host: String,
        #[serde(default = "default_xmpp_port")]
        port: u16,
        /// Bare JID to log in as; it must be allowed to create nodes.
        jid: String,
        password: String,
        /// PEM file of the CAs to trust (the system's by default).
        #[serde(default)]
        ca_file: Option<std::path::PathBuf>,
        /// Pubsub service JID (`pubsub.<domain>` by default).
        #[serde(default)]
        service: Option<String>,
        /// The node subscribers follow.
        node: String,
    },
}

impl RouteConfig {
    /// Delivers one batch `payload` (see `Notification`), trying again
    /// inside the call where the route does (webhook).
    pub async fn deliver(&self, payload: &Value, http: &reqwest::Client) -> Result<(), String> {
        match self {
            RouteConfig::Email { smtp, from, to } => send_email(smtp, from, to, payload).await,
            RouteConfig::Webhook {
                url,
                retries,
                backoff,
            } => {
                let backoff = crate::definition::parse_duration(backoff)
                    .unwrap_or(Duration::from_millis(500));
                post_webhook(http, url, payload, *retries, backoff).await
            }
            RouteConfig::Snmp {
                target,
                community,
                enterprise_oid,
            } => send_traps(target, community, enterprise_oid, payload).await,
            RouteConfig::Xmpp { .. } => publish_xmpp(self, payload).await,
            RouteConfig::Alertmanager {
                url,
                labels,
                retries,
                backoff,
                ..
            } => {
                let backoff = crate::definition::parse_duration(backoff)
                    .unwrap_or(Duration::from_millis(500));
                let resend = self.resend_every().unwrap_or(Duration::from_secs(60));
                post_alertmanager(http, url, payload, labels, resend, *retries, backoff).await
            }
        }
    }

    /// How often the service sends a route the active instances again:
    /// only Alertmanager, which forgets an alert not sent again in time.
    pub fn resend_every(&self) -> Option<Duration> {
        match self {
            RouteConfig::Alertmanager { resend, .. } => Some(
                crate::definition::parse_duration(resend)
                    .unwrap_or(Duration::from_secs(60))
                    .max(Duration::from_millis(100)),
            ),
            _ => None,
        }
    }
}

/// Text of one event for e-mail bodies and traps: `key -> details`.
pub(crate) fn describe_event(event: &Value) -> String {
    let key = event.get("key").cloned().unwrap_or(Value::Null);
    let details = event.get("details").cloned().unwrap_or(Value::Null);
    let kind = event.get("kind").and_then(Value::as_str).unwrap_or("?");
    let mut text = format!("{kind:<8} {key}");
    if details.as_object().is_some_and(|d| !d.is_empty()) {
        text.push_str(&format!("  {details}"));
    }
    if let Some(reason) = event.get("reason").and_then(Value::as_str) {
        text.push_str(&format!("  ({reason})"));
    }
    text
}
