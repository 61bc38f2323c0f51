//! TLS for the integrations' own protocol clients (XMPP STARTTLS, MQTT over
//! TLS): rustls with the ring provider already in the tree, trusting the
//! CAs of a configured PEM file. Verification is never switched off.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// Where the system's trusted CAs are when no `ca_file` is configured.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client configuration trusting the CAs in `ca_file` (the system's by default).
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let path = ca_file.unwrap_or(Path::new(SYSTEM_CA_FILE));
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA certificate in {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("CA file {} holds no certificate", path.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Runs the TLS handshake on `tcp`, verifying that the server's
/// certificate names `name` (a DNS name or an IP address).
pub async fn handshake(
    tcp: TcpStream,
    name: &str,
    config: Arc<ClientConfig>,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, String> {
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|e| format!("`{name}` is not a TLS server name: {e}"))?;
    tokio::time::timeout(
        timeout,
        TlsConnector::from(config).connect(server_name, tcp),
    )
    .await
    .map_err(|_| format!("TLS handshake took over {timeout:?}"))?
    .map_err(|e| {
        format!("TLS handshake failed: {e}; check ca_file and that the certificate names `{name}`")
    })
}
