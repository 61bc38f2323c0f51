use fleetsql_model::{Generation, now_ms};
use serde::Serialize;

/// How complete and how old an answer is; sent with every answer (HTTP
/// body, Postgres NOTICE, CLI footer).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationInfo {
    pub id: u64,
    pub producer: String,
    /// RFC 3339, UTC.
    pub made_at: String,
    pub made_at_ms: i64,
    /// Time since the generation was made.
    pub age_ms: i64,
    /// Time since the oldest machine data in it were collected.
    pub data_age_ms: Option<i64>,
    pub clusters_seen: u64,
    pub clusters_expected: u64,
    pub machines_seen: u64,
    pub machines_expected: u64,
    /// The aggregator set whose span the counts cover; `None` when the
    /// tree has no sets (the whole fleet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<String>,
    /// What the query read of kept history (`history.<table>`, time
    /// travel): which generations, over which time span.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<crate::HistoryRead>,
    /// The SQL node that ran the query when this one forwarded it to the
    /// subset of its set serving the query's tables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub computed_by: Option<String>,
}

impl GenerationInfo {
    pub fn of(generation: &Generation) -> Self {
        let now = now_ms();
        let v = &generation.meta.visibility;
        let made_at = chrono::DateTime::from_timestamp_millis(generation.meta.made_at_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default();
        GenerationInfo {
            id: generation.meta.id,
            producer: generation.meta.producer.clone(),
            made_at,
            made_at_ms: generation.meta.made_at_ms,
            age_ms: now - generation.meta.made_at_ms,
            data_age_ms: v.oldest_data_ms().map(|t| now - t),
            clusters_seen: v.clusters_seen(),
            clusters_expected: v.clusters_expected(),
            machines_seen: v.machines_seen(),
            machines_expected: v.machines_expected(),
            span: generation.meta.span.clone(),
            history: Vec::new(),
            computed_by: None,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.clusters_seen == self.clusters_expected && self.machines_seen == self.machines_expected
    }

    /// One line for a Postgres NOTICE or a CLI footer.
    pub fn summary(&self) -> String {
        let mut line = self.live_summary();
        for read in &self.history {
            line.push_str("; history ");
            line.push_str(&read.summary());
        }
        line
    }

    fn live_summary(&self) -> String {
        format!(
            "generation {} from {} made {:.1} s ago: {}/{} clusters{}, {}/{} machines{}",
            self.id,
            self.producer,
            self.age_ms as f64 / 1000.0,
            self.clusters_seen,
            self.clusters_expected,
            self.span
                .as_deref()
                .map(|span| format!(" of span {span}"))
                .unwrap_or_default(),
            self.machines_seen,
            self.machines_expected,
            if self.is_complete() {
                ""
            } else {
                " (INCOMPLETE)"
            }
        ) + &self
            .computed_by
            .as_deref()
            .map(|node| format!("; computed by SQL node {node}"))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_span_it_covers() {
        let mut generation = Generation::empty("t1");
        generation.meta.id = 3;
        let whole = GenerationInfo::of(&generation).summary();
        assert!(whole.contains(": 0/0 clusters, 0/0 machines"), "{whole}");
        generation.meta.span = Some("eu".into());
        let info = GenerationInfo::of(&generation);
        assert!(
            info.summary().contains("0/0 clusters of span eu,"),
            "{}",
            info.summary()
        );
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["span"], "eu");
    }
}
