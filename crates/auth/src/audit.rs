//! Who did what, from where, with what outcome: a bounded in-memory log
//! every front end records into, also written to the log
//! (`target: "fleetsql::audit"`).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::role::{Action, Principal, Role};
use crate::throttle::{LoginThrottle, ThrottleConfig, Throttled};

/// Refusal reasons that are a wrong guess at a password, so count towards
/// the address's failed log-ins. A client that sent nothing (psql asks for
/// the password only after its first attempt fails), a TLS failure or an
/// expired console session guesses nothing; tokens and session ids are 256
/// random bits, beyond guessing, so a dashboard behind the same address as
/// a guesser keeps working.
const GUESSES: [&str; 4] = [
    "bad_password",
    "bad_scram",
    "unsupported_mechanism",
    "malformed_basic",
];

/// Which front end a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrontEnd {
    Pg,
    Http,
    FlightSql,
    XmlRpc,
    Console,
}

impl FrontEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            FrontEnd::Pg => "pg",
            FrontEnd::Http => "http",
            FrontEnd::FlightSql => "flightsql",
            FrontEnd::XmlRpc => "xmlrpc",
            FrontEnd::Console => "console",
        }
    }
}

impl fmt::Display for FrontEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error(String),
}

/// One audited request.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub time: SystemTime,
    pub principal: String,
    /// `None` for a refused log-in (no role was established).
    pub role: Option<Role>,
    pub front_end: FrontEnd,
    pub peer: Option<SocketAddr>,
    pub action: Action,
    /// The SQL or EPL, cut to [`AuditConfig::max_text_bytes`].
    pub text: String,
    pub outcome: Outcome,
    pub duration: Duration,
    /// Rows sent to the client, where the front end counts them (a
    /// query's answer over pg or HTTP); `None` for other requests.
    pub rows: Option<u64>,
}

impl AuditEntry {
    /// An entry for `principal` at the current time; fill in the rest.
    pub fn new(principal: &Principal, front_end: FrontEnd, action: Action) -> AuditEntry {
        AuditEntry {
            time: SystemTime::now(),
            principal: principal.name.clone(),
            role: Some(principal.role),
            front_end,
            peer: None,
            action,
            text: String::new(),
            outcome: Outcome::Ok,
            duration: Duration::ZERO,
            rows: None,
        }
    }
}

/// Retention of the in-memory log. What falls out is still in the
/// process's log output.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub max_entries: usize,
    pub max_age: Duration,
    pub max_text_bytes: usize,
    /// Failed log-ins allowed per client address, over every front end.
    pub login_throttle: ThrottleConfig,
}

impl Default for AuditConfig {
    /// At thousands of queries a minute, 10,000 entries hold the last few
    /// minutes; at 2 KiB of text each, at most about 25 MB.
    fn default() -> AuditConfig {
        AuditConfig {
            max_entries: 10_000,
            max_age: Duration::from_secs(24 * 3600),
            max_text_bytes: 2048,
            login_throttle: ThrottleConfig::default(),
        }
    }
}

/// The log itself; share it as `Arc<AuditLog>` between front ends.
#[derive(Debug)]
pub struct AuditLog {
    config: AuditConfig,
    entries: Mutex<VecDeque<Arc<AuditEntry>>>,
    refusals: Mutex<BTreeMap<(FrontEnd, &'static str), u64>>,
    throttle: LoginThrottle,
}

impl Default for AuditLog {
    fn default() -> AuditLog {
        AuditLog::new(AuditConfig::default())
    }
}

/// `text` cut to at most `max` bytes at a character boundary, marked `…`.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl AuditLog {
    pub fn new(config: AuditConfig) -> AuditLog {
        AuditLog {
            throttle: LoginThrottle::new(config.login_throttle),
            config,
            entries: Mutex::new(VecDeque::new()),
            refusals: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn config(&self) -> &AuditConfig {
        &self.config
    }

    /// Records one request. The text is cut to the configured bound; the
    /// lock is held only to push and drop old entries.
    pub fn record(&self, mut entry: AuditEntry) {
        entry.text = truncate(entry.text, self.config.max_text_bytes);
        let (outcome, error) = match &entry.outcome {
            Outcome::Ok => ("ok", ""),
            Outcome::Error(e) => ("error", e.as_str()),
        };
        tracing::info!(
            target: "fleetsql::audit",
            principal = %entry.principal,
            role = entry.role.map(Role::as_str).unwrap_or("-"),
            front_end = entry.front_end.as_str(),
            peer = %entry.peer.map(|p| p.to_string()).unwrap_or_default(),
            action = entry.action.as_str(),
            outcome,
            error,
            duration_ms = entry.duration.as_secs_f64() * 1000.0,
            rows = entry.rows,
            text = %entry.text,
        );
        let entry = Arc::new(entry);
        let mut entries = self.entries.lock();
        entries.push_back(entry);
        while entries.len() > self.config.max_entries {
            entries.pop_front();
        }
        Self::drop_old(&mut entries, self.config.max_age);
    }

    fn drop_old(entries: &mut VecDeque<Arc<AuditEntry>>, max_age: Duration) {
        let Some(oldest_kept) = SystemTime::now().checked_sub(max_age) else {
            return;
        };
        while entries.front().is_some_and(|e| e.time < oldest_kept) {
            entries.pop_front();
        }
    }

    /// Whether a client at `peer` may try a password now. A refusal is
    /// counted and recorded (reason `throttled`) and says how long to
    /// wait; the front end answers with [`AuthError::Throttled`]'s text.
    ///
    /// [`AuthError::Throttled`]: crate::AuthError::Throttled
    pub fn admit_login(
        &self,
        front_end: FrontEnd,
        peer: Option<SocketAddr>,
        user: &str,
    ) -> Result<(), crate::AuthError> {
        let Some(address) = peer.map(|p| p.ip()) else {
            return Ok(());
        };
        let Err(Throttled { retry_after }) = self.throttle.check(address, Instant::now()) else {
            return Ok(());
        };
        let refusal = crate::AuthError::Throttled {
            address,
            retry_after_secs: retry_after.as_secs().max(1),
        };
        self.refused(
            front_end,
            peer,
            user,
            refusal.reason(),
            &refusal.to_string(),
        );
        Err(refusal)
    }

    /// A refused log-in: counted by front end and reason (for `/metrics`)
    /// and recorded with the name the client gave. A wrong guess at a
    /// credential counts towards the address's failed log-ins
    /// ([`AuditLog::admit_login`]).
    pub fn refused(
        &self,
        front_end: FrontEnd,
        peer: Option<SocketAddr>,
        user: &str,
        reason: &'static str,
        message: &str,
    ) {
        if let Some(peer) = peer
            && GUESSES.contains(&reason)
        {
            self.throttle.failed(peer.ip(), Instant::now());
        }
        *self.refusals.lock().entry((front_end, reason)).or_default() += 1;
        self.record(AuditEntry {
            time: SystemTime::now(),
            principal: user.to_string(),
            role: None,
            front_end,
            peer,
            action: Action::Login,
            text: String::new(),
            outcome: Outcome::Error(message.to_string()),
            duration: Duration::ZERO,
            rows: None,
        });
    }

    /// A refused request of a known principal (a role that may not, a
    /// missing CSRF token): counted with the log-in refusals by front end
    /// and reason, and recorded as `entry` says.
    pub fn refused_request(&self, entry: AuditEntry, reason: &'static str) {
        *self
            .refusals
            .lock()
            .entry((entry.front_end, reason))
            .or_default() += 1;
        self.record(entry);
    }

    /// Refusals so far: (front end, reason, count), in a stable order.
    pub fn refusals(&self) -> Vec<(FrontEnd, &'static str, u64)> {
        self.refusals
            .lock()
            .iter()
            .map(|((f, r), n)| (*f, *r, *n))
            .collect()
    }

    /// The entries still kept, oldest first.
    pub fn entries(&self) -> Vec<Arc<AuditEntry>> {
        let mut entries = self.entries.lock();
        Self::drop_old(&mut entries, self.config.max_age);
        entries.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::role::AuthMethod;

    use super::*;

    fn entry(text: &str) -> AuditEntry {
        let p = Principal::new("alice", Role::Reader, AuthMethod::Password);
        let mut e = AuditEntry::new(&p, FrontEnd::Pg, Action::RunSql);
        e.text = text.to_string();
        e
    }

    #[test]
    fn the_log_keeps_the_newest_entries_and_cuts_long_texts() {
        let log = AuditLog::new(AuditConfig {
            max_entries: 3,
            max_age: Duration::from_secs(3600),
            max_text_bytes: 5,
            ..AuditConfig::default()
        });
        for i in 0..5 {
            log.record(entry(&format!("q{i}")));
        }
        let texts: Vec<_> = log.entries().iter().map(|e| e.text.clone()).collect();
        assert_eq!(texts, ["q2", "q3", "q4"]);
        log.record(entry("SELECT é FROM t"));
        assert_eq!(log.entries().last().unwrap().text, "SELEC…");
        log.record(entry("abcdé"));
        assert_eq!(log.entries().last().unwrap().text, "abcd…");
    }

    #[test]
    fn old_entries_fall_out() {
        let log = AuditLog::new(AuditConfig {
            max_age: Duration::from_secs(60),
            ..AuditConfig::default()
        });
        let mut old = entry("old");
        old.time = SystemTime::now() - Duration::from_secs(120);
        log.record(old);
        log.record(entry("new"));
        let texts: Vec<_> = log.entries().iter().map(|e| e.text.clone()).collect();
        assert_eq!(texts, ["new"]);
    }

    #[test]
    fn wrong_guesses_on_any_front_end_throttle_the_address() {
        let log = AuditLog::new(AuditConfig {
            login_throttle: ThrottleConfig {
                burst: 2,
                ..ThrottleConfig::default()
            },
            ..AuditConfig::default()
        });
        let guesser: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        let elsewhere: SocketAddr = "10.1.2.4:5000".parse().unwrap();
        // Not guesses: no password sent yet, a TLS failure.
        for reason in ["no_password", "tls_handshake"] {
            log.refused(FrontEnd::Pg, Some(guesser), "eve", reason, "");
        }
        assert!(log.admit_login(FrontEnd::Pg, Some(guesser), "eve").is_ok());
        log.refused(FrontEnd::Pg, Some(guesser), "eve", "bad_password", "");
        log.refused(FrontEnd::Http, Some(guesser), "-", "unknown_token", "");
        assert!(log.admit_login(FrontEnd::Pg, Some(guesser), "eve").is_ok());
        log.refused(FrontEnd::Http, Some(guesser), "-", "malformed_basic", "");
        let refused = log
            .admit_login(FrontEnd::FlightSql, Some(guesser), "eve")
            .unwrap_err();
        assert_eq!(refused.reason(), "throttled");
        assert!(refused.to_string().contains("10.1.2.3"), "{refused}");
        assert!(
            log.admit_login(FrontEnd::Pg, Some(elsewhere), "eve")
                .is_ok()
        );
        assert!(
            log.refusals()
                .contains(&(FrontEnd::FlightSql, "throttled", 1))
        );
    }

    #[test]
    fn refusals_are_counted_by_front_end_and_reason() {
        let log = AuditLog::default();
        log.refused(
            FrontEnd::Pg,
            None,
            "eve",
            "bad_password",
            "password authentication failed",
        );
        log.refused(
            FrontEnd::Pg,
            None,
            "eve",
            "bad_password",
            "password authentication failed",
        );
        log.refused(FrontEnd::Http, None, "-", "expired_token", "token expired");
        assert_eq!(
            log.refusals(),
            vec![
                (FrontEnd::Pg, "bad_password", 2),
                (FrontEnd::Http, "expired_token", 1)
            ]
        );
        let last = log.entries().pop().unwrap();
        assert_eq!(
            (last.action, last.role, &last.outcome),
            (Action::Login, None, &Outcome::Error("token expired".into()))
        );
    }
}
