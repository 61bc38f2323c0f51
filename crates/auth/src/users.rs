//! The users file: names, roles and SCRAM-SHA-256 verifiers.
//!
//! ```toml
//! [users.alice]
//! role = "reader"
//! scram = "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{AuthError, ParseError, StoreError};
use crate::file::{self, WatchHandle, Watched};
use crate::role::{AuthMethod, Principal, Role};
use crate::scram::ScramVerifier;

const WHAT: &str = "users";

/// One user as the server knows it.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub verifier: ScramVerifier,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserRecord {
    role: Role,
    scram: String,
}

/// The users file as text on disk, for the `fleetsql users` commands.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, UserRecord>,
}

pub(crate) fn check_name(name: &str) -> Result<(), ParseError> {
    let ok = (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ParseError::UserName(name.to_string()))
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        path: path.to_path_buf(),
        what: WHAT,
        message: message.into(),
    }
}

impl UsersFile {
    /// The file at `path`, or an empty one when it does not exist yet.
    pub fn load_or_default(path: &Path) -> Result<UsersFile, StoreError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: UsersFile =
                    toml::from_str(&text).map_err(|e| invalid(path, e.message()))?;
                file.parse(path)?;
                Ok(file)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UsersFile::default()),
            Err(source) => Err(StoreError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn parse(&self, path: &Path) -> Result<HashMap<String, User>, StoreError> {
        self.users
            .iter()
            .map(|(name, record)| {
                check_name(name).map_err(|e| invalid(path, e.to_string()))?;
                let verifier = record
                    .scram
                    .parse()
                    .map_err(|e: ParseError| invalid(path, format!("user `{name}`: {e}")))?;
                Ok((
                    name.clone(),
                    User {
                        name: name.clone(),
                        role: record.role,
                        verifier,
                    },
                ))
            })
            .collect()
    }

    /// Adds `name` or replaces its role and password; `true` when it
    /// replaced an existing user.
    pub fn set(
        &mut self,
        name: &str,
        role: Role,
        verifier: &ScramVerifier,
    ) -> Result<bool, ParseError> {
        check_name(name)?;
        Ok(self
            .users
            .insert(
                name.to_string(),
                UserRecord {
                    role,
                    scram: verifier.to_string(),
                },
            )
            .is_some())
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.users.remove(name).is_some()
    }

    pub fn list(&self) -> Vec<(String, Role)> {
        self.users
            .iter()
            .map(|(n, r)| (n.clone(), r.role))
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

fn parse_users(path: &Path, text: &str) -> Result<HashMap<String, User>, StoreError> {
    let file: UsersFile = toml::from_str(text).map_err(|e| invalid(path, e.message()))?;
    file.parse(path)
}

/// The users a server accepts, re-read from its file when it changes.
pub struct UserStore {
    users: Watched<HashMap<String, User>>,
    /// Salts the mock exchange of unknown users; new per process.
    mock_secret: [u8; 32],
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore")
            .field("path", &self.users.path())
            .finish_non_exhaustive()
    }
}

impl UserStore {
    /// Reads `path`; a file that does not exist or does not parse is an
    /// error (a server must not start with authentication it cannot do).
    pub fn open(path: &Path) -> Result<UserStore, StoreError> {
        let mut mock_secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut mock_secret)
            .map_err(|_| StoreError::Random)?;
        Ok(UserStore {
            users: Watched::open(path, parse_users)?,
            mock_secret,
        })
    }

    pub fn path(&self) -> &Path {
        self.users.path()
    }

    pub fn user(&self, name: &str) -> Option<User> {
        self.users.current().get(name).cloned()
    }

    /// The verifier a SCRAM exchange for `name` runs against: the user's,
    /// or for an unknown name a mock one no proof matches, so a client
    /// cannot tell unknown users from wrong passwords.
    pub fn verifier(&self, name: &str) -> (ScramVerifier, Option<Role>) {
        match self.user(name) {
            Some(user) => (user.verifier, Some(user.role)),
            None => (ScramVerifier::mock(name, &self.mock_secret), None),
        }
    }

    /// Checks a password (console log-in, HTTP basic). Costs one PBKDF2 of
    /// the verifier's iterations, unknown users included.
    pub fn verify_password(&self, name: &str, password: &str) -> Result<Principal, AuthError> {
        if password.is_empty() {
            return Err(AuthError::NoPassword(name.to_string()));
        }
        let (verifier, role) = self.verifier(name);
        match (verifier.verify_password(password), role) {
            (true, Some(role)) => Ok(Principal::new(name, role, AuthMethod::Password)),
            _ => Err(AuthError::BadPassword(name.to_string())),
        }
    }

    pub fn list(&self) -> Vec<(String, Role)> {
        let mut users: Vec<_> = self
            .users
            .current()
            .values()
            .map(|u| (u.name.clone(), u.role))
            .collect();
        users.sort();
        users
    }

    /// Re-reads the file now; `Ok(true)` when a changed version was
    /// applied, an error (and the previous users kept) when it does not
    /// read or parse.
    pub fn reload(&self) -> Result<bool, StoreError> {
        self.users.reload()
    }

    /// Re-reads the file every `every` on the current tokio runtime until
    /// the handle is dropped.
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

    fn write_users(dir: &Path, users: &[(&str, Role, &str)]) -> std::path::PathBuf {
        let path = dir.join("users.toml");
        let mut file = UsersFile::load_or_default(&path).unwrap();
        for (name, role, password) in users {
            let v = ScramVerifier::with_salt(password, name.as_bytes(), 4096);
            file.set(name, *role, &v).unwrap();
        }
        file.save(&path).unwrap();
        path
    }

    #[test]
    fn a_saved_file_is_private_and_checks_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_users(
            dir.path(),
            &[("alice", Role::Reader, "pw1"), ("bob", Role::Admin, "pw2")],
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("pw1") && text.contains("SCRAM-SHA-256$4096:"),
            "{text}"
        );
        let store = UserStore::open(&path).unwrap();
        let alice = store.verify_password("alice", "pw1").unwrap();
        assert_eq!(
            (alice.role, alice.how),
            (Role::Reader, AuthMethod::Password)
        );
        assert_eq!(
            store.verify_password("alice", "pw2"),
            Err(AuthError::BadPassword("alice".into()))
        );
        assert_eq!(
            store.verify_password("carol", "pw1"),
            Err(AuthError::BadPassword("carol".into()))
        );
        assert_eq!(
            store.verify_password("alice", ""),
            Err(AuthError::NoPassword("alice".into()))
        );
        assert_eq!(
            store.list(),
            vec![("alice".into(), Role::Reader), ("bob".into(), Role::Admin)]
        );
    }

    #[test]
    fn a_changed_file_is_applied_and_a_bad_one_keeps_the_old_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_users(dir.path(), &[("alice", Role::Reader, "pw1")]);
        let store = UserStore::open(&path).unwrap();
        assert!(!store.reload().unwrap());
        write_users(dir.path(), &[("bob", Role::Operator, "pw2")]);
        assert!(store.reload().unwrap());
        assert_eq!(
            store.verify_password("bob", "pw2").unwrap().role,
            Role::Operator
        );

        for bad in [
            "[users.eve]\nrole = \"root\"\nscram = \"x\"\n",
            "[users.eve]\nrole = \"reader\"\nscram = \"SCRAM-SHA-256$4096:AAAA\"\n",
            "[users.eve]\nrole = \"reader\"\npassword = \"plain\"\n",
            "[users.\"e ve\"]\nrole = \"reader\"\nscram = \"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\"\n",
            "not toml [",
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = store.reload().unwrap_err();
            assert!(
                err.to_string()
                    .contains("users.toml is not a valid users file"),
                "{err}"
            );
            assert_eq!(
                store.verify_password("bob", "pw2").unwrap().role,
                Role::Operator
            );
        }
        std::fs::remove_file(&path).unwrap();
        assert!(store.reload().is_err());
        assert!(store.verify_password("bob", "pw2").is_ok());
        assert!(UserStore::open(&path).is_err());
    }

    #[test]
    fn user_names_are_checked() {
        let mut file = UsersFile::default();
        let v = ScramVerifier::with_salt("x", b"salt", 4096);
        assert!(file.set("a b", Role::Reader, &v).is_err());
        assert!(file.set("", Role::Reader, &v).is_err());
        assert!(!file.set("ops-1@site.example", Role::Reader, &v).unwrap());
        assert!(file.set("ops-1@site.example", Role::Admin, &v).unwrap());
        assert!(file.remove("ops-1@site.example"));
        assert!(!file.remove("ops-1@site.example"));
    }

    #[tokio::test]
    async fn the_watch_task_applies_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_users(dir.path(), &[("alice", Role::Reader, "pw1")]);
        let store = Arc::new(UserStore::open(&path).unwrap());
        let _watch = store.watch(Duration::from_millis(10));
        write_users(dir.path(), &[("dave", Role::Reader, "pw3")]);
        // Polls the store's own state: the watch task is what changes it.
        tokio::time::timeout(Duration::from_secs(10), async {
            while store.user("dave").is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
    }

    static VALID_USERS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut file = UsersFile::default();
        for (name, role) in [("alice", Role::Admin), ("bob", Role::Reader)] {
            let v = ScramVerifier::with_salt("pw", name.as_bytes(), 4096);
            file.set(name, role, &v).unwrap();
        }
        toml::to_string(&file).unwrap()
    });

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// A hand-edited or damaged users file (issue 17 item 7) loads or is
        /// refused with an error, never a panic.
        #[test]
        fn mutated_users_files_load_or_are_refused(
            at in proptest::prelude::any::<usize>(),
            insert in "[\\[\\]{}=\"'.,#a-z0-9\n ]{0,8}",
            delete in 0..6usize,
            random in "\\PC{0,200}",
        ) {
            let path = Path::new("users.toml");
            let _ = parse_users(path, &random);
            let chars: Vec<char> = VALID_USERS.chars().collect();
            let at = at % chars.len();
            let end = (at + delete).min(chars.len());
            let text: String = chars[..at]
                .iter()
                .copied()
                .chain(insert.chars())
                .chain(chars[end..].iter().copied())
                .collect();
            let _ = parse_users(path, &text);
        }
    }
}
