//! A minimal MQTT 3.1.1 client (public for tests and tools): what the sink and the source need (connect
//! with credentials, publish and subscribe at QoS 0-2, keep-alive), over
//! plain TCP or TLS (`tls = true`, see `crate::tls`).
//!
//! Written here rather than taken from `rumqttc`: that crate enables the
//! `std` feature of `fixedbitset`, which DataFusion's `petgraph` shares, and
//! so would rebuild DataFusion for the whole workspace.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::config::MqttBroker;

/// An incoming packet the caller cares about.
#[derive(Debug)]
pub enum Incoming {
    /// A message on a subscribed topic (acknowledged already).
    Publish { topic: String, payload: Vec<u8> },
    /// Subscription answer: true when every filter was granted.
    SubAck { granted: bool },
    /// Our QoS 1 publish `id` was acknowledged (PUBACK), or our QoS 2
    /// publish completed (PUBCOMP).
    Acked { id: u16 },
    /// Anything else (acks, ping responses).
    Other,
}

/// A byte stream: TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// A connected session.
pub struct Connection {
    reader: ReadHalf<Box<dyn Io>>,
    writer: WriteHalf<Box<dyn Io>>,
    /// Bytes read but not yet parsed: reading is cancel-safe, so a reader
    /// inside `select!` loses nothing.
    buf: Vec<u8>,
    /// Acknowledgements owed, written by [`Connection::flush`] outside any `select!`.
    owed: Vec<u8>,
    next_id: u16,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("buffered", &self.buf.len())
            .field("next_id", &self.next_id)
            .finish()
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&s[..s.len().min(u16::MAX as usize)]);
}

fn packet(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn refused(code: u8) -> String {
    let why = match code {
        1 => "unacceptable protocol version",
        2 => "client identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "refused",
    };
    format!("connection refused: {why} (code {code}); check username and password")
}

impl Connection {
    /// Connects and waits for CONNACK (within `timeout`).
    pub async fn connect(
        broker: &MqttBroker,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Connection, String> {
        let addr = format!("{}:{}", broker.host, broker.port);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| {
                format!("no connection to {addr} within {timeout:?}; is the broker running?")
            })?
            .map_err(|e| format!("cannot connect to {addr}: {e}; is the broker running?"))?;
        let io: Box<dyn Io> = if broker.tls {
            let config = crate::tls::client_config(broker.ca_file.as_deref())?;
            let name = broker.tls_server_name.as_deref().unwrap_or(&broker.host);
            Box::new(crate::tls::handshake(stream, name, config, timeout).await?)
        } else {
            Box::new(stream)
        };
        let (read, write) = tokio::io::split(io);
        let mut c = Connection {
            reader: read,
            writer: write,
            buf: Vec::new(),
            owed: Vec::new(),
            next_id: 1,
        };
        let mut body = Vec::new();
        put_str(&mut body, b"MQTT");
        body.push(4);
        let mut flags = 0x02u8; // clean session
        if broker.username.is_some() {
            flags |= 0x80 | 0x40;
        }
        body.push(flags);
        body.extend_from_slice(
            &(broker.keep_alive.as_secs().min(u16::MAX as u64) as u16).to_be_bytes(),
        );
        put_str(&mut body, client_id.as_bytes());
        if let Some(user) = &broker.username {
            put_str(&mut body, user.as_bytes());
            put_str(
                &mut body,
                broker.password.as_deref().unwrap_or("").as_bytes(),
            );
        }
        c.send(&packet(0x10, &body)).await?;
        let (header, body) = tokio::time::timeout(timeout, c.read_packet())
            .await
            .map_err(|_| format!("{addr} sent no CONNACK within {timeout:?}"))??;
        if header >> 4 != 2 || body.len() < 2 {
            return Err(format!("{addr} did not answer CONNECT with CONNACK"));
        }
        if body[1] != 0 {
            return Err(refused(body[1]));
        }
        Ok(c)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.writer
            .write_all(bytes)
            .await
            .map_err(|e| format!("connection lost: {e}"))
    }

    fn id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Sends a PUBLISH; returns its packet id at QoS 1 and 2, which
    /// [`Connection::read`] reports as [`Incoming::Acked`] once delivered.
    pub async fn publish(
        &mut self,
        topic: &str,
        qos: u8,
        payload: &[u8],
    ) -> Result<Option<u16>, String> {
        let mut body = Vec::new();
        put_str(&mut body, topic.as_bytes());
        let id = (qos > 0).then(|| self.id());
        if let Some(id) = id {
            body.extend_from_slice(&id.to_be_bytes());
        }
        body.extend_from_slice(payload);
        self.send(&packet(0x30 | (qos.min(2) << 1), &body)).await?;
        Ok(id)
    }

    /// Sends a SUBSCRIBE for `filters`.
    pub async fn subscribe(&mut self, filters: &[String], qos: u8) -> Result<(), String> {
        let mut body = Vec::new();
        let id = self.id();
        body.extend_from_slice(&id.to_be_bytes());
        for f in filters {
            put_str(&mut body, f.as_bytes());
            body.push(qos.min(2));
        }
        self.send(&packet(0x82, &body)).await
    }

    /// Sends a keep-alive ping.
    pub async fn ping(&mut self) -> Result<(), String> {
        self.send(&[0xc0, 0x00]).await
    }

    /// Says goodbye.
    pub async fn disconnect(mut self) {
        let _ = self.send(&[0xe0, 0x00]).await;
    }

    /// Writes the acknowledgements [`Connection::read`] queued.
    pub async fn flush(&mut self) -> Result<(), String> {
        if self.owed.is_empty() {
            return Ok(());
        }
        let owed = std::mem::take(&mut self.owed);
        self.send(&owed).await
    }

    fn parse(&mut self) -> Option<(u8, Vec<u8>)> {
        let header = *self.buf.first()?;
        let mut len = 0usize;
        let mut at = 1;
        loop {
            let byte = *self.buf.get(at)?;
            len |= usize::from(byte & 0x7f) << (7 * (at - 1));
            at += 1;
            if byte & 0x80 == 0 || at > 4 {
                break;
            }
        }
        if self.buf.len() < at + len {
            return None;
        }
        let body = self.buf[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Some((header, body))
    }

    /// The next whole packet. Cancel-safe.
    async fn read_packet(&mut self) -> Result<(u8, Vec<u8>), String> {
        loop {
            if let Some(p) = self.parse() {
                return Ok(p);
            }
            let n = self
                .reader
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("connection lost: {e}"))?;
            if n == 0 {
                return Err("the broker closed the connection".to_string());
            }
        }
    }

    /// The next packet; the answers the protocol requires (PUBACK,
    /// PUBREC/PUBCOMP, PUBREL) are queued for [`Connection::flush`].
    /// Cancel-safe.
    pub async fn read(&mut self) -> Result<Incoming, String> {
        let (header, body) = self.read_packet().await?;
        let id = |at: usize| body.get(at..at + 2).map(|b| [b[0], b[1]]);
        match header >> 4 {
            3 => {
                let qos = (header >> 1) & 0x03;
                let tlen = body
                    .get(..2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                    .ok_or("short PUBLISH")?;
                let topic = body.get(2..2 + tlen).ok_or("short PUBLISH")?;
                let topic = String::from_utf8_lossy(topic).into_owned();
                let mut at = 2 + tlen;
                if qos > 0 {
                    let pid = id(at).ok_or("PUBLISH without packet id")?;
                    at += 2;
                    let ack = if qos == 1 { 0x40 } else { 0x50 };
                    self.owed.extend_from_slice(&[ack, 0x02, pid[0], pid[1]]);
                }
                Ok(Incoming::Publish {
                    topic,
                    payload: body.get(at..).unwrap_or_default().to_vec(),
                })
            }
            4 | 7 => Ok(id(0).map_or(Incoming::Other, |b| Incoming::Acked {
                id: u16::from_be_bytes(b),
            })),
            // PUBREC for our QoS 2 publish: release it.
            5 => {
                let pid = id(0).ok_or("short PUBREC")?;
                self.owed.extend_from_slice(&[0x62, 0x02, pid[0], pid[1]]);
                Ok(Incoming::Other)
            }
            // PUBREL for a QoS 2 message we received: complete it.
            6 => {
                let pid = id(0).ok_or("short PUBREL")?;
                self.owed.extend_from_slice(&[0x70, 0x02, pid[0], pid[1]]);
                Ok(Incoming::Other)
            }
            9 => Ok(Incoming::SubAck {
                granted: body.iter().skip(2).all(|code| *code != 0x80),
            }),
            _ => Ok(Incoming::Other),
        }
    }
}
