use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::SqlError;

/// The window [`RequestLimits::max_new_tables_per_client_minute`] counts in.
const CLIENT_WINDOW: Duration = Duration::from_secs(60);

/// Bounds on what clients' queries may add to the tables the node requests
/// from its TLA: every requested name travels down the whole tree on every
/// fetch until it expires, so names nobody publishes are the cost a client
/// can impose on every tier. Names the current generation knows (published
/// tables) are free for clients; only unknown ones count per client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Tables the node requests at once (prewarm not counted).
    pub max_requested_tables: usize,
    /// New table names no machine publishes one client (one IP address)
    /// may name in a minute.
    pub max_new_tables_per_client_minute: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_requested_tables: 4096,
            max_new_tables_per_client_minute: 64,
        }
    }
}

/// Tables the SQL node's queries named, each dropped after it has gone
/// unused for `idle_expiry`: the one place idle expiry is decided.
#[derive(Debug)]
pub(crate) struct QueryRequests {
    last_used: HashMap<String, Instant>,
    prewarm: BTreeSet<String>,
    idle_expiry: Duration,
    limits: RequestLimits,
    /// Per client, when each unknown name it added was admitted.
    clients: HashMap<IpAddr, VecDeque<Instant>>,
}

impl QueryRequests {
    pub(crate) fn new(
        prewarm: BTreeSet<String>,
        idle_expiry: Duration,
        limits: RequestLimits,
    ) -> Self {
        QueryRequests {
            last_used: HashMap::new(),
            prewarm,
            idle_expiry,
            limits,
            clients: HashMap::new(),
        }
    }

    /// A changed prewarm list (a re-read topology).
    pub(crate) fn set_prewarm(&mut self, prewarm: BTreeSet<String>) {
        self.prewarm = prewarm;
    }

    /// Marks `tables` used now; true if any was not requested before.
    /// For the node's own readers (persistent queries, hooks), whose
    /// tables come from registrations bounded elsewhere.
    pub(crate) fn touch<'a>(
        &mut self,
        tables: impl IntoIterator<Item = &'a String>,
        now: Instant,
    ) -> bool {
        let current = self.current(now);
        let mut new = false;
        for table in tables {
            new |= !current.contains(table);
            self.last_used.insert(table.clone(), now);
        }
        new
    }

    /// [`QueryRequests::touch`] for a client's query, within the limits:
    /// `known` says whether the current generation has a table. A name
    /// longer than any table can have is refused without being requested.
    pub(crate) fn admit(
        &mut self,
        tables: &BTreeSet<String>,
        client: Option<IpAddr>,
        known: impl Fn(&str) -> bool,
        now: Instant,
    ) -> Result<bool, SqlError> {
        if let Some(long) = tables
            .iter()
            .find(|t| t.len() > fleetsql_model::MAX_NAME_LEN)
        {
            return Err(SqlError::Limit {
                what: format!(
                    "table name `{}...` is {} bytes long; no table can have it",
                    long.chars().take(32).collect::<String>(),
                    long.len()
                ),
                max: fleetsql_model::MAX_NAME_LEN,
                setting: "table names (fixed, as in Postgres)",
                sqlstate: "42622",
            });
        }
        let current = self.current(now);
        let new: Vec<&String> = tables.iter().filter(|t| !current.contains(*t)).collect();
        if new.is_empty() {
            for table in tables {
                self.last_used.insert(table.clone(), now);
            }
            return Ok(false);
        }
        let unknown = new.iter().filter(|t| !known(t)).count();
        self.clients.retain(|_, admitted| {
            while admitted
                .front()
                .is_some_and(|at| now.duration_since(*at) >= CLIENT_WINDOW)
            {
                admitted.pop_front();
            }
            !admitted.is_empty()
        });
        if let Some(client) = client
            && unknown > 0
        {
            let used = self.clients.get(&client).map_or(0, VecDeque::len);
            let max = self.limits.max_new_tables_per_client_minute;
            if used + unknown > max {
                return Err(SqlError::Limit {
                    what: format!(
                        "{client} named {} tables no machine publishes in the last minute",
                        used + unknown
                    ),
                    max,
                    setting: "max_new_tables_per_client_minute",
                    sqlstate: "53400",
                });
            }
        }
        let max = self.limits.max_requested_tables;
        if self.last_used.len() + new.len() > max {
            // Names nobody publishes are the first to go: they cost every
            // tier and answer nothing.
            self.last_used.retain(|table, _| known(table));
        }
        if self.last_used.len() + new.len() > max {
            return Err(SqlError::Limit {
                what: format!(
                    "the node already requests {} tables from its TLA",
                    self.last_used.len()
                ),
                max,
                setting: "max_requested_tables",
                sqlstate: "53400",
            });
        }
        if let Some(client) = client
            && unknown > 0
        {
            let admitted = self.clients.entry(client).or_default();
            admitted.extend(std::iter::repeat_n(now, unknown));
        }
        for table in tables {
            self.last_used.insert(table.clone(), now);
        }
        Ok(true)
    }

    pub(crate) fn current(&mut self, now: Instant) -> BTreeSet<String> {
        let expiry = self.idle_expiry;
        self.last_used
            .retain(|_, used| now.duration_since(*used) <= expiry);
        let mut all = self.prewarm.clone();
        all.extend(self.last_used.keys().cloned());
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> BTreeSet<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn limits(total: usize, per_client: usize) -> RequestLimits {
        RequestLimits {
            max_requested_tables: total,
            max_new_tables_per_client_minute: per_client,
        }
    }

    #[test]
    fn tables_expire_when_idle_but_prewarm_stays() {
        let t0 = Instant::now();
        let mut r = QueryRequests::new(
            ["sys".to_string()].into(),
            Duration::from_secs(60),
            RequestLimits::default(),
        );
        assert!(r.touch(&["processes".to_string()], t0));
        assert!(!r.touch(&["processes".to_string()], t0 + Duration::from_secs(30)));
        assert!(
            r.current(t0 + Duration::from_secs(80))
                .contains("processes")
        );
        let later = r.current(t0 + Duration::from_secs(100));
        assert_eq!(later, ["sys".to_string()].into());
    }

    #[test]
    fn limit_a_client_names_at_most_its_share_of_unknown_tables_a_minute() {
        let t0 = Instant::now();
        let mut r = QueryRequests::new(BTreeSet::new(), Duration::from_secs(600), limits(100, 4));
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let unknown = |_: &str| false;
        assert!(r.admit(&names("x", 4), a, unknown, t0).unwrap());
        // Names already requested cost nothing, published ones neither.
        assert!(!r.admit(&names("x", 4), a, unknown, t0).unwrap());
        assert!(r.admit(&names("pub", 10), a, |_| true, t0).unwrap());
        let over = r.admit(&names("y", 1), a, unknown, t0).unwrap_err();
        assert_eq!(over.sqlstate(), "53400");
        assert!(
            over.to_string()
                .contains("max_new_tables_per_client_minute"),
            "{over}"
        );
        // Another client has its own share; a minute later so does `a`.
        assert!(r.admit(&names("y", 4), b, unknown, t0).unwrap());
        let later = t0 + CLIENT_WINDOW;
        assert!(r.admit(&names("z", 4), a, unknown, later).unwrap());
    }

    #[test]
    fn limit_total_requested_tables_drops_unknown_names_first() {
        let t0 = Instant::now();
        let mut r = QueryRequests::new(BTreeSet::new(), Duration::from_secs(600), limits(8, 100));
        let published = |t: &str| t.starts_with("pub");
        assert!(r.admit(&names("junk", 6), None, published, t0).unwrap());
        // Full of names nobody publishes: they make room.
        assert!(r.admit(&names("pub", 6), None, published, t0).unwrap());
        assert_eq!(r.current(t0), names("pub", 6));
        let over = r.admit(&names("more", 3), None, published, t0).unwrap_err();
        assert_eq!(over.sqlstate(), "53400");
        assert!(over.to_string().contains("max_requested_tables"), "{over}");
        assert_eq!(r.current(t0), names("pub", 6));
    }

    #[test]
    fn limit_a_name_longer_than_any_table_is_refused_unrequested() {
        let t0 = Instant::now();
        let mut r = QueryRequests::new(
            BTreeSet::new(),
            Duration::from_secs(600),
            RequestLimits::default(),
        );
        let long: BTreeSet<String> = ["t".repeat(64)].into();
        let error = r.admit(&long, None, |_| false, t0).unwrap_err();
        assert_eq!(error.sqlstate(), "42622");
        assert!(r.current(t0).is_empty());
        let fits: BTreeSet<String> = ["t".repeat(63)].into();
        assert!(r.admit(&fits, None, |_| false, t0).unwrap());
    }
}
