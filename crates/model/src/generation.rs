use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Table;

/// How much of one cluster a generation covers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterVisibility {
    pub machines_expected: u64,
    pub machines_seen: u64,
    /// Oldest and newest `made_at` among the machine snapshots merged.
    pub oldest_data_ms: Option<i64>,
    pub newest_data_ms: Option<i64>,
    /// The child this cluster's rows arrived through at the last merge.
    pub via: String,
}

/// Per table: machines that sent rows, machines that answered with none,
/// rows in all, and parts left out for conflicting schemas. Machines that
/// did not answer at all are `machines_expected - with_rows - empty`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableVisibility {
    pub machines_with_rows: u64,
    pub machines_empty: u64,
    pub rows: u64,
    pub rejected_parts: u64,
}

/// One child as its parent saw it at this tier's last merge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildStatus {
    pub name: String,
    pub merged: bool,
    pub generation_id: Option<u64>,
    pub data_age_ms: Option<i64>,
    pub error: Option<String>,
}

/// What a generation covers: clusters, machines, tables and this tier's
/// children. Sums merge upwards unchanged, so a TLA knows per table how
/// many of 100k machines answered without seeing them one by one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Visibility {
    pub clusters: BTreeMap<String, ClusterVisibility>,
    pub tables: BTreeMap<String, TableVisibility>,
    pub children: Vec<ChildStatus>,
}

impl Visibility {
    /// Adds a merged child's coverage, crediting its clusters to `via`.
    pub fn absorb(&mut self, via: &str, child: &Visibility) {
        for (name, c) in &child.clusters {
            let into = self.clusters.entry(name.clone()).or_default();
            into.machines_expected += c.machines_expected;
            into.machines_seen += c.machines_seen;
            into.oldest_data_ms = min_opt(into.oldest_data_ms, c.oldest_data_ms);
            into.newest_data_ms = max_opt(into.newest_data_ms, c.newest_data_ms);
            into.via = via.to_string();
        }
        for (name, t) in &child.tables {
            let into = self.tables.entry(name.clone()).or_default();
            into.machines_with_rows += t.machines_with_rows;
            into.machines_empty += t.machines_empty;
            into.rows += t.rows;
            into.rejected_parts += t.rejected_parts;
        }
    }

    /// Counts a child that was expected but not merged (stale, failed or
    /// never heard from) using what it covered when it was last seen.
    pub fn absorb_unseen(&mut self, last_known: &Visibility) {
        for (name, c) in &last_known.clusters {
            let into = self.clusters.entry(name.clone()).or_default();
            into.machines_expected += c.machines_expected;
        }
    }

    pub fn clusters_expected(&self) -> u64 {
        self.clusters.len() as u64
    }

    pub fn clusters_seen(&self) -> u64 {
        self.clusters
            .values()
            .filter(|c| c.machines_seen > 0)
            .count() as u64
    }

    pub fn machines_expected(&self) -> u64 {
        self.clusters.values().map(|c| c.machines_expected).sum()
    }

    pub fn machines_seen(&self) -> u64 {
        self.clusters.values().map(|c| c.machines_seen).sum()
    }

    /// The oldest machine data anywhere in the generation.
    pub fn oldest_data_ms(&self) -> Option<i64> {
        self.clusters
            .values()
            .filter_map(|c| c.oldest_data_ms)
            .min()
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Everything about a generation except its rows: what travels in Flight
/// metadata and what `fleet_generation` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationMeta {
    pub producer: String,
    /// Monotonic per producer; 0 means "nothing yet".
    pub id: u64,
    pub made_at_ms: i64,
    pub visibility: Visibility,
    /// Tables some descendant publishes, collected or not: lets a SQL node
    /// tell "not requested yet" (wait for it) from "nobody publishes it".
    pub available: BTreeSet<String>,
    /// The aggregator set whose span this generation covers (its TLA's
    /// set); `None` for a tree without sets, which spans every cluster.
    /// Absent from older peers' headers, so it defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<String>,
    /// The serving node's clock when it handed this generation to a
    /// parent: the parent reads the difference to its own clock as the
    /// child's offset (skew plus transit) and restates `made_at_ms` and the
    /// data times on its own clock, so a child whose clock is wrong is
    /// neither dropped as stale nor makes its cluster look old. Absent from
    /// older peers and from generations not handed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_at_ms: Option<i64>,
}

/// An immutable snapshot: all tables one query reads come from one of these.
#[derive(Debug, Clone)]
pub struct Generation {
    pub meta: GenerationMeta,
    pub tables: BTreeMap<String, Arc<Table>>,
}

impl Generation {
    /// The generation a node serves before it has made any.
    pub fn empty(producer: &str) -> Self {
        Generation {
            meta: GenerationMeta {
                producer: producer.to_string(),
                id: 0,
                made_at_ms: 0,
                visibility: Visibility::default(),
                available: BTreeSet::new(),
                span: None,
                served_at_ms: None,
            },
            tables: BTreeMap::new(),
        }
    }

    pub fn id(&self) -> u64 {
        self.meta.id
    }

    pub fn table(&self, name: &str) -> Option<&Arc<Table>> {
        self.tables.get(name)
    }

    /// The same generation with only `wanted` tables (cheap: tables are
    /// shared), and only their visibility: a parent must not read another
    /// parent's table in the visibility as "collected, no rows for you"
    /// (a SQL node sharing its TLA with another would answer "not found"
    /// instead of waiting for the table it just asked for).
    pub fn restricted<'a>(&self, wanted: impl IntoIterator<Item = &'a String>) -> Generation {
        let mut tables = BTreeMap::new();
        let mut meta = GenerationMeta {
            visibility: Visibility {
                tables: BTreeMap::new(),
                ..self.meta.visibility.clone()
            },
            ..self.meta.clone()
        };
        for name in wanted {
            if let Some(table) = self.tables.get(name) {
                tables.insert(name.clone(), table.clone());
            }
            if let Some(stats) = self.meta.visibility.tables.get(name) {
                meta.visibility.tables.insert(name.clone(), stats.clone());
            }
        }
        Generation { meta, tables }
    }

    /// This generation restated on a receiver's clock: `received_at_ms`
    /// is the receiver's time when the answer arrived, compared with
    /// `served_at_ms`; unchanged (shared) without it.
    pub fn on_receiver_clock(self: Arc<Self>, received_at_ms: i64) -> Arc<Generation> {
        let Some(served_at) = self.meta.served_at_ms else {
            return self;
        };
        let shift = received_at_ms - served_at;
        if shift == 0 {
            return self;
        }
        let mut restated = (*self).clone();
        let meta = &mut restated.meta;
        // made_at_ms 0 means "nothing yet", not a time.
        if meta.id != 0 {
            meta.made_at_ms += shift;
        }
        meta.served_at_ms = Some(received_at_ms);
        for cluster in meta.visibility.clusters.values_mut() {
            cluster.oldest_data_ms = cluster.oldest_data_ms.map(|t| t + shift);
            cluster.newest_data_ms = cluster.newest_data_ms.map(|t| t + shift);
        }
        Arc::new(restated)
    }

    pub fn memory_size(&self) -> usize {
        self.tables.values().map(|t| t.memory_size()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_keeps_only_the_wanted_tables_and_their_visibility() {
        let mut generation = Generation::empty("tla");
        for name in ["sys", "processes"] {
            generation
                .meta
                .visibility
                .tables
                .insert(name.to_string(), TableVisibility::default());
        }
        generation.meta.available = ["sys".to_string(), "processes".to_string()].into();
        let wanted = ["processes".to_string(), "nowhere".to_string()];
        let restricted = generation.restricted(&wanted);
        assert_eq!(
            restricted.meta.visibility.tables.keys().collect::<Vec<_>>(),
            ["processes"]
        );
        assert_eq!(restricted.meta.available, generation.meta.available);
    }

    #[test]
    fn a_generation_is_restated_on_the_receivers_clock() {
        let mut generation = Generation::empty("agent");
        generation.meta.id = 7;
        generation.meta.made_at_ms = 1_000;
        generation.meta.served_at_ms = Some(1_500);
        generation.meta.visibility.clusters.insert(
            "c1".into(),
            ClusterVisibility {
                oldest_data_ms: Some(900),
                newest_data_ms: Some(1_000),
                ..Default::default()
            },
        );
        // The receiver's clock reads 601_500 when the answer arrives: the
        // child is ten minutes behind.
        let restated = Arc::new(generation).on_receiver_clock(601_500);
        assert_eq!(restated.meta.made_at_ms, 601_000);
        let c1 = &restated.meta.visibility.clusters["c1"];
        assert_eq!(
            (c1.oldest_data_ms, c1.newest_data_ms),
            (Some(600_900), Some(601_000))
        );
        // Without the serving time nothing is restated.
        let mut old_peer = Generation::empty("agent");
        old_peer.meta.made_at_ms = 1_000;
        let same = Arc::new(old_peer).on_receiver_clock(601_500);
        assert_eq!(same.meta.made_at_ms, 1_000);
    }

    #[test]
    fn absorb_sums_and_unseen_counts_expected_only() {
        let mut child = Visibility::default();
        child.clusters.insert(
            "c1".into(),
            ClusterVisibility {
                machines_expected: 1,
                machines_seen: 1,
                oldest_data_ms: Some(10),
                newest_data_ms: Some(10),
                via: String::new(),
            },
        );
        let mut v = Visibility::default();
        v.absorb("a1", &child);
        v.absorb("a2", &child);
        v.absorb_unseen(&child);
        let c = &v.clusters["c1"];
        assert_eq!((c.machines_expected, c.machines_seen), (3, 2));
        assert_eq!(v.clusters_seen(), 1);
        assert_eq!(c.via, "a2");
    }
}
