//! The XMPP pubsub route: one connection per delivery (alerts are rare),
//! node created if missing, the batch published as one item.

use std::time::Duration;

use fleetsql_integrations::xmpp_wire::{Account, Client, XmppError};
use serde_json::Value;

use super::RouteConfig;

/// Limit for connecting and for each answer awaited.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes `payload` as an item of the route's node. `route` must be
/// [`RouteConfig::Xmpp`].
pub async fn publish_xmpp(route: &RouteConfig, payload: &Value) -> Result<(), String> {
    let RouteConfig::Xmpp {
        host,
        port,
        jid,
        password,
        ca_file,
        service,
        node,
    } = route
    else {
        return Err("not an xmpp route".to_string());
    };
    let account = Account {
        host: host.clone(),
        port: *port,
        jid: jid.clone(),
        password: password.clone(),
        resource: format!("fleetsql-alerts-{}", std::process::id()),
        tls_server_name: None,
        ca_file: ca_file.clone(),
        timeout: TIMEOUT,
    };
    let service = service
        .clone()
        .unwrap_or_else(|| format!("pubsub.{}", account.domain()));
    let refused = |what: &str, e: XmppError| format!("xmpp {what} node {node} on {service}: {e}");
    let mut client = Client::connect(&account).await.map_err(|e| e.to_string())?;
    let result = async {
        client
            .create_node(&service, node)
            .await
            .map_err(|e| refused("creating", e))?;
        let item_id = format!(
            "{}-{}",
            payload
                .get("alert")
                .and_then(Value::as_str)
                .unwrap_or("alert"),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        );
        client
            .publish_json(&service, node, &item_id, &payload.to_string())
            .await
            .map_err(|e| refused("publishing to", e))
    }
    .await;
    client.close().await;
    result
}
