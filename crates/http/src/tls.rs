//! HTTPS: a listener that hands axum connections whose TLS handshake is
//! done. Handshakes run on tasks of their own (a client that stalls in
//! one delays no other), each bounded in time; the acceptor is taken from
//! [`ServerTls`] per connection, so a re-read certificate applies to the
//! next connection without a restart.
//!
//! A connection whose first byte is not a TLS handshake is kept as plain
//! HTTP so that it can be told to use HTTPS; only `/health` and
//! `/metrics`, which carry no fleet data, are answered on it (load
//! balancers and scrapers probe them without the node's CA).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use fleetsql_auth::ServerTls;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What HTTP announces in ALPN: HTTP/1.1 only, because the node's
/// WebSocket subscriptions upgrade an HTTP/1.1 connection.
pub fn http_alpn() -> Vec<Vec<u8>> {
    vec![b"http/1.1".to_vec()]
}

/// A connection of the HTTPS port: TLS, or plain HTTP to be refused.
pub(crate) enum MaybeTls {
    Tls(Box<TlsStream<TcpStream>>),
    Plain(TcpStream),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A client of the HTTPS port and whether it came over TLS.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: bool,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        *stream.remote_addr()
    }
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

pub(crate) struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(MaybeTls, Peer)>,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, local: SocketAddr, tls: Arc<ServerTls>) -> Self {
        let (done, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather
                        // than spin, as axum's own listener does.
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = tls.acceptor();
                let handed = done.clone();
                tokio::spawn(async move {
                    let mut first = [0u8; 1];
                    let peeked =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await;
                    if !matches!(peeked, Ok(Ok(1))) {
                        return;
                    }
                    if first[0] != TLS_HANDSHAKE {
                        let plain = Peer {
                            addr: peer,
                            tls: false,
                        };
                        let _ = handed.send((MaybeTls::Plain(tcp), plain)).await;
                        return;
                    }
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let tls = Peer {
                                addr: peer,
                                tls: true,
                            };
                            let _ = handed.send((MaybeTls::Tls(Box::new(stream)), tls)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "HTTPS handshake refused");
                        }
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                });
                if done.is_closed() {
                    return;
                }
            }
        });
        TlsListener {
            local,
            ready,
            accepting,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = MaybeTls;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task ended only because the listener is going.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            tls: true,
        })
    }
}

/// In front of every route of an HTTPS port: the peer's address as the
/// handlers read it (`ConnectInfo<SocketAddr>`), and a plain-HTTP request
/// refused unless it is `/health` or `/metrics`.
pub(crate) async fn plain_or_tls(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .map(|c| c.0);
    if let Some(peer) = peer {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer.addr));
        if !peer.tls && !matches!(request.uri().path(), "/health" | "/metrics") {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({
                    "error": "this port takes HTTPS; the request came as plain HTTP",
                    "hint": "use an https:// URL (the node's CA verifies its certificate)",
                })),
            )
                .into_response();
        }
    }
    next.run(request).await
}
