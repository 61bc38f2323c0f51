//! XMPP publish-subscribe (XEP-0060): persistent-query results to pubsub
//! nodes, and pubsub items to events.
//!
//! The sink keeps one connection per configured account. Every
//! registration that asks for the sink (`"sinks": [name]`, or every one with
//! `all_queries`) gets node `{node_prefix}/{query id}` on the pubsub
//! service; its handle (service and node) is in the registration answer,
//! every notification is published as an item (id = the notification's
//! sequence number) whose payload is the notification's JSON in a XEP-0335
//! `<json xmlns='urn:xmpp:json:0'>` container, and deleting the query
//! deletes the node. Publishing never waits for the server: while it is
//! unreachable, notifications beyond the sink's queue are dropped and
//! counted as bad items; nodes are created again after every reconnect.
//!
//! The source subscribes its session to configured (service, node) pairs;
//! each item's JSON payload (an object or an array of objects) becomes
//! events of the configured stream. Anything else is skipped and counted.
//! The client is in `xmpp_wire`.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use fleetsql_pqa::{Notification, PqaError, Sink, SinkFactory};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{XmppServer, XmppSinkConfig, XmppSourceConfig};
use crate::error::{IntegrationError, Result};
use crate::health::HealthHandle;
use crate::mqtt::payload_events;
use crate::xmpp_wire::{Account, Client, NS_JSON, PubsubEvent, XmppError, pubsub_event};
use crate::{EventSource, SourceContext, sleep_or_cancel};

/// Notifications queued while the server is slow or away.
const QUEUE: usize = 256;

/// The client's view of a configured account.
pub fn account(name: &str, server: &XmppServer) -> Account {
    Account {
        host: server.host.clone(),
        port: server.port,
        jid: server.jid.clone(),
        password: server.password.clone(),
        resource: server
            .resource
            .clone()
            .unwrap_or_else(|| format!("fleetsql-{name}")),
        tls_server_name: server.tls_server_name.clone(),
        ca_file: server.ca_file.clone(),
        timeout: server.timeout,
    }
}

#[derive(Debug)]
enum Command {
    Create(String),
    Publish {
        node: String,
        item_id: String,
        json: String,
    },
    Delete(String),
}

#[derive(Debug)]
struct Shared {
    name: String,
    service: String,
    prefix: String,
    all_queries: bool,
    /// Node creation and deletion: never dropped, served before items.
    control: mpsc::UnboundedSender<Command>,
    items: mpsc::Sender<Command>,
    health: HealthHandle,
}

/// Makes an [`XmppSink`] (and its pubsub node) for every registration that
/// asks for it; all share one connection.
#[derive(Debug, Clone)]
pub struct XmppSinkFactory {
    shared: Arc<Shared>,
}

impl XmppSinkFactory {
    /// Connects (in the background) and returns the factory plus the task
    /// driving the connection; it stops when `cancel` fires.
    pub fn start(
        config: &XmppSinkConfig,
        health: HealthHandle,
        cancel: CancellationToken,
    ) -> (XmppSinkFactory, JoinHandle<()>) {
        let (control, control_rx) = mpsc::unbounded_channel();
        let (items, items_rx) = mpsc::channel(QUEUE);
        let service = config
            .pubsub_service
            .clone()
            .unwrap_or_else(|| config.server.default_pubsub());
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            service,
            prefix: config.node_prefix.trim_end_matches('/').to_string(),
            all_queries: config.all_queries,
            control,
            items,
            health: health.clone(),
        });
        let driver = Driver {
            config: config.clone(),
            service: shared.service.clone(),
            health,
            live: BTreeSet::new(),
            created: BTreeSet::new(),
            backlog: VecDeque::new(),
        };
        let task = tokio::spawn(driver.run(control_rx, items_rx, cancel));
        (XmppSinkFactory { shared }, task)
    }
}

impl SinkFactory for XmppSinkFactory {
    fn sinks_for(&self, id: &str, _epl: &str) -> Vec<Arc<dyn Sink>> {
        let node = format!("{}/{id}", self.shared.prefix);
        // The node is created before any item: control is served first.
        let _ = self.shared.control.send(Command::Create(node.clone()));
        vec![Arc::new(XmppSink {
            shared: self.shared.clone(),
            node,
        })]
    }

    fn requested_as(&self) -> Option<&str> {
        (!self.shared.all_queries).then_some(self.shared.name.as_str())
    }
}

/// One registration's results to one pubsub node.
#[derive(Debug)]
pub struct XmppSink {
    shared: Arc<Shared>,
    node: String,
}

#[async_trait]
impl Sink for XmppSink {
    fn name(&self) -> String {
        format!("xmpp:{}:{}", self.shared.name, self.node)
    }

    async fn deliver(&self, n: &Notification, json: &str) -> fleetsql_pqa::Result<()> {
        let s = &self.shared;
        let command = Command::Publish {
            node: self.node.clone(),
            item_id: n.seq.to_string(),
            json: json.to_string(),
        };
        s.items.try_send(command).map_err(|e| {
            let message = format!(
                "notification for node {} dropped: {e}; the XMPP server is unreachable or slow",
                self.node
            );
            s.health.bad_items(1, &message);
            PqaError::BadRequest(message)
        })
    }

    fn handle(&self) -> Option<serde_json::Value> {
        let s = &self.shared;
        Some(serde_json::json!({
            "kind": "xmpp_pubsub",
            "sink": s.name,
            "service": s.service,
            "node": self.node,
            "uri": format!("xmpp:{}?;node={}", s.service, self.node),
            "payload": NS_JSON,
        }))
    }

    fn query_deleted(&self) {
        let _ = self.shared.control.send(Command::Delete(self.node.clone()));
    }
}

/// The sink's connection and the nodes it keeps.
#[derive(Debug)]
struct Driver {
    config: XmppSinkConfig,
    service: String,
    health: HealthHandle,
    /// Nodes of live registrations.
    live: BTreeSet<String>,
    /// Nodes created (or found) on the current connection.
    created: BTreeSet<String>,
    /// Commands cut short by a lost connection, served first after reconnecting.
    backlog: VecDeque<Command>,
}

impl Driver {
    async fn run(
        mut self,
        mut control: mpsc::UnboundedReceiver<Command>,
        mut items: mpsc::Receiver<Command>,
        cancel: CancellationToken,
    ) {
        let account = account(&self.config.name, &self.config.server);
        loop {
            let connected = tokio::select! {
                _ = cancel.cancelled() => return,
                c = Client::connect(&account) => c,
            };
            let outcome = match connected {
                Ok(mut client) => {
                    self.health.success(0);
                    self.created.clear();
                    let r = self
                        .serve(&mut client, &mut control, &mut items, &cancel)
                        .await;
                    if r.is_ok() {
                        client.close().await;
                        return;
                    }
                    r
                }
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                self.health.failure(&e.to_string());
                let delay = self.config.retry.delay(self.health.consecutive_failures());
                if !sleep_or_cancel(delay, &cancel).await {
                    return;
                }
            }
        }
    }

    /// Serves commands until cancelled (`Ok`) or the connection fails.
    async fn serve(
        &mut self,
        client: &mut Client,
        control: &mut mpsc::UnboundedReceiver<Command>,
        items: &mut mpsc::Receiver<Command>,
        cancel: &CancellationToken,
    ) -> std::result::Result<(), XmppError> {
        let live: Vec<String> = self.live.iter().cloned().collect();
        for node in live {
            self.ensure_created(client, &node).await?;
        }
        while let Some(command) = self.backlog.pop_front() {
            self.execute(client, command).await?;
        }
        let mut ping = tokio::time::interval(self.config.server.keep_alive);
        ping.tick().await;
        loop {
            client.flush().await?;
            let command = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                c = control.recv() => c,
                c = items.recv() => c,
                // Messages to the sink's account (e.g. its own notifications) are not its business.
                stanza = client.next_stanza() => { stanza?; continue; }
                _ = ping.tick() => { client.ping().await?; continue; }
            };
            let Some(command) = command else {
                return Ok(());
            };
            self.execute(client, command).await?;
        }
    }

    async fn ensure_created(
        &mut self,
        client: &mut Client,
        node: &str,
    ) -> std::result::Result<(), XmppError> {
        if self.created.contains(node) {
            return Ok(());
        }
        match client.create_node(&self.service, node).await {
            Ok(()) => {}
            Err(XmppError::Refused { condition }) => {
                // Not retried on this connection; items to it fail and are counted.
                self.health.failure(&format!(
                    "cannot create pubsub node {node} on {}: {condition}; check that {} may create nodes there",
                    self.service, self.config.server.jid
                ));
            }
            Err(e) => return Err(e),
        }
        self.created.insert(node.to_string());
        Ok(())
    }

    /// One command; a lost connection keeps it for after the reconnect.
    async fn execute(
        &mut self,
        client: &mut Client,
        command: Command,
    ) -> std::result::Result<(), XmppError> {
        let outcome = match &command {
            Command::Create(node) => {
                self.live.insert(node.clone());
                self.ensure_created(client, node).await
            }
            Command::Publish {
                node,
                item_id,
                json,
            } => {
                if !self.live.contains(node) {
                    return Ok(()); // the query was deleted meanwhile
                }
                match self.ensure_created(client, node).await {
                    Ok(()) => client
                        .publish_json(&self.service, node, item_id, json)
                        .await
                        .map(|()| self.health.items(1)),
                    Err(e) => Err(e),
                }
            }
            Command::Delete(node) => {
                self.live.remove(node);
                self.created.remove(node);
                client.delete_node(&self.service, node).await
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(XmppError::Refused { condition }) => {
                let what = match &command {
                    Command::Create(n) => format!("creating node {n}"),
                    Command::Publish { node, .. } => format!("publishing to node {node}"),
                    Command::Delete(n) => format!("deleting node {n}"),
                };
                self.health.bad_items(
                    1,
                    &format!("{what} on {} refused: {condition}", self.service),
                );
                Ok(())
            }
            Err(e) => {
                self.backlog.push_back(command);
                Err(e)
            }
        }
    }
}

/// Items of XMPP pubsub nodes as events of one stream.
#[derive(Debug)]
pub struct XmppSource {
    config: XmppSourceConfig,
    /// (service, node) pairs, services resolved.
    nodes: Vec<(String, String)>,
}

impl XmppSource {
    /// A source for `config` (connects when run).
    pub fn new(config: &XmppSourceConfig) -> Self {
        let nodes = config
            .nodes
            .iter()
            .map(|n| {
                let service = n
                    .service
                    .clone()
                    .unwrap_or_else(|| config.server.default_pubsub());
                (service, n.node.clone())
            })
            .collect();
        XmppSource {
            config: config.clone(),
            nodes,
        }
    }
}

#[async_trait]
impl EventSource for XmppSource {
    fn name(&self) -> &str {
        &self.config.name
    }
    fn kind(&self) -> &'static str {
        "xmpp_source"
    }
    async fn run(&self, ctx: &SourceContext) -> Result<()> {
        let c = &self.config;
        let remote = |e: XmppError| IntegrationError::Remote(e.to_string());
        let account = account(&c.name, &c.server);
        let mut client = tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            client = Client::connect(&account) => client.map_err(remote)?,
        };
        for (service, node) in &self.nodes {
            client.subscribe(service, node).await.map_err(|e| match e {
                XmppError::Refused { condition } => IntegrationError::Remote(format!(
                    "xmpp: subscribing to node {node} on {service} refused: {condition}; \
                     check that the node exists and {} may subscribe",
                    c.server.jid
                )),
                other => remote(other),
            })?;
        }
        ctx.health.success(0);
        let mut ping = tokio::time::interval(c.server.keep_alive);
        ping.tick().await;
        loop {
            client.flush().await.map_err(remote)?;
            let stanza = tokio::select! {
                _ = ctx.cancel.cancelled() => {
                    // Best effort: a later session binds the same resource and subscribes again.
                    for (service, node) in &self.nodes {
                        let _ = client.unsubscribe(service, node).await;
                    }
                    client.close().await;
                    return Ok(());
                }
                stanza = client.next_stanza() => stanza.map_err(remote)?,
                _ = ping.tick() => {
                    client.ping().await.map_err(remote)?;
                    continue;
                }
            };
            let subscribed = |service: &str, node: &str| {
                self.nodes.iter().any(|(s, n)| s == service && n == node)
            };
            match pubsub_event(&stanza) {
                Some(PubsubEvent::Items {
                    service,
                    node,
                    items,
                }) if subscribed(&service, &node) => {
                    for item in items {
                        let events = item.json().and_then(|json| payload_events(json.as_bytes()));
                        match events {
                            Ok(events) => {
                                ctx.emit(&c.stream, &events);
                            }
                            Err(e) => ctx.health.bad_items(
                                1,
                                &format!(
                                    "node {node} item {}: {e}",
                                    item.id.as_deref().unwrap_or("?")
                                ),
                            ),
                        }
                    }
                }
                Some(PubsubEvent::Deleted { service, node }) if subscribed(&service, &node) => {
                    return Err(IntegrationError::Remote(format!(
                        "xmpp: node {node} on {service} was deleted; subscribing again after a back-off"
                    )));
                }
                _ => {}
            }
        }
    }
}
