//! Alert definitions: TOML files in a watched directory, plus the routes
//! file (`routes.toml`) naming where notifications go.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::routes::RouteConfig;
use crate::{AlertError, Result};

/// The file in the alerts directory that configures routes, not an alert.
pub const ROUTES_FILE: &str = "routes.toml";

/// The route every alert may name; it needs no configuration.
pub const CONSOLE_ROUTE: &str = "console";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One alert as its file states it, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertDefinition {
    pub name: String,
    pub sql: String,
    /// How often the SQL runs.
    pub every: Duration,
    /// Iterations in a row an instance must be present before it fires.
    pub fire_after: u32,
    /// How long an active instance must be absent before it clears.
    pub clear_after: Duration,
    pub severity: Severity,
    pub routes: Vec<String>,
    pub description: String,
    pub procedure: String,
    /// Also notify the routes when the alert's tables have no (or too
    /// little) data, instead of only marking its instances stale.
    pub notify_nodata: bool,
    /// Overrides the service's completeness threshold for this alert.
    pub min_completeness: Option<f64>,
    /// The file it came from.
    pub source: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    name: String,
    sql: String,
    every: Option<String>,
    fire_after: Option<u32>,
    clear_after: Option<String>,
    severity: Option<Severity>,
    #[serde(alias = "route")]
    routes: Option<Vec<String>>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    procedure: String,
    #[serde(default)]
    nodata: bool,
    min_completeness: Option<f64>,
}

/// Accepts `250ms`, `30s`, `2m`, `1h`, `0`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; use e.g. 500ms, 30s, 2m, 1h"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" | "sec" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`; use ms, s, m or h"
            ));
        }
    };
    if !(seconds >= 0.0 && seconds.is_finite()) {
        return Err(format!("`{text}` must be zero or a positive duration"));
    }
    // More seconds than a Duration holds panicked in `from_secs_f64`.
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

impl AlertDefinition {
    /// Parses one definition file's text; `known_routes` are the routes
    /// configured besides the console.
    pub fn parse(text: &str, source: &Path, known_routes: &BTreeSet<String>) -> Result<Self> {
        let invalid = |reason: String| AlertError::Definition {
            path: source.to_path_buf(),
            reason,
        };
        let raw: RawDefinition = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if raw.name.trim().is_empty() {
            return Err(invalid("`name` is empty".into()));
        }
        if raw.sql.trim().is_empty() {
            return Err(invalid("`sql` is empty".into()));
        }
        let every = match raw.every.as_deref() {
            Some(text) => parse_duration(text).map_err(|e| invalid(format!("`every`: {e}")))?,
            None => Duration::from_secs(60),
        };
        if every < Duration::from_millis(100) {
            return Err(invalid("`every` must be at least 100ms".into()));
        }
        let clear_after = match raw.clear_after.as_deref() {
            Some(text) => {
                parse_duration(text).map_err(|e| invalid(format!("`clear_after`: {e}")))?
            }
            None => Duration::ZERO,
        };
        let fire_after = raw.fire_after.unwrap_or(1);
        if fire_after == 0 {
            return Err(invalid(
                "`fire_after` counts iterations and must be at least 1".into(),
            ));
        }
        let routes = raw
            .routes
            .unwrap_or_else(|| vec![CONSOLE_ROUTE.to_string()]);
        for route in &routes {
            if route != CONSOLE_ROUTE && !known_routes.contains(route) {
                let mut known: Vec<&str> = known_routes.iter().map(String::as_str).collect();
                known.insert(0, CONSOLE_ROUTE);
                return Err(invalid(format!(
                    "route `{route}` is not configured in {ROUTES_FILE}; known routes: {}",
                    known.join(", ")
                )));
            }
        }
        if let Some(m) = raw.min_completeness
            && !(0.0..=1.0).contains(&m)
        {
            return Err(invalid(
                "`min_completeness` is a fraction between 0 and 1".into(),
            ));
        }
        Ok(AlertDefinition {
            name: raw.name.trim().to_string(),
            sql: raw.sql.trim().trim_end_matches(';').trim().to_string(),
            every,
            fire_after,
            clear_after,
            severity: raw.severity.unwrap_or(Severity::Warning),
            routes,
            description: raw.description.trim().to_string(),
            procedure: raw.procedure.trim().to_string(),
            notify_nodata: raw.nodata,
            min_completeness: raw.min_completeness,
            source: source.to_path_buf(),
        })
    }

    /// Reads and parses one file.
    pub fn load(path: &Path, known_routes: &BTreeSet<String>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| AlertError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, known_routes)
    }
}

/// A file that could not be used, as `alert_errors` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DefinitionError {
    pub file: String,
    /// The alert that keeps running in its previous version, if any.
    pub alert: Option<String>,
    pub error: String,
    pub since_ms: i64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    route: BTreeMap<String, RouteConfig>,
}

/// The directory's definitions as of the last scan: good files are used,
/// a bad file keeps the last good version of its alert running.
#[derive(Debug, Default)]
pub struct DefinitionSet {
    dir: PathBuf,
    /// Last text seen per file, to parse only what changed.
    seen: BTreeMap<PathBuf, String>,
    /// Last good definition per file.
    good: BTreeMap<PathBuf, AlertDefinition>,
    errors: BTreeMap<PathBuf, DefinitionError>,
    routes: BTreeMap<String, RouteConfig>,
    routes_text: Option<String>,
}

impl DefinitionSet {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DefinitionSet {
            dir: dir.into(),
            ..Default::default()
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the directory; returns true when anything changed.
    pub fn scan(&mut self, now_ms: i64) -> bool {
        let mut changed = false;
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect(),
            Err(e) => {
                let key = self.dir.clone();
                let error = format!("cannot read the alerts directory: {e}");
                if self.errors.get(&key).map(|x| &x.error) != Some(&error) {
                    tracing::warn!(dir = %self.dir.display(), error, "alerts directory unreadable; keeping the alerts loaded before");
                    self.errors.insert(
                        key.clone(),
                        DefinitionError {
                            file: key.display().to_string(),
                            alert: None,
                            error,
                            since_ms: now_ms,
                        },
                    );
                    changed = true;
                }
                return changed;
            }
        };
        files.sort();
        if self.errors.remove(&self.dir).is_some() {
            changed = true;
        }

        // Routes first: definitions are checked against them.
        let routes_path = self.dir.join(ROUTES_FILE);
        let routes_text = std::fs::read_to_string(&routes_path).ok();
        if routes_text != self.routes_text {
            changed = true;
            match routes_text
                .as_deref()
                .map(toml::from_str::<RoutesFile>)
                .unwrap_or_else(|| Ok(RoutesFile::default()))
            {
                Ok(parsed) => {
                    self.routes = parsed.route;
                    self.errors.remove(&routes_path);
                }
                Err(e) => {
                    tracing::warn!(file = %routes_path.display(), error = %e, "bad routes file; keeping the previous routes");
                    self.errors.insert(
                        routes_path.clone(),
                        DefinitionError {
                            file: routes_path.display().to_string(),
                            alert: None,
                            error: e.to_string(),
                            since_ms: now_ms,
                        },
                    );
                }
            }
            self.routes_text = routes_text;
            // Every definition is re-checked against the new routes.
            self.seen.clear();
        }
        let known_routes: BTreeSet<String> = self.routes.keys().cloned().collect();

        let present: BTreeSet<PathBuf> = files
            .iter()
            .filter(|p| p.file_name().is_some_and(|n| n != ROUTES_FILE))
            .cloned()
            .collect();
        let gone: Vec<PathBuf> = self
            .seen
            .keys()
            .chain(self.good.keys())
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            changed |= self.good.remove(&path).is_some();
            self.seen.remove(&path);
            self.errors.remove(&path);
        }
        for path in &present {
            let Ok(text) = std::fs::read_to_string(path) else {
                continue; // vanished between listing and reading
            };
            if self.seen.get(path) == Some(&text) {
                continue;
            }
            changed = true;
            let parsed = AlertDefinition::parse(&text, path, &known_routes).and_then(|def| {
                let taken = self
                    .good
                    .iter()
                    .find(|(p, d)| *p != path && d.name == def.name);
                match taken {
                    Some((other, _)) => Err(AlertError::Definition {
                        path: path.clone(),
                        reason: format!(
                            "alert `{}` is already defined in {}",
                            def.name,
                            other.display()
                        ),
                    }),
                    None => Ok(def),
                }
            });
            match parsed {
                Ok(def) => {
                    tracing::info!(alert = %def.name, file = %path.display(), "alert definition loaded");
                    self.good.insert(path.clone(), def);
                    self.errors.remove(path);
                }
                Err(e) => {
                    let alert = self.good.get(path).map(|d| d.name.clone());
                    tracing::warn!(file = %path.display(), error = %e, keeps_running = ?alert, "bad alert definition; the previous version keeps running");
                    self.errors.insert(
                        path.clone(),
                        DefinitionError {
                            file: path.display().to_string(),
                            alert,
                            error: e.to_string(),
                            since_ms: now_ms,
                        },
                    );
                }
            }
            self.seen.insert(path.clone(), text);
        }
        changed
    }

    /// The definitions in force, by name.
    pub fn definitions(&self) -> BTreeMap<String, AlertDefinition> {
        self.good
            .values()
            .map(|d| (d.name.clone(), d.clone()))
            .collect()
    }

    pub fn errors(&self) -> Vec<DefinitionError> {
        self.errors.values().cloned().collect()
    }

    pub fn routes(&self) -> &BTreeMap<String, RouteConfig> {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_durations() {
        let def = AlertDefinition::parse(
            "name = 'disk'\nsql = 'SELECT 1 x_key;'\n",
            Path::new("disk.toml"),
            &BTreeSet::new(),
        )
        .unwrap();
        assert_eq!(def.every, Duration::from_secs(60));
        assert_eq!(def.fire_after, 1);
        assert_eq!(def.clear_after, Duration::ZERO);
        assert_eq!(def.routes, vec!["console"]);
        assert_eq!(def.sql, "SELECT 1 x_key");
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn unknown_route_and_fields_are_refused() {
        let err = AlertDefinition::parse(
            "name = 'a'\nsql = 'SELECT 1'\nroutes = ['pager']\n",
            Path::new("a.toml"),
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("route `pager`"), "{err}");
        let err = AlertDefinition::parse(
            "name = 'a'\nsql = 'SELECT 1'\nfire_afterr = 3\n",
            Path::new("a.toml"),
            &BTreeSet::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("fire_afterr"), "{err}");
    }

    #[test]
    fn bad_file_keeps_previous_version_and_delete_removes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cpu.toml");
        std::fs::write(
            &file,
            "name = 'cpu'\nsql = 'SELECT 1 a_key'\nfire_after = 15\n",
        )
        .unwrap();
        let mut set = DefinitionSet::new(dir.path());
        assert!(set.scan(1));
        assert_eq!(set.definitions()["cpu"].fire_after, 15);
        assert!(!set.scan(2), "nothing changed");

        std::fs::write(&file, "name = 'cpu'\nsql = \n").unwrap();
        assert!(set.scan(3));
        assert_eq!(set.definitions()["cpu"].fire_after, 15, "old version kept");
        let errors = set.errors();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].alert.as_deref(), Some("cpu"));

        std::fs::write(
            &file,
            "name = 'cpu'\nsql = 'SELECT 2 a_key'\nfire_after = 3\n",
        )
        .unwrap();
        set.scan(4);
        assert_eq!(set.definitions()["cpu"].fire_after, 3);
        assert!(set.errors().is_empty());

        std::fs::remove_file(&file).unwrap();
        assert!(set.scan(5));
        assert!(set.definitions().is_empty());
    }

    #[test]
    fn duplicate_names_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "name = 'x'\nsql = 'SELECT 1'\n").unwrap();
        std::fs::write(dir.path().join("b.toml"), "name = 'x'\nsql = 'SELECT 2'\n").unwrap();
        let mut set = DefinitionSet::new(dir.path());
        set.scan(1);
        assert_eq!(set.definitions().len(), 1);
        assert_eq!(set.definitions()["x"].sql, "SELECT 1");
        assert!(set.errors()[0].error.contains("already defined"));
    }
}
