//! A minimal XMPP client (RFC 6120) for what the pubsub sink and source
//! need (public for tests and tools): STARTTLS (always, with certificate
//! verification), SASL PLAIN, resource binding, IQ request/answer and the
//! XEP-0060 pubsub stanzas.
//!
//! Written here rather than taken from `tokio-xmpp`: that crate turns on
//! features of `once_cell` and `serde_json` that DataFusion shares, and so
//! would rebuild DataFusion for the whole workspace. XML is parsed by
//! `quick-xml`; this module only cuts the endless `<stream:stream>`
//! document into top-level stanzas and builds small element trees from
//! quick-xml's events.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use quick_xml::errors::{Error as XmlError, IllFormedError};
use quick_xml::escape::{escape, unescape};
use quick_xml::events::Event;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub use crate::tls::SYSTEM_CA_FILE;

/// XEP-0060 namespaces.
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// Owner operations (node deletion).
pub const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// Notifications to subscribers.
pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0335 JSON containers: the payload of every item the sink publishes.
pub const NS_JSON: &str = "urn:xmpp:json:0";

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// A stanza larger than this is refused rather than buffered.
const MAX_STANZA: usize = 4 << 20;

/// An XML element of a stanza: local name, attributes (namespace
/// declarations included, as `xmlns`), children and text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    /// Local name (prefix removed: `stream:features` is `features`).
    pub name: String,
    /// Attributes in document order, values unescaped.
    pub attrs: Vec<(String, String)>,
    /// Child elements.
    pub children: Vec<Element>,
    /// The text directly inside, unescaped.
    pub text: String,
}

impl Element {
    /// An attribute's value.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The declared default namespace.
    pub fn ns(&self) -> Option<&str> {
        self.attr("xmlns")
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The first child named `name` declaring namespace `ns`.
    pub fn child_ns(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.name == name && c.ns() == Some(ns))
    }
}

/// What the stream cut out of the bytes received.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    /// `<stream:stream ...>` (opened or restarted by the server).
    Open,
    /// A top-level element.
    Stanza(Element),
    /// `</stream:stream>`.
    Close,
}

/// Bytes received but not yet cut into frames.
#[derive(Debug, Default)]
struct Cutter {
    buf: Vec<u8>,
}

fn local(name: &str) -> String {
    match name.split_once(':') {
        Some((_, local)) => local.to_string(),
        None => name.to_string(),
    }
}

fn element_of(start: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
    let mut element = Element {
        name: local(start.name().as_ref()),
        ..Element::default()
    };
    for attr in start.attributes() {
        let attr = attr.map_err(|e| format!("bad attribute: {e}"))?;
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("bad attribute value: {e}"))?;
        element
            .attrs
            .push((local(attr.key.as_ref()), value.into_owned()));
    }
    Ok(element)
}

impl Cutter {
    /// The next whole frame, or `None` until more bytes arrive.
    fn next(&mut self) -> Result<Option<Frame>, String> {
        // The stream's end tag has no start in the bytes left after its
        // header, which quick-xml would refuse: recognised here.
        let start = self
            .buf
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.buf.len());
        if self.buf[start..].starts_with(b"</") {
            let Some(end) = self.buf[start..].iter().position(|b| *b == b'>') else {
                return self.incomplete();
            };
            let name = String::from_utf8_lossy(&self.buf[start + 2..start + end]);
            if local(name.trim()) != "stream" {
                return Err(format!("the server sent a stray </{}>", name.trim()));
            }
            self.buf.drain(..start + end + 1);
            return Ok(Some(Frame::Close));
        }
        let mut reader = quick_xml::Reader::from_reader(&self.buf[..]);
        // End tags are matched here: the stream's own end tag has no start
        // in the bytes left after its header.
        reader.config_mut().check_end_names = false;
        let mut stack: Vec<Element> = Vec::new();
        loop {
            let event = match reader.read_event() {
                Ok(Event::Eof) => return self.incomplete(),
                Ok(event) => event,
                Err(
                    XmlError::Syntax(_) | XmlError::IllFormed(IllFormedError::UnclosedReference),
                ) => {
                    return self.incomplete();
                }
                Err(e) => return Err(format!("the server sent malformed XML: {e}")),
            };
            let done = match event {
                Event::Start(start) => {
                    let element = element_of(&start)?;
                    if stack.is_empty() && element.name == "stream" {
                        Some(Frame::Open)
                    } else {
                        stack.push(element);
                        None
                    }
                }
                Event::Empty(start) => {
                    let element = element_of(&start)?;
                    match stack.last_mut() {
                        Some(parent) => {
                            parent.children.push(element);
                            None
                        }
                        None => Some(Frame::Stanza(element)),
                    }
                }
                Event::End(end) => {
                    let name = local(end.name().as_ref());
                    match stack.pop() {
                        None => return Err(format!("the server sent a stray </{name}>")),
                        Some(element) if element.name != name => {
                            return Err(format!(
                                "the server closed <{}> with </{name}>",
                                element.name
                            ));
                        }
                        Some(element) => match stack.last_mut() {
                            Some(parent) => {
                                parent.children.push(element);
                                None
                            }
                            None => Some(Frame::Stanza(element)),
                        },
                    }
                }
                Event::Text(text) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&text.xml10_content());
                    }
                    None
                }
                Event::CData(data) => {
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&data.xml10_content());
                    }
                    None
                }
                Event::GeneralRef(r) => {
                    let raw = format!("&{};", r.xml10_content());
                    let resolved = unescape(&raw)
                        .map_err(|e| format!("the server sent a bad reference {raw}: {e}"))?;
                    if let Some(top) = stack.last_mut() {
                        top.text.push_str(&resolved);
                    }
                    None
                }
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => None,
                Event::Eof => return self.incomplete(),
            };
            if let Some(frame) = done {
                let used = usize::try_from(reader.buffer_position()).unwrap_or(self.buf.len());
                self.buf.drain(..used.min(self.buf.len()));
                return Ok(Some(frame));
            }
            // Whitespace between stanzas (keep-alives) is dropped as it is passed.
            if stack.is_empty() {
                let used = usize::try_from(reader.buffer_position()).unwrap_or(0);
                if used > 0 && used <= self.buf.len() {
                    self.buf.drain(..used);
                    return self.next();
                }
            }
        }
    }

    fn incomplete(&self) -> Result<Option<Frame>, String> {
        if self.buf.len() > MAX_STANZA {
            return Err(format!(
                "the server sent a stanza over {MAX_STANZA} bytes, or malformed XML"
            ));
        }
        Ok(None)
    }
}

/// An XML stream over any byte stream.
#[derive(Debug)]
struct XmlStream<S> {
    io: S,
    cutter: Cutter,
}

impl<S: AsyncRead + AsyncWrite + Unpin> XmlStream<S> {
    async fn send(&mut self, text: &str) -> Result<(), String> {
        self.io
            .write_all(text.as_bytes())
            .await
            .map_err(|e| format!("connection lost: {e}"))?;
        self.io
            .flush()
            .await
            .map_err(|e| format!("connection lost: {e}"))
    }

    /// The next frame. Cancel-safe: bytes read stay in the cutter.
    async fn next(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(frame) = self.cutter.next()? {
                return Ok(frame);
            }
            let n = self
                .io
                .read_buf(&mut self.cutter.buf)
                .await
                .map_err(|e| format!("connection lost: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".to_string());
            }
        }
    }

    /// The next stanza; a stream error or close is an error.
    async fn stanza(&mut self) -> Result<Element, String> {
        loop {
            match self.next().await? {
                Frame::Open => {}
                Frame::Close => return Err("the server closed the stream".to_string()),
                Frame::Stanza(e) if e.name == "error" => {
                    return Err(format!("stream error from the server: {}", condition(&e)));
                }
                Frame::Stanza(e) => return Ok(e),
            }
        }
    }

    async fn open(&mut self, domain: &str) -> Result<Element, String> {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            escape(domain)
        ))
        .await?;
        let features = self.stanza().await?;
        if features.name != "features" {
            return Err(format!(
                "expected <stream:features>, got <{}>",
                features.name
            ));
        }
        Ok(features)
    }
}

/// The defined condition of an error element and its text, e.g.
/// `not-authorized` or `item-not-found (node does not exist)`.
pub fn condition(error: &Element) -> String {
    let name = error
        .children
        .iter()
        .find(|c| c.name != "text")
        .map_or("undefined-condition", |c| c.name.as_str());
    match error.child("text").map(|t| t.text.trim()) {
        Some(text) if !text.is_empty() => format!("{name} ({text})"),
        _ => name.to_string(),
    }
}

/// Who to log in as, and how to reach and trust the server.
#[derive(Debug, Clone)]
pub struct Account {
    /// Host to connect to.
    pub host: String,
    /// Client-to-server port.
    pub port: u16,
    /// Bare JID, `user@domain`.
    pub jid: String,
    /// Password (SASL PLAIN, only ever sent inside TLS).
    pub password: String,
    /// Resource to bind.
    pub resource: String,
    /// Name the server's certificate must carry (the JID's domain by default).
    pub tls_server_name: Option<String>,
    /// PEM file of the CAs to trust ([`SYSTEM_CA_FILE`] by default).
    pub ca_file: Option<PathBuf>,
    /// Limit for connecting and for every answer awaited.
    pub timeout: Duration,
}

impl Account {
    /// The domain part of the JID.
    pub fn domain(&self) -> &str {
        let bare = self.jid.split('/').next().unwrap_or(&self.jid);
        bare.split_once('@').map_or(bare, |(_, d)| d)
    }

    fn user(&self) -> &str {
        self.jid.split_once('@').map_or("", |(u, _)| u)
    }
}

/// What an XMPP exchange ended with, when not with success.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum XmppError {
    /// The connection is unusable (lost, timed out, refused, bad TLS or
    /// credentials); the caller reconnects after a back-off.
    #[error("{0}")]
    Connection(String),
    /// The server answered a request with an error stanza; the connection is fine.
    #[error("{condition}")]
    Refused {
        /// Defined condition (and text), e.g. `item-not-found`.
        condition: String,
    },
}

impl XmppError {
    /// True for a refusal with this defined condition.
    pub fn is(&self, name: &str) -> bool {
        matches!(self, XmppError::Refused { condition } if condition.split(' ').next() == Some(name))
    }
}

async fn within<T>(
    timeout: Duration,
    what: &str,
    f: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| format!("{what}: no answer within {timeout:?}"))?
}

/// A logged-in session.
#[derive(Debug)]
pub struct Client {
    stream: XmlStream<TlsStream<TcpStream>>,
    /// The full JID bound.
    jid: String,
    next_id: u64,
    /// Stanzas that arrived while an IQ answer was awaited.
    pending: VecDeque<Element>,
    /// Answers owed to the server's requests, written by [`Client::flush`].
    owed: Vec<String>,
    timeout: Duration,
}

impl Client {
    /// Connects, secures the stream with STARTTLS, logs in and binds a
    /// resource, then says it is available.
    pub async fn connect(account: &Account) -> Result<Client, XmppError> {
        let timeout = account.timeout;
        let addr = format!("{}:{}", account.host, account.port);
        let fail = |e: String| XmppError::Connection(format!("xmpp {addr}: {e}"));
        let tls = crate::tls::client_config(account.ca_file.as_deref()).map_err(fail)?;
        let domain = account.domain().to_string();
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| {
                fail(format!(
                    "no connection within {timeout:?}; is the server running?"
                ))
            })?
            .map_err(|e| fail(format!("cannot connect: {e}; is the server running?")))?;
        let mut plain = XmlStream {
            io: tcp,
            cutter: Cutter::default(),
        };
        let features = within(timeout, "stream header", plain.open(&domain))
            .await
            .map_err(fail)?;
        if features.child_ns("starttls", NS_TLS).is_none() {
            return Err(fail(
                "the server offers no STARTTLS; credentials are never sent unencrypted".to_string(),
            ));
        }
        plain
            .send(&format!("<starttls xmlns='{NS_TLS}'/>"))
            .await
            .map_err(fail)?;
        let answer = within(timeout, "STARTTLS", plain.stanza())
            .await
            .map_err(fail)?;
        if answer.name != "proceed" {
            return Err(fail(format!(
                "the server refused STARTTLS (<{}>)",
                answer.name
            )));
        }
        let name = account.tls_server_name.clone().unwrap_or(domain.clone());
        let tls_stream = crate::tls::handshake(plain.io, &name, tls, timeout)
            .await
            .map_err(fail)?;
        let mut stream = XmlStream {
            io: tls_stream,
            cutter: Cutter::default(),
        };
        let features = within(timeout, "stream header", stream.open(&domain))
            .await
            .map_err(fail)?;
        let offers_plain = features.child_ns("mechanisms", NS_SASL).is_some_and(|m| {
            m.children
                .iter()
                .any(|c| c.name == "mechanism" && c.text.trim() == "PLAIN")
        });
        if !offers_plain {
            return Err(fail(
                "the server offers no SASL PLAIN mechanism; enable it for TLS connections"
                    .to_string(),
            ));
        }
        let secret = base64::engine::general_purpose::STANDARD.encode(format!(
            "\0{}\0{}",
            account.user(),
            account.password
        ));
        stream
            .send(&format!(
                "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{secret}</auth>"
            ))
            .await
            .map_err(fail)?;
        let answer = within(timeout, "SASL", stream.stanza())
            .await
            .map_err(fail)?;
        match answer.name.as_str() {
            "success" => {}
            "failure" => {
                return Err(fail(format!(
                    "login as {} refused: {}; check jid and password",
                    account.jid,
                    condition(&answer)
                )));
            }
            other => return Err(fail(format!("unexpected <{other}> after SASL auth"))),
        }
        let features = within(timeout, "stream header", stream.open(&domain))
            .await
            .map_err(fail)?;
        if features.child_ns("bind", NS_BIND).is_none() {
            return Err(fail("the server offers no resource binding".to_string()));
        }
        let mut client = Client {
            stream,
            jid: String::new(),
            next_id: 1,
            pending: VecDeque::new(),
            owed: Vec::new(),
            timeout,
        };
        let bound = client
            .iq(
                "set",
                None,
                &format!(
                    "<bind xmlns='{NS_BIND}'><resource>{}</resource></bind>",
                    escape(&account.resource)
                ),
            )
            .await
            .map_err(|e| fail(format!("resource binding: {e}")))?;
        client.jid = bound
            .child("bind")
            .and_then(|b| b.child("jid"))
            .map(|j| j.text.trim().to_string())
            .filter(|j| !j.is_empty())
            .ok_or_else(|| fail("the server bound no JID".to_string()))?;
        client.send("<presence/>").await?;
        Ok(client)
    }

    /// The full JID bound.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Sends raw XML (one or more whole stanzas, or whitespace).
    pub async fn send(&mut self, xml: &str) -> Result<(), XmppError> {
        self.stream.send(xml).await.map_err(XmppError::Connection)
    }

    /// Sends a whitespace keep-alive.
    pub async fn ping(&mut self) -> Result<(), XmppError> {
        self.send(" ").await
    }

    /// Writes the answers owed to the server's requests. Call it outside
    /// any `select!` (a cancelled write would cut a stanza).
    pub async fn flush(&mut self) -> Result<(), XmppError> {
        while let Some(answer) = self.owed.pop() {
            self.send(&answer).await?;
        }
        Ok(())
    }

    /// Sends an IQ of `kind` (`get`/`set`) carrying `payload` to `to` (the
    /// account's server when `None`) and waits for its answer; stanzas that
    /// arrive meanwhile are kept for [`Client::next_stanza`].
    pub async fn iq(
        &mut self,
        kind: &str,
        to: Option<&str>,
        payload: &str,
    ) -> Result<Element, XmppError> {
        self.flush().await?;
        let id = format!("fleetsql-{}", self.next_id);
        self.next_id += 1;
        let to = to.map_or(String::new(), |t| format!(" to='{}'", escape(t)));
        self.send(&format!("<iq type='{kind}' id='{id}'{to}>{payload}</iq>"))
            .await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let stanza = tokio::time::timeout_at(deadline, self.stream.stanza())
                .await
                .map_err(|_| {
                    XmppError::Connection(format!(
                        "no answer to a request within {:?}",
                        self.timeout
                    ))
                })?
                .map_err(XmppError::Connection)?;
            if stanza.name == "iq" && stanza.attr("id") == Some(id.as_str()) {
                return match stanza.attr("type") {
                    Some("result") => Ok(stanza),
                    _ => Err(XmppError::Refused {
                        condition: stanza
                            .child("error")
                            .map_or("undefined-condition".to_string(), condition),
                    }),
                };
            }
            if let Some(stanza) = self.answer_requests(stanza) {
                self.pending.push_back(stanza);
            }
        }
    }

    /// Queues answers to the server's IQ requests (XEP-0199 pings; anything
    /// else is not implemented); other stanzas are handed back.
    fn answer_requests(&mut self, stanza: Element) -> Option<Element> {
        let request = stanza.name == "iq" && matches!(stanza.attr("type"), Some("get" | "set"));
        if !request {
            return Some(stanza);
        }
        let id = escape(stanza.attr("id").unwrap_or("")).into_owned();
        let to = stanza
            .attr("from")
            .map_or(String::new(), |f| format!(" to='{}'", escape(f)));
        let is_ping = stanza
            .children
            .first()
            .is_some_and(|c| c.name == "ping" && c.ns() == Some("urn:xmpp:ping"));
        self.owed.push(if is_ping {
            format!("<iq type='result' id='{id}'{to}/>")
        } else {
            format!(
                "<iq type='error' id='{id}'{to}><error type='cancel'>\
                 <feature-not-implemented xmlns='{NS_STANZAS}'/></error></iq>"
            )
        });
        None
    }

    /// The next stanza that is not an answer to one of our requests.
    /// Cancel-safe; requests from the server are answered at the next
    /// [`Client::flush`].
    pub async fn next_stanza(&mut self) -> Result<Element, XmppError> {
        if let Some(stanza) = self.pending.pop_front() {
            return Ok(stanza);
        }
        loop {
            let stanza = self.stream.stanza().await.map_err(XmppError::Connection)?;
            if let Some(stanza) = self.answer_requests(stanza) {
                return Ok(stanza);
            }
        }
    }

    /// Creates pubsub node `node` at `service`; one that exists already is fine.
    pub async fn create_node(&mut self, service: &str, node: &str) -> Result<(), XmppError> {
        let payload = format!(
            "<pubsub xmlns='{NS_PUBSUB}'><create node='{}'/></pubsub>",
            escape(node)
        );
        match self.iq("set", Some(service), &payload).await {
            Err(e) if e.is("conflict") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Deletes pubsub node `node` at `service`; one that is gone already is fine.
    pub async fn delete_node(&mut self, service: &str, node: &str) -> Result<(), XmppError> {
        let payload = format!(
            "<pubsub xmlns='{NS_PUBSUB_OWNER}'><delete node='{}'/></pubsub>",
            escape(node)
        );
        match self.iq("set", Some(service), &payload).await {
            Err(e) if e.is("item-not-found") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Publishes an item with id `item_id` whose payload is `json` in a
    /// XEP-0335 JSON container.
    pub async fn publish_json(
        &mut self,
        service: &str,
        node: &str,
        item_id: &str,
        json: &str,
    ) -> Result<(), XmppError> {
        let payload = format!(
            "<pubsub xmlns='{NS_PUBSUB}'><publish node='{}'><item id='{}'>\
             <json xmlns='{NS_JSON}'>{}</json></item></publish></pubsub>",
            escape(node),
            escape(item_id),
            escape(json)
        );
        self.iq("set", Some(service), &payload).await.map(|_| ())
    }

    /// Subscribes this session (its full JID) to `node` at `service`.
    pub async fn subscribe(&mut self, service: &str, node: &str) -> Result<(), XmppError> {
        let payload = format!(
            "<pubsub xmlns='{NS_PUBSUB}'><subscribe node='{}' jid='{}'/></pubsub>",
            escape(node),
            escape(&self.jid)
        );
        let answer = self.iq("set", Some(service), &payload).await?;
        let state = answer
            .child("pubsub")
            .and_then(|p| p.child("subscription"))
            .and_then(|s| s.attr("subscription"));
        match state {
            None | Some("subscribed") => Ok(()),
            Some(other) => Err(XmppError::Refused {
                condition: format!("subscription is `{other}`, not `subscribed`"),
            }),
        }
    }

    /// Ends this session's subscription to `node` at `service`.
    pub async fn unsubscribe(&mut self, service: &str, node: &str) -> Result<(), XmppError> {
        let payload = format!(
            "<pubsub xmlns='{NS_PUBSUB}'><unsubscribe node='{}' jid='{}'/></pubsub>",
            escape(node),
            escape(&self.jid)
        );
        self.iq("set", Some(service), &payload).await.map(|_| ())
    }

    /// The items `node` at `service` holds (id, JSON payload text).
    pub async fn items(&mut self, service: &str, node: &str) -> Result<Vec<PubsubItem>, XmppError> {
        let payload = format!(
            "<pubsub xmlns='{NS_PUBSUB}'><items node='{}'/></pubsub>",
            escape(node)
        );
        let answer = self.iq("get", Some(service), &payload).await?;
        Ok(answer
            .child("pubsub")
            .and_then(|p| p.child("items"))
            .map(|items| items.children.iter().map(PubsubItem::of).collect())
            .unwrap_or_default())
    }

    /// Says goodbye.
    pub async fn close(mut self) {
        let _ = self
            .send("<presence type='unavailable'/></stream:stream>")
            .await;
        let _ = self.stream.io.shutdown().await;
    }
}

/// A pubsub item as received.
#[derive(Debug, Clone, PartialEq)]
pub struct PubsubItem {
    /// Item id.
    pub id: Option<String>,
    /// The payload element (e.g. `json`), if any.
    pub payload: Option<Element>,
}

impl PubsubItem {
    fn of(item: &Element) -> PubsubItem {
        PubsubItem {
            id: item.attr("id").map(str::to_string),
            payload: item.children.first().cloned(),
        }
    }

    /// The text of a XEP-0335 JSON payload, or why there is none.
    pub fn json(&self) -> Result<&str, String> {
        match &self.payload {
            Some(p) if p.name == "json" && p.ns() == Some(NS_JSON) => Ok(&p.text),
            Some(p) => Err(format!(
                "item payload is <{}>, not a JSON container <json xmlns='{NS_JSON}'>",
                p.name
            )),
            None => Err("item has no payload".to_string()),
        }
    }
}

/// What a pubsub service told a subscriber.
#[derive(Debug, Clone, PartialEq)]
pub enum PubsubEvent {
    /// New items on `node`.
    Items {
        /// The service's JID.
        service: String,
        /// The node.
        node: String,
        /// The items.
        items: Vec<PubsubItem>,
    },
    /// `node` was deleted.
    Deleted {
        /// The service's JID.
        service: String,
        /// The node.
        node: String,
    },
}

/// The pubsub event a `<message>` carries, if it carries one.
pub fn pubsub_event(stanza: &Element) -> Option<PubsubEvent> {
    if stanza.name != "message" {
        return None;
    }
    let event = stanza.child_ns("event", NS_PUBSUB_EVENT)?;
    let service = stanza.attr("from").unwrap_or_default().to_string();
    if let Some(items) = event.child("items") {
        return Some(PubsubEvent::Items {
            service,
            node: items.attr("node").unwrap_or_default().to_string(),
            items: items
                .children
                .iter()
                .filter(|c| c.name == "item")
                .map(PubsubItem::of)
                .collect(),
        });
    }
    event.child("delete").map(|d| PubsubEvent::Deleted {
        service,
        node: d.attr("node").unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut_all(chunks: &[&str]) -> Vec<Frame> {
        let mut cutter = Cutter::default();
        let mut frames = Vec::new();
        for chunk in chunks {
            cutter.buf.extend_from_slice(chunk.as_bytes());
            while let Some(frame) = cutter.next().unwrap() {
                frames.push(frame);
            }
        }
        frames
    }

    #[test]
    fn cuts_a_stream_into_stanzas_whatever_the_chunks() {
        let stream = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' id='x'>\
             <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features> \
             <message from='pubsub.localhost'><event xmlns='http://jabber.org/protocol/pubsub#event'>\
             <items node='n/1'><item id='7'><json xmlns='urn:xmpp:json:0'>{&quot;a&quot;:&#49;,\"b\":\"&lt;\"}</json>\
             </item></items></event></message></stream:stream>";
        let whole = cut_all(&[stream]);
        // Every split point gives the same frames.
        for at in 1..stream.len() {
            if !stream.is_char_boundary(at) {
                continue;
            }
            assert_eq!(
                cut_all(&[&stream[..at], &stream[at..]]),
                whole,
                "split at {at}"
            );
        }
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[0], Frame::Open);
        assert_eq!(whole[3], Frame::Close);
        let Frame::Stanza(message) = &whole[2] else {
            panic!("{:?}", whole[2])
        };
        let Some(PubsubEvent::Items {
            service,
            node,
            items,
        }) = pubsub_event(message)
        else {
            panic!("no event in {message:?}")
        };
        assert_eq!(
            (service.as_str(), node.as_str()),
            ("pubsub.localhost", "n/1")
        );
        assert_eq!(items[0].id.as_deref(), Some("7"));
        assert_eq!(items[0].json().unwrap(), r#"{"a":1,"b":"<"}"#);
    }

    #[test]
    fn refuses_mismatched_tags() {
        let mut cutter = Cutter::default();
        cutter.buf.extend_from_slice(b"<a><b></a>");
        assert!(cutter.next().unwrap_err().contains("</a>"));
    }

    #[test]
    fn error_conditions_read_well() {
        let e = Element {
            name: "error".into(),
            children: vec![
                Element {
                    name: "item-not-found".into(),
                    ..Element::default()
                },
                Element {
                    name: "text".into(),
                    text: "no such node".into(),
                    ..Element::default()
                },
            ],
            ..Element::default()
        };
        assert_eq!(condition(&e), "item-not-found (no such node)");
        assert!(
            XmppError::Refused {
                condition: condition(&e)
            }
            .is("item-not-found")
        );
    }
}
