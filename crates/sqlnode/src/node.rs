use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::execution::TaskContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use fleetsql_aggregator::{
    Child, FLEET_NODES, FetchRequest, NodeState, covers_all, fleet_nodes_table, host_name,
};
use fleetsql_auth::{Action, AuditLog, Principal, Role};
use fleetsql_model::{Generation, merge_tables, now_ms};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::audit::{AUDIT_TABLE, AuditTable};
use crate::catalog::{ExtraTables, FleetSchema, PINNED};
use crate::choice::{self, SourceStatus};
use crate::hooks::{
    GENERATION_HOOKS_TABLE, GenerationHook, GenerationHookHandle, GenerationHookStats, Hooks,
    HooksTable,
};
use crate::node_tables::NodeTableProvider;
use crate::prepared::{KeptPlan, Prepared, PreparedCache, folds_changing_values};
use crate::requests::{QueryRequests, RequestLimits};
use crate::shared::{SHARED_ANSWERS_BYTES, SharedAnswers, SharedAnswersStats};
use crate::system_tables::SYSTEM_TABLES;
use crate::time_travel::{HISTORY_READS, HistoryReads, TimeTravel};
use crate::views::{VIEWS_TABLE, Views, ViewsTable};
use crate::{GenerationInfo, Result, SqlError};

/// How a SQL node runs; every field has a working default.
#[derive(Debug, Clone)]
pub struct SqlNodeConfig {
    pub name: String,
    /// The TLA's tick; sets how long to long-poll and wait for new tables.
    pub tick: Duration,
    pub query_timeout: Duration,
    /// Memory all running queries may hold together, in bytes.
    pub memory_limit: usize,
    /// How long a query waits for a table not collected yet.
    pub table_wait: Duration,
    /// A table no query named for this long stops being collected.
    pub request_idle_expiry: Duration,
    /// Tables collected whether or not a query named them.
    pub prewarm: BTreeSet<String>,
    /// Per source name: added to the clusters it sees when choosing one
    /// (a TLA in the same data centre is worth a few clusters).
    pub locality_bonus: BTreeMap<String, i64>,
    /// How much higher another source must score before the node switches.
    pub switch_margin: i64,
    /// How often every source is probed for what it sees.
    pub probe_interval: Duration,
    /// What clients' queries may add to the tables requested from the TLA.
    pub request_limits: RequestLimits,
    /// Bytes of answers kept so identical queries over one generation
    /// share one run (0: no sharing).
    pub shared_answers_bytes: usize,
    /// The aggregator set this node belongs to, named in its refusals.
    pub set: Option<String>,
    /// The roles whose ad-hoc queries (pg, HTTP, Flight SQL) this node
    /// answers; `None`: every role. The node's own apps (alerts, reports)
    /// are not ad hoc and always run.
    pub domain: Option<BTreeSet<Role>>,
    /// Queries that may run at once (seed 8.2); `None`: no limit. Default
    /// [`crate::DEFAULT_MAX_CONCURRENT_QUERIES`].
    pub max_concurrent_queries: Option<usize>,
    /// Queries that may wait for a place when `max_concurrent_queries` run
    /// (each at most its time-out); one more is refused at once (53300),
    /// so a flood gets a clear answer rather than an ever longer wait.
    pub max_queued_queries: usize,
    /// The subsets of its set when the set's tables are partitioned.
    pub partition: Option<crate::Partition>,
}

impl SqlNodeConfig {
    pub fn new(name: impl Into<String>, tick: Duration) -> Self {
        SqlNodeConfig {
            name: name.into(),
            tick,
            query_timeout: Duration::from_secs(30),
            memory_limit: 1 << 30,
            table_wait: (tick * 2 + Duration::from_secs(2)).max(Duration::from_secs(5)),
            request_idle_expiry: Duration::from_secs(600),
            prewarm: BTreeSet::new(),
            locality_bonus: BTreeMap::new(),
            switch_margin: 1,
            probe_interval: tick.min(Duration::from_secs(5)),
            request_limits: RequestLimits::default(),
            shared_answers_bytes: SHARED_ANSWERS_BYTES,
            set: None,
            domain: None,
            max_concurrent_queries: Some(crate::DEFAULT_MAX_CONCURRENT_QUERIES),
            max_queued_queries: crate::DEFAULT_MAX_QUEUED_QUERIES,
            partition: None,
        }
    }
}

/// A finished query: rows and the generation they came from.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub generation: GenerationInfo,
    pub elapsed: Duration,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

struct Inner {
    config: SqlNodeConfig,
    /// Replaced whole by [`SqlNode::set_sources`] (a re-read topology); the
    /// loops read a snapshot per round.
    sources: Mutex<Arc<Vec<Arc<dyn Child>>>>,
    /// What a re-read configuration changed that only a restart applies.
    pending_restart: Mutex<Option<String>>,
    /// Whether the apps' stores (alert state, report runs) accept writes.
    stores: crate::stores::StoreHealth,
    generation: watch::Sender<Arc<Generation>>,
    requests: Mutex<QueryRequests>,
    refetch: Notify,
    ctx: Arc<SessionContext>,
    sources_status: Mutex<Vec<SourceStatus>>,
    chosen: AtomicUsize,
    /// Wakes the fetch loop when the probe loop picked another source.
    switch: Notify,
    started: Instant,
    host: String,
    extra_tables: ExtraTables,
    last_install: Mutex<Option<Install>>,
    prepared: PreparedCache,
    hooks: Arc<Hooks>,
    audit: Arc<AuditLog>,
    views: Arc<Views>,
    shared: SharedAnswers,
    /// Places for `max_concurrent_queries`; `None`: unlimited.
    admission: Option<crate::execution::Admission>,
    /// Replaced by [`SqlNode::set_partition`] (a re-read topology: the
    /// other subsets' addresses).
    partition: Mutex<Option<crate::Partition>>,
    /// Reads versioned table names (`FOR SYSTEM_TIME AS OF`); set by the
    /// node's history when it keeps one.
    time_travel: parking_lot::RwLock<Option<Arc<dyn TimeTravel>>>,
    /// Columns of the fleet tables seen collected (the catalogs' view of
    /// tables not collected now).
    known_schemas: crate::catalog::KnownSchemas,
}

/// When the node began answering from a generation its source made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Install {
    pub generation_id: u64,
    /// When the source finished making it.
    pub made_at_ms: i64,
    /// When this node's queries first saw it.
    pub installed_at_ms: i64,
    /// The oldest machine data it holds, when it holds any.
    pub oldest_data_ms: Option<i64>,
}

impl Install {
    /// Transfer from the source plus installation here.
    pub fn latency_ms(&self) -> i64 {
        self.installed_at_ms - self.made_at_ms
    }

    /// How old its oldest machine data were when queries first saw them.
    pub fn data_age_ms(&self) -> Option<i64> {
        self.oldest_data_ms
            .map(|oldest| self.installed_at_ms - oldest)
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlNode")
            .field("config", &self.config)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

/// A running SQL node; dropping it stops fetching generations.
#[derive(Debug)]
pub struct SqlNode {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SqlNode {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.inner.hooks.abort_all();
    }
}

/// `sql`, an `EXPLAIN` DataFusion's parser read, as sqlparser's statement.
fn explain_statement(sql: &str, dialect: &datafusion::config::Dialect) -> Result<Statement> {
    use datafusion::sql::sqlparser::dialect::dialect_from_str;
    use datafusion::sql::sqlparser::parser::Parser;
    let dialect = dialect_from_str(dialect)
        .ok_or_else(|| SqlError::Parse(format!("unsupported SQL dialect {dialect}")))?;
    let mut statements =
        Parser::parse_sql(dialect.as_ref(), sql).map_err(|e| SqlError::Parse(e.to_string()))?;
    match statements.pop() {
        Some(statement @ Statement::Explain { .. }) if statements.is_empty() => Ok(statement),
        _ => Err(SqlError::Parse(
            "expected one EXPLAIN statement; send statements one at a time".to_string(),
        )),
    }
}

/// Statements a read-only node runs. Everything else is refused by name.
fn read_only_check(statement: &Statement) -> Result<()> {
    crate::settings::check_setting(statement)?;
    match statement {
        Statement::Explain { statement, .. } => read_only_check(statement),
        Statement::Query(_)
        | Statement::ExplainTable { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::Set(_)
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. } => Ok(()),
        other => {
            let text = other.to_string();
            let keyword: Vec<&str> = text.split_whitespace().take(2).collect();
            Err(SqlError::ReadOnly {
                statement: keyword.join(" ").to_uppercase(),
            })
        }
    }
}

impl SqlNode {
    /// Starts fetching generations from `sources` (TLAs, tried in order).
    pub fn start(config: SqlNodeConfig, sources: Vec<Arc<dyn Child>>) -> Result<SqlNode> {
        let empty = Arc::new(Generation::empty(&config.name));
        let (generation, receiver) = watch::channel(empty.clone());
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_limit(config.memory_limit, 1.0)
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()
            .map_err(SqlError::from)?;
        // Sessions are in UTC, as a Postgres server set to UTC: a
        // `TIMESTAMPTZ` (a cast, `now()`) is a zoned timestamp, which the
        // wire sends as timestamptz; DataFusion's default (no zone) makes
        // it a naive one that clients read without its zone.
        let session_config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("datafusion", "public")
            .set_str("datafusion.execution.time_zone", "UTC");
        // Every front end's plans, the protocol layers' own included, get
        // yield points after their joins (see `YieldingJoins`).
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(session_config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(crate::execution::YieldingJoins))
            .build();
        let ctx = SessionContext::new_with_state(state);
        crate::compat::register(&ctx);
        let extra_tables = ExtraTables::default();
        let known_schemas = crate::catalog::KnownSchemas::default();
        let views = Arc::new(Views::new(config.query_timeout));
        let shared = SharedAnswers::new(config.shared_answers_bytes);
        let catalog = ctx
            .catalog("datafusion")
            .ok_or_else(|| SqlError::Query("default catalog missing".into()))?;
        catalog
            .register_schema(
                "public",
                Arc::new(FleetSchema {
                    current: receiver,
                    extra: extra_tables.clone(),
                    views: views.clone(),
                    known: known_schemas.clone(),
                }),
            )
            .map_err(SqlError::from)?;
        let requests = QueryRequests::new(
            config.prewarm.clone(),
            config.request_idle_expiry,
            config.request_limits,
        );
        let statuses: Vec<SourceStatus> = sources
            .iter()
            .map(|s| SourceStatus {
                name: s.name().to_string(),
                locality_bonus: config.locality_bonus.get(s.name()).copied().unwrap_or(0),
                ..Default::default()
            })
            .collect();
        let first = choice::initial(&statuses);
        let admission = config
            .max_concurrent_queries
            .map(|n| crate::execution::Admission::new(n, config.max_queued_queries));
        let inner = Arc::new(Inner {
            partition: Mutex::new(config.partition.clone()),
            admission,
            config,
            sources: Mutex::new(Arc::new(sources)),
            pending_restart: Mutex::new(None),
            stores: crate::stores::StoreHealth::default(),
            generation,
            requests: Mutex::new(requests),
            refetch: Notify::new(),
            ctx: Arc::new(ctx),
            sources_status: Mutex::new(statuses),
            chosen: AtomicUsize::new(first),
            switch: Notify::new(),
            started: Instant::now(),
            host: host_name(),
            extra_tables,
            last_install: Mutex::new(None),
            prepared: PreparedCache::default(),
            hooks: Arc::new(Hooks::new(empty)),
            audit: Arc::new(AuditLog::default()),
            time_travel: parking_lot::RwLock::new(None),
            shared,
            views,
            known_schemas,
        });
        inner.views.set_context(&inner.ctx);
        inner.extra_tables.write().insert(
            VIEWS_TABLE.to_string(),
            Arc::new(NodeTableProvider(ViewsTable(inner.views.clone()))),
        );
        inner.extra_tables.write().insert(
            GENERATION_HOOKS_TABLE.to_string(),
            Arc::new(NodeTableProvider(HooksTable::new(&inner.hooks))),
        );
        inner.extra_tables.write().insert(
            AUDIT_TABLE.to_string(),
            Arc::new(NodeTableProvider(AuditTable::new(inner.audit.clone()))),
        );
        // The probe loop runs even over one source: a re-read topology may
        // give the node more.
        let tasks = vec![
            tokio::spawn(fetch_loop(inner.clone())),
            tokio::spawn(probe_loop(inner.clone())),
        ];
        Ok(SqlNode { inner, tasks })
    }

    pub fn name(&self) -> &str {
        &self.inner.config.name
    }

    pub fn config(&self) -> &SqlNodeConfig {
        &self.inner.config
    }

    /// Refuses an ad-hoc query from `principal` when its role is outside
    /// the domain of this node's set (an alerts set serves only its alerts).
    /// Front ends call it before running anything; the refusal is final:
    /// no other set is tried.
    /// [`SqlNode::admit`] for a front end without authentication (Flight
    /// SQL): its clients are anonymous with every role, as on pg and HTTP
    /// with authentication off.
    pub fn admit_unauthenticated(&self) -> Result<()> {
        self.admit(&Principal::unauthenticated("anonymous"))
    }

    pub fn admit(&self, principal: &Principal) -> Result<()> {
        let Some(domain) = &self.inner.config.domain else {
            return Ok(());
        };
        if domain.contains(&principal.role) {
            return Ok(());
        }
        Err(SqlError::OutsideDomain {
            set: self
                .inner
                .config
                .set
                .clone()
                .unwrap_or_else(|| self.inner.config.name.clone()),
            role: principal.role.as_str(),
            serves: if domain.is_empty() {
                "no ad-hoc queries (only its own alerts and reports)".to_string()
            } else {
                domain
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
    }

    /// [`SqlNode::admit`] for one statement, which must also not read a
    /// node table the principal may not: `fleet_audit` (every user's SQL
    /// and address) is for admins. A statement that does not resolve is
    /// let through to fail with its own error.
    pub fn admit_statement(&self, principal: &Principal, statement: &Statement) -> Result<()> {
        self.admit(principal)?;
        if principal.allows(Action::ReadAudit) {
            return Ok(());
        }
        let Ok(references) = self
            .inner
            .ctx
            .state()
            .resolve_table_references(&DfStatement::Statement(Box::new(statement.clone())))
        else {
            return Ok(());
        };
        match references.iter().find(|r| r.table() == AUDIT_TABLE) {
            None => Ok(()),
            Some(_) => Err(SqlError::NotReadable {
                table: AUDIT_TABLE.to_string(),
                role: principal.role.as_str(),
                needs: Role::Admin.as_str(),
            }),
        }
    }

    /// Who ran what on this node: every front end records its requests
    /// here; served as `fleet_audit`.
    pub fn audit(&self) -> &Arc<AuditLog> {
        &self.inner.audit
    }

    /// The shared DataFusion context (front ends add catalogs to it).
    pub fn session_context(&self) -> Arc<SessionContext> {
        self.inner.ctx.clone()
    }

    /// Adds a table that other components own (alert state, say) to the
    /// node's schema. It is not a fleet table: queries naming it neither
    /// request it from the TLA nor wait for it, and it does not read the
    /// pinned generation. Registering a name again replaces the table.
    /// [`SqlNode::register_system_table`] for a table made from its
    /// owner's state each time a query scans it (`fleet_sets`).
    pub fn register_node_table(&self, name: &str, table: impl crate::NodeTable) {
        self.register_system_table(name, Arc::new(NodeTableProvider(table)));
    }

    pub fn register_system_table(&self, name: &str, table: Arc<dyn TableProvider>) {
        self.inner
            .extra_tables
            .write()
            .insert(name.to_string(), table);
        // Kept statements decided which of their tables are fleet tables.
        self.inner.prepared.clear();
    }

    pub fn current(&self) -> Arc<Generation> {
        self.inner.generation.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Generation>> {
        self.inner.generation.subscribe()
    }

    /// Parses `sql` (one statement) with the session's SQL dialect.
    pub fn parse(&self, sql: &str) -> Result<Statement> {
        let state = self.inner.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let parsed = state.sql_to_statement(sql, &dialect);
        if parsed.is_err()
            && let Some(statement) = crate::time_travel::parse_versioned(
                sql,
                state.config().options().sql_parser.recursion_limit.into(),
            )
        {
            return Ok(statement);
        }
        match parsed {
            Ok(DfStatement::Statement(statement)) => Ok(*statement),
            // DataFusion's parser takes `EXPLAIN [ANALYZE]` as a statement
            // of its own, which the node would refuse as not a query;
            // sqlparser's form of it plans the same and passes the same
            // checks (the explained statement is checked too).
            Ok(DfStatement::Explain(explain))
                if matches!(*explain.statement, DfStatement::Statement(_)) =>
            {
                explain_statement(sql, &dialect)
            }
            Ok(other) => Err(SqlError::ReadOnly {
                statement: other
                    .to_string()
                    .split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" "),
            }),
            Err(e) => Err(SqlError::Parse(e.strip_backtrace().to_string())),
        }
    }

    /// Picks the generation `statement` will read: requests the fleet tables
    /// it names and waits (bounded) until a generation covers them.
    pub async fn pin(&self, statement: &Statement) -> Result<Arc<Generation>> {
        self.pin_for(statement, None).await
    }

    /// [`SqlNode::pin`] for a client at `client`, whose new table names
    /// count against its share (`max_new_tables_per_client_minute`).
    pub async fn pin_for(
        &self,
        statement: &Statement,
        client: Option<IpAddr>,
    ) -> Result<Arc<Generation>> {
        read_only_check(statement)?;
        let (tables, _) = self.tables_of(statement)?;
        self.pin_tables(&tables, client).await
    }

    /// The fleet tables `statement` reads, and whether it reads any other
    /// table (system tables, tables registered on the node, other schemas).
    fn tables_of(&self, statement: &Statement) -> Result<(BTreeSet<String>, bool)> {
        let state = self.inner.ctx.state();
        // Versioned tables read history, not the live generation.
        let versioned = !crate::time_travel::versioned_tables(statement).is_empty();
        let functions = crate::compat::table_function_names(statement);
        let statement = if versioned {
            crate::time_travel::with_history_names(statement)
        } else {
            statement.clone()
        };
        let references = state
            .resolve_table_references(&DfStatement::Statement(Box::new(statement)))
            .map_err(SqlError::from)?;
        let extra = self.inner.extra_tables.read();
        let mut fleet = BTreeSet::new();
        let mut other = versioned;
        for reference in &references {
            let table = reference.table();
            // `generate_series(1, 3)` in FROM: a function, not a table.
            if reference.schema().is_none() && functions.contains(table) {
                continue;
            }
            if reference.schema().is_some_and(|s| s != "public")
                || SYSTEM_TABLES.contains(&table)
                || extra.contains_key(table)
            {
                other = true;
            } else if let Some(read) = self.inner.views.fleet_tables_of(table) {
                // A view reads the pinned generation like a fleet table.
                fleet.extend(read);
            } else {
                fleet.insert(table.to_string());
            }
        }
        Ok((fleet, other))
    }

    /// Parses and checks `sql`, or finds it among the statements already
    /// seen: the same SQL text again skips parsing and, while the tables'
    /// schemas stay the same, planning and optimising.
    pub fn prepare(&self, sql: &str) -> Result<Arc<Prepared>> {
        if let Some(prepared) = self.inner.prepared.get(sql) {
            return Ok(prepared);
        }
        let statement = self.parse(sql)?;
        self.keep_prepared(sql, statement)
    }

    /// [`SqlNode::prepare`] for a statement a front end parsed itself (the
    /// Postgres wire); kept by its text as printed.
    pub fn prepare_statement(&self, statement: &Statement) -> Result<Arc<Prepared>> {
        let text = statement.to_string();
        if let Some(prepared) = self.inner.prepared.get(&text) {
            return Ok(prepared);
        }
        self.keep_prepared(&text, statement.clone())
    }

    pub(crate) fn views(&self) -> &Arc<Views> {
        &self.inner.views
    }

    /// Tables other components registered on the node.
    pub(crate) fn node_table_names(&self) -> BTreeSet<String> {
        self.inner.extra_tables.read().keys().cloned().collect()
    }

    /// Forgets kept plans and shared answers (the views changed, so the
    /// same text may now mean something else).
    pub(crate) fn clear_prepared(&self) {
        self.inner.prepared.clear();
        self.inner.shared.clear();
    }

    /// What sharing identical queries' answers did.
    pub fn shared_answers(&self) -> SharedAnswersStats {
        self.inner.shared.stats()
    }

    fn keep_prepared(&self, text: &str, statement: Statement) -> Result<Arc<Prepared>> {
        read_only_check(&statement)?;
        let (tables, other) = self.tables_of(&statement)?;
        let prepared = Arc::new(Prepared::new(statement, tables, other));
        self.inner.prepared.insert(text, prepared.clone());
        Ok(prepared)
    }

    /// How many SQL texts [`SqlNode::prepare`] keeps now.
    pub fn prepared_count(&self) -> usize {
        self.inner.prepared.len()
    }

    /// [`SqlNode::pin`] for a prepared statement.
    pub async fn pin_prepared(&self, prepared: &Prepared) -> Result<Arc<Generation>> {
        self.pin_tables(prepared.fleet_tables(), None).await
    }

    /// [`SqlNode::pin_prepared`] for a client at `client` (see
    /// [`SqlNode::pin_for`]).
    pub async fn pin_prepared_for(
        &self,
        prepared: &Prepared,
        client: Option<IpAddr>,
    ) -> Result<Arc<Generation>> {
        self.pin_tables(prepared.fleet_tables(), client).await
    }

    /// Runs a prepared statement pinned to `generation`, reusing its kept
    /// plan when the tables it reads kept their schemas.
    pub async fn execute_prepared(
        &self,
        prepared: &Prepared,
        generation: Arc<Generation>,
    ) -> Result<QueryOutput> {
        if !prepared.is_query() {
            return self.execute(prepared.statement().clone(), generation).await;
        }
        let started = Instant::now();
        let kept = self.kept_plan(prepared, &generation).await?;
        if !(kept.optimised && prepared.plan_reusable()) {
            return self
                .run_plan(kept.plan, kept.optimised, generation, started)
                .await;
        }
        // An optimised plan over fleet tables and views reads nothing but
        // the generation: an identical query over it has the same answer.
        let newest = self.inner.generation.borrow().clone();
        let shared = self
            .inner
            .shared
            .answer(prepared.text(), &generation, &newest, || {
                self.run_plan(kept.plan, true, generation.clone(), started)
            })
            .await?;
        Ok(QueryOutput {
            elapsed: started.elapsed(),
            ..shared
        })
    }

    /// The plan `prepared` keeps for `generation`'s schemas, planned (and
    /// optimised, unless it folds values that change) when it has none.
    async fn kept_plan(
        &self,
        prepared: &Prepared,
        generation: &Arc<Generation>,
    ) -> Result<KeptPlan> {
        if let Some(kept) = prepared.kept_plan(generation) {
            return Ok(kept);
        }
        let timeout = self.inner.config.query_timeout;
        let plan = tokio::time::timeout(
            timeout,
            self.plan(prepared.statement().clone(), generation.clone()),
        )
        .await
        .map_err(|_| SqlError::Timeout {
            timeout_ms: timeout.as_millis() as u64,
        })??;
        let kept = if folds_changing_values(&plan) {
            KeptPlan::new(plan, false)
        } else {
            let optimised = self.inner.ctx.state().optimize(&plan)?;
            KeptPlan::new(optimised, true)
        };
        prepared.keep_plan(generation, &kept);
        Ok(kept)
    }

    async fn pin_tables(
        &self,
        tables: &BTreeSet<String>,
        client: Option<IpAddr>,
    ) -> Result<Arc<Generation>> {
        self.route(tables)?;
        let mut receiver = self.inner.generation.subscribe();
        let current = receiver.borrow_and_update().clone();
        let is_new = self.inner.requests.lock().admit(
            tables,
            client,
            |t| current.meta.available.contains(t) || current.tables.contains_key(t),
            Instant::now(),
        )?;
        if tables.is_empty() {
            // Only the node's own tables (alerts, fleet_sources, ...):
            // they answer before any fleet data arrive, and while the TLA
            // is unreachable, which is when an operator asks them.
            return Ok(current);
        }
        let covered = |g: &Generation| {
            tables
                .iter()
                .all(|t| g.tables.contains_key(t) || g.meta.visibility.tables.contains_key(t))
        };
        if current.meta.id > 0 && covered(&current) {
            return Ok(current);
        }
        if !is_new && current.meta.id > 0 {
            // Already asked for and still unknown: no need to wait again.
            self.check_published(&current, tables)?;
        }
        if is_new {
            // A table named for the first time (perhaps published a moment
            // ago) is asked for down the tree at once; the answer says
            // whether anyone publishes it.
            self.inner.refetch.notify_one();
        }
        let asked_at = current.meta.id;
        let wait = self.inner.config.table_wait;
        let waited = Instant::now();
        let found = tokio::time::timeout(
            wait,
            receiver.wait_for(|g| {
                g.meta.id > 0
                    && (covers_all(g, tables)
                        || (g.meta.id != asked_at
                            && tables.iter().any(|t| !g.meta.available.contains(t))))
            }),
        )
        .await;
        match found {
            Ok(Ok(generation)) => {
                let generation = generation.clone();
                self.check_published(&generation, tables)?;
                Ok(generation)
            }
            _ => {
                let current = self.current();
                if current.meta.id == 0 {
                    return Err(SqlError::NoGeneration {
                        source_name: self.source_names(),
                    });
                }
                self.check_published(&current, tables)?;
                let missing = tables
                    .iter()
                    .find(|t| !current.meta.visibility.tables.contains_key(*t))
                    .cloned()
                    .unwrap_or_default();
                Err(SqlError::NotYetCollected {
                    table: missing,
                    waited_ms: waited.elapsed().as_millis() as u64,
                })
            }
        }
    }

    /// Replaces the TLAs the node may read from and their locality bonus
    /// (a re-read topology), without a restart. A source kept by name keeps
    /// what was learnt of it; the node stays on its current source when it
    /// is kept, and otherwise moves to the best of the new ones at once,
    /// answering from its last generation meanwhile.
    pub fn set_sources(
        &self,
        sources: Vec<Arc<dyn Child>>,
        locality_bonus: &BTreeMap<String, i64>,
    ) {
        let inner = &self.inner;
        let mut statuses = inner.sources_status.lock();
        let current = inner
            .sources
            .lock()
            .get(inner.chosen.load(Ordering::Relaxed))
            .map(|c| c.name().to_string());
        let next: Vec<SourceStatus> = sources
            .iter()
            .map(|source| {
                let kept = statuses.iter().find(|s| s.name == source.name()).cloned();
                SourceStatus {
                    locality_bonus: locality_bonus.get(source.name()).copied().unwrap_or(0),
                    ..kept.unwrap_or_else(|| SourceStatus {
                        name: source.name().to_string(),
                        ..SourceStatus::default()
                    })
                }
            })
            .collect();
        let chosen = current
            .and_then(|name| next.iter().position(|s| s.name == name))
            .unwrap_or_else(|| choice::initial(&next));
        *statuses = next;
        *inner.sources.lock() = Arc::new(sources);
        inner.chosen.store(chosen, Ordering::Relaxed);
        drop(statuses);
        inner.switch.notify_one();
    }

    /// Where a query reading the fleet tables `tables` runs: here, or
    /// (an error front ends act on) on another subset of the set.
    fn route(&self, tables: &BTreeSet<String>) -> Result<()> {
        let partition = self.inner.partition.lock();
        let Some(partition) = partition.as_ref() else {
            return Ok(());
        };
        match partition.route(tables)? {
            crate::Route::Here => Ok(()),
            crate::Route::Elsewhere { subset, nodes } => Err(SqlError::ServedElsewhere {
                set: partition.set.clone(),
                subset,
                tables: tables
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                nodes,
            }),
        }
    }

    /// Replaces the subsets of the node's set (a re-read topology).
    pub fn set_partition(&self, partition: Option<crate::Partition>) {
        *self.inner.partition.lock() = partition;
    }

    /// Runs `sql` on the first of `nodes` that can be reached (the serving
    /// subset of a [`SqlError::ServedElsewhere`]) and returns its answer,
    /// its generation saying which node computed it. A node that answers,
    /// even with an error, ends the search: the query runs once.
    pub async fn forward(&self, nodes: &[crate::Peer], sql: &str) -> Result<QueryOutput> {
        let timeout = self.inner.config.query_timeout + Duration::from_secs(5);
        let mut last = None;
        for peer in nodes {
            match crate::partition::forward(peer, sql, timeout).await {
                Err(e @ SqlError::Forward { .. }) => last = Some(e),
                answer => return answer,
            }
        }
        Err(last.unwrap_or_else(|| SqlError::Forward {
            node: "(none)".into(),
            reason: "the serving subset has no SQL node".into(),
        }))
    }

    /// Replaces the tables collected whether or not a query names them.
    pub fn set_prewarm(&self, prewarm: BTreeSet<String>) {
        self.inner.requests.lock().set_prewarm(prewarm);
        self.inner.refetch.notify_one();
    }

    /// What a re-read configuration changed that only a restart applies
    /// (shown in this node's `fleet_nodes` row).
    pub fn set_pending_restart(&self, what: Option<String>) {
        *self.inner.pending_restart.lock() = what;
    }

    /// The apps' stores (alert state, report runs): their owners report
    /// each write here; failures show in this node's `fleet_nodes` row
    /// (`store_error`) and on `/metrics`.
    pub fn stores(&self) -> &crate::stores::StoreHealth {
        &self.inner.stores
    }

    fn source_names(&self) -> String {
        self.inner
            .sources
            .lock()
            .iter()
            .map(|s| s.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn check_published(&self, generation: &Generation, tables: &BTreeSet<String>) -> Result<()> {
        for table in tables {
            if !generation.meta.available.contains(table) && !generation.tables.contains_key(table)
            {
                let mut known: Vec<&str> = generation
                    .meta
                    .available
                    .iter()
                    .map(String::as_str)
                    .collect();
                known.extend(SYSTEM_TABLES);
                return Err(SqlError::UnknownTable {
                    table: table.clone(),
                    machines_seen: generation.meta.visibility.machines_seen(),
                    known: known.join(", "),
                });
            }
        }
        Ok(())
    }

    /// Plans and runs `statement` against `generation`, under the time-out.
    pub async fn execute(
        &self,
        statement: Statement,
        generation: Arc<Generation>,
    ) -> Result<QueryOutput> {
        let started = Instant::now();
        let timeout = self.inner.config.query_timeout;
        let plan = tokio::time::timeout(timeout, self.plan(statement, generation.clone()))
            .await
            .map_err(|_| SqlError::Timeout {
                timeout_ms: timeout.as_millis() as u64,
            })??;
        self.run_plan(plan, false, generation, started).await
    }

    /// Plans `statement` pinned to `generation` (for protocols that plan
    /// and execute in separate steps). Output columns carry Postgres's
    /// names (`count`, `?column?`, duplicates allowed; see `naming`).
    pub async fn plan(
        &self,
        statement: Statement,
        generation: Arc<Generation>,
    ) -> Result<LogicalPlan> {
        let ctx = self.inner.ctx.clone();
        let mut statement = statement;
        let travel = self.inner.time_travel.read().clone();
        crate::time_travel::travel(&ctx, travel, &mut statement).await?;
        crate::compat::postgres_information_schema(&mut statement);
        crate::naming::name_outputs(&mut statement);
        PINNED
            .scope(generation, async move {
                let plan = ctx
                    .state()
                    .statement_to_plan(DfStatement::Statement(Box::new(statement)))
                    .await?;
                Self::verify_read_only(&plan)?;
                Ok(crate::naming::restore_names(plan)?)
            })
            .await
    }

    /// Lets queries read versioned table names (`FROM sys FOR SYSTEM_TIME
    /// AS OF ...`, `VERSION AS OF n`) through `travel`; `None` refuses
    /// them, naming the setting that keeps history.
    pub fn set_time_travel(&self, travel: Option<Arc<dyn TimeTravel>>) {
        *self.inner.time_travel.write() = travel;
        self.inner.prepared.clear();
    }

    /// Runs an already planned query pinned to `generation`.
    pub async fn execute_plan(
        &self,
        plan: LogicalPlan,
        generation: Arc<Generation>,
    ) -> Result<QueryOutput> {
        Self::verify_read_only(&plan)?;
        let started = Instant::now();
        let node_tables = self.node_table_names();
        let Some(key) = crate::shared::plan_key(&plan, |t| node_tables.contains(t)) else {
            return self.run_plan(plan, false, generation, started).await;
        };
        let newest = self.inner.generation.borrow().clone();
        let shared = self
            .inner
            .shared
            .answer(&key, &generation, &newest, || {
                self.run_plan(plan, false, generation.clone(), started)
            })
            .await?;
        Ok(QueryOutput {
            elapsed: started.elapsed(),
            ..shared
        })
    }

    /// [`SqlNode::execute_plan`] whose answer is handed on batch by batch
    /// as it is computed (Flight SQL's `DoGet`), so it need not fit in
    /// memory; an identical plan's answer over the same generation is
    /// served from memory, and a small one computed here is kept for the
    /// next, as [`SqlNode::stream_prepared`] does.
    pub async fn stream_plan_shared(
        &self,
        plan: LogicalPlan,
        generation: Arc<Generation>,
    ) -> Result<crate::QueryStream> {
        Self::verify_read_only(&plan)?;
        let node_tables = self.node_table_names();
        let Some(key) = crate::shared::plan_key(&plan, |t| node_tables.contains(t)) else {
            return self.stream_plan(plan, false, generation).await;
        };
        let newest = self.inner.generation.borrow().clone();
        if let Some(output) = self.inner.shared.kept(&key, &generation, &newest) {
            return Ok(crate::QueryStream::of_batches(
                output.schema,
                output.generation,
                output.batches,
            ));
        }
        let stream = self.stream_plan(plan, false, generation.clone()).await?;
        let inner = self.inner.clone();
        let started = Instant::now();
        Ok(stream.tee(
            self.inner.shared.max_answer_bytes(),
            move |schema, info, batches| {
                let newest = inner.generation.borrow().clone();
                let output = QueryOutput {
                    schema,
                    batches,
                    generation: info,
                    elapsed: started.elapsed(),
                };
                inner.shared.offer(&key, &generation, &newest, output);
            },
        ))
    }

    /// A place among the queries running at once (`max_concurrent_queries`),
    /// waiting in the bounded queue (`max_queued_queries`) for at most the
    /// query time-out; refused with SQLSTATE 53300 beyond. Every front end's
    /// queries pass here: the node's own runs take it in [`SqlNode::run_plan`],
    /// and the Postgres extended protocol, whose protocol layer runs its
    /// plans itself, takes it before running one.
    pub async fn admit_query(&self) -> Result<crate::QueryPermit> {
        let Some(admission) = &self.inner.admission else {
            return Ok(crate::QueryPermit::unlimited());
        };
        let who = self.inner.config.set.as_ref().map_or_else(
            || format!("node `{}`", self.name()),
            |s| format!("set `{s}`"),
        );
        admission.admit(&who, self.inner.config.query_timeout).await
    }

    /// Queries holding a place among those running at once, and queries
    /// waiting for one (`None` without a limit).
    pub fn query_load(&self) -> Option<(usize, usize)> {
        self.inner.admission.as_ref().map(|a| a.load())
    }

    /// The one place a plan is executed: admitted, pinned, collected under
    /// the time-out. An `optimised` plan (a kept one) skips the optimiser.
    async fn run_plan(
        &self,
        plan: LogicalPlan,
        optimised: bool,
        generation: Arc<Generation>,
        started: Instant,
    ) -> Result<QueryOutput> {
        let stream = self.stream_plan(plan, optimised, generation).await?;
        let schema = stream.schema.clone();
        let info = stream.generation.clone();
        let batches = stream.collect().await?;
        Ok(QueryOutput {
            schema,
            batches,
            generation: info,
            elapsed: started.elapsed(),
        })
    }

    /// Starts `plan` pinned to `generation` and hands its batches on as
    /// they are computed, the time-out running from now (see
    /// [`crate::QueryStream`]).
    async fn stream_plan(
        &self,
        plan: LogicalPlan,
        optimised: bool,
        generation: Arc<Generation>,
    ) -> Result<crate::QueryStream> {
        let permit = self.admit_query().await?;
        let timeout = self.inner.config.query_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || SqlError::Timeout {
            timeout_ms: timeout.as_millis() as u64,
        };
        let mut info = GenerationInfo::of(&generation);
        let ctx = self.inner.ctx.clone();
        // History tables say here which generations they read.
        let reads = HistoryReads::default();
        let start = HISTORY_READS.scope(
            reads.clone(),
            PINNED.scope(generation.clone(), async move {
                if !optimised {
                    let frame = ctx.execute_logical_plan(plan).await?;
                    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
                    let stream = frame.execute_stream().await?;
                    return Ok::<_, SqlError>((schema, stream));
                }
                let state = ctx.state();
                let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
                let physical = state
                    .query_planner()
                    .create_physical_plan(&plan, &state)
                    .await?;
                let task = Arc::new(TaskContext::from(&state));
                let stream = datafusion::physical_plan::execute_stream(physical, task)?;
                Ok((schema, stream))
            }),
        );
        let (schema, stream) = tokio::time::timeout_at(deadline, start)
            .await
            .map_err(|_| timed_out())??;
        // Tables are scanned (and history read) while planning; the batches
        // are computed on a task of their own, under the same pin.
        info.history = std::mem::take(&mut *reads.lock());
        Ok(crate::execution::spawn_stream(
            stream,
            schema,
            move |drive| HISTORY_READS.scope(reads, PINNED.scope(generation, drive)),
            info,
            deadline,
            timeout.as_millis() as u64,
            permit,
        ))
    }

    /// [`SqlNode::execute_prepared`] whose answer is handed on batch by
    /// batch as it is computed (the Postgres wire's simple protocol), so an
    /// answer need not fit in memory and its first rows leave before its
    /// last are computed. An answer an identical query over the same
    /// generation already computed is served from memory, and one this run
    /// computes is kept for the next when it is small enough to share.
    pub async fn stream_prepared(
        &self,
        prepared: &Prepared,
        generation: Arc<Generation>,
    ) -> Result<crate::QueryStream> {
        if !prepared.is_query() {
            let output = self
                .execute(prepared.statement().clone(), generation)
                .await?;
            return Ok(crate::QueryStream::of_batches(
                output.schema,
                output.generation,
                output.batches,
            ));
        }
        let kept = self.kept_plan(prepared, &generation).await?;
        if !(kept.optimised && prepared.plan_reusable()) {
            return self
                .stream_plan(kept.plan, kept.optimised, generation)
                .await;
        }
        let newest = self.inner.generation.borrow().clone();
        if let Some(output) = self
            .inner
            .shared
            .kept(prepared.text(), &generation, &newest)
        {
            return Ok(crate::QueryStream::of_batches(
                output.schema,
                output.generation,
                output.batches,
            ));
        }
        let stream = self
            .stream_plan(kept.plan, true, generation.clone())
            .await?;
        let inner = self.inner.clone();
        let key = prepared.text().to_string();
        let started = Instant::now();
        Ok(stream.tee(
            self.inner.shared.max_answer_bytes(),
            move |schema, info, batches| {
                let newest = inner.generation.borrow().clone();
                let output = QueryOutput {
                    schema,
                    batches,
                    generation: info,
                    elapsed: started.elapsed(),
                };
                inner.shared.offer(&key, &generation, &newest, output);
            },
        ))
    }

    fn verify_read_only(plan: &LogicalPlan) -> Result<()> {
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(plan)
            .map_err(|e| SqlError::ReadOnly {
                statement: e.strip_backtrace().to_string(),
            })
    }

    /// Parses, pins and runs one statement.
    pub async fn query(&self, sql: &str) -> Result<QueryOutput> {
        self.query_for(sql, None).await
    }

    /// [`SqlNode::query`] for a client at `client` (see [`SqlNode::pin_for`]).
    pub async fn query_for(&self, sql: &str, client: Option<IpAddr>) -> Result<QueryOutput> {
        let prepared = self.prepare(sql)?;
        let generation = self.pin_prepared_for(&prepared, client).await?;
        self.execute_prepared(&prepared, generation).await
    }

    /// Keeps `tables` collected as if a query had just named them (for
    /// persistent queries and other standing readers).
    pub fn request_tables(&self, tables: &BTreeSet<String>) {
        request_tables(&self.inner, tables);
    }

    /// Waits until the node has a generation (for start-up and tests).
    pub async fn wait_for_generation(&self, timeout: Duration) -> Result<Arc<Generation>> {
        let mut receiver = self.subscribe();
        match tokio::time::timeout(timeout, receiver.wait_for(|g| g.meta.id > 0)).await {
            Ok(Ok(g)) => Ok(g.clone()),
            _ => Err(SqlError::NoGeneration {
                source_name: self.source_names(),
            }),
        }
    }

    /// The newest generation taken from a source, and how long it took to
    /// arrive and be installed.
    pub fn last_install(&self) -> Option<Install> {
        *self.inner.last_install.lock()
    }

    /// Every source with what the node last learned of it.
    pub fn sources_status(&self) -> Vec<SourceStatus> {
        let chosen = self.inner.chosen.load(Ordering::Relaxed);
        let mut statuses = self.inner.sources_status.lock().clone();
        for (i, s) in statuses.iter_mut().enumerate() {
            s.chosen = i == chosen;
        }
        statuses
    }

    /// Registers `hook`: it is offered the current generation and then
    /// every generation the node installs, and its wanted tables are
    /// collected (see [`GenerationHook`]). The hook stays registered until
    /// the handle is dropped or removed, or the node shuts down.
    pub fn add_generation_hook(&self, hook: Arc<dyn GenerationHook>) -> GenerationHookHandle {
        // Weak: a hook's task must not keep a dropped node alive.
        let inner = Arc::downgrade(&self.inner);
        let request = Arc::new(move |tables: &BTreeSet<String>| {
            if let Some(inner) = inner.upgrade() {
                request_tables(&inner, tables);
            }
        });
        self.inner.hooks.add(hook, request)
    }

    /// Each registered hook's counts (also the `fleet_generation_hooks`
    /// table).
    pub fn generation_hooks(&self) -> Vec<GenerationHookStats> {
        self.inner.hooks.stats()
    }

    /// Stops fetching and stops every hook, waiting for calls in progress.
    pub async fn shutdown(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        self.inner.hooks.shutdown().await;
    }
}

fn request_tables(inner: &Inner, tables: &BTreeSet<String>) {
    if inner.requests.lock().touch(tables, Instant::now()) {
        inner.refetch.notify_one();
    }
}

/// The one place a generation is installed: queries pin it from now on,
/// and every hook is offered it.
fn install(inner: &Inner, generation: Arc<Generation>) {
    let install = Install {
        generation_id: generation.meta.id,
        made_at_ms: generation.meta.made_at_ms,
        installed_at_ms: 0,
        oldest_data_ms: generation.meta.visibility.oldest_data_ms(),
    };
    inner.known_schemas.note(&generation);
    inner.generation.send_replace(generation.clone());
    *inner.last_install.lock() = Some(Install {
        installed_at_ms: now_ms(),
        ..install
    });
    inner.hooks.installed(generation);
}

/// Long-polls the chosen source for generations newer than the one held,
/// naming every table the node's queries want. A source that fails is
/// marked dead and the best live one taken; meanwhile queries keep
/// answering from the last generation, which states its age.
async fn fetch_loop(inner: Arc<Inner>) {
    let mut failures = 0u32;
    loop {
        let sources = inner.sources.lock().clone();
        if sources.is_empty() {
            inner.switch.notified().await;
            continue;
        }
        let index = inner.chosen.load(Ordering::Relaxed) % sources.len();
        let child = sources[index].clone();
        let held = inner.generation.borrow().clone();
        let tables = inner.requests.lock().current(Instant::now());
        let request = FetchRequest {
            requester: inner.config.name.clone(),
            tables,
            since_generation: (held.meta.producer == child.name() && held.meta.id > 0)
                .then_some(held.meta.id),
            wait: Some(inner.config.tick * 2),
            meta_only: false,
        };
        let answer = tokio::select! {
            answer = child.fetch(&request) => Some(answer),
            _ = inner.refetch.notified() => None,
            _ = inner.switch.notified() => None,
        };
        match answer {
            None => continue,
            Some(Ok(generation)) if generation.meta.id == 0 => {
                // The source has not made its first generation: it cannot
                // long-poll for one, so ask again shortly instead of
                // spinning on immediate answers.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = inner.refetch.notified() => {}
                    _ = inner.switch.notified() => {}
                }
            }
            Some(Ok(generation)) => {
                failures = 0;
                note_answer(&inner, child.name(), &generation);
                if generation.meta.id != held.meta.id
                    || generation.meta.producer != held.meta.producer
                    || generation.tables.len() != held.tables.len()
                {
                    install(&inner, with_own_row(&inner, generation));
                }
            }
            Some(Err(e)) => {
                failures += 1;
                tracing::warn!(node = %inner.config.name, source = child.name(), error = %e, "fetching a generation failed; answering from the last one");
                let next = {
                    let mut statuses = inner.sources_status.lock();
                    if let Some(s) = statuses.iter_mut().find(|s| s.name == child.name()) {
                        s.alive = false;
                        s.probed = true;
                        s.last_error = Some(e.to_string());
                    }
                    choice::choose(&statuses, index, inner.config.switch_margin)
                };
                if next != index {
                    tracing::info!(node = %inner.config.name, from = child.name(), to = sources.get(next).map_or("", |s| s.name()), "switching source");
                    inner.chosen.store(next, Ordering::Relaxed);
                    continue;
                }
                let backoff = Duration::from_millis(200 * u64::from(failures.min(10)));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = inner.refetch.notified() => {}
                    _ = inner.switch.notified() => {}
                }
            }
        }
    }
}

/// Found by name: the sources may have been replaced while the answer was
/// on its way.
fn note_answer(inner: &Inner, source: &str, generation: &Generation) {
    if let Some(s) = inner
        .sources_status
        .lock()
        .iter_mut()
        .find(|s| s.name == source)
    {
        s.alive = true;
        s.probed = true;
        s.generation_id = generation.meta.id;
        s.made_at_ms = generation.meta.made_at_ms;
        s.clusters_seen = generation.meta.visibility.clusters_seen();
        s.machines_seen = generation.meta.visibility.machines_seen();
        s.last_error = None;
    }
}

/// Asks every source, each probe interval, what it sees (metadata only;
/// the table set is named so a standby keeps collecting it and a switch
/// finds the data warm) and moves the fetch loop to a clearly better one.
async fn probe_loop(inner: Arc<Inner>) {
    let timeout = inner.config.probe_interval.max(Duration::from_secs(1));
    loop {
        let tables = inner.requests.lock().current(Instant::now());
        let request = FetchRequest {
            requester: inner.config.name.clone(),
            tables,
            since_generation: None,
            wait: None,
            meta_only: true,
        };
        let sources = inner.sources.lock().clone();
        if sources.len() < 2 {
            tokio::time::sleep(inner.config.probe_interval).await;
            continue;
        }
        let answers = futures::future::join_all(sources.iter().map(|child| {
            let request = &request;
            async move { tokio::time::timeout(timeout, child.fetch(request)).await }
        }))
        .await;
        for (child, answer) in sources.iter().zip(answers) {
            match answer {
                Ok(Ok(generation)) if generation.meta.id > 0 => {
                    note_answer(&inner, child.name(), &generation)
                }
                other => {
                    let reason = match other {
                        Ok(Ok(_)) => "has not made a generation yet".to_string(),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("no answer within {} ms", timeout.as_millis()),
                    };
                    if let Some(s) = inner
                        .sources_status
                        .lock()
                        .iter_mut()
                        .find(|s| s.name == child.name())
                    {
                        s.alive = false;
                        s.probed = true;
                        s.last_error = Some(reason);
                    }
                }
            }
        }
        let current = inner.chosen.load(Ordering::Relaxed);
        let (next, from, to) = {
            let statuses = inner.sources_status.lock();
            let next = choice::choose(&statuses, current, inner.config.switch_margin);
            let name = |i: usize| statuses.get(i).map_or(String::new(), |s| s.name.clone());
            (next, name(current), name(next))
        };
        if next != current {
            tracing::info!(node = %inner.config.name, %from, %to, "switching source");
            inner.chosen.store(next, Ordering::Relaxed);
            inner.switch.notify_one();
        }
        tokio::time::sleep(inner.config.probe_interval).await;
    }
}

/// Adds the SQL node's own row to `fleet_nodes` when the generation has it.
fn with_own_row(inner: &Inner, generation: Arc<Generation>) -> Arc<Generation> {
    let Some(theirs) = generation.tables.get(FLEET_NODES) else {
        return generation;
    };
    let now = now_ms();
    let row = NodeState::new(
        "sqlnode",
        &inner.config.name,
        &inner.host,
        generation.meta.id,
        now,
        inner.started.elapsed().as_secs_f64(),
    )
    .with_visibility(&generation.meta.visibility, now);
    let mut row = row;
    row.pending_restart = inner.pending_restart.lock().clone();
    row.store_error = inner.stores.summary();
    // The SQL node's children are its sources, not the TLA's children.
    let statuses = inner.sources_status.lock();
    row.children_expected = statuses.len() as u64;
    row.children_seen = statuses.iter().filter(|s| s.alive).count() as u64;
    drop(statuses);
    let own = fleet_nodes_table(&[row]);
    match merge_tables(FLEET_NODES, &[theirs.as_ref(), &own]) {
        Ok((merged, _)) => {
            let mut generation = (*generation).clone();
            generation
                .tables
                .insert(FLEET_NODES.to_string(), Arc::new(merged));
            Arc::new(generation)
        }
        Err(e) => {
            tracing::warn!(node = %inner.config.name, error = %e, "own fleet_nodes row left out");
            generation
        }
    }
}
