//! `history.<table>`: the kept generations of a table as one table, with
//! `_generation` and `_generation_time`.
//!
//! Each scan picks the kept files its `_generation_time` / `_generation`
//! predicates leave in range from the store's index (names, not file
//! contents), leaves out files that cannot be read (said in the answer's
//! notice), and hands the rest to DataFusion's Parquet reader over an
//! explicit file list, which prunes row groups by their statistics too.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use fleetsql_sqlnode::{HistoryRead, note_history_read};

use crate::range::Range;
use crate::{HistoryError, HistoryStore};

/// The `history` schema of a SQL node's catalog.
#[derive(Debug)]
pub struct HistorySchema {
    store: Arc<HistoryStore>,
}

impl HistorySchema {
    pub fn new(store: Arc<HistoryStore>) -> HistorySchema {
        HistorySchema { store }
    }
}

fn external(e: HistoryError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[async_trait]
impl SchemaProvider for HistorySchema {
    fn table_names(&self) -> Vec<String> {
        self.store.tables()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        // A name not kept is an error naming the setting, not "table not
        // found": the question is how to make it kept.
        let schema = self.store.schema(name).map_err(external)?;
        Ok(Some(Arc::new(HistoryTable {
            table: name.to_string(),
            schema,
            store: self.store.clone(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.store.is_kept(name)
    }
}

/// One kept table over its files.
#[derive(Debug)]
pub(crate) struct HistoryTable {
    table: String,
    schema: SchemaRef,
    store: Arc<HistoryStore>,
}

#[async_trait]
impl TableProvider for HistoryTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Used to choose files and row groups; the rows are filtered again.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let range = Range::of(filters);
        let (files, skipped) = self.store.select(&self.table, &range);
        note_history_read(HistoryRead {
            table: self.table.clone(),
            generations: files.len() as u64,
            first_generation: files.iter().map(|f| f.generation).min(),
            last_generation: files.iter().map(|f| f.generation).max(),
            first_ms: files.first().map(|f| f.time_ms),
            last_ms: files.last().map(|f| f.time_ms),
            skipped_corrupt: skipped,
        });
        if files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let urls = files
            .iter()
            .map(|f| ListingTableUrl::parse(f.path.to_string_lossy()))
            .collect::<DfResult<Vec<_>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(self.schema.clone());
        let listing = ListingTable::try_new(config)?;
        listing.scan(state, projection, filters, limit).await
    }
}
