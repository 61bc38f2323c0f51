//! The file-drop directory: `<table>.csv|.tsv|.jsonl` files, each its own
//! publisher (`file:<filename>`). Scripts write a temporary file and rename
//! it into place; a changed file replaces its rows, a deleted one withdraws
//! them, and a bad one is logged while its previous rows stay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use fleetsql_model::now_ms;
use fleetsql_model::parse::{InputFormat, ParseLimits, parse_rows_limited};
use parking_lot::Mutex;

use crate::store::Store;

/// Extensions the drop directory reads; others (editor backups, temporary
/// files before their rename) are ignored.
const EXTENSIONS: [&str; 4] = ["csv", "tsv", "jsonl", "ndjson"];

/// What identifies one version of a file: a rename brings a new inode even
/// when size and modification time happen to match.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

#[derive(Debug)]
pub(crate) struct DropDir {
    dir: PathBuf,
    store: Arc<Store>,
    max_bytes: usize,
    limits: ParseLimits,
    /// Files as last read, by file name, with the table they feed.
    seen: Mutex<BTreeMap<String, (Stamp, String)>>,
    dir_error_logged: Mutex<bool>,
}

pub(crate) fn publisher_of(file_name: &str) -> String {
    format!("file:{file_name}")
}

impl DropDir {
    pub(crate) fn new(
        dir: PathBuf,
        store: Arc<Store>,
        max_bytes: usize,
        limits: ParseLimits,
    ) -> Self {
        DropDir {
            dir,
            store,
            max_bytes,
            limits,
            seen: Mutex::new(BTreeMap::new()),
            dir_error_logged: Mutex::new(false),
        }
    }

    /// Reads new and changed files and withdraws deleted ones. Blocking.
    /// Holding `seen` for the whole scan keeps the poller and a tick from
    /// reading the same file twice.
    pub(crate) fn scan(&self) {
        let mut seen = self.seen.lock();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => {
                *self.dir_error_logged.lock() = false;
                entries
            }
            Err(e) => {
                let mut logged = self.dir_error_logged.lock();
                if !*logged {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "drop directory unreadable; its tables keep their rows");
                    *logged = true;
                }
                return;
            }
        };
        let mut present = BTreeSet::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(file_name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let Some((table, format)) = table_and_format(&file_name) else {
                continue;
            };
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            present.insert(file_name.clone());
            let stamp = stamp_of(&meta);
            if seen.get(&file_name).is_some_and(|(s, _)| *s == stamp) {
                continue;
            }
            seen.insert(file_name.clone(), (stamp, table.clone()));
            self.load(&path, &file_name, &table, format, meta.len());
        }
        let gone: Vec<String> = seen
            .keys()
            .filter(|name| !present.contains(*name))
            .cloned()
            .collect();
        for file_name in gone {
            if let Some((_, table)) = seen.remove(&file_name) {
                let rows = self.store.withdraw(&table, &publisher_of(&file_name));
                tracing::info!(file = %file_name, table, rows, "dropped file removed; rows withdrawn");
            }
        }
    }

    fn load(&self, path: &Path, file_name: &str, table: &str, format: InputFormat, len: u64) {
        let warn = |reason: String| {
            tracing::warn!(file = %path.display(), table, error = %reason, "dropped file not loaded; previous rows kept");
        };
        if len > self.max_bytes as u64 {
            return warn(format!("larger than the limit of {} bytes", self.max_bytes));
        }
        let body = match std::fs::read(path) {
            Ok(body) => body,
            Err(e) => return warn(e.to_string()),
        };
        let batch = match parse_rows_limited(format, &body, &self.limits) {
            Ok(batch) => batch,
            Err(e) => return warn(e.to_string()),
        };
        match self
            .store
            .publish(table, &publisher_of(file_name), &batch, now_ms())
        {
            Ok(rows) => tracing::debug!(file = %file_name, table, rows, "dropped file loaded"),
            Err(e) => warn(e.to_string()),
        }
    }
}

/// `disks.csv` → (`disks`, CSV). Hidden files are skipped: they are the
/// temporary halves of write-then-rename.
fn table_and_format(file_name: &str) -> Option<(String, InputFormat)> {
    if file_name.starts_with('.') {
        return None;
    }
    let (stem, ext) = file_name.rsplit_once('.')?;
    if !EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) {
        return None;
    }
    Some((stem.to_string(), InputFormat::from_extension(ext)?))
}

#[cfg(unix)]
fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    }
}

#[cfg(not(unix))]
fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_map_to_tables() {
        assert_eq!(
            table_and_format("disks.csv").map(|(t, _)| t).as_deref(),
            Some("disks")
        );
        assert!(matches!(
            table_and_format("events.jsonl"),
            Some((_, InputFormat::NdJson))
        ));
        assert!(table_and_format(".disks.csv.tmp").is_none());
        assert!(table_and_format(".disks.csv").is_none());
        assert!(table_and_format("notes.txt").is_none());
        assert!(table_and_format("noext").is_none());
    }
}
