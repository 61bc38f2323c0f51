//! Views (seed 6.2): named SQL whose result is computed at most once per
//! generation, on first use, and cached until the next generation is
//! installed, so a common subquery that a thousand queries and alerts name
//! costs one computation per tick.
//!
//! A view is a table of the node's schema. A query naming it pins a
//! generation that covers the view's fleet tables (the view's names are
//! expanded to the fleet tables they read, views over views included), and
//! its scan reads the view's result over *that* generation: a query pinned
//! to generation N never sees a view computed over N+1. Concurrent first
//! uses wait on one per-generation cell, so they compute once.
//!
//! Definitions come from outside (the `fleetsql-views` crate watches a
//! directory) through [`SqlNode::set_views`]. A definition that does not
//! read, parse or plan, or that closes a cycle, is refused and reported in
//! `fleet_views`; the version the same file defined before keeps serving.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use fleetsql_model::{Generation, conform_batch, now_ms};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{OnceCell, watch};

use crate::catalog::{PINNED, pinned_or};
use crate::node_tables::NodeTable;
use crate::system_tables::SYSTEM_TABLES;
use crate::{SqlError, SqlNode};

/// The node table listing every view and every refused view file.
pub const VIEWS_TABLE: &str = "fleet_views";

/// Generations whose view results are kept: the current one and the one
/// before, which queries pinned just before an install still read.
const KEPT_GENERATIONS: usize = 2;

/// One view as its file defines it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewDefinition {
    /// The table name queries use.
    pub name: String,
    /// One SELECT over fleet tables, system tables or other views.
    pub sql: String,
    /// Computed as soon as each generation is installed, not on first use.
    #[serde(default)]
    pub prewarm: bool,
    #[serde(default)]
    pub description: Option<String>,
}

/// Why a view file could not be read as a definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ViewFileError(pub String);

/// One file of a views directory as read.
#[derive(Debug, Clone)]
pub struct ViewFile {
    /// The file's path, as shown in `fleet_views`.
    pub file: String,
    pub definition: Result<ViewDefinition, ViewFileError>,
}

/// A view's counts, for `fleet_views` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewStats {
    pub name: String,
    pub file: String,
    pub description: Option<String>,
    pub prewarm: bool,
    /// Computations (at most one per generation and definition).
    pub computes: u64,
    /// Scans of the view by queries (a query naming it twice counts two).
    pub uses: u64,
    pub last_generation: Option<u64>,
    pub computed_at_ms: Option<i64>,
    pub rows: Option<u64>,
    pub compute_ms: Option<u64>,
    /// Why the file's current content is refused (the previous version
    /// serving), or why the last computation failed.
    pub error: Option<String>,
    /// False for a file that never defined a good view.
    pub serving: bool,
}

/// A view being served.
#[derive(Debug)]
pub(crate) struct ActiveView {
    definition: ViewDefinition,
    file: String,
    /// Bumped per change, so a reloaded definition does not read the
    /// previous one's cached result.
    version: u64,
    statement: Statement,
    /// Tables the SQL names (fleet tables and views).
    references: BTreeSet<String>,
    /// Fleet tables it reads, through other views too.
    fleet_tables: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Counts {
    computes: u64,
    uses: u64,
    last_generation: Option<u64>,
    computed_at_ms: Option<i64>,
    rows: Option<u64>,
    compute_ms: Option<u64>,
    compute_error: Option<String>,
}

/// What one file stands for now.
#[derive(Debug, Default)]
struct FileState {
    serving: Option<Arc<ActiveView>>,
    /// What served before the last change (what a view that does not plan
    /// falls back to).
    previous: Option<Arc<ActiveView>>,
    /// The version last planned successfully.
    planned: Option<u64>,
    /// Why the file's current content is not what serves.
    error: Option<String>,
    /// The name its current content gives, if it could be read.
    name: Option<String>,
}

/// One view's result over one generation.
#[derive(Debug)]
pub(crate) struct ViewResult {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

type Cell = Arc<OnceCell<Arc<ViewResult>>>;

/// The cells of one generation, by view name and version.
struct GenerationCells {
    generation: Arc<Generation>,
    cells: BTreeMap<(String, u64), Cell>,
}

/// Every view of one node: definitions, counts and per-generation results.
pub(crate) struct Views {
    files: RwLock<BTreeMap<String, FileState>>,
    by_name: RwLock<BTreeMap<String, Arc<ActiveView>>>,
    counts: Mutex<BTreeMap<String, Counts>>,
    cache: Mutex<VecDeque<GenerationCells>>,
    next_version: Mutex<u64>,
    /// Weak: the context's catalog holds these views.
    ctx: OnceLock<Weak<SessionContext>>,
    timeout: Duration,
}

impl std::fmt::Debug for Views {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Views")
            .field("views", &self.by_name.read().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl Views {
    pub(crate) fn new(timeout: Duration) -> Views {
        Views {
            files: RwLock::new(BTreeMap::new()),
            by_name: RwLock::new(BTreeMap::new()),
            counts: Mutex::new(BTreeMap::new()),
            cache: Mutex::new(VecDeque::new()),
            next_version: Mutex::new(1),
            ctx: OnceLock::new(),
            timeout,
        }
    }

    pub(crate) fn set_context(&self, ctx: &Arc<SessionContext>) {
        let _ = self.ctx.set(Arc::downgrade(ctx));
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<ActiveView>> {
        self.by_name.read().get(name).cloned()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.by_name.read().keys().cloned().collect()
    }

    /// The fleet tables a query naming `name` reads, when it is a view.
    pub(crate) fn fleet_tables_of(&self, name: &str) -> Option<BTreeSet<String>> {
        self.by_name
            .read()
            .get(name)
            .map(|v| v.fleet_tables.clone())
    }

    fn context(&self) -> Result<Arc<SessionContext>, SqlError> {
        self.ctx
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| SqlError::Query("the SQL node is shutting down".into()))
    }

    /// The view's cell for `generation`; kept only for the newest
    /// generations, so an old pin gets a cell of its own.
    fn cell(&self, view: &ActiveView, generation: &Arc<Generation>) -> Cell {
        let key = (view.definition.name.clone(), view.version);
        let mut cache = self.cache.lock();
        if let Some(entry) = cache
            .iter_mut()
            .find(|e| Arc::ptr_eq(&e.generation, generation))
        {
            return entry.cells.entry(key).or_default().clone();
        }
        let newest = cache.back().map(|e| e.generation.meta.made_at_ms);
        if newest.is_some_and(|made| generation.meta.made_at_ms < made) {
            // A query pinned to a generation older than every kept one.
            return Cell::default();
        }
        let mut entry = GenerationCells {
            generation: generation.clone(),
            cells: BTreeMap::new(),
        };
        let cell = entry.cells.entry(key).or_default().clone();
        cache.push_back(entry);
        while cache.len() > KEPT_GENERATIONS {
            cache.pop_front();
        }
        cell
    }

    /// The view's result over `generation`, computing it when no one has.
    pub(crate) async fn result(
        &self,
        view: &Arc<ActiveView>,
        generation: &Arc<Generation>,
    ) -> Result<Arc<ViewResult>, SqlError> {
        let cell = self.cell(view, generation);
        cell.get_or_try_init(|| self.compute(view, generation))
            .await
            .cloned()
    }

    async fn compute(
        &self,
        view: &Arc<ActiveView>,
        generation: &Arc<Generation>,
    ) -> Result<Arc<ViewResult>, SqlError> {
        let started = Instant::now();
        let name = &view.definition.name;
        let outcome = async {
            let ctx = self.context()?;
            let plan = plan_statement(&ctx, view.statement.clone(), generation.clone()).await?;
            let run = PINNED.scope(generation.clone(), async move {
                let frame = ctx.execute_logical_plan(plan).await?;
                let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
                let batches = frame.collect().await?;
                Ok::<_, SqlError>(ViewResult { schema, batches })
            });
            tokio::time::timeout(self.timeout, run)
                .await
                .map_err(|_| SqlError::Timeout {
                    timeout_ms: self.timeout.as_millis() as u64,
                })?
        }
        .await;
        let mut counts = self.counts.lock();
        let counts = counts.entry(name.clone()).or_default();
        counts.computes += 1;
        counts.last_generation = Some(generation.meta.id);
        counts.computed_at_ms = Some(now_ms());
        counts.compute_ms = Some(started.elapsed().as_millis() as u64);
        match outcome {
            Ok(result) => {
                counts.rows = Some(result.batches.iter().map(|b| b.num_rows() as u64).sum());
                counts.compute_error = None;
                Ok(Arc::new(result))
            }
            Err(e) => {
                let error = SqlError::Query(format!(
                    "view `{name}` (file {}) failed over generation {}: {e}",
                    view.file, generation.meta.id
                ));
                if counts.compute_error.as_deref() != Some(&error.to_string()) {
                    tracing::warn!(view = %name, file = %view.file, error = %e, "view failed");
                }
                counts.compute_error = Some(error.to_string());
                counts.rows = None;
                Err(error)
            }
        }
    }

    /// The view's columns over `generation`: its result's when computed,
    /// else its plan's (planning is cheap; computing waits for the scan).
    async fn schema(
        &self,
        view: &Arc<ActiveView>,
        generation: &Arc<Generation>,
    ) -> Result<SchemaRef, SqlError> {
        let cell = self.cell(view, generation);
        if let Some(result) = cell.get() {
            return Ok(result.schema.clone());
        }
        let ctx = self.context()?;
        let plan = plan_statement(&ctx, view.statement.clone(), generation.clone()).await?;
        Ok(Arc::new(plan.schema().as_arrow().clone()))
    }

    fn used(&self, name: &str) {
        self.counts.lock().entry(name.to_string()).or_default().uses += 1;
    }

    pub(crate) fn stats(&self) -> Vec<ViewStats> {
        let files = self.files.read();
        let counts = self.counts.lock();
        let mut stats = Vec::new();
        for (file, state) in files.iter() {
            let serving = state.serving.as_ref();
            let name = serving
                .map(|v| v.definition.name.clone())
                .or_else(|| state.name.clone())
                .unwrap_or_default();
            let c = counts.get(&name);
            stats.push(ViewStats {
                name: name.clone(),
                file: file.clone(),
                description: serving.and_then(|v| v.definition.description.clone()),
                prewarm: serving.is_some_and(|v| v.definition.prewarm),
                computes: c.map_or(0, |c| c.computes),
                uses: c.map_or(0, |c| c.uses),
                last_generation: c.and_then(|c| c.last_generation),
                computed_at_ms: c.and_then(|c| c.computed_at_ms),
                rows: c.and_then(|c| c.rows),
                compute_ms: c.and_then(|c| c.compute_ms),
                error: state
                    .error
                    .clone()
                    .or_else(|| c.and_then(|c| c.compute_error.clone())),
                serving: serving.is_some(),
            });
        }
        stats
    }

    fn version(&self) -> u64 {
        let mut next = self.next_version.lock();
        *next += 1;
        *next
    }
}

/// Plans `statement` as [`SqlNode::plan`] does (Postgres names), pinned to
/// `generation`.
async fn plan_statement(
    ctx: &SessionContext,
    mut statement: Statement,
    generation: Arc<Generation>,
) -> Result<LogicalPlan, SqlError> {
    crate::naming::name_outputs(&mut statement);
    PINNED
        .scope(generation, async move {
            let plan = ctx
                .state()
                .statement_to_plan(DfStatement::Statement(Box::new(statement)))
                .await?;
            Ok(crate::naming::restore_names(plan)?)
        })
        .await
}

/// A view as a table: the schema is fixed when the query is planned, the
/// rows are the view's result over the generation the query is pinned to.
#[derive(Debug)]
pub(crate) struct ViewTable {
    view: Arc<ActiveView>,
    views: Arc<Views>,
    schema: SchemaRef,
    current: watch::Receiver<Arc<Generation>>,
}

impl ViewTable {
    pub(crate) async fn new(
        views: &Arc<Views>,
        view: Arc<ActiveView>,
        current: &watch::Receiver<Arc<Generation>>,
    ) -> DfResult<ViewTable> {
        let generation = pinned_or(current);
        let schema = views.schema(&view, &generation).await.map_err(external)?;
        Ok(ViewTable {
            view,
            views: views.clone(),
            schema,
            current: current.clone(),
        })
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let generation = pinned_or(&self.current);
        let name = &self.view.definition.name;
        self.views.used(name);
        let result = self
            .views
            .result(&self.view, &generation)
            .await
            .map_err(external)?;
        let batches = result
            .batches
            .iter()
            .map(|b| conform_batch(name, b, &self.schema))
            .collect::<fleetsql_model::Result<Vec<_>>>()
            .map_err(|e| {
                external(SqlError::Query(format!(
                    "view `{name}` changed its columns since this query was planned ({e}); run the query again"
                )))
            })?;
        let wanted = state.config().target_partitions().max(1);
        let mut partitions: Vec<Vec<RecordBatch>> =
            vec![Vec::new(); wanted.min(batches.len().max(1))];
        let count = partitions.len();
        for (i, batch) in batches.into_iter().enumerate() {
            partitions[i % count].push(batch);
        }
        Ok(MemorySourceConfig::try_new_exec(
            &partitions,
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

/// `fleet_views`: one row per view file.
#[derive(Debug)]
pub(crate) struct ViewsTable(pub(crate) Arc<Views>);

fn views_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("file", DataType::Utf8, false),
        Field::new("description", DataType::Utf8, true),
        Field::new("prewarm", DataType::Boolean, false),
        Field::new("serving", DataType::Boolean, false),
        Field::new("last_generation", DataType::UInt64, true),
        Field::new("computed_at", ts, true),
        Field::new("rows", DataType::UInt64, true),
        Field::new("compute_ms", DataType::UInt64, true),
        Field::new("computes", DataType::UInt64, false),
        Field::new("uses", DataType::UInt64, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

impl NodeTable for ViewsTable {
    fn schema(&self) -> SchemaRef {
        views_schema()
    }

    fn batch(&self) -> Result<RecordBatch, ArrowError> {
        let s = self.0.stats();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(s.iter().map(|v| &v.name))),
            Arc::new(StringArray::from_iter_values(s.iter().map(|v| &v.file))),
            Arc::new(StringArray::from_iter(
                s.iter().map(|v| v.description.as_deref()),
            )),
            Arc::new(BooleanArray::from_iter(s.iter().map(|v| Some(v.prewarm)))),
            Arc::new(BooleanArray::from_iter(s.iter().map(|v| Some(v.serving)))),
            Arc::new(UInt64Array::from_iter(s.iter().map(|v| v.last_generation))),
            Arc::new(
                TimestampMillisecondArray::from_iter(s.iter().map(|v| v.computed_at_ms))
                    .with_timezone("UTC"),
            ),
            Arc::new(UInt64Array::from_iter(s.iter().map(|v| v.rows))),
            Arc::new(UInt64Array::from_iter(s.iter().map(|v| v.compute_ms))),
            Arc::new(UInt64Array::from_iter_values(s.iter().map(|v| v.computes))),
            Arc::new(UInt64Array::from_iter_values(s.iter().map(|v| v.uses))),
            Arc::new(StringArray::from_iter(s.iter().map(|v| v.error.as_deref()))),
        ];
        RecordBatch::try_new(views_schema(), columns)
    }
}

/// A name a view may take: one lower-case SQL identifier, so queries name
/// it without quotes.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "view name `{name}` is not a lower-case SQL identifier (a-z, 0-9, _; not starting with a digit)"
        ));
    }
    if SYSTEM_TABLES.contains(&name) || name.starts_with("fleet_") {
        return Err(format!(
            "view name `{name}` is reserved for the node's own tables (fleet_*); choose another"
        ));
    }
    Ok(())
}

/// The views of `candidates` that lie on a cycle of references, each with
/// the cycle as text.
fn cycles(candidates: &BTreeMap<String, Arc<ActiveView>>) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for start in candidates.keys() {
        // Depth-first from `start`, looking for a way back to it.
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            let Some(view) = candidates.get(&at) else {
                continue;
            };
            for next in &view.references {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(start.clone());
                    found.insert(start.clone(), cycle.join(" -> "));
                    stack.clear();
                    break;
                }
                if candidates.contains_key(next) && seen.insert(next.clone()) {
                    let mut path = path.clone();
                    path.push(next.clone());
                    stack.push((next.clone(), path));
                }
            }
        }
    }
    found
}

/// Every fleet table `name` reads, through the views it names.
fn expand(
    name: &str,
    candidates: &BTreeMap<String, Arc<ActiveView>>,
    out: &mut BTreeSet<String>,
    depth: usize,
) {
    let Some(view) = candidates.get(name) else {
        return;
    };
    for reference in &view.references {
        if candidates.contains_key(reference) {
            if depth < 64 {
                expand(reference, candidates, out, depth + 1);
            }
        } else {
            out.insert(reference.clone());
        }
    }
}

/// Settles `states`: one file per name (the file that served a name keeps
/// it), no cycles (a changed view on one falls back to its previous
/// version), fleet tables expanded through views. Returns the views by name.
fn settle(
    states: &mut BTreeMap<String, FileState>,
    old: &BTreeMap<String, Option<Arc<ActiveView>>>,
) -> BTreeMap<String, Arc<ActiveView>> {
    let previous = |file: &str| old.get(file).cloned().flatten();
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for (file, state) in states.iter() {
        if let Some(view) = &state.serving
            && previous(file).is_some_and(|o| o.definition.name == view.definition.name)
        {
            owners.insert(view.definition.name.clone(), file.clone());
        }
    }
    for (file, state) in states.iter_mut() {
        let Some(view) = state.serving.clone() else {
            continue;
        };
        match owners.get(&view.definition.name) {
            Some(owner) if owner != file => {
                state.error = Some(format!(
                    "view `{}` is already defined in {owner}; rename one of them",
                    view.definition.name
                ));
                state.serving = previous(file)
                    .filter(|o| owners.get(&o.definition.name).is_none_or(|f| f == file));
            }
            Some(_) => {}
            None => {
                owners.insert(view.definition.name.clone(), file.clone());
            }
        }
    }
    let serving = |states: &BTreeMap<String, FileState>| -> BTreeMap<String, Arc<ActiveView>> {
        states
            .values()
            .filter_map(|s| s.serving.clone())
            .map(|v| (v.definition.name.clone(), v))
            .collect()
    };
    // A cycle of views would wait on itself.
    for _ in 0..=states.len() {
        let found = cycles(&serving(states));
        if found.is_empty() {
            break;
        }
        for (file, state) in states.iter_mut() {
            let Some(view) = state.serving.clone() else {
                continue;
            };
            let Some(cycle) = found.get(&view.definition.name) else {
                continue;
            };
            let before = previous(file);
            if before.as_ref().is_some_and(|p| Arc::ptr_eq(p, &view)) {
                // Unchanged; the change that closed the cycle is elsewhere,
                // unless every view on it is unchanged, which the previous
                // set (acyclic) rules out; a last round drops them all.
                continue;
            }
            state.error = Some(format!(
                "view `{}` would read itself ({cycle}); views may read other views but not in a cycle",
                view.definition.name
            ));
            state.serving = before;
        }
    }
    let leftover = cycles(&serving(states));
    for state in states.values_mut() {
        if let Some(view) = &state.serving
            && let Some(cycle) = leftover.get(&view.definition.name)
        {
            state.error = Some(format!(
                "view `{}` would read itself ({cycle})",
                view.definition.name
            ));
            state.serving = None;
        }
    }
    let candidates = serving(states);
    let by_name: BTreeMap<String, Arc<ActiveView>> = candidates
        .iter()
        .map(|(name, view)| {
            let mut fleet = BTreeSet::new();
            expand(name, &candidates, &mut fleet, 0);
            let view = if fleet == view.fleet_tables {
                view.clone()
            } else {
                Arc::new(ActiveView {
                    definition: view.definition.clone(),
                    file: view.file.clone(),
                    version: view.version,
                    statement: view.statement.clone(),
                    references: view.references.clone(),
                    fleet_tables: fleet,
                })
            };
            (name.clone(), view)
        })
        .collect();
    for state in states.values_mut() {
        if let Some(view) = &state.serving {
            state.serving = by_name.get(&view.definition.name).cloned();
        }
    }
    by_name
}

impl SqlNode {
    /// Replaces the node's views by those `files` define (every file of
    /// the directory, each time). A file that cannot be read, names a taken
    /// or reserved name, holds SQL that does not parse, or closes a cycle
    /// of views keeps serving the view it defined before (if any) and says
    /// why in `fleet_views` and the log. A file no longer given stops
    /// serving. Then call [`SqlNode::check_views`] to plan the changed ones.
    pub fn set_views(&self, files: Vec<ViewFile>) {
        let views = self.views();
        let (old, old_errors): (BTreeMap<_, _>, BTreeMap<_, _>) = views
            .files
            .read()
            .iter()
            .map(|(f, s)| ((f.clone(), s.serving.clone()), (f.clone(), s.error.clone())))
            .unzip();
        let node_tables = self.node_table_names();
        let mut states: BTreeMap<String, FileState> = BTreeMap::new();
        for ViewFile { file, definition } in files {
            let previous: Option<Arc<ActiveView>> = old.get(&file).cloned().flatten();
            let mut state = FileState {
                serving: previous.clone(),
                previous: previous.clone(),
                ..FileState::default()
            };
            match definition {
                Err(e) => state.error = Some(e.0),
                Ok(definition) => {
                    state.name = Some(definition.name.clone());
                    let unchanged = previous
                        .as_ref()
                        .is_some_and(|p| p.definition == definition);
                    if !unchanged {
                        match self.candidate(&file, definition, &node_tables) {
                            Ok(view) => state.serving = Some(Arc::new(view)),
                            Err(e) => state.error = Some(e),
                        }
                    }
                }
            }
            states.insert(file, state);
        }
        let by_name = settle(&mut states, &old);
        for (file, state) in &states {
            if state.error != old_errors.get(file).cloned().flatten()
                && let Some(error) = &state.error
            {
                tracing::warn!(file = %file, error = %error, serving = state.serving.is_some(), "view file refused; the view it defined before (if any) keeps serving");
            }
        }
        for file in old.keys() {
            if !states.contains_key(file) {
                tracing::info!(file = %file, "view file gone; its view no longer serves");
            }
        }
        *views.by_name.write() = by_name;
        *views.files.write() = states;
        // Kept statements decided which of their tables are views.
        self.clear_prepared();
    }

    /// Plans each view not planned since it changed, over the current
    /// generation when that holds its tables; one that does not plan (an
    /// unknown column, a type error) falls back to the version its file
    /// defined before, with the reason in `fleet_views`.
    pub async fn check_views(&self) {
        let views = self.views();
        let current = self.current();
        if current.meta.id == 0 {
            return;
        }
        let unplanned: Vec<(String, Arc<ActiveView>)> = views
            .files
            .read()
            .iter()
            .filter_map(|(file, s)| {
                let view = s.serving.clone()?;
                (s.planned != Some(view.version)).then(|| (file.clone(), view))
            })
            .collect();
        let ctx = self.session_context();
        let mut refused = Vec::new();
        let mut planned = Vec::new();
        for (file, view) in unplanned {
            if !view
                .fleet_tables
                .iter()
                .all(|t| current.tables.contains_key(t))
            {
                continue;
            }
            match plan_statement(&ctx, view.statement.clone(), current.clone()).await {
                Ok(_) => planned.push((file, view.version)),
                Err(e) => refused.push((file, view, e.to_string())),
            }
        }
        let mut files = views.files.write();
        for (file, version) in planned {
            if let Some(state) = files.get_mut(&file) {
                state.planned = Some(version);
            }
        }
        if refused.is_empty() {
            return;
        }
        let old: BTreeMap<String, Option<Arc<ActiveView>>> = files
            .iter()
            .map(|(f, s)| (f.clone(), s.previous.clone()))
            .collect();
        for (file, view, error) in refused {
            if let Some(state) = files.get_mut(&file)
                && state
                    .serving
                    .as_ref()
                    .is_some_and(|s| s.version == view.version)
            {
                let error = format!("view `{}` does not plan: {error}", view.definition.name);
                tracing::warn!(file = %file, error = %error, "view refused; the version defined before (if any) keeps serving");
                state.error = Some(error);
                state.serving = state.previous.clone();
            }
        }
        let by_name = settle(&mut files, &old);
        *views.by_name.write() = by_name;
        drop(files);
        self.clear_prepared();
    }

    fn candidate(
        &self,
        file: &str,
        definition: ViewDefinition,
        node_tables: &BTreeSet<String>,
    ) -> Result<ActiveView, String> {
        check_name(&definition.name)?;
        if node_tables.contains(&definition.name) {
            return Err(format!(
                "view name `{}` is a table of the node already; choose another",
                definition.name
            ));
        }
        let statement = self
            .parse(&definition.sql)
            .map_err(|e| format!("the SQL of view `{}` does not parse: {e}", definition.name))?;
        if !matches!(statement, Statement::Query(_)) {
            return Err(format!(
                "the SQL of view `{}` is not a SELECT; a view is one query",
                definition.name
            ));
        }
        let state = self.session_context().state();
        let references = state
            .resolve_table_references(&DfStatement::Statement(Box::new(statement.clone())))
            .map_err(|e| format!("view `{}`: {}", definition.name, e.strip_backtrace()))?;
        let references = references
            .iter()
            .filter(|r| r.schema().is_none_or(|s| s == "public"))
            .map(|r| r.table().to_string())
            .filter(|t| !SYSTEM_TABLES.contains(&t.as_str()) && !node_tables.contains(t))
            .collect();
        Ok(ActiveView {
            version: self.views().version(),
            file: file.to_string(),
            definition,
            statement,
            references,
            fleet_tables: BTreeSet::new(),
        })
    }

    /// Each view file's view and counts (the `fleet_views` table).
    pub fn views_stats(&self) -> Vec<ViewStats> {
        self.views().stats()
    }

    /// Fleet tables the views marked `prewarm` read.
    pub fn prewarm_view_tables(&self) -> BTreeSet<String> {
        self.views()
            .by_name
            .read()
            .values()
            .filter(|v| v.definition.prewarm)
            .flat_map(|v| v.fleet_tables.iter().cloned())
            .collect()
    }

    /// Computes every `prewarm` view over `generation` now (for a
    /// generation hook), unless computed already. Failures are in
    /// `fleet_views`.
    pub async fn prewarm_views(&self, generation: &Arc<Generation>) {
        let views = self.views();
        let prewarm: Vec<Arc<ActiveView>> = views
            .by_name
            .read()
            .values()
            .filter(|v| v.definition.prewarm)
            .cloned()
            .collect();
        for view in prewarm {
            if view
                .fleet_tables
                .iter()
                .all(|t| generation.tables.contains_key(t))
            {
                let _ = views.result(&view, generation).await;
            }
        }
    }
}

/// The provider for `name` if it is a view.
pub(crate) async fn view_table(
    views: &Arc<Views>,
    name: &str,
    current: &watch::Receiver<Arc<Generation>>,
) -> DfResult<Option<Arc<dyn TableProvider>>> {
    let Some(view) = views.get(name) else {
        return Ok(None);
    };
    Ok(Some(Arc::new(ViewTable::new(views, view, current).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, refs: &[&str]) -> Arc<ActiveView> {
        Arc::new(ActiveView {
            definition: ViewDefinition {
                name: name.into(),
                sql: String::new(),
                prewarm: false,
                description: None,
            },
            file: format!("{name}.toml"),
            version: 1,
            statement: Statement::Commit {
                chain: false,
                end: false,
                modifier: None,
            },
            references: refs.iter().map(|s| s.to_string()).collect(),
            fleet_tables: BTreeSet::new(),
        })
    }

    #[test]
    fn a_cycle_is_found_and_named_but_a_chain_is_not_one() {
        let mut set = BTreeMap::new();
        for (name, refs) in [
            ("a", &["b"][..]),
            ("b", &["c", "sys"][..]),
            ("c", &["sys"][..]),
        ] {
            set.insert(name.to_string(), view(name, refs));
        }
        assert!(cycles(&set).is_empty());
        let mut fleet = BTreeSet::new();
        expand("a", &set, &mut fleet, 0);
        assert_eq!(fleet, BTreeSet::from(["sys".to_string()]));

        set.insert("c".into(), view("c", &["a"]));
        let found = cycles(&set);
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found["a"], "a -> b -> c -> a");
        set.insert("d".into(), view("d", &["d"]));
        assert_eq!(cycles(&set)["d"], "d -> d");
    }

    #[test]
    fn names_must_be_plain_identifiers_outside_fleet() {
        assert!(check_name("disk_usage").is_ok());
        assert!(check_name("Disk").is_err());
        assert!(check_name("1x").is_err());
        assert!(check_name("fleet_views").is_err());
        assert!(check_name("a-b").is_err());
    }
}
