//! What a client sends to say who it is, read the same way by every front
//! end, and the sessions a log-in opens (the console's cookie, a Flight SQL
//! handshake's bearer token).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use parking_lot::Mutex;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::StoreError;
use crate::role::Principal;
use crate::users::UserStore;

/// The credential of an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// `Bearer X`: a token of the tokens file (`fsq_...`) or a session.
    Bearer(String),
    /// `Basic base64(user:password)`.
    Basic { user: String, password: String },
}

/// An `Authorization` value that is neither a bearer token nor HTTP basic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the Authorization: Basic value is not base64 of `user:password`")]
    MalformedBasic,
    #[error("the Authorization scheme `{0}` is not one this node takes")]
    UnknownScheme(String),
}

impl CredentialError {
    /// A short fixed reason, for metrics labels and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            CredentialError::MalformedBasic => "malformed_basic",
            CredentialError::UnknownScheme(_) => "malformed_token",
        }
    }
}

impl Credential {
    /// Reads an `Authorization` header's value (schemes in any case).
    pub fn parse(value: &str) -> Result<Credential, CredentialError> {
        let value = value.trim();
        let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
        let credential = credential.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Credential::Bearer(credential.to_string()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credential)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or(CredentialError::MalformedBasic)?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or(CredentialError::MalformedBasic)?;
            return Ok(Credential::Basic {
                user: user.to_string(),
                password: password.to_string(),
            });
        }
        Err(CredentialError::UnknownScheme(
            scheme.chars().take(20).collect(),
        ))
    }
}

/// A logged-in client.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// What a browser must send back on state-changing requests.
    pub csrf: String,
    expires: Instant,
}

/// Sessions opened by a log-in, in memory (a restart logs everyone out),
/// each for a fixed time; bounded, the oldest dropped first.
#[derive(Debug)]
pub struct SessionStore {
    ttl: Duration,
    max: usize,
    sessions: Mutex<HashMap<String, Session>>,
    random: SystemRandom,
}

/// 32 random bytes as hex: a session id or CSRF token no one can guess.
fn random_hex(random: &SystemRandom) -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    random.fill(&mut bytes).map_err(|_| StoreError::Random)?;
    Ok(hex::encode(bytes))
}

impl SessionStore {
    pub fn new(ttl: Duration, max: usize) -> SessionStore {
        SessionStore {
            ttl,
            max: max.max(1),
            sessions: Mutex::new(HashMap::new()),
            random: SystemRandom::new(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for `principal`: (id, CSRF token).
    pub fn start(&self, principal: Principal) -> Result<(String, String), StoreError> {
        let id = random_hex(&self.random)?;
        let csrf = random_hex(&self.random)?;
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= self.max {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => sessions.remove(&k),
                None => break,
            };
        }
        sessions.insert(
            id.clone(),
            Session {
                principal,
                csrf: csrf.clone(),
                expires: now + self.ttl,
            },
        );
        Ok((id, csrf))
    }

    /// The live session `id`. With `users`, the users file is the
    /// authority: a removed user's session ends, a changed role applies
    /// at once.
    pub fn get(&self, id: &str, users: Option<&UserStore>) -> Option<Session> {
        let mut sessions = self.sessions.lock();
        let session = sessions.get_mut(id)?;
        if session.expires <= Instant::now() {
            sessions.remove(id);
            return None;
        }
        if let Some(users) = users {
            match users.user(&session.principal.name) {
                Some(user) => session.principal.role = user.role,
                None => {
                    sessions.remove(id);
                    return None;
                }
            }
        }
        Some(session.clone())
    }

    /// Ends session `id` (log-out); ending an unknown one is fine.
    pub fn end(&self, id: &str) {
        self.sessions.lock().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::{AuthMethod, Role};

    #[test]
    fn authorization_values_are_read_as_every_front_end_reads_them() {
        assert_eq!(
            Credential::parse("Bearer fsq_a_b"),
            Ok(Credential::Bearer("fsq_a_b".into()))
        );
        assert_eq!(
            Credential::parse("basic YWxpY2U6czpl"),
            Ok(Credential::Basic {
                user: "alice".into(),
                password: "s:e".into()
            })
        );
        assert_eq!(
            Credential::parse("Basic !!!"),
            Err(CredentialError::MalformedBasic)
        );
        assert_eq!(
            Credential::parse("Basic YWxpY2U="),
            Err(CredentialError::MalformedBasic),
            "no colon"
        );
        assert_eq!(
            Credential::parse("Negotiate x").unwrap_err().reason(),
            "malformed_token"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Any `Authorization` value a client sends (issue 17 item 7) is a
        /// credential or a refusal, never a panic.
        #[test]
        fn any_authorization_value_is_a_credential_or_refused(
            value in "\\PC{0,120}",
            basic in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let _ = Credential::parse(&value);
            use base64::Engine;
            let encoded = base64::engine::general_purpose::STANDARD.encode(&basic);
            let _ = Credential::parse(&format!("Basic {encoded}"));
        }
    }

    #[test]
    fn sessions_expire_and_stay_bounded() {
        let store = SessionStore::new(Duration::from_secs(3600), 2);
        let alice = Principal::new("alice", Role::Reader, AuthMethod::Password);
        let (first, csrf) = store.start(alice.clone()).unwrap();
        assert_eq!(store.get(&first, None).unwrap().csrf, csrf);
        store.start(alice.clone()).unwrap();
        store.start(alice.clone()).unwrap();
        assert!(store.get(&first, None).is_none(), "the oldest went first");
        let (id, _) = store.start(alice.clone()).unwrap();
        store.end(&id);
        assert!(store.get(&id, None).is_none());
        let short = SessionStore::new(Duration::ZERO, 2);
        let (id, _) = short.start(alice).unwrap();
        assert!(short.get(&id, None).is_none());
    }
}
