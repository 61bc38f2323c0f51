use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The tables a node collects: what each parent currently asks for, plus a
/// configured prewarm list.
///
/// A parent states its whole set on every fetch; the set is dropped when the
/// parent stops asking for `parent_grace`. Idle expiry of single tables is
/// decided once, at the top (the SQL node), so it does not compound down
/// the tiers.
#[derive(Debug)]
pub struct TableRequests {
    by_parent: HashMap<String, (Instant, BTreeSet<String>)>,
    prewarm: BTreeSet<String>,
    parent_grace: Duration,
}

impl TableRequests {
    pub fn new(prewarm: BTreeSet<String>, parent_grace: Duration) -> Self {
        TableRequests {
            by_parent: HashMap::new(),
            prewarm,
            parent_grace,
        }
    }

    /// A changed prewarm list (topology re-read): a table dropped from it
    /// stays only while some parent still asks for it.
    pub fn set_prewarm(&mut self, prewarm: BTreeSet<String>) {
        self.prewarm = prewarm;
    }

    /// Records a parent's set; returns the tables nobody asked for before.
    pub fn note(&mut self, parent: &str, tables: &BTreeSet<String>, now: Instant) -> Vec<String> {
        let before = self.current(now);
        self.by_parent
            .insert(parent.to_string(), (now, tables.clone()));
        tables
            .iter()
            .filter(|t| !before.contains(*t))
            .cloned()
            .collect()
    }

    /// Everything requested now; forgets parents that stopped asking.
    pub fn current(&mut self, now: Instant) -> BTreeSet<String> {
        let grace = self.parent_grace;
        self.by_parent
            .retain(|_, (asked_at, _)| now.duration_since(*asked_at) <= grace);
        let mut all = self.prewarm.clone();
        for (_, tables) in self.by_parent.values() {
            all.extend(tables.iter().cloned());
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parents_are_kept_apart_and_expire() {
        let t0 = Instant::now();
        let mut r = TableRequests::new(set(&["sys"]), Duration::from_secs(10));
        assert_eq!(r.note("p1", &set(&["processes"]), t0), vec!["processes"]);
        assert!(r.note("p2", &set(&["processes", "sys"]), t0).is_empty());
        // p1 drops processes, p2 still wants it.
        r.note("p1", &set(&[]), t0 + Duration::from_secs(5));
        assert!(r.current(t0 + Duration::from_secs(6)).contains("processes"));
        // p2 stops asking: only the prewarm list is left.
        let later = t0 + Duration::from_secs(12);
        assert_eq!(r.current(later), set(&["sys"]));
    }
}
