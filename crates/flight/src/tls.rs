//! Mutual TLS between tiers: every node holds a certificate of the fleet
//! CA whose DNS name is its node name. A child's Flight server accepts a
//! connection only from a certificate naming one of the parents the
//! topology gives it ([`TlsContext::set_parents`]); a parent accepts a
//! child's server only when its certificate names that child. Refusals are
//! logged with the reason and counted for `/metrics`.
//!
//! Certificate, key and CA files are polled ([`TlsContext::watch`]): a
//! changed set that loads is used by every new connection; one that does
//! not is logged and the previous one kept. Connections already up keep
//! the certificate they were made with.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};

use crate::{FlightError, Result};

/// Where one node's TLS material is: the fleet CA's certificate (PEM,
/// every certificate in it trusted), the node's certificate chain and its
/// private key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Which connections a refusal was on: `incoming` (a parent connecting to
/// this node's Flight server) or `outgoing` (this node connecting to a
/// child).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Link {
    Incoming,
    Outgoing,
}

impl Link {
    fn as_str(self) -> &'static str {
        match self {
            Link::Incoming => "incoming",
            Link::Outgoing => "outgoing",
        }
    }
}

/// Why a peer was refused: the `reason` label of
/// `fleetsql_tls_refusals_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// A valid fleet certificate for a name the topology does not give
    /// this peer (not a parent of this node; not the child dialled).
    NotInTopology,
    /// Not signed by the fleet CA.
    UnknownCa,
    /// Expired or not yet valid.
    Expired,
    /// A parent that presented no certificate (a plaintext or
    /// misconfigured client).
    NoCertificate,
    /// The peer refused this node's certificate.
    RefusedByPeer,
    /// A certificate the fleet CA signed that is unusable otherwise (bad
    /// encoding, wrong key usage).
    InvalidCertificate,
    /// Anything else that ended the handshake (not TLS at all, a time-out).
    Handshake,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotInTopology => "not_in_topology",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::Expired => "expired",
            Refusal::NoCertificate => "no_certificate",
            Refusal::RefusedByPeer => "refused_by_peer",
            Refusal::InvalidCertificate => "invalid_certificate",
            Refusal::Handshake => "handshake",
        }
    }

    fn of_certificate_error(e: &CertificateError) -> Refusal {
        match e {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => Refusal::UnknownCa,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => Refusal::Expired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Refusal::NotInTopology
            }
            _ => Refusal::InvalidCertificate,
        }
    }
}

/// How long a peer may take to complete its TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What verifiers and the node share: who this node is, who may connect,
/// what was refused.
#[derive(Debug)]
struct Shared {
    role: &'static str,
    name: String,
    parents: RwLock<BTreeSet<String>>,
    refusals: Mutex<BTreeMap<(Link, Refusal), u64>>,
}

impl Shared {
    fn refuse(&self, link: Link, reason: Refusal, why: &str) {
        *self.refusals.lock().entry((link, reason)).or_default() += 1;
        tracing::warn!(
            node = %self.name,
            link = link.as_str(),
            reason = reason.as_str(),
            "refused a Flight peer: {why}"
        );
    }
}

/// One loaded set of files, as the configurations new connections use.
struct Loaded {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    /// The files' bytes, to tell a change.
    content: [Vec<u8>; 3],
}

/// One node's mTLS state: its current certificate (re-read on change),
/// the parents it serves, its refusal counters. Shared by its Flight
/// server and every `FlightChild` it dials with.
pub struct TlsContext {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    shared: Arc<Shared>,
    loaded: RwLock<Arc<Loaded>>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("name", &self.shared.name)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsContext {
    /// Loads `files` for node `name` (its `role` names it in messages).
    /// Serves no parent until [`TlsContext::set_parents`].
    pub fn load(role: &'static str, name: &str, files: TlsFiles) -> Result<Arc<TlsContext>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let shared = Arc::new(Shared {
            role,
            name: name.to_string(),
            parents: RwLock::new(BTreeSet::new()),
            refusals: Mutex::new(BTreeMap::new()),
        });
        let content = read_files(&files)?;
        let loaded = build(&files, content, &provider, &shared)?;
        Ok(Arc::new(TlsContext {
            files,
            provider,
            shared,
            loaded: RwLock::new(Arc::new(loaded)),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }))
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The nodes whose certificates this node's Flight server accepts
    /// (its parents in the topology). Connections already made stay.
    pub fn set_parents(&self, parents: BTreeSet<String>) {
        *self.shared.parents.write() = parents;
    }

    pub fn parents(&self) -> BTreeSet<String> {
        self.shared.parents.read().clone()
    }

    /// Reads the files again and uses them for new connections when they
    /// changed and load; `Ok(false)` when nothing changed. On an error the
    /// previous certificate stays in use.
    pub fn reload(&self) -> Result<bool> {
        let content = read_files(&self.files)?;
        if self.loaded.read().content == content {
            return Ok(false);
        }
        let loaded = build(&self.files, content, &self.provider, &self.shared)?;
        *self.loaded.write() = Arc::new(loaded);
        Ok(true)
    }

    /// Polls the files every `every` ([`TlsContext::reload`]), logging
    /// what changed or why a change was not taken. The content decides,
    /// not time stamps; a change that fails is not retried until the files
    /// change again.
    pub fn watch(self: &Arc<Self>, every: Duration) -> TlsWatch {
        let context = self.clone();
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            interval.tick().await;
            let mut failed: Option<[Vec<u8>; 3]> = None;
            loop {
                interval.tick().await;
                let content = read_files(&context.files).ok();
                if content.is_some() && content == failed {
                    continue;
                }
                match context.reload() {
                    Ok(false) => {}
                    Ok(true) => {
                        failed = None;
                        context.reloads.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            node = %context.shared.name,
                            cert = %context.files.cert.display(),
                            "TLS certificate files changed; new connections use them"
                        );
                    }
                    Err(e) => {
                        failed = content;
                        context.reload_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            node = %context.shared.name,
                            error = %e,
                            "TLS certificate files changed but do not load; still using the previous ones. Fix the files"
                        );
                    }
                }
            }
        });
        TlsWatch { task: Some(task) }
    }

    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        self.loaded.read().server.clone()
    }

    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        self.loaded.read().client.clone()
    }

    /// Counts a handshake that failed for a reason the verifiers did not
    /// see (they count their own refusals).
    pub(crate) fn handshake_failed(&self, link: Link, peer: &str, error: &std::io::Error) {
        let rustls_error = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        let reason = match rustls_error {
            Some(rustls::Error::InvalidCertificate(_)) => return,
            Some(rustls::Error::NoCertificatesPresented) => Refusal::NoCertificate,
            Some(rustls::Error::AlertReceived(_)) => Refusal::RefusedByPeer,
            _ => Refusal::Handshake,
        };
        self.shared.refuse(
            link,
            reason,
            &format!("TLS handshake with {peer} failed: {error}"),
        );
    }

    pub(crate) fn handshake_timed_out(&self, link: Link, peer: SocketAddr) {
        self.shared.refuse(
            link,
            Refusal::Handshake,
            &format!(
                "{peer} did not complete a TLS handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ),
        );
    }

    /// Refusals so far, by link and reason.
    pub fn refusals(&self) -> BTreeMap<(Link, Refusal), u64> {
        self.shared.refusals.lock().clone()
    }

    /// `fleetsql_tls_refusals_total` and the reload counters, each sample
    /// with `labels` (`role="..",node=".."`).
    pub fn render_prometheus(&self, out: &mut String, labels: &str) {
        let _ = writeln!(
            out,
            "# HELP fleetsql_tls_refusals_total Flight peers refused over mTLS, by link (incoming: a parent connecting; outgoing: a child dialled) and reason"
        );
        let _ = writeln!(out, "# TYPE fleetsql_tls_refusals_total counter");
        for ((link, reason), count) in self.refusals() {
            let _ = writeln!(
                out,
                "fleetsql_tls_refusals_total{{{labels},link=\"{}\",reason=\"{}\"}} {count}",
                link.as_str(),
                reason.as_str()
            );
        }
        let _ = writeln!(
            out,
            "# HELP fleetsql_tls_reloads_total Changed TLS certificate files taken (ok) or refused and the previous ones kept (failed)"
        );
        let _ = writeln!(out, "# TYPE fleetsql_tls_reloads_total counter");
        for (result, count) in [
            ("ok", self.reloads.load(Ordering::Relaxed)),
            ("failed", self.reload_failures.load(Ordering::Relaxed)),
        ] {
            let _ = writeln!(
                out,
                "fleetsql_tls_reloads_total{{{labels},result=\"{result}\"}} {count}"
            );
        }
    }
}

/// The polling task of [`TlsContext::watch`]; dropping it stops polling.
#[derive(Debug)]
pub struct TlsWatch {
    task: Option<JoinHandle<()>>,
}

impl Drop for TlsWatch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn read_files(files: &TlsFiles) -> Result<[Vec<u8>; 3]> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| FlightError::Tls {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    };
    Ok([
        read("CA file", &files.ca)?,
        read("certificate", &files.cert)?,
        read("key", &files.key)?,
    ])
}

fn build(
    files: &TlsFiles,
    content: [Vec<u8>; 3],
    provider: &Arc<CryptoProvider>,
    shared: &Arc<Shared>,
) -> Result<Loaded> {
    let [ca, cert, key] = &content;
    let error = |what: &'static str, path: &Path, reason: String| FlightError::Tls {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca) {
        let der = der.map_err(|e| error("CA file", &files.ca, e.to_string()))?;
        roots
            .add(der)
            .map_err(|e| error("CA file", &files.ca, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(error(
            "CA file",
            &files.ca,
            "holds no PEM certificate".into(),
        ));
    }
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| error("certificate", &files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(error(
            "certificate",
            &files.cert,
            "holds no PEM certificate".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| error("key", &files.key, format!("no PEM private key: {e}")))?;
    let roots = Arc::new(roots);
    let config_error = |e: String| {
        error(
            "certificate",
            &files.cert,
            format!("{e} (with key {})", files.key.display()),
        )
    };

    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .map_err(|e| config_error(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?
        .with_client_cert_verifier(Arc::new(ParentVerifier {
            inner: client_verifier,
            shared: shared.clone(),
        }))
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| config_error(e.to_string()))?;
    server.alpn_protocols = vec![b"h2".to_vec()];

    let server_verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| config_error(e.to_string()))?;
    let mut client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChildVerifier {
            inner: server_verifier,
            shared: shared.clone(),
        }))
        .with_client_auth_cert(chain, key)
        .map_err(|e| config_error(e.to_string()))?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        server: Arc::new(server),
        client: Arc::new(client),
        content,
    })
}

/// Whether `name` can be a node certificate's DNS name (a node name in a
/// fleet with TLS).
pub fn is_dns_name(name: &str) -> bool {
    matches!(ServerName::try_from(name), Ok(ServerName::DnsName(_)))
}

/// The DNS names a certificate presents, for messages (never for the
/// decision, which webpki makes).
fn presented_names(cert: &CertificateDer<'_>) -> String {
    match webpki::EndEntityCert::try_from(cert) {
        Ok(cert) => {
            let names: Vec<&str> = cert.valid_dns_names().collect();
            if names.is_empty() {
                "no DNS name".to_string()
            } else {
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }
        Err(e) => format!("an unreadable certificate ({e})"),
    }
}

/// Whether `cert` (already verified against the fleet CA) names one of
/// `allowed`.
pub(crate) fn names_one_of(cert: &CertificateDer<'_>, allowed: &BTreeSet<String>) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    allowed.iter().any(|name| {
        ServerName::try_from(name.as_str())
            .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
    })
}

/// An error whose text is ours, carried through rustls as a certificate
/// error (so the handshake fails with `bad_certificate` and the dialling
/// side's error says why).
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refused(why: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(why)))))
}

/// A child's check of a parent connecting to its Flight server: signed by
/// the fleet CA and naming one of its parents.
#[derive(Debug)]
struct ParentVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    shared: Arc<Shared>,
}

impl ClientCertVerifier for ParentVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let shared = &self.shared;
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            let reason = match &e {
                rustls::Error::InvalidCertificate(c) => Refusal::of_certificate_error(c),
                _ => Refusal::InvalidCertificate,
            };
            let why = format!(
                "a parent's certificate (naming {}) was refused by {} `{}`: {e}{}",
                presented_names(end_entity),
                shared.role,
                shared.name,
                if reason == Refusal::UnknownCa {
                    " (not signed by the fleet CA)"
                } else {
                    ""
                }
            );
            shared.refuse(Link::Incoming, reason, &why);
            return Err(refused(why));
        }
        let parents = shared.parents.read();
        if !names_one_of(end_entity, &parents) {
            let why = format!(
                "peer certificate names {}, which the topology does not list as a parent of {} `{}` (its parents: {})",
                presented_names(end_entity),
                shared.role,
                shared.name,
                if parents.is_empty() {
                    "none".to_string()
                } else {
                    parents.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            );
            drop(parents);
            shared.refuse(Link::Incoming, Refusal::NotInTopology, &why);
            return Err(refused(why));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A parent's check of the child it dialled: signed by the fleet CA and
/// naming that child (the server name it dialled is the child's node
/// name).
#[derive(Debug)]
struct ChildVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    shared: Arc<Shared>,
}

impl ServerCertVerifier for ChildVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(verified) => Ok(verified),
            Err(e) => {
                let shared = &self.shared;
                let child = server_name.to_str();
                let reason = match &e {
                    rustls::Error::InvalidCertificate(c) => Refusal::of_certificate_error(c),
                    _ => Refusal::InvalidCertificate,
                };
                let why = match reason {
                    Refusal::NotInTopology => format!(
                        "child `{child}` presented a certificate naming {}, not `{child}`; {} `{}` reads `{child}` only from a certificate for that name",
                        presented_names(end_entity),
                        shared.role,
                        shared.name
                    ),
                    Refusal::UnknownCa => format!(
                        "child `{child}` presented a certificate (naming {}) not signed by the fleet CA: {e}",
                        presented_names(end_entity)
                    ),
                    _ => format!(
                        "child `{child}` presented an unusable certificate (naming {}): {e}",
                        presented_names(end_entity)
                    ),
                };
                shared.refuse(Link::Outgoing, reason, &why);
                Err(refused(why))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::FleetCa;

    fn issued(dir: &Path, ca: &FleetCa, name: &str) -> TlsFiles {
        ca.issue(name, dir, false).unwrap();
        TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        }
    }

    fn der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    #[test]
    fn a_certificate_names_its_node_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let ca = FleetCa::init(dir.path(), false).unwrap();
        let files = issued(dir.path(), &ca, "fra-p1");
        let cert = der(&files.cert);
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        assert!(names_one_of(&cert, &set(&["t1", "fra-p1"])));
        assert!(!names_one_of(&cert, &set(&["t1", "fra-p2"])));
        assert!(!names_one_of(&cert, &set(&["fra"])), "no prefix match");
        assert!(!names_one_of(&cert, &set(&[])));
        // The test names are on every certificate but are no node's.
        assert!(names_one_of(&cert, &set(&["localhost"])));
        assert_eq!(presented_names(&cert), "`fra-p1`, `localhost`");
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it_and_a_reload_keeps_the_old_set() {
        let dir = tempfile::tempdir().unwrap();
        let ca = FleetCa::init(dir.path(), false).unwrap();
        let files = issued(dir.path(), &ca, "n1");
        let context = TlsContext::load("agent", "n1", files.clone()).unwrap();
        assert!(!context.reload().unwrap(), "nothing changed");

        std::fs::write(&files.key, "not a key").unwrap();
        let err = context.reload().unwrap_err().to_string();
        assert!(err.contains("n1.key"), "{err}");
        let before = context.server_config();

        // Another node's key does not match n1's certificate.
        issued(dir.path(), &ca, "n2");
        std::fs::copy(dir.path().join("n2.key"), &files.key).unwrap();
        let err = context.reload().unwrap_err().to_string();
        assert!(err.contains("n1.crt"), "{err}");
        assert!(Arc::ptr_eq(&before, &context.server_config()));

        ca.issue("n1", dir.path(), true).unwrap();
        assert!(context.reload().unwrap());
        assert!(!Arc::ptr_eq(&before, &context.server_config()));

        let missing = TlsFiles {
            ca: dir.path().join("nope.crt"),
            ..files
        };
        let err = TlsContext::load("agent", "n1", missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.crt"), "{err}");
    }
}
