//! Which TLA a SQL node reads from (seed section 4): the one that sees the
//! most clusters, plus a configured locality bonus, kept until it dies or
//! another sees clearly more.

use serde::Serialize;

/// What the node last learned about one of its sources.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub locality_bonus: i64,
    /// Answered the last probe or fetch.
    pub alive: bool,
    /// Has answered at least once since the node started.
    pub probed: bool,
    pub generation_id: u64,
    pub made_at_ms: i64,
    pub clusters_seen: u64,
    pub machines_seen: u64,
    pub last_error: Option<String>,
    /// The source the node currently reads from.
    pub chosen: bool,
}

impl SourceStatus {
    pub fn score(&self) -> i64 {
        self.clusters_seen as i64 + self.locality_bonus
    }
}

/// The source to read from next, given the one read now.
///
/// Before any probe has answered, sources are tried by locality bonus
/// (then configuration order). Afterwards a dead current source is left for
/// the best live one, and a live one only for a source whose score is at
/// least `margin` higher, so two TLAs that see the same fleet do not make
/// the node flap between them.
pub(crate) fn choose(sources: &[SourceStatus], current: usize, margin: i64) -> usize {
    let best_alive = sources
        .iter()
        .enumerate()
        .filter(|(_, s)| s.alive)
        .max_by_key(|(i, s)| (s.score(), std::cmp::Reverse(*i)))
        .map(|(i, _)| i);
    let Some(cur) = sources.get(current) else {
        return best_alive.unwrap_or(0);
    };
    match best_alive {
        None if !cur.probed || cur.alive => current,
        // Nothing is known alive: walk the list, bonus first, so the node
        // keeps trying every source rather than one dead one.
        None => next_untried(sources, current),
        Some(best) if !cur.alive => best,
        Some(best) if best != current && sources[best].score() >= cur.score() + margin => best,
        Some(_) => current,
    }
}

fn next_untried(sources: &[SourceStatus], current: usize) -> usize {
    (1..=sources.len())
        .map(|k| (current + k) % sources.len())
        .find(|&i| !sources[i].probed || sources[i].alive)
        .unwrap_or((current + 1) % sources.len().max(1))
}

/// The first source to try: highest locality bonus, then configuration order.
pub(crate) fn initial(sources: &[SourceStatus]) -> usize {
    sources
        .iter()
        .enumerate()
        .max_by_key(|(i, s)| (s.locality_bonus, std::cmp::Reverse(*i)))
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(bonus: i64, alive: bool, clusters: u64) -> SourceStatus {
        SourceStatus {
            name: format!("tla-{bonus}-{clusters}"),
            locality_bonus: bonus,
            alive,
            probed: true,
            clusters_seen: clusters,
            ..Default::default()
        }
    }

    #[test]
    fn starts_with_the_local_tla() {
        let mut a = source(0, false, 0);
        let mut b = source(5, false, 0);
        a.probed = false;
        b.probed = false;
        assert_eq!(initial(&[a, b]), 1);
    }

    #[test]
    fn stays_unless_another_sees_clearly_more() {
        let sources = [source(0, true, 10), source(0, true, 10)];
        assert_eq!(choose(&sources, 1, 1), 1);
        let sources = [source(0, true, 12), source(0, true, 10)];
        assert_eq!(choose(&sources, 1, 1), 0);
        assert_eq!(choose(&sources, 1, 3), 1);
        // The bonus weighs against a few more clusters seen remotely.
        let sources = [source(0, true, 12), source(5, true, 10)];
        assert_eq!(choose(&sources, 1, 1), 1);
    }

    #[test]
    fn leaves_a_dead_source_for_the_best_live_one() {
        let sources = [source(0, true, 3), source(9, false, 10), source(0, true, 5)];
        assert_eq!(choose(&sources, 1, 1), 2);
    }

    #[test]
    fn with_nothing_alive_keeps_walking() {
        let sources = [source(0, false, 3), source(0, false, 3)];
        assert_eq!(choose(&sources, 0, 1), 1);
        assert_eq!(choose(&sources, 1, 1), 0);
    }
}
