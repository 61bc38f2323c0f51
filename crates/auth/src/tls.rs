//! TLS for a SQL node's client-facing ports (Postgres wire, HTTP): one
//! certificate and key (PEM), optionally a CA whose client certificates are
//! accepted. The files are polled ([`ServerTls::watch`]); a changed set
//! that loads is used by every new connection, one that does not is logged
//! and the previous one kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use crate::file::{self, WatchHandle};

/// Where a node's client-facing TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Client certificates signed by this CA (PEM) are accepted as the
    /// user they name; clients without one may still use a password.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate; give the node's certificate chain (tls_cert)")]
    NoCertificate { path: PathBuf },
    #[error(
        "{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1); give the certificate's key (tls_key)"
    )]
    NoKey { path: PathBuf },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("the certificate {cert} and key {key} do not make a TLS configuration: {message}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

struct Loaded {
    /// The files' bytes, to tell a change from a poll that found none.
    content: Vec<Vec<u8>>,
    acceptor: TlsAcceptor,
    cert_pem: Vec<u8>,
}

/// A node's client-facing TLS configuration, re-read when its files change.
pub struct ServerTls {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    loaded: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            message: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn build(files: &TlsFiles, alpn: &[Vec<u8>], content: Vec<Vec<u8>>) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert, &content[0])?;
    let key = PrivateKeyDer::from_pem_slice(&content[1]).map_err(|_| TlsError::NoKey {
        path: files.key.clone(),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            cert: files.cert.clone(),
            key: files.key.clone(),
            message: e.to_string(),
        })?;
    let builder = match (&files.client_ca, content.get(2)) {
        (Some(ca_path), Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca_path, ca)? {
                roots.add(cert).map_err(|e| TlsError::Invalid {
                    path: ca_path.clone(),
                    message: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Invalid {
                    path: ca_path.clone(),
                    message: format!("cannot verify clients with it: {e}"),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config {
            cert: files.cert.clone(),
            key: files.key.clone(),
            message: e.to_string(),
        })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(Loaded {
        cert_pem: content[0].clone(),
        content,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}

fn read_all(files: &TlsFiles) -> Result<Vec<Vec<u8>>, TlsError> {
    let mut content = vec![read(&files.cert)?, read(&files.key)?];
    if let Some(ca) = &files.client_ca {
        content.push(read(ca)?);
    }
    Ok(content)
}

impl ServerTls {
    /// Loads `files`; `alpn` is what the protocol announces (`postgresql`
    /// for the Postgres wire's direct TLS, `h2`/`http/1.1` for HTTP).
    pub fn load(files: TlsFiles, alpn: Vec<Vec<u8>>) -> Result<Arc<ServerTls>, TlsError> {
        let loaded = build(&files, &alpn, read_all(&files)?)?;
        Ok(Arc::new(ServerTls {
            files,
            alpn,
            loaded: RwLock::new(Arc::new(loaded)),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Whether client certificates are accepted (a client CA is set).
    pub fn client_certs(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The acceptor for a new connection, with the current files.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.loaded.read().acceptor.clone()
    }

    /// The certificate chain as loaded (PEM).
    pub fn cert_pem(&self) -> Vec<u8> {
        self.loaded.read().cert_pem.clone()
    }

    /// Re-reads the files; `Ok(true)` when a changed set was applied.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let content = read_all(&self.files)?;
        if self.loaded.read().content == content {
            return Ok(false);
        }
        let loaded = build(&self.files, &self.alpn, content)?;
        *self.loaded.write() = Arc::new(loaded);
        Ok(true)
    }

    /// Re-reads the files every `every` until the handle is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration) -> WatchHandle {
        let tls = Arc::clone(self);
        file::watch_with(
            "TLS certificate",
            self.files.cert.clone(),
            every,
            move || tls.reload().map_err(|e| e.to_string()),
        )
    }
}

/// Why one connection's TLS handshake did not finish.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// The peer's hello, certificate or protocol was refused.
    Refused(std::io::Error),
    /// The peer did not finish within the time-out.
    TimedOut,
}

/// Connections accepted on `listener` after their TLS handshake, for a
/// gRPC server's `serve_with_incoming`. Each handshake runs on a task of
/// its own, so a slow or hostile peer holds up no other; `acceptor` is
/// asked per connection (certificates re-read while serving) and
/// `failed` hears of each handshake that did not finish. Accepting stops
/// when `stop` turns true.
pub fn tls_incoming(
    listener: tokio::net::TcpListener,
    acceptor: impl Fn() -> TlsAcceptor + Send + 'static,
    handshake_timeout: Duration,
    failed: impl Fn(std::net::SocketAddr, HandshakeFailure) + Send + Sync + 'static,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> impl futures::Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>>
+ Send
+ 'static {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let failed = Arc::new(failed);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: let it pass
                    // rather than spin.
                    tracing::warn!(error = %e, "could not accept a TLS connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let handshake = acceptor().accept(tcp);
            let (failed, sender) = (failed.clone(), sender.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, handshake).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => failed(peer, HandshakeFailure::Refused(e)),
                    Err(_) => failed(peer, HandshakeFailure::TimedOut),
                }
            });
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}
