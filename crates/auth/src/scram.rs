//! SCRAM-SHA-256 (RFC 5802, RFC 7677) over PostgreSQL's verifier format.
//!
//! A verifier is `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`,
//! base64, exactly what PostgreSQL keeps in `pg_authid`: a stolen users file
//! lets nobody log in (the client proof needs ClientKey, which only the
//! password gives), yet the server can check a proof and prove itself.
//! [`ScramExchange`] is the server side of one exchange, independent of
//! any wire protocol.

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq;

use crate::error::{ParseError, StoreError};

/// PostgreSQL's default (`scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;
const KEY_LEN: usize = 32;
const SALT_LEN: usize = 16;
const PREFIX: &str = "SCRAM-SHA-256$";

/// A salted SCRAM-SHA-256 verifier; never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Random)?;
    Ok(bytes)
}

/// SASLprep as PostgreSQL applies it: a password that does not normalise is
/// used as typed.
fn normalize(password: &str) -> Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> [u8; KEY_LEN] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

fn client_key(
    password: &str,
    salt: &[u8],
    iterations: NonZeroU32,
) -> ([u8; KEY_LEN], [u8; KEY_LEN]) {
    let mut salted = [0u8; KEY_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        normalize(password).as_bytes(),
        &mut salted,
    );
    (
        hmac_sha256(&salted, b"Client Key"),
        hmac_sha256(&salted, b"Server Key"),
    )
}

impl ScramVerifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn new(password: &str) -> Result<ScramVerifier, StoreError> {
        let salt = random_bytes::<SALT_LEN>()?;
        Ok(ScramVerifier::with_salt(
            password,
            &salt,
            DEFAULT_ITERATIONS,
        ))
    }

    /// A verifier for `password` with a given salt (tests, known vectors).
    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
        let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
        let (client_key, server_key) = client_key(password, salt, iterations);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key,
        }
    }

    /// A verifier no password matches, with a salt derived from `name` and
    /// `secret`, so a SCRAM exchange for an unknown user looks like one for
    /// a known user and the same name always gets the same salt (as
    /// PostgreSQL's mock authentication does).
    pub fn mock(name: &str, secret: &[u8]) -> ScramVerifier {
        let salt = hmac_sha256(secret, name.as_bytes());
        ScramVerifier {
            iterations: NonZeroU32::new(DEFAULT_ITERATIONS).unwrap_or(NonZeroU32::MIN),
            salt: salt[..SALT_LEN].to_vec(),
            stored_key: hmac_sha256(secret, b"no such user: stored"),
            server_key: hmac_sha256(secret, b"no such user: server"),
        }
    }

    pub fn iterations(&self) -> u32 {
        self.iterations.get()
    }

    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// Whether `password` is the one this verifier was made from
    /// (console log-in, HTTP basic): the work of one SCRAM client.
    pub fn verify_password(&self, password: &str) -> bool {
        let (client_key, _) = client_key(password, &self.salt, self.iterations);
        sha256(&client_key).ct_eq(&self.stored_key).into()
    }
}

impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

impl FromStr for ScramVerifier {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<ScramVerifier, ParseError> {
        let bad = || ParseError::Verifier(shorten(s));
        let rest = s.strip_prefix(PREFIX).ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(bad)?;
        let salt = STANDARD.decode(salt).map_err(|_| bad())?;
        let key = |k: &str| -> Result<[u8; KEY_LEN], ParseError> {
            STANDARD
                .decode(k)
                .ok()
                .and_then(|v| <[u8; KEY_LEN]>::try_from(v).ok())
                .ok_or_else(bad)
        };
        if salt.is_empty() {
            return Err(bad());
        }
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// A verifier shown in an error: enough to find it, not the whole secret.
fn shorten(s: &str) -> String {
    s.chars().take(24).collect::<String>() + if s.chars().count() > 24 { "..." } else { "" }
}

/// Why a SCRAM exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error(
        "SCRAM channel binding `{0}` is not offered by this server; connect with channel_binding=prefer or disable"
    )]
    ChannelBinding(String),
    #[error("SCRAM nonce does not match the one this server sent")]
    Nonce,
    #[error("SCRAM client proof does not match: wrong password")]
    Proof,
    #[error("the system random source failed")]
    Random,
}

/// The server side of one SCRAM-SHA-256 exchange (without channel
/// binding: the server offers only `SCRAM-SHA-256`).
#[derive(Debug)]
pub struct ScramExchange {
    verifier: ScramVerifier,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

fn attribute(part: Option<&str>, name: char) -> Option<&str> {
    let part = part?;
    let mut chars = part.chars();
    (chars.next() == Some(name) && chars.next() == Some('=')).then(|| &part[2..])
}

impl ScramExchange {
    /// Reads the client-first message and makes the server-first one with
    /// a fresh random nonce.
    pub fn start(verifier: ScramVerifier, client_first: &str) -> Result<ScramExchange, ScramError> {
        let nonce = random_bytes::<18>().map_err(|_| ScramError::Random)?;
        ScramExchange::start_with_nonce(verifier, client_first, &STANDARD.encode(nonce))
    }

    /// [`ScramExchange::start`] with a given server nonce (tests).
    pub fn start_with_nonce(
        verifier: ScramVerifier,
        client_first: &str,
        server_nonce: &str,
    ) -> Result<ScramExchange, ScramError> {
        let mut parts = client_first.splitn(3, ',');
        let flag = parts
            .next()
            .ok_or(ScramError::Malformed("empty client-first message"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding(f[2..].to_string())),
            _ => return Err(ScramError::Malformed("bad channel-binding flag")),
        }
        let authzid = parts.next().ok_or(ScramError::Malformed("no gs2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "authorization identities are not supported",
            ));
        }
        let bare = parts
            .next()
            .ok_or(ScramError::Malformed("no client-first-message-bare"))?;
        let mut attrs = bare.split(',');
        let first = attrs.next();
        if first.is_some_and(|a| a.starts_with("m=")) {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        // The user name: pg clients leave it empty and the startup message
        // names the user, so it is read but not used.
        attribute(first, 'n').ok_or(ScramError::Malformed("no user name attribute"))?;
        let client_nonce =
            attribute(attrs.next(), 'r').ok_or(ScramError::Malformed("no client nonce"))?;
        if client_nonce.is_empty() || client_nonce.contains(',') {
            return Err(ScramError::Malformed("empty client nonce"));
        }
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&verifier.salt),
            verifier.iterations
        );
        Ok(ScramExchange {
            verifier,
            gs2_header: format!("{flag},,"),
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        })
    }

    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks the client-final message's proof; on success the server-final
    /// message (`v=<ServerSignature>`) that proves the server knew the
    /// verifier.
    pub fn finish(&self, client_final: &str) -> Result<String, ScramError> {
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no client proof"))?;
        let mut attrs = without_proof.split(',');
        let binding =
            attribute(attrs.next(), 'c').ok_or(ScramError::Malformed("no channel binding"))?;
        let binding = STANDARD
            .decode(binding)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if binding != self.gs2_header.as_bytes() {
            return Err(ScramError::Malformed(
                "channel binding differs from the gs2 header",
            ));
        }
        let nonce = attribute(attrs.next(), 'r').ok_or(ScramError::Malformed("no nonce"))?;
        if nonce != self.nonce {
            return Err(ScramError::Nonce);
        }
        let proof = STANDARD
            .decode(proof)
            .ok()
            .and_then(|p| <[u8; KEY_LEN]>::try_from(p).ok())
            .ok_or(ScramError::Malformed(
                "client proof is not 32 bytes of base64",
            ))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac_sha256(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0u8; KEY_LEN];
        for (k, (p, s)) in client_key.iter_mut().zip(proof.iter().zip(signature)) {
            *k = p ^ s;
        }
        if !bool::from(sha256(&client_key).ct_eq(&self.verifier.stored_key)) {
            return Err(ScramError::Proof);
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3: user "user", password "pencil".
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_verifier() -> ScramVerifier {
        let salt = STANDARD.decode(SALT).unwrap();
        ScramVerifier::with_salt("pencil", &salt, 4096)
    }

    #[test]
    fn the_rfc_7677_exchange_verifies_against_a_stored_verifier() {
        let exchange =
            ScramExchange::start_with_nonce(rfc_verifier(), CLIENT_FIRST, SERVER_NONCE).unwrap();
        assert_eq!(exchange.server_first(), SERVER_FIRST);
        assert_eq!(exchange.finish(CLIENT_FINAL).unwrap(), SERVER_FINAL);
    }

    /// PostgreSQL's own verifier of the RFC's password and salt (as
    /// `pg_authid` stores it), and it checks the password.
    #[test]
    fn the_rfc_vector_formats_as_postgresql_stores_it() {
        let text = rfc_verifier().to_string();
        assert_eq!(
            text,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        assert_eq!(text.parse::<ScramVerifier>().unwrap(), rfc_verifier());
        assert!(rfc_verifier().verify_password("pencil"));
        assert!(!rfc_verifier().verify_password("Pencil"));
    }

    #[test]
    fn a_new_verifier_round_trips_and_checks_only_its_password() {
        let v = ScramVerifier::new("s3cret \u{00e9}").unwrap();
        let parsed: ScramVerifier = v.to_string().parse().unwrap();
        assert_eq!(parsed, v);
        assert!(parsed.verify_password("s3cret \u{00e9}"));
        assert!(!parsed.verify_password("s3cret"));
        assert_ne!(
            ScramVerifier::new("x").unwrap().salt(),
            ScramVerifier::new("x").unwrap().salt()
        );
    }

    #[test]
    fn a_wrong_proof_or_nonce_is_refused() {
        let exchange =
            ScramExchange::start_with_nonce(rfc_verifier(), CLIENT_FIRST, SERVER_NONCE).unwrap();
        let wrong_proof = CLIENT_FINAL.replace("p=dHz", "p=dHy");
        assert_eq!(exchange.finish(&wrong_proof), Err(ScramError::Proof));
        let wrong_nonce = CLIENT_FINAL.replace("k0,p=", "k1,p=");
        assert_eq!(exchange.finish(&wrong_nonce), Err(ScramError::Nonce));
        let other = ScramVerifier::with_salt("crayon", &STANDARD.decode(SALT).unwrap(), 4096);
        let exchange = ScramExchange::start_with_nonce(other, CLIENT_FIRST, SERVER_NONCE).unwrap();
        assert_eq!(exchange.finish(CLIENT_FINAL), Err(ScramError::Proof));
    }

    #[test]
    fn mock_verifiers_are_stable_per_name_and_match_nothing() {
        let a = ScramVerifier::mock("mallory", b"k");
        assert_eq!(a.salt(), ScramVerifier::mock("mallory", b"k").salt());
        assert_ne!(a.salt(), ScramVerifier::mock("eve", b"k").salt());
        assert!(!a.verify_password(""));
    }

    #[test]
    fn malformed_messages_and_verifiers_are_errors_not_panics() {
        for bad in [
            "",
            "n",
            "n,,",
            "x,,n=,r=a",
            "p=tls-server-end-point,,n=,r=a",
            "n,a=x,n=,r=a",
            "n,,n=,r=",
        ] {
            assert!(ScramExchange::start(rfc_verifier(), bad).is_err(), "{bad}");
        }
        let exchange =
            ScramExchange::start_with_nonce(rfc_verifier(), CLIENT_FIRST, SERVER_NONCE).unwrap();
        for bad in [
            "",
            "p=",
            "c=biws,p=AAAA",
            "c=eSws,r=x,p=AAAA",
            "c=%%%,r=x,p=AA",
        ] {
            assert!(exchange.finish(bad).is_err(), "{bad}");
        }
        for bad in [
            "",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$0:AAAA$AA:AA",
            "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
            "md5abcdef",
        ] {
            assert!(bad.parse::<ScramVerifier>().is_err(), "{bad}");
        }
    }
}
