//! `fleetsql certs`: a fleet CA and node certificates for tests and small
//! fleets (real fleets bring their own PKI). A directory holds `ca.crt`,
//! `ca.key` and one `NAME.crt`/`NAME.key` per node, the layout a topology's
//! `[tls] certs_dir` reads. Keys are written with mode 0600; every file is
//! written beside its place and renamed into it, so a node polling its
//! files never reads half of one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls::pki_types::ServerName;

/// The CA's subject: a node certificate's issuer must repeat it exactly.
const CA_NAME: &str = "fleetsql fleet CA";
const DAY: Duration = Duration::from_secs(86_400);

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error(
        "no fleet CA in {dir}: {file} is missing; make one with `fleetsql certs init --dir {dir}`"
    )]
    NoCa { dir: PathBuf, file: PathBuf },
    #[error("{path} exists; pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{name}` cannot be a node certificate's name: {reason}")]
    BadName { name: String, reason: String },
    #[error("the CA key {path} does not load: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("making the certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// What `certs init` or `certs issue` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A fleet CA whose key is at hand: it signs node certificates.
pub struct FleetCa {
    issuer: Issuer<'static, KeyPair>,
    cert: PathBuf,
}

impl std::fmt::Debug for FleetCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCa")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

fn ca_params() -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Valid from a day ago (clocks disagree) for `days`.
fn validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(DAY);
    params.not_after = epoch + now + DAY * days;
}

impl FleetCa {
    /// Makes a CA in `dir` (`ca.crt`, `ca.key`), created if missing; an
    /// existing CA is kept unless `force`.
    pub fn init(dir: &Path, force: bool) -> Result<FleetCa, CertsError> {
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        if !force {
            for path in [&cert, &key] {
                if path.exists() {
                    return Err(CertsError::Exists { path: path.clone() });
                }
            }
        }
        std::fs::create_dir_all(dir).map_err(|source| CertsError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let key_pair = KeyPair::generate()?;
        let mut params = ca_params()?;
        validity(&mut params, 3650);
        let made = params.self_signed(&key_pair)?;
        write_file(&key, key_pair.serialize_pem().as_bytes(), true)?;
        write_file(&cert, made.pem().as_bytes(), false)?;
        Ok(FleetCa {
            issuer: Issuer::new(ca_params()?, key_pair),
            cert,
        })
    }

    /// The CA `init` made in `dir`.
    pub fn open(dir: &Path) -> Result<FleetCa, CertsError> {
        let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        for file in [&cert, &key] {
            if !file.exists() {
                return Err(CertsError::NoCa {
                    dir: dir.to_path_buf(),
                    file: file.clone(),
                });
            }
        }
        let pem = std::fs::read_to_string(&key).map_err(|source| CertsError::Read {
            path: key.clone(),
            source,
        })?;
        let key_pair = KeyPair::from_pem(&pem).map_err(|e| CertsError::BadKey {
            path: key.clone(),
            reason: e.to_string(),
        })?;
        Ok(FleetCa {
            issuer: Issuer::new(ca_params()?, key_pair),
            cert,
        })
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// A certificate for node `name` (DNS names `name` and `localhost`,
    /// IP 127.0.0.1; for server and client use) in `dir` as `NAME.crt` and
    /// `NAME.key`. An existing one is kept unless `force`.
    pub fn issue(&self, name: &str, dir: &Path, force: bool) -> Result<Issued, CertsError> {
        let bad = |reason: &str| CertsError::BadName {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        match ServerName::try_from(name) {
            Ok(ServerName::DnsName(_)) => {}
            _ => {
                return Err(bad(
                    "node names in a fleet with TLS must be DNS names (letters, digits, `-`, `.`)",
                ));
            }
        }
        if name == "ca" {
            return Err(bad("`ca.crt` is the CA's own file"));
        }
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        if !force {
            for path in [&cert, &key] {
                if path.exists() {
                    return Err(CertsError::Exists { path: path.clone() });
                }
            }
        }
        let key_pair = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![
            name.to_string(),
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, 365);
        let made = params.signed_by(&key_pair, &self.issuer)?;
        // Key first: a node polling in between sees a key that does not
        // match its certificate, refuses it and keeps its old pair.
        write_file(&key, key_pair.serialize_pem().as_bytes(), true)?;
        write_file(&cert, made.pem().as_bytes(), false)?;
        Ok(Issued { cert, key })
    }
}

/// Writes `bytes` beside `path` and renames it into place (0600 if
/// `secret`).
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), CertsError> {
    let error = |source| CertsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(error)?;
    file.write_all(bytes).map_err(error)?;
    file.sync_all().map_err(error)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn init_and_issue_write_a_ca_and_node_files_keys_private() {
        let dir = tempfile::tempdir().unwrap();
        let ca = FleetCa::init(dir.path(), false).unwrap();
        let issued = ca.issue("fra-p1", dir.path(), false).unwrap();
        for key in [dir.path().join("ca.key"), issued.key.clone()] {
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        let err = ca.issue("fra-p1", dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        ca.issue("fra-p1", dir.path(), true).unwrap();
        let err = FleetCa::init(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("ca.crt exists"), "{err}");

        let reopened = FleetCa::open(dir.path()).unwrap();
        reopened.issue("t1", dir.path(), false).unwrap();

        for bad in ["ca", "not a name", ""] {
            assert!(matches!(
                ca.issue(bad, dir.path(), true),
                Err(CertsError::BadName { .. })
            ));
        }
        let empty = tempfile::tempdir().unwrap();
        let err = FleetCa::open(empty.path()).unwrap_err().to_string();
        assert!(err.contains("fleetsql certs init"), "{err}");
    }
}
