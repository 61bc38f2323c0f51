//! Kept generations on disk and their index.
//!
//! One file per generation and table, `<dir>/<table>/<made_at_ms>-<id>.parquet`
//! (zstd, statistics per column), written to a temporary name and renamed,
//! so a reader never sees half a file and a crash leaves at most a
//! `.tmp` that the next start removes. The name carries what pruning and
//! time travel need, so neither opens a file to decide; the index is
//! rebuilt from the directory at start (a restart keeps what was written),
//! each file's footer checked once, and again when its size or time
//! changes. A file that cannot be read is left out and reported, never
//! deleted: it may be wanted for a post-mortem.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use arrow::array::{ArrayRef, RecordBatch, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use fleetsql_model::Generation;
use fleetsql_sqlnode::{AsOf, PickedGeneration};
use parking_lot::{Mutex, RwLock};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::WriterProperties;

use crate::range::{GENERATION, GENERATION_TIME, Range};
use crate::{HistoryConfig, HistoryError, Result};

/// After a failed write, how long the writer waits before trying again.
const RETRY_AFTER_MS: i64 = 60_000;

/// One kept generation of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptFile {
    pub generation: u64,
    /// When the generation was made (`_generation_time`), ms.
    pub time_ms: i64,
    pub path: PathBuf,
    pub bytes: u64,
    pub rows: u64,
}

#[derive(Debug, Clone)]
struct Indexed {
    file: KeptFile,
    /// Size and modification time when the footer was checked.
    checked: (u64, Option<SystemTime>),
}

#[derive(Debug, Default)]
struct TableIndex {
    files: BTreeMap<(i64, u64), Indexed>,
    /// The union of the kept files' schemas, every field nullable (a column
    /// a generation lacks reads as NULL there).
    schema: Option<SchemaRef>,
    /// Files that could not be read, with why.
    corrupt: BTreeMap<PathBuf, String>,
}

#[derive(Debug, Default)]
struct WriteState {
    /// Writing stopped: why, when (clock ms) it may be tried again, and
    /// whether for want of space (then it is tried again as soon as the
    /// disk has room).
    stopped: Option<(String, i64, bool)>,
    last_write_ms: Option<f64>,
    last_write_bytes: u64,
    written: u64,
    deleted: u64,
    failures: u64,
    /// Files fetched from another node (a TLA) and kept.
    imported: u64,
}

/// What one generation's write did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteReport {
    /// Files written (tables the generation had).
    pub written: usize,
    pub bytes: u64,
    /// Files the ladder dropped afterwards.
    pub deleted: usize,
    /// Writing is stopped (now or before): why.
    pub stopped: Option<String>,
    /// Writing was tried for this generation (it worked, or failed now);
    /// false when it was skipped while stopped, or had nothing to write.
    pub attempted: bool,
}

/// One kept table as `fleet_history` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableStatus {
    pub table: String,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
    pub oldest_ms: Option<i64>,
    pub newest_ms: Option<i64>,
    pub newest_generation: Option<u64>,
    pub corrupt_files: u64,
    /// Why the last corrupt file could not be read.
    pub corrupt_error: Option<String>,
}

/// The kept history of one node.
#[derive(Debug)]
pub struct HistoryStore {
    dir: PathBuf,
    config: HistoryConfig,
    tables: RwLock<BTreeMap<String, TableIndex>>,
    state: Mutex<WriteState>,
    /// Files handed to scans since start (tests assert pruning with it).
    files_opened: AtomicU64,
}

impl HistoryStore {
    /// Opens (creating) `dir` and indexes the files already kept there for
    /// the configured tables.
    pub fn open(dir: &Path, config: HistoryConfig) -> Result<Arc<HistoryStore>> {
        config.validate()?;
        let io = |source| HistoryError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut tables = BTreeMap::new();
        for table in &config.tables {
            let table_dir = dir.join(table);
            let mut index = TableIndex::default();
            let entries = match std::fs::read_dir(&table_dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tables.insert(table.clone(), index);
                    continue;
                }
                Err(source) => {
                    return Err(HistoryError::Io {
                        path: table_dir,
                        source,
                    });
                }
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") {
                    // A write cut short by a crash.
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
                let Some((time_ms, generation)) = parse_name(&name) else {
                    continue;
                };
                match check(&path) {
                    Ok((file, schema, checked)) => {
                        index.add(time_ms, generation, file, schema, checked);
                    }
                    Err(reason) => {
                        tracing::warn!(file = %path.display(), %reason, "kept history file cannot be read; it is left out of queries (and kept on disk)");
                        index.corrupt.insert(path, reason);
                    }
                }
            }
            tables.insert(table.clone(), index);
        }
        let kept: usize = tables.values().map(|t: &TableIndex| t.files.len()).sum();
        tracing::info!(dir = %dir.display(), tables = config.tables.len(), files = kept, "history opened");
        Ok(Arc::new(HistoryStore {
            dir: dir.to_path_buf(),
            config,
            tables: RwLock::new(tables),
            state: Mutex::new(WriteState::default()),
            files_opened: AtomicU64::new(0),
        }))
    }

    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Keeps the configured tables of `generation` and applies the ladder,
    /// `now_ms` being the clock's time. Never fails: a write that fails
    /// stops writing (reported in [`HistoryStore::status`] and the log)
    /// until a retry a minute later succeeds.
    pub fn write_generation(&self, generation: &Generation, now_ms: i64) -> WriteReport {
        let mut report = WriteReport::default();
        if generation.meta.id == 0 {
            return report;
        }
        let stopped = self.state.lock().stopped.clone();
        if let Some((reason, retry_at, for_space)) = stopped
            && now_ms < retry_at
            && !(for_space && self.space_returned())
        {
            report.stopped = Some(reason);
            return report;
        }
        let started = Instant::now();
        let outcome = self.write_tables(generation, &mut report);
        report.attempted = report.written > 0 || outcome.is_err();
        let mut state = self.state.lock();
        match outcome {
            Ok(()) => {
                if let Some((reason, _, _)) = state.stopped.take() {
                    tracing::info!(dir = %self.dir.display(), previous_error = %reason, "history writing resumed");
                }
                if report.written > 0 {
                    state.last_write_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                    state.last_write_bytes = report.bytes;
                    state.written += report.written as u64;
                }
            }
            Err(e) => {
                let reason = e.to_string();
                let for_space = e.is_disk_full();
                if state.stopped.is_none() {
                    tracing::error!(dir = %self.dir.display(), error = %reason, for_space, "history stops writing; live queries go on. It tries again when the disk has room, or every minute");
                }
                state.failures += 1;
                state.stopped = Some((
                    reason.clone(),
                    now_ms.saturating_add(RETRY_AFTER_MS),
                    for_space,
                ));
                report.stopped = Some(reason);
            }
        }
        drop(state);
        report.deleted = self.thin(now_ms);
        report
    }

    fn write_tables(&self, generation: &Generation, report: &mut WriteReport) -> Result<()> {
        let time_ms = generation.meta.made_at_ms;
        let id = generation.meta.id;
        let mut checked_space = false;
        for table_name in &self.config.tables {
            let Some(table) = generation.table(table_name) else {
                continue;
            };
            if self
                .tables
                .read()
                .get(table_name)
                .is_some_and(|t| t.files.contains_key(&(time_ms, id)))
            {
                // Offered again with more tables: this one is kept already.
                continue;
            }
            if !checked_space {
                self.check_free_space()?;
                checked_space = true;
            }
            let table_dir = self.dir.join(table_name);
            std::fs::create_dir_all(&table_dir).map_err(|source| HistoryError::Io {
                path: table_dir.clone(),
                source,
            })?;
            let path = table_dir.join(file_name(time_ms, id));
            let (bytes, schema) = write_file(&path, table_name, table, id, time_ms)?;
            let checked = stamp(&path);
            let file = KeptFile {
                generation: id,
                time_ms,
                path,
                bytes,
                rows: table.num_rows() as u64,
            };
            self.tables
                .write()
                .entry(table_name.clone())
                .or_default()
                .add(time_ms, id, file, schema, checked);
            report.written += 1;
            report.bytes += bytes;
        }
        Ok(())
    }

    /// Whether the disk has room again after writing stopped for want of
    /// it: `min_free_mib` plus twice the last generation's files free. A
    /// file system that cannot say waits for the minute's retry.
    fn space_returned(&self) -> bool {
        let Ok(stat) = rustix::fs::statvfs(&self.dir) else {
            return false;
        };
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        let needed = (self.config.min_free_mib << 20)
            .saturating_add(self.state.lock().last_write_bytes.saturating_mul(2))
            .max(1);
        free >= needed
    }

    fn check_free_space(&self) -> Result<()> {
        if self.config.min_free_mib == 0 {
            return Ok(());
        }
        // A file system that cannot say is written to; a failing write is
        // caught anyway.
        let Ok(stat) = rustix::fs::statvfs(&self.dir) else {
            return Ok(());
        };
        let free_mib = stat.f_bavail.saturating_mul(stat.f_frsize) >> 20;
        if free_mib < self.config.min_free_mib {
            return Err(HistoryError::DiskFull {
                path: self.dir.clone(),
                free_mib,
                min_free_mib: self.config.min_free_mib,
            });
        }
        Ok(())
    }

    /// Applies the retention ladder at `now_ms`; returns files deleted.
    pub fn thin(&self, now_ms: i64) -> usize {
        let mut deleted = 0;
        let mut tables = self.tables.write();
        for index in tables.values_mut() {
            let keys: Vec<(i64, u64)> = index.files.keys().copied().collect();
            let times: Vec<i64> = keys.iter().map(|k| k.0).collect();
            for i in crate::retention::to_delete(&times, &self.config.keep, now_ms) {
                let Some(gone) = index.files.remove(&keys[i]) else {
                    continue;
                };
                match std::fs::remove_file(&gone.file.path) {
                    Ok(()) => deleted += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => deleted += 1,
                    Err(e) => {
                        tracing::warn!(file = %gone.file.path.display(), error = %e, "history file past its retention could not be deleted; tried again next generation");
                        index.files.insert(keys[i], gone);
                    }
                }
            }
        }
        drop(tables);
        self.state.lock().deleted += deleted as u64;
        deleted
    }

    /// The bytes of kept file `name` (`<made_at_ms>-<generation>.parquet`)
    /// of `table`, as another node fetches it (the `history` Flight
    /// ticket). Only a file in the index is read: a name is never turned
    /// into a path unchecked.
    pub fn read_kept(&self, table: &str, name: &str) -> Result<Vec<u8>> {
        let key = parse_name(name).ok_or_else(|| HistoryError::NoGeneration {
            table: table.to_string(),
            reason: format!(
                "`{name}` is not a history file name (<made_at_ms>-<generation>.parquet)"
            ),
        })?;
        let path = {
            let tables = self.tables.read();
            let index = tables.get(table).ok_or_else(|| self.not_kept(table))?;
            index
                .files
                .get(&key)
                .map(|f| f.file.path.clone())
                .ok_or_else(|| HistoryError::NoGeneration {
                    table: table.to_string(),
                    reason: format!("`{name}` is not kept (any more) on this node"),
                })?
        };
        std::fs::read(&path).map_err(|source| HistoryError::Io { path, source })
    }

    /// Whether generation (`time_ms`, `generation`) of `table` is kept here.
    pub fn has(&self, table: &str, time_ms: i64, generation: u64) -> bool {
        self.tables
            .read()
            .get(table)
            .is_some_and(|t| t.files.contains_key(&(time_ms, generation)))
    }

    /// Keeps a file another node kept (fetched from a TLA over Flight):
    /// written as this node's own writes are (temporary name, synced,
    /// renamed), then checked like a file found at start; one that does
    /// not read as a history file is removed and refused. `Ok(false)`:
    /// kept already. The ladder is not applied here: call [`thin`].
    ///
    /// [`thin`]: HistoryStore::thin
    pub fn import(&self, table: &str, name: &str, bytes: &[u8]) -> Result<bool> {
        if !self.is_kept(table) {
            return Err(self.not_kept(table));
        }
        let (time_ms, generation) = parse_name(name).ok_or_else(|| HistoryError::NoGeneration {
            table: table.to_string(),
            reason: format!(
                "`{name}` is not a history file name (<made_at_ms>-<generation>.parquet)"
            ),
        })?;
        if self.has(table, time_ms, generation) {
            return Ok(false);
        }
        self.check_free_space()?;
        let table_dir = self.dir.join(table);
        std::fs::create_dir_all(&table_dir).map_err(|source| HistoryError::Io {
            path: table_dir.clone(),
            source,
        })?;
        // The name is rebuilt from its parsed parts, so it cannot reach
        // outside the table's directory.
        let path = table_dir.join(file_name(time_ms, generation));
        let tmp = path.with_extension("parquet.tmp");
        let failed = |reason: String| HistoryError::Write {
            path: path.clone(),
            reason,
        };
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(failed(e.to_string()));
        }
        if let Err(reason) = read_through(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(failed(format!(
                "fetched file does not read as a history file: {reason}"
            )));
        }
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(failed(e.to_string()));
        }
        let (file, schema, checked) = check(&path).map_err(failed)?;
        self.tables
            .write()
            .entry(table.to_string())
            .or_default()
            .add(time_ms, generation, file, schema, checked);
        self.state.lock().imported += 1;
        Ok(true)
    }

    /// The kept tables.
    pub fn tables(&self) -> Vec<String> {
        self.config.tables.iter().cloned().collect()
    }

    pub fn is_kept(&self, table: &str) -> bool {
        self.config.tables.contains(table)
    }

    pub(crate) fn not_kept(&self, table: &str) -> HistoryError {
        HistoryError::NotKept {
            table: table.to_string(),
            kept: self.tables().join(", "),
        }
    }

    /// The schema `history.<table>` reads (the union of its kept files').
    pub fn schema(&self, table: &str) -> Result<SchemaRef> {
        let tables = self.tables.read();
        let index = tables.get(table).ok_or_else(|| self.not_kept(table))?;
        index.schema.clone().ok_or_else(|| HistoryError::NoGeneration {
            table: table.to_string(),
            reason: format!(
                "no generation kept yet; the first is written once the node installs a generation with `{table}`"
            ),
        })
    }

    /// Every kept file of `table` (oldest first).
    pub fn files(&self, table: &str) -> Vec<KeptFile> {
        self.tables
            .read()
            .get(table)
            .map(|t| t.files.values().map(|f| f.file.clone()).collect())
            .unwrap_or_default()
    }

    /// The kept files of `table` in `range`, each readable (a file changed
    /// since it was checked is checked again; one that fails is left out,
    /// reported and counted in the second value). Counted as opened.
    pub fn select(&self, table: &str, range: &Range) -> (Vec<KeptFile>, u64) {
        let candidates: Vec<Indexed> = self
            .tables
            .read()
            .get(table)
            .map(|t| {
                t.files
                    .values()
                    .filter(|f| range.contains(f.file.time_ms, f.file.generation))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut selected = Vec::with_capacity(candidates.len());
        let mut bad = Vec::new();
        for candidate in candidates {
            if stamp(&candidate.file.path) == candidate.checked {
                selected.push(candidate.file);
                continue;
            }
            match check(&candidate.file.path) {
                Ok(_) => selected.push(candidate.file),
                Err(reason) => bad.push((candidate, reason)),
            }
        }
        let skipped = bad.len() as u64 + self.corrupt_count(table);
        if !bad.is_empty() {
            let mut tables = self.tables.write();
            if let Some(index) = tables.get_mut(table) {
                for (gone, reason) in bad {
                    tracing::warn!(file = %gone.file.path.display(), %reason, "kept history file cannot be read any more; it is left out of queries (and kept on disk)");
                    index
                        .files
                        .remove(&(gone.file.time_ms, gone.file.generation));
                    index.corrupt.insert(gone.file.path, reason);
                }
            }
        }
        self.files_opened
            .fetch_add(selected.len() as u64, Ordering::Relaxed);
        (selected, skipped)
    }

    fn corrupt_count(&self, table: &str) -> u64 {
        self.tables
            .read()
            .get(table)
            .map_or(0, |t| t.corrupt.len() as u64)
    }

    /// Files handed to scans since the store opened.
    pub fn files_opened(&self) -> u64 {
        self.files_opened.load(Ordering::Relaxed)
    }

    /// The kept generation of `table` that `at` names: the newest made at
    /// or before a time, or the one with a generation id.
    pub fn pick(&self, table: &str, at: AsOf) -> Result<PickedGeneration> {
        let tables = self.tables.read();
        let index = tables.get(table).ok_or_else(|| self.not_kept(table))?;
        let to_picked = |f: &Indexed| PickedGeneration {
            generation: f.file.generation,
            made_at_ms: f.file.time_ms,
        };
        let span = || match (
            index.files.values().next(),
            index.files.values().next_back(),
        ) {
            (Some(a), Some(b)) => format!(
                "kept: generations {}..{} made {} to {}",
                a.file.generation,
                b.file.generation,
                rfc3339(a.file.time_ms),
                rfc3339(b.file.time_ms)
            ),
            _ => "nothing is kept yet".to_string(),
        };
        match at {
            AsOf::TimeMs(t) => index
                .files
                .range(..=(t, u64::MAX))
                .next_back()
                .map(|(_, f)| to_picked(f))
                .ok_or_else(|| HistoryError::NoGeneration {
                    table: table.to_string(),
                    reason: format!(
                        "no kept generation made at or before {} ({}; retention: `history.keep`)",
                        rfc3339(t),
                        span()
                    ),
                }),
            AsOf::Generation(id) => index
                .files
                .values()
                .rev()
                .find(|f| f.file.generation == id)
                .map(to_picked)
                .ok_or_else(|| HistoryError::NoGeneration {
                    table: table.to_string(),
                    reason: format!(
                        "generation {id} is not kept ({}; retention: `history.keep`)",
                        span()
                    ),
                }),
        }
    }

    /// What is kept per table.
    pub fn status(&self) -> Vec<TableStatus> {
        self.tables
            .read()
            .iter()
            .map(|(name, index)| {
                let first = index.files.values().next();
                let last = index.files.values().next_back();
                TableStatus {
                    table: name.clone(),
                    files: index.files.len() as u64,
                    rows: index.files.values().map(|f| f.file.rows).sum(),
                    bytes: index.files.values().map(|f| f.file.bytes).sum(),
                    oldest_ms: first.map(|f| f.file.time_ms),
                    newest_ms: last.map(|f| f.file.time_ms),
                    newest_generation: last.map(|f| f.file.generation),
                    corrupt_files: index.corrupt.len() as u64,
                    corrupt_error: index
                        .corrupt
                        .iter()
                        .next_back()
                        .map(|(path, reason)| format!("{}: {reason}", path.display())),
                }
            })
            .collect()
    }

    /// Files fetched from another node and kept, since start.
    pub fn imported(&self) -> u64 {
        self.state.lock().imported
    }

    /// Why writing is stopped, when it is.
    pub fn stopped(&self) -> Option<String> {
        self.state
            .lock()
            .stopped
            .as_ref()
            .map(|(r, _, _)| r.clone())
    }

    /// The last write's duration (ms) and bytes, files written and deleted
    /// since start, failed writes.
    pub fn write_counters(&self) -> (Option<f64>, u64, u64, u64, u64) {
        let s = self.state.lock();
        (
            s.last_write_ms,
            s.last_write_bytes,
            s.written,
            s.deleted,
            s.failures,
        )
    }
}

impl TableIndex {
    fn add(
        &mut self,
        time_ms: i64,
        generation: u64,
        file: KeptFile,
        schema: SchemaRef,
        checked: (u64, Option<SystemTime>),
    ) {
        let nullable = Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<Field>>(),
        );
        self.schema = Some(match self.schema.take() {
            None => Arc::new(nullable),
            Some(known) => match Schema::try_merge([known.as_ref().clone(), nullable]) {
                Ok(merged) => Arc::new(merged),
                Err(e) => {
                    tracing::warn!(file = %file.path.display(), error = %e, "a kept generation's columns conflict with earlier ones; history reads it with the earlier types");
                    known
                }
            },
        });
        self.files
            .insert((time_ms, generation), Indexed { file, checked });
    }
}

fn file_name(time_ms: i64, generation: u64) -> String {
    format!("{time_ms}-{generation}.parquet")
}

fn parse_name(name: &str) -> Option<(i64, u64)> {
    let stem = name.strip_suffix(".parquet")?;
    let (time, generation) = stem.split_once('-')?;
    Some((time.parse().ok()?, generation.parse().ok()?))
}

fn stamp(path: &Path) -> (u64, Option<SystemTime>) {
    match std::fs::metadata(path) {
        Ok(m) => (m.len(), m.modified().ok()),
        Err(_) => (0, None),
    }
}

/// A readable file, its schema, and its size and time when checked.
type Checked = (KeptFile, SchemaRef, (u64, Option<SystemTime>));

/// A file's Arrow schema and row count from its footer, or why it is not
/// a readable history file.
fn footer(path: &Path) -> std::result::Result<(SchemaRef, u64), String> {
    unless_it_panics(|| footer_unguarded(path))
}

fn footer_unguarded(path: &Path) -> std::result::Result<(SchemaRef, u64), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    let schema = builder.schema().clone();
    has_history_columns(&schema)?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as u64;
    Ok((schema, rows))
}

fn has_history_columns(schema: &Schema) -> std::result::Result<(), String> {
    for column in [GENERATION, GENERATION_TIME] {
        if schema.field_with_name(column).is_err() {
            return Err(format!("no `{column}` column: not a history file"));
        }
    }
    Ok(())
}

/// Checks what [`footer`] checks, then decodes every row of a file, or says
/// why it cannot. A file fetched
/// from another node is read once whole before it is kept: its footer can
/// be sound while a data page is damaged, and a query would find that
/// only later, as an error for someone else. A decoder panic on a damaged
/// page is a refusal too, never the node's end.
fn read_through(path: &Path) -> std::result::Result<(), String> {
    unless_it_panics(|| {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let file_len = file.metadata().map_err(|e| e.to_string())?.len();
        // With the page index: DataFusion reads it to prune pages.
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
            .map_err(|e| e.to_string())?;
        has_history_columns(builder.schema())?;
        // DataFusion plans from these counts and sizes (and multiplies
        // them), so they must agree with the data, not only parse.
        let metadata = builder.metadata().clone();
        let declared = metadata.file_metadata().num_rows();
        let mut in_groups = 0i64;
        for group in metadata.row_groups() {
            in_groups = in_groups.saturating_add(group.num_rows());
            for column in group.columns() {
                let sizes = [column.compressed_size(), column.uncompressed_size()];
                let (start, length) = column.byte_range();
                let past_the_end = start.checked_add(length).is_none_or(|end| end > file_len);
                if past_the_end
                    || sizes
                        .iter()
                        .any(|s| !(0..=MAX_COLUMN_CHUNK_BYTES).contains(s))
                {
                    return Err(format!(
                        "column chunk `{}` declares an impossible size or place",
                        column.column_path()
                    ));
                }
            }
        }
        let mut decoded = 0i64;
        for batch in builder.build().map_err(|e| e.to_string())? {
            decoded += batch.map_err(|e| e.to_string())?.num_rows() as i64;
        }
        if declared != decoded || in_groups != decoded {
            return Err(format!(
                "its footer declares {declared} rows and its row groups {in_groups}, but {decoded} decode"
            ));
        }
        Ok(())
    })
}

/// Far above any one generation's column (a kept file holds one table of
/// one generation); a larger declared size is damage.
const MAX_COLUMN_CHUNK_BYTES: i64 = 1 << 40;

/// `read` of a file's bytes, where a panic in the Parquet or Arrow
/// decoders (they unwrap on some damaged metadata, such as the embedded
/// Arrow schema) is the file's refusal rather than the node's end.
fn unless_it_panics<T>(
    read: impl FnOnce() -> std::result::Result<T, String>,
) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
        .unwrap_or_else(|_| Err("it is damaged: the Parquet reader gave up on it".into()))
}

/// Reads a file's footer: its Arrow schema, or why it cannot be read.
fn check(path: &Path) -> std::result::Result<Checked, String> {
    let checked = stamp(path);
    let (schema, rows) = footer(path)?;
    let (time_ms, generation) = path
        .file_name()
        .and_then(|n| parse_name(&n.to_string_lossy()))
        .ok_or("not a history file name")?;
    Ok((
        KeptFile {
            generation,
            time_ms,
            path: path.to_path_buf(),
            bytes: checked.0,
            rows,
        },
        schema,
        checked,
    ))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// The schema of a kept file: the table's, then `_generation` and
/// `_generation_time`.
fn file_schema(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != GENERATION && f.name() != GENERATION_TIME)
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(GENERATION, DataType::UInt64, false));
    fields.push(Field::new(
        GENERATION_TIME,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    ));
    Arc::new(Schema::new(fields))
}

/// Writes one table of one generation; returns the file's size and schema.
fn write_file(
    path: &Path,
    name: &str,
    table: &fleetsql_model::Table,
    generation: u64,
    time_ms: i64,
) -> Result<(u64, SchemaRef)> {
    let failed = |reason: String| HistoryError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let schema = file_schema(table.schema());
    let keep: Vec<usize> = table
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name() != GENERATION && f.name() != GENERATION_TIME)
        .map(|(i, _)| i)
        .collect();
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).map_err(|e| failed(e.to_string()))?,
        ))
        .set_created_by(format!("fleetsql {}", env!("CARGO_PKG_VERSION")))
        .build();
    let tmp = path.with_extension("parquet.tmp");
    let write = || -> std::result::Result<(), String> {
        let file = File::create(&tmp).map_err(|e| e.to_string())?;
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))
            .map_err(|e| e.to_string())?;
        for batch in table.batches() {
            let batch = fleetsql_model::conform_batch(name, batch, table.schema())
                .map_err(|e| e.to_string())?;
            let rows = batch.num_rows();
            let mut columns: Vec<ArrayRef> =
                keep.iter().map(|&i| batch.column(i).clone()).collect();
            columns.push(Arc::new(UInt64Array::from_value(generation, rows)));
            columns.push(Arc::new(
                TimestampMillisecondArray::from_value(time_ms, rows).with_timezone("UTC"),
            ));
            let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
            writer.write(&batch).map_err(|e| e.to_string())?;
        }
        let file = writer.into_inner().map_err(|e| e.to_string())?;
        // Durable before it is renamed into the index's view.
        file.sync_all().map_err(|e| e.to_string())?;
        Ok(())
    };
    if let Err(reason) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(reason));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        failed(e.to_string())
    })?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok((bytes, schema))
}
