use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use fleetsql_model::parse::{InputFormat, parse_rows};
use fleetsql_model::{Generation, Table, TableVisibility, now_ms, validate_table_name};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::{AggregatorError, Child, FetchRequest, Result};

/// Static tables a TLA adds to every generation (the seed's `region_data`,
/// `continent_data`): files named by an index, re-read when the index or a
/// file changes. A file that fails to load keeps its previous contents and
/// the error is logged, so a bad edit never empties a table.
#[derive(Debug)]
pub struct StaticTables {
    name: String,
    index: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    /// Modification times of the index and every file, as last loaded.
    stamps: BTreeMap<PathBuf, Option<SystemTime>>,
    generation: Arc<Generation>,
    last_error: Option<String>,
}

impl Default for Loaded {
    fn default() -> Self {
        Loaded {
            stamps: BTreeMap::new(),
            generation: Arc::new(Generation::empty("static")),
            last_error: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct IndexFile {
    #[serde(default, rename = "table")]
    tables: Vec<IndexEntry>,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    name: String,
    file: PathBuf,
}

impl StaticTables {
    /// Loads the index at `index` (TOML with `[[table]] name = .., file = ..`,
    /// files relative to the index). Fails only if the first load fails.
    pub fn open(index: impl Into<PathBuf>) -> Result<Self> {
        let tables = StaticTables {
            name: "static".to_string(),
            index: index.into(),
            state: Mutex::new(Loaded::default()),
        };
        tables.reload_if_changed()?;
        Ok(tables)
    }

    pub fn last_error(&self) -> Option<String> {
        self.state.lock().last_error.clone()
    }

    fn stamp(path: &Path) -> Option<SystemTime> {
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    }

    fn changed(&self) -> bool {
        let state = self.state.lock();
        state.stamps.is_empty()
            || state
                .stamps
                .iter()
                .any(|(path, stamp)| Self::stamp(path) != *stamp)
    }

    /// Re-reads everything when the index or any file changed.
    pub fn reload_if_changed(&self) -> Result<()> {
        if !self.changed() {
            return Ok(());
        }
        match self.load() {
            Ok((generation, stamps)) => {
                let mut state = self.state.lock();
                state.generation = Arc::new(generation);
                state.stamps = stamps;
                state.last_error = None;
                Ok(())
            }
            Err(e) => {
                let mut state = self.state.lock();
                tracing::error!(index = %self.index.display(), error = %e, "static tables not reloaded; keeping the previous ones");
                // Remember the stamps anyway, so a bad file is reported once
                // per change rather than on every tick.
                state.stamps = self.current_stamps();
                state.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn current_stamps(&self) -> BTreeMap<PathBuf, Option<SystemTime>> {
        let mut stamps = BTreeMap::new();
        stamps.insert(self.index.clone(), Self::stamp(&self.index));
        if let Ok(index) = self.read_index() {
            for entry in index.tables {
                let path = self.resolve(&entry.file);
                let stamp = Self::stamp(&path);
                stamps.insert(path, stamp);
            }
        }
        stamps
    }

    fn resolve(&self, file: &Path) -> PathBuf {
        match self.index.parent() {
            Some(dir) if file.is_relative() => dir.join(file),
            _ => file.to_path_buf(),
        }
    }

    fn read_index(&self) -> Result<IndexFile> {
        let fail = |reason: String| AggregatorError::StaticTables {
            path: self.index.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&self.index).map_err(|e| fail(e.to_string()))?;
        toml::from_str(&text).map_err(|e| fail(e.to_string()))
    }

    fn load(&self) -> Result<(Generation, BTreeMap<PathBuf, Option<SystemTime>>)> {
        let stamps = self.current_stamps();
        let index = self.read_index()?;
        let mut generation = Generation::empty(&self.name);
        generation.meta.made_at_ms = now_ms();
        for entry in index.tables {
            let path = self.resolve(&entry.file);
            let fail = |reason: String| AggregatorError::StaticTables {
                path: path.display().to_string(),
                reason,
            };
            validate_table_name(&entry.name).map_err(|e| fail(e.to_string()))?;
            let format = path
                .extension()
                .and_then(|e| e.to_str())
                .and_then(InputFormat::from_extension)
                .ok_or_else(|| fail("unknown extension; use .csv, .tsv or .jsonl".into()))?;
            let body = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
            let batch = parse_rows(format, &body).map_err(|e| fail(e.to_string()))?;
            let rows = batch.num_rows() as u64;
            let table = Table::new(&entry.name, batch.schema(), vec![batch])?;
            generation.meta.available.insert(entry.name.clone());
            generation.meta.visibility.tables.insert(
                entry.name.clone(),
                TableVisibility {
                    rows,
                    ..Default::default()
                },
            );
            generation.tables.insert(entry.name, Arc::new(table));
        }
        Ok((generation, stamps))
    }
}

#[async_trait]
impl Child for StaticTables {
    fn name(&self) -> &str {
        &self.name
    }

    async fn fetch(&self, request: &FetchRequest) -> Result<Arc<Generation>> {
        // A failed reload keeps serving the previous contents.
        let _ = self.reload_if_changed();
        let mut generation = self.state.lock().generation.as_ref().clone();
        // Static data never go stale: they are as fresh as the last check.
        generation.meta.made_at_ms = now_ms();
        generation.meta.id += 1;
        let wanted: BTreeSet<&String> = request.tables.iter().collect();
        generation.tables.retain(|name, _| wanted.contains(name));
        generation
            .meta
            .visibility
            .tables
            .retain(|name, _| wanted.contains(name));
        Ok(Arc::new(generation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loads_and_reloads_and_keeps_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("regions.csv"), "id,continent\n1,2\n").unwrap();
        std::fs::write(
            dir.path().join("index.toml"),
            "[[table]]\nname = \"region_data\"\nfile = \"regions.csv\"\n",
        )
        .unwrap();
        let st = StaticTables::open(dir.path().join("index.toml")).unwrap();
        let req = FetchRequest {
            tables: ["region_data".to_string()].into(),
            ..Default::default()
        };
        assert_eq!(
            st.fetch(&req)
                .await
                .unwrap()
                .table("region_data")
                .unwrap()
                .num_rows(),
            1
        );

        // A new file version is picked up (sleep-free: force a distinct mtime).
        let path = dir.path().join("regions.csv");
        std::fs::write(&path, "id,continent\n1,2\n3,4\n").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(
            st.fetch(&req)
                .await
                .unwrap()
                .table("region_data")
                .unwrap()
                .num_rows(),
            2
        );

        // A broken file keeps the old rows and reports the error.
        std::fs::write(&path, "").unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(
            st.fetch(&req)
                .await
                .unwrap()
                .table("region_data")
                .unwrap()
                .num_rows(),
            2
        );
        assert!(st.last_error().unwrap().contains("empty"));
    }
}
