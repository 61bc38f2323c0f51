//! The tokens file: bearer tokens `fsq_<id>_<secret>`, of which only the
//! id and a SHA-256 of the secret are stored.
//!
//! ```toml
//! [tokens.3f9a0c1d2e4b5a69]
//! role = "reader"
//! name = "grafana"            # optional, shown in the audit log
//! scope = ["run_sql"]         # optional: only these of the role's actions
//! created = 1767225600        # Unix seconds
//! expires = 1769817600        # Unix seconds; absent: never
//! sha256 = "<hex of the secret's SHA-256>"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::{AuthError, ParseError, StoreError};
use crate::file::{self, WatchHandle, Watched};
use crate::role::{Action, AuthMethod, Principal, Role};

const WHAT: &str = "tokens";
const PREFIX: &str = "fsq_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// One token as stored (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Vec<Action>>,
    pub created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    pub sha256: String,
}

impl TokenRecord {
    fn principal(&self, id: &str) -> Principal {
        let mut p = Principal::new(
            self.name.clone().unwrap_or_else(|| format!("token:{id}")),
            self.role,
            AuthMethod::Token,
        );
        p.scope = self.scope.clone();
        p
    }
}

/// The tokens file as text on disk, for the `fleetsql tokens` commands.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    #[serde(default)]
    tokens: BTreeMap<String, TokenRecord>,
}

/// What `fleetsql tokens create` asks for.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub role: Role,
    pub name: Option<String>,
    pub scope: Option<Vec<Action>>,
    /// `None`: the token never expires.
    pub expires_in: Option<Duration>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `30d`, `12h`, `90m`, `45s`, `2w`; `never` is `None`.
pub fn parse_duration(text: &str) -> Result<Option<Duration>, ParseError> {
    let bad = || ParseError::Duration(text.to_string());
    if text == "never" {
        return Ok(None);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let total = number
        .checked_mul(seconds)
        .filter(|t| *t > 0)
        .ok_or_else(bad)?;
    Ok(Some(Duration::from_secs(total)))
}

fn invalid(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        path: path.to_path_buf(),
        what: WHAT,
        message: message.into(),
    }
}

fn secret_hash(secret: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref());
    out
}

/// A parsed token record: the hash decoded once.
#[derive(Debug, Clone)]
struct Token {
    record: TokenRecord,
    hash: [u8; 32],
}

impl TokensFile {
    /// The file at `path`, or an empty one when it does not exist yet.
    pub fn load_or_default(path: &Path) -> Result<TokensFile, StoreError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: TokensFile =
                    toml::from_str(&text).map_err(|e| invalid(path, e.message()))?;
                file.parse(path)?;
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokensFile::default()),
            Err(source) => Err(StoreError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn parse(&self, path: &Path) -> Result<HashMap<String, Token>, StoreError> {
        self.tokens
            .iter()
            .map(|(id, record)| {
                if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(invalid(path, format!("token id `{id}` is not hexadecimal")));
                }
                let hash = hex::decode(&record.sha256)
                    .ok()
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .ok_or_else(|| {
                        invalid(path, format!("token `{id}`: sha256 is not 64 hex digits"))
                    })?;
                Ok((
                    id.to_ascii_lowercase(),
                    Token {
                        record: record.clone(),
                        hash,
                    },
                ))
            })
            .collect()
    }

    /// Adds a token; returns its id and the token string, which is shown
    /// once and never stored.
    pub fn create(&mut self, new: NewToken) -> Result<(String, String), StoreError> {
        let random = SystemRandom::new();
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        random.fill(&mut id).map_err(|_| StoreError::Random)?;
        random.fill(&mut secret).map_err(|_| StoreError::Random)?;
        let (id, secret) = (hex::encode(id), hex::encode(secret));
        let created = unix_now();
        let record = TokenRecord {
            role: new.role,
            name: new.name,
            scope: new.scope,
            created,
            expires: new.expires_in.map(|d| created.saturating_add(d.as_secs())),
            sha256: hex::encode(secret_hash(&secret)),
        };
        self.tokens.insert(id.clone(), record);
        let token = format!("{PREFIX}{id}_{secret}");
        Ok((id, token))
    }

    /// Removes a token; `false` when there was none with that id.
    pub fn revoke(&mut self, id: &str) -> bool {
        self.tokens.remove(&id.to_ascii_lowercase()).is_some()
    }

    pub fn list(&self) -> Vec<(String, TokenRecord)> {
        self.tokens
            .iter()
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect()
    }

    /// Writes the file with mode 0600, atomically.
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let text = toml::to_string(self).map_err(|e| StoreError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        file::write_private(path, &text)
    }
}

fn parse_tokens(path: &Path, text: &str) -> Result<HashMap<String, Token>, StoreError> {
    let file: TokensFile = toml::from_str(text).map_err(|e| invalid(path, e.message()))?;
    file.parse(path)
}

/// The tokens a server accepts, re-read from its file when it changes.
pub struct TokenStore {
    tokens: Watched<HashMap<String, Token>>,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStore")
            .field("path", &self.tokens.path())
            .finish_non_exhaustive()
    }
}

impl TokenStore {
    pub fn open(path: &Path) -> Result<TokenStore, StoreError> {
        Ok(TokenStore {
            tokens: Watched::open(path, parse_tokens)?,
        })
    }

    pub fn path(&self) -> &Path {
        self.tokens.path()
    }

    /// The principal of a bearer token (no `Bearer ` prefix). One SHA-256;
    /// cheap enough for every request.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// [`TokenStore::verify`] at a given time (Unix seconds).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Principal, AuthError> {
        let (id, secret) = token
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .filter(|(id, secret)| {
                !id.is_empty()
                    && id.len() <= 2 * ID_BYTES
                    && id.chars().all(|c| c.is_ascii_hexdigit())
                    && !secret.is_empty()
            })
            .ok_or(AuthError::MalformedToken)?;
        let id = id.to_ascii_lowercase();
        let tokens = self.tokens.current();
        let unknown = || AuthError::UnknownToken(id.clone());
        let stored = tokens.get(&id).ok_or_else(unknown)?;
        if !bool::from(secret_hash(secret).ct_eq(&stored.hash)) {
            return Err(unknown());
        }
        if stored.record.expires.is_some_and(|e| e <= now) {
            return Err(AuthError::ExpiredToken(id));
        }
        Ok(stored.record.principal(&id))
    }

    pub fn reload(&self) -> Result<bool, StoreError> {
        self.tokens.reload()
    }

    pub fn watch(self: &Arc<Self>, every: Duration) -> WatchHandle {
        let store = Arc::clone(self);
        file::watch(WHAT, self.path().to_path_buf(), every, move || {
            store.reload()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn new(role: Role, expires_in: Option<Duration>) -> NewToken {
        NewToken {
            role,
            name: None,
            scope: None,
            expires_in,
        }
    }

    #[test]
    fn a_created_token_verifies_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let mut file = TokensFile::load_or_default(&path).unwrap();
        let (id, token) = file
            .create(new(Role::Operator, Some(Duration::from_secs(3600))))
            .unwrap();
        let (_, forever) = file.create(new(Role::Reader, None)).unwrap();
        file.save(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let secret = token.rsplit('_').next().unwrap();
        assert!(!text.contains(secret), "the secret is never stored");

        let store = TokenStore::open(&path).unwrap();
        let now = unix_now();
        let p = store.verify_at(&token, now).unwrap();
        assert_eq!(
            (p.role, p.how, p.name.clone()),
            (Role::Operator, AuthMethod::Token, format!("token:{id}"))
        );
        assert_eq!(
            store.verify_at(&token, now + 3599).map(|p| p.role),
            Ok(Role::Operator)
        );
        assert_eq!(
            store.verify_at(&token, now + 3601),
            Err(AuthError::ExpiredToken(id.clone()))
        );
        assert!(store.verify_at(&forever, now + 10 * 365 * 86_400).is_ok());
    }

    #[test]
    fn unknown_malformed_and_revoked_tokens_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let mut file = TokensFile::default();
        let (id, token) = file.create(new(Role::Reader, None)).unwrap();
        file.save(&path).unwrap();
        let store = TokenStore::open(&path).unwrap();
        for bad in [
            "",
            "fsq_",
            "fsq__abc",
            "Bearer fsq_x",
            "fsq_zz_abc",
            &token.replace("fsq_", "fsk_"),
        ] {
            assert_eq!(store.verify(bad), Err(AuthError::MalformedToken), "{bad}");
        }
        let wrong_secret = format!("{}0", &token[..token.len() - 1]);
        let wrong_secret = if wrong_secret == token {
            format!("{}1", &token[..token.len() - 1])
        } else {
            wrong_secret
        };
        assert_eq!(
            store.verify(&wrong_secret),
            Err(AuthError::UnknownToken(id.clone()))
        );
        assert_eq!(
            store.verify("fsq_0123456789abcdef_00"),
            Err(AuthError::UnknownToken("0123456789abcdef".into()))
        );

        assert!(file.revoke(&id));
        file.save(&path).unwrap();
        assert!(store.reload().unwrap());
        assert_eq!(store.verify(&token), Err(AuthError::UnknownToken(id)));
    }

    #[test]
    fn a_scoped_token_carries_its_scope_and_name() {
        let mut file = TokensFile::default();
        let (_, token) = file
            .create(NewToken {
                role: Role::Operator,
                name: Some("grafana".into()),
                scope: Some(vec![Action::RunSql]),
                expires_in: None,
            })
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        file.save(&path).unwrap();
        let p = TokenStore::open(&path).unwrap().verify(&token).unwrap();
        assert_eq!(p.name, "grafana");
        assert!(p.allows(Action::RunSql));
        assert!(!p.allows(Action::AckAlert));
    }

    #[test]
    fn bad_token_files_keep_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let mut file = TokensFile::default();
        let (_, token) = file.create(new(Role::Reader, None)).unwrap();
        file.save(&path).unwrap();
        let store = TokenStore::open(&path).unwrap();
        for bad in [
            "[tokens.abc]\nrole = \"reader\"\ncreated = 1\nsha256 = \"xyz\"\n",
            "[tokens.xyz]\nrole = \"reader\"\ncreated = 1\nsha256 = \"00\"\n",
            "[tokens.abc]\nrole = \"reader\"\ncreated = 1\nsecret = \"plain\"\n",
            "[tokens.abc]\nrole = \"reader\"\nscope = [\"fly\"]\ncreated = 1\nsha256 = \"00\"\n",
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = store.reload().unwrap_err();
            assert!(
                err.to_string().contains("is not a valid tokens file"),
                "{err}"
            );
            assert!(store.verify(&token).is_ok());
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30d"),
            Ok(Some(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!(
            parse_duration("12h"),
            Ok(Some(Duration::from_secs(12 * 3600)))
        );
        assert_eq!(parse_duration("never"), Ok(None));
        for bad in ["", "30", "d", "0d", "3x", "-1d", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    static VALID_TOKENS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut file = TokensFile::default();
        file.create(new(Role::Operator, Some(Duration::from_secs(3600))))
            .unwrap();
        file.create(new(Role::Reader, None)).unwrap();
        toml::to_string(&file).unwrap()
    });

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// A hand-edited or damaged tokens file (issue 17 item 7) loads or is
        /// refused with an error, never a panic.
        #[test]
        fn mutated_tokens_files_load_or_are_refused(
            at in proptest::prelude::any::<usize>(),
            insert in "[\\[\\]{}=\"'.,#a-z0-9\n ]{0,8}",
            delete in 0..6usize,
            random in "\\PC{0,200}",
        ) {
            let path = Path::new("tokens.toml");
            let _ = parse_tokens(path, &random);
            let chars: Vec<char> = VALID_TOKENS.chars().collect();
            let at = at % chars.len();
            let end = (at + delete).min(chars.len());
            let text: String = chars[..at]
                .iter()
                .copied()
                .chain(insert.chars())
                .chain(chars[end..].iter().copied())
                .collect();
            let _ = parse_tokens(path, &text);
        }
    }
}
