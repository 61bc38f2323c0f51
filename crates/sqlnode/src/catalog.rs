//! DataFusion's view of the fleet: one schema whose tables are those of the
//! generation the running query is pinned to.

use std::sync::Arc;

use arrow::array::RecordBatch;
use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use fleetsql_model::{Generation, conform_batch};
use tokio::sync::watch;

use crate::system_tables;

/// Tables other components register on the node (e.g. alert state); they
/// do not read the pinned generation.
pub(crate) type ExtraTables = Arc<parking_lot::RwLock<BTreeMap<String, Arc<dyn TableProvider>>>>;

/// The columns of every fleet table this node has seen collected, kept
/// after the table's requests expire: catalogs (psql's `\d`, JDBC's
/// `getColumns`, `information_schema.columns`) list a table the span
/// publishes but nobody queries lately with the columns it last had,
/// without asking the fleet for its rows.
#[derive(Debug, Default, Clone)]
pub(crate) struct KnownSchemas(Arc<parking_lot::RwLock<BTreeMap<String, SchemaRef>>>);

impl KnownSchemas {
    /// Remembers the schemas of `generation`'s collected tables; called
    /// for each generation the node installs. Cheap when nothing changed:
    /// schemas are compared by pointer first, then by value.
    pub(crate) fn note(&self, generation: &Generation) {
        let changed = {
            let known = self.0.read();
            generation.tables.iter().any(|(name, table)| {
                known
                    .get(name)
                    .is_none_or(|s| !Arc::ptr_eq(s, table.schema()) && s != table.schema())
            })
        };
        if changed {
            let mut known = self.0.write();
            for (name, table) in &generation.tables {
                known.insert(name.clone(), table.schema().clone());
            }
        }
    }

    fn get(&self, name: &str) -> Option<SchemaRef> {
        self.0.read().get(name).cloned()
    }
}

tokio::task_local! {
    /// The generation the query running on this task reads.
    pub(crate) static PINNED: Arc<Generation>;
}

/// The pinned generation, or the newest one outside a pinned scope (for
/// front ends that plan without pinning, e.g. catalog probes).
pub(crate) fn pinned_or(current: &watch::Receiver<Arc<Generation>>) -> Arc<Generation> {
    PINNED
        .try_with(|g| g.clone())
        .unwrap_or_else(|_| current.borrow().clone())
}

#[derive(Debug)]
pub(crate) struct FleetSchema {
    pub(crate) current: watch::Receiver<Arc<Generation>>,
    pub(crate) extra: ExtraTables,
    pub(crate) views: Arc<crate::views::Views>,
    pub(crate) known: KnownSchemas,
}

#[async_trait]
impl SchemaProvider for FleetSchema {
    fn table_names(&self) -> Vec<String> {
        let generation = pinned_or(&self.current);
        let mut names: Vec<String> = generation.meta.available.iter().cloned().collect();
        names.extend(system_tables::SYSTEM_TABLES.iter().map(|s| s.to_string()));
        names.extend(self.extra.read().keys().cloned());
        names.extend(self.views.names());
        names.sort();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.extra.read().get(name) {
            return Ok(Some(table.clone()));
        }
        if let Some(view) = crate::views::view_table(&self.views, name, &self.current).await? {
            return Ok(Some(view));
        }
        let generation = pinned_or(&self.current);
        if let Some(batch) = system_tables::build(name, &generation)? {
            let table = Arc::new(GenerationTable {
                name: name.to_string(),
                schema: batch.schema(),
                system: Some(batch),
                current: self.current.clone(),
            });
            return Ok(Some(table));
        }
        // A table the span publishes but this generation did not collect
        // (nobody asked for it lately) is still a table: catalogs list it,
        // with the columns it had when last collected, or none yet. A
        // query never plans against such a one: pinning waits until the
        // table is collected (or says it is not), so its scan finds no
        // rows only for a catalog probe.
        let schema = match generation.table(name) {
            Some(table) => table.schema().clone(),
            None if generation.meta.available.contains(name) => self
                .known
                .get(name)
                .unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty())),
            None => return Ok(None),
        };
        Ok(Some(Arc::new(GenerationTable {
            name: name.to_string(),
            schema,
            system: None,
            current: self.current.clone(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        let generation = pinned_or(&self.current);
        generation.tables.contains_key(name)
            || generation.meta.available.contains(name)
            || system_tables::SYSTEM_TABLES.contains(&name)
            || self.extra.read().contains_key(name)
            || self.views.get(name).is_some()
    }
}

/// A fleet table as planned. Rows are read at scan time from the pinned
/// generation, so a prepared statement executed later reads fresh data.
#[derive(Debug)]
struct GenerationTable {
    name: String,
    schema: SchemaRef,
    /// System tables are computed at planning time from the same pin.
    system: Option<RecordBatch>,
    current: watch::Receiver<Arc<Generation>>,
}

#[async_trait]
impl TableProvider for GenerationTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batches: Vec<RecordBatch> = match &self.system {
            Some(batch) => vec![batch.clone()],
            None => {
                let generation = pinned_or(&self.current);
                match generation.table(&self.name) {
                    Some(table) => table
                        .batches()
                        .iter()
                        .map(|b| conform_batch(&self.name, b, &self.schema))
                        .collect::<fleetsql_model::Result<Vec<_>>>()
                        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?,
                    None => Vec::new(),
                }
            }
        };
        // Spread batches over the configured partitions so both cores work.
        let partitions_wanted = state.config().target_partitions().max(1);
        let mut partitions: Vec<Vec<RecordBatch>> =
            vec![Vec::new(); partitions_wanted.min(batches.len().max(1))];
        let count = partitions.len();
        for (i, batch) in batches.into_iter().enumerate() {
            partitions[i % count].push(batch);
        }
        let exec = MemorySourceConfig::try_new_exec(
            &partitions,
            self.schema.clone(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}
