//! Node tables (`fleet_audit`, `fleet_generation_hooks`): not read from the
//! generation but made from the node's own state when a query scans them,
//! as one batch. Each table says its schema and how to make the batch; one
//! `TableProvider` serves them all.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

/// A table computed from the node's state at scan time (also for other
/// crates' tables: [`SqlNode::register_node_table`](crate::SqlNode::register_node_table)).
pub trait NodeTable: std::fmt::Debug + Send + Sync + 'static {
    fn schema(&self) -> SchemaRef;
    fn batch(&self) -> Result<RecordBatch, ArrowError>;
}

/// The provider of a [`NodeTable`].
#[derive(Debug)]
pub(crate) struct NodeTableProvider<T>(pub(crate) T);

#[async_trait]
impl<T: NodeTable> TableProvider for NodeTableProvider<T> {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self
            .0
            .batch()
            .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
        let exec =
            MemorySourceConfig::try_new_exec(&[vec![batch]], self.0.schema(), projection.cloned())?;
        Ok(exec)
    }
}
