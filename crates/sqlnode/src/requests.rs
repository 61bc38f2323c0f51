use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Tables the SQL node's queries named, each dropped after it has gone
/// unused for `idle_expiry`: the one place idle expiry is decided.
#[derive(Debug)]
pub(crate) struct QueryRequests {
    last_used: HashMap<String, Instant>,
    prewarm: BTreeSet<String>,
    idle_expiry: Duration,
}

impl QueryRequests {
    pub(crate) fn new(prewarm: BTreeSet<String>, idle_expiry: Duration) -> Self {
        QueryRequests {
            last_used: HashMap::new(),
            prewarm,
            idle_expiry,
        }
    }

    /// A changed prewarm list (a re-read topology).
    pub(crate) fn set_prewarm(&mut self, prewarm: BTreeSet<String>) {
        self.prewarm = prewarm;
    }

    /// Marks `tables` used now; true if any was not requested before.
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

    #[test]
    fn tables_expire_when_idle_but_prewarm_stays() {
        let t0 = Instant::now();
        let mut r = QueryRequests::new(["sys".to_string()].into(), Duration::from_secs(60));
        assert!(r.touch(&["processes".to_string()], t0));
        assert!(!r.touch(&["processes".to_string()], t0 + Duration::from_secs(30)));
        assert!(
            r.current(t0 + Duration::from_secs(80))
                .contains("processes")
        );
        let later = r.current(t0 + Duration::from_secs(100));
        assert_eq!(later, ["sys".to_string()].into());
    }
}
