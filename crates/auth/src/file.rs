//! Files that hold credentials: written private and atomically, re-read
//! when their content changes, and never half-applied.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::error::StoreError;

pub(crate) fn read(path: &Path) -> Result<String, StoreError> {
    std::fs::read_to_string(path).map_err(|source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `contents` to a temporary file beside `path`, readable by its
/// owner only, and renames it over `path`, so a reader polling the file
/// never sees half of it and no other user ever could read it.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), StoreError> {
    let err = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    // An old temporary file left by a crash may have other bits.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    let written = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// A parsed file and the text it was parsed from.
struct Loaded<T> {
    text: String,
    value: Arc<T>,
}

/// A file re-read when its content changes; a version that does not parse
/// leaves the previous one in use.
pub(crate) struct Watched<T> {
    path: PathBuf,
    parse: fn(&Path, &str) -> Result<T, StoreError>,
    loaded: RwLock<Loaded<T>>,
}

impl<T: Send + Sync + 'static> Watched<T> {
    pub(crate) fn open(
        path: &Path,
        parse: fn(&Path, &str) -> Result<T, StoreError>,
    ) -> Result<Watched<T>, StoreError> {
        let text = read(path)?;
        let value = Arc::new(parse(path, &text)?);
        Ok(Watched {
            path: path.to_path_buf(),
            parse,
            loaded: RwLock::new(Loaded { text, value }),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn current(&self) -> Arc<T> {
        self.loaded.read().value.clone()
    }

    /// Re-reads the file; `Ok(true)` when a changed version was applied.
    pub(crate) fn reload(&self) -> Result<bool, StoreError> {
        let text = read(&self.path)?;
        if self.loaded.read().text == text {
            return Ok(false);
        }
        let value = Arc::new((self.parse)(&self.path, &text)?);
        *self.loaded.write() = Loaded { text, value };
        Ok(true)
    }
}

/// Stops a file's polling task when dropped.
#[derive(Debug)]
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `reload` every `every` on the current tokio runtime; each new
/// failure is logged once (not every poll), and so is the recovery.
pub(crate) fn watch(
    what: &'static str,
    path: PathBuf,
    every: Duration,
    reload: impl Fn() -> Result<bool, StoreError> + Send + 'static,
) -> WatchHandle {
    watch_with(what, path, every, move || {
        reload().map_err(|e| e.to_string())
    })
}

/// [`watch`] for any reload whose error is shown as text.
pub(crate) fn watch_with(
    what: &'static str,
    path: PathBuf,
    every: Duration,
    reload: impl Fn() -> Result<bool, String> + Send + 'static,
) -> WatchHandle {
    let task = tokio::spawn(async move {
        let mut last_error: Option<String> = None;
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match reload() {
                Ok(changed) => {
                    if changed || last_error.is_some() {
                        tracing::info!(file = %path.display(), "{what} file re-read");
                    }
                    last_error = None;
                }
                Err(message) => {
                    if last_error.as_deref() != Some(message.as_str()) {
                        tracing::warn!(file = %path.display(), error = %message, "{what} file not applied; the previous version stays in use");
                        last_error = Some(message);
                    }
                }
            }
        }
    });
    WatchHandle { task }
}
