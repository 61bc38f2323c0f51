//! `history` in a SQL node's (or TLA's) topology entry:
//!
//! ```toml
//! [sqlnodes.sql-eu.history]
//! tables = ["sys", "filesystem"]
//! keep = [
//!   { every = "generation", for = "2h" },   # every generation for 2 hours
//!   { every = "1m", for = "2d" },           # then one a minute for 2 days
//!   { every = "10m", for = "60d" },         # then one per 10 minutes for 60 days
//! ]
//! dir = "history"        # default <state_dir>/history; relative to the file
//! min_free_mib = 512     # stop writing when the disk has less free
//! ```
//!
//! A kept generation older than the last rung's `for` is deleted; within a
//! rung of `every = "1m"`, the oldest kept generation of each wall-clock
//! minute stays and the others go.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{HistoryError, Result};

/// Which tables to keep, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Tables whose generations are kept.
    pub tables: BTreeSet<String>,
    /// The retention ladder, finest first.
    #[serde(default = "default_keep")]
    pub keep: Vec<KeepRule>,
    /// Where the files go (default `<state_dir>/history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Writing stops while the disk has less than this free, so history
    /// never fills the disk the node's other state lives on.
    #[serde(default = "default_min_free_mib")]
    pub min_free_mib: u64,
}

fn default_min_free_mib() -> u64 {
    512
}

/// The ladder of the issue and the seed: every generation for 2 hours, one
/// a minute for 2 days, one per 10 minutes for 60 days.
pub(crate) fn default_keep() -> Vec<KeepRule> {
    vec![
        KeepRule {
            every: Every::Generation,
            keep_for: Duration::from_secs(2 * 3600),
        },
        KeepRule {
            every: Every::Interval(Duration::from_secs(60)),
            keep_for: Duration::from_secs(2 * 86400),
        },
        KeepRule {
            every: Every::Interval(Duration::from_secs(600)),
            keep_for: Duration::from_secs(60 * 86400),
        },
    ]
}

impl HistoryConfig {
    /// `tables` with the default ladder.
    pub fn of_tables<I: IntoIterator<Item = S>, S: Into<String>>(tables: I) -> HistoryConfig {
        HistoryConfig {
            tables: tables.into_iter().map(Into::into).collect(),
            keep: default_keep(),
            dir: None,
            min_free_mib: default_min_free_mib(),
        }
    }

    /// Checks the settings; errors name the setting (`history.keep[1].every`).
    pub fn validate(&self) -> Result<()> {
        let invalid = |setting: String, reason: String| HistoryError::Config { setting, reason };
        if self.tables.is_empty() {
            return Err(invalid(
                "history.tables".into(),
                "names no table; list the tables to keep, e.g. tables = [\"sys\"], or leave out `history`".into(),
            ));
        }
        for table in &self.tables {
            if table.is_empty()
                || !table
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    "history.tables".into(),
                    format!(
                        "`{table}` is not a table name (letters, digits, `_` and `-`); it also names a directory"
                    ),
                ));
            }
        }
        if self.keep.is_empty() {
            return Err(invalid(
                "history.keep".into(),
                "is empty, so nothing would be kept; leave it out for the default (every generation for 2h, one a minute for 2d, one per 10 minutes for 60d)".into(),
            ));
        }
        let mut previous: Option<&KeepRule> = None;
        for (i, rule) in self.keep.iter().enumerate() {
            if rule.keep_for.is_zero() {
                return Err(invalid(
                    format!("history.keep[{i}].for"),
                    "must be a positive duration such as \"2h\"".into(),
                ));
            }
            if let Every::Interval(every) = rule.every {
                if every.as_millis() == 0 {
                    return Err(invalid(
                        format!("history.keep[{i}].every"),
                        "must be \"generation\" or a duration of at least 1ms".into(),
                    ));
                }
                if every > rule.keep_for {
                    return Err(invalid(
                        format!("history.keep[{i}].every"),
                        format!(
                            "{} is longer than its `for` ({}): it would keep at most one generation",
                            every_text(&rule.every),
                            duration_text(rule.keep_for)
                        ),
                    ));
                }
            }
            if let Some(prev) = previous {
                if rule.keep_for <= prev.keep_for {
                    return Err(invalid(
                        format!("history.keep[{i}].for"),
                        format!(
                            "{} is not longer than the rung before it ({}); list rungs finest first, each kept longer",
                            duration_text(rule.keep_for),
                            duration_text(prev.keep_for)
                        ),
                    ));
                }
                let coarser = match (prev.every, rule.every) {
                    (Every::Generation, _) => true,
                    (Every::Interval(_), Every::Generation) => false,
                    (Every::Interval(a), Every::Interval(b)) => {
                        b >= a && b.as_millis().is_multiple_of(a.as_millis().max(1))
                    }
                };
                if !coarser {
                    return Err(invalid(
                        format!("history.keep[{i}].every"),
                        format!(
                            "{} is not a multiple of the rung before it ({}); each rung keeps one generation per interval of the one before, so a generation kept there is kept here",
                            every_text(&rule.every),
                            every_text(&prev.every)
                        ),
                    ));
                }
            }
            previous = Some(rule);
        }
        Ok(())
    }

    /// The longest any generation is kept.
    pub fn longest(&self) -> Duration {
        self.keep
            .iter()
            .map(|r| r.keep_for)
            .max()
            .unwrap_or_default()
    }
}

/// One rung of the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepRule {
    pub every: Every,
    /// Generations younger than this (and older than the rung before)
    /// are thinned to `every`.
    #[serde(rename = "for", with = "duration_serde")]
    pub keep_for: Duration,
}

/// How densely a rung keeps generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    /// Every generation the node installs.
    Generation,
    /// The oldest generation of each wall-clock interval.
    Interval(Duration),
}

fn every_text(every: &Every) -> String {
    match every {
        Every::Generation => "\"generation\"".into(),
        Every::Interval(d) => format!("\"{}\"", duration_text(*d)),
    }
}

/// `2h`, `1m`, `90s`, `250ms`: the largest unit that divides it.
pub(crate) fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms > 0 && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl Serialize for Every {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Every::Generation => s.serialize_str("generation"),
            Every::Interval(d) => s.serialize_str(&duration_text(*d)),
        }
    }
}

impl<'de> Deserialize<'de> for Every {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Every, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().eq_ignore_ascii_case("generation") {
            return Ok(Every::Generation);
        }
        fleetsql_model::duration::parse_positive(&text)
            .map(Every::Interval)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "`every`: {e}; write \"generation\" or a duration such as \"1m\""
                ))
            })
    }
}

mod duration_serde {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::duration_text(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        fleetsql_model::duration::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<HistoryConfig, String> {
        let config: HistoryConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn the_ladder_reads_as_written_and_round_trips() {
        let config = parse(
            r#"
            tables = ["sys", "filesystem"]
            keep = [
              { every = "generation", for = "2h" },
              { every = "1m", for = "2d" },
              { every = "10m", for = "60d" },
            ]
            "#,
        )
        .unwrap();
        assert_eq!(config.keep, default_keep());
        assert_eq!(config.min_free_mib, 512);
        let again: HistoryConfig = toml::from_str(&toml::to_string(&config).unwrap()).unwrap();
        assert_eq!(again, config);
        // Left out, the ladder is the default one.
        assert_eq!(parse("tables = [\"sys\"]").unwrap().keep, default_keep());
    }

    #[test]
    fn errors_name_the_setting() {
        let cases = [
            ("tables = []", "`history.tables`"),
            ("tables = [\"../etc\"]", "`history.tables`"),
            ("tables = [\"sys\"]\nkeep = []", "`history.keep`"),
            (
                "tables = [\"sys\"]\nkeep = [{ every = \"1m\", for = \"0s\" }]",
                "`history.keep[0].for`",
            ),
            (
                "tables = [\"sys\"]\nkeep = [{ every = \"generation\", for = \"2h\" }, { every = \"1m\", for = \"1h\" }]",
                "`history.keep[1].for`",
            ),
            // Not a multiple of the rung before. (The test had 7m after 1m,
            // which is one: a 7-minute interval is seven whole minutes, so
            // the oldest of it is the oldest of one of its minutes, and the
            // ladder nests. Only "a multiple" is required, not "divides an
            // hour".)
            (
                "tables = [\"sys\"]\nkeep = [{ every = \"1m\", for = \"2h\" }, { every = \"90s\", for = \"1d\" }]",
                "`history.keep[1].every`",
            ),
            (
                "tables = [\"sys\"]\nkeep = [{ every = \"1m\", for = \"2h\" }, { every = \"generation\", for = \"1d\" }]",
                "`history.keep[1].every`",
            ),
            (
                "tables = [\"sys\"]\nkeep = [{ every = \"1d\", for = \"2h\" }]",
                "`history.keep[0].every`",
            ),
        ];
        for (text, setting) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(setting), "{text}: {error}");
        }
        let error =
            parse("tables = [\"sys\"]\nkeep = [{ every = \"often\", for = \"2h\" }]").unwrap_err();
        assert!(error.contains("every"), "{error}");
        let error = parse("tables = [\"sys\"]\nkep = []").unwrap_err();
        assert!(error.contains("kep"), "{error}");
    }
}
