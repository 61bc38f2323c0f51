//! Report definitions: one TOML file per report in a reports directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ReportsError, Result};

/// One report: SQL run on a schedule, each run's rows kept for `retention`.
///
/// ```toml
/// title = "Hits per continent"
/// sql = "SELECT c.continent_name, SUM(l.hits) hits FROM ... GROUP BY c.continent_name"
/// every = "1m"
/// retention = "7d"
/// group_by = ["continent_name"]   # one line per value of these columns
/// values = ["hits"]               # the numbers drawn
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct ReportDefinition {
    /// From `name`, else the file name without `.toml`.
    pub name: String,
    pub title: String,
    pub sql: String,
    #[serde(rename = "every_ms", serialize_with = "as_millis")]
    pub every: Duration,
    #[serde(rename = "retention_ms", serialize_with = "as_millis")]
    pub retention: Duration,
    /// Columns whose values name a line; empty means every non-numeric column.
    pub group_by: Vec<String>,
    /// Columns drawn; empty means every numeric column not in `group_by`.
    pub values: Vec<String>,
    #[serde(skip)]
    pub file: PathBuf,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportFile {
    name: Option<String>,
    title: Option<String>,
    sql: String,
    every: Option<String>,
    retention: Option<String>,
    #[serde(default)]
    group_by: Vec<String>,
    #[serde(default)]
    values: Vec<String>,
}

pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Accepts `500ms`, `30s`, `5m`, `2h`, `7d`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    fleetsql_model::duration::parse_positive(text)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl ReportDefinition {
    /// Parses one definition; `file` names it in errors and gives the default name.
    pub fn parse(file: &Path, text: &str) -> Result<ReportDefinition> {
        let bad = |message: String| ReportsError::Definition {
            file: file.to_path_buf(),
            message,
        };
        let parsed: ReportFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let name = match parsed.name {
            Some(name) => name,
            None => file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string(),
        };
        if !valid_name(&name) {
            return Err(bad(format!(
                "report name `{name}` may hold only letters, digits, `_` and `-`"
            )));
        }
        if parsed.sql.trim().is_empty() {
            return Err(bad("`sql` is empty".to_string()));
        }
        let duration = |field: &str, value: Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(v) => parse_duration(&v).map_err(|e| bad(format!("`{field}`: {e}"))),
        };
        Ok(ReportDefinition {
            title: parsed.title.unwrap_or_else(|| name.clone()),
            name,
            sql: parsed.sql,
            every: duration("every", parsed.every, DEFAULT_EVERY)?,
            retention: duration("retention", parsed.retention, DEFAULT_RETENTION)?,
            group_by: parsed.group_by,
            values: parsed.values,
            file: file.to_path_buf(),
        })
    }

    /// Every `*.toml` file of `dir`, sorted by name.
    pub fn load_dir(dir: &Path) -> Result<Vec<ReportDefinition>> {
        let entries = std::fs::read_dir(dir).map_err(|source| ReportsError::Directory {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort();
        let mut reports: Vec<ReportDefinition> = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|e| ReportsError::Definition {
                file: file.clone(),
                message: e.to_string(),
            })?;
            let report = ReportDefinition::parse(&file, &text)?;
            if let Some(first) = reports.iter().find(|r| r.name == report.name) {
                return Err(ReportsError::DuplicateName {
                    name: report.name,
                    first: first.file.clone(),
                    second: file,
                });
            }
            reports.push(report);
        }
        Ok(reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_names_from_file() {
        let r = ReportDefinition::parse(Path::new("dir/hits.toml"), "sql = 'SELECT 1'").unwrap();
        assert_eq!(r.name, "hits");
        assert_eq!(r.title, "hits");
        assert_eq!(r.every, DEFAULT_EVERY);
        assert_eq!(r.retention, DEFAULT_RETENTION);
        let r = ReportDefinition::parse(
            Path::new("x.toml"),
            "name = 'a'\nsql = 'SELECT 1'\nevery = '250ms'\nretention = '2d'",
        )
        .unwrap();
        assert_eq!(r.every, Duration::from_millis(250));
        assert_eq!(r.retention, Duration::from_secs(2 * 86400));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let e =
            ReportDefinition::parse(Path::new("x.toml"), "sql = 'SELECT 1'\nevery = '5 parsecs'")
                .unwrap_err()
                .to_string();
        assert!(e.contains("x.toml") && e.contains("every"), "{e}");
        let e = ReportDefinition::parse(Path::new("x.toml"), "sql = 'SELECT 1'\nevry = '5s'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("evry"), "{e}");
        let e = ReportDefinition::parse(Path::new("a b.toml"), "sql = 'SELECT 1'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("may hold only"), "{e}");
    }

    #[test]
    fn a_directory_with_two_reports_of_one_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "name = 'x'\nsql = 'SELECT 1'").unwrap();
        std::fs::write(dir.path().join("b.toml"), "name = 'x'\nsql = 'SELECT 2'").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a report").unwrap();
        let e = ReportDefinition::load_dir(dir.path()).unwrap_err();
        assert!(matches!(e, ReportsError::DuplicateName { .. }), "{e}");
        std::fs::remove_file(dir.path().join("b.toml")).unwrap();
        let reports = ReportDefinition::load_dir(dir.path()).unwrap();
        assert_eq!(reports.len(), 1);
    }
}
