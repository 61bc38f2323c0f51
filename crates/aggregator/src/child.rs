use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fleetsql_model::Generation;

use crate::Result;

/// What a parent asks of a child.
#[derive(Debug, Clone, Default)]
pub struct FetchRequest {
    /// Who asks: each parent's table set is kept apart, so one parent
    /// dropping a table does not stop another's collection of it.
    pub requester: String,
    /// Every table the parent wants from now on.
    pub tables: BTreeSet<String>,
    /// The newest generation id the parent holds from this child.
    pub since_generation: Option<u64>,
    /// How long the child may hold the call waiting for a generation newer
    /// than `since_generation` (long poll). `None`: answer at once.
    pub wait: Option<Duration>,
    /// Answer with the generation's metadata only (visibility, available
    /// tables), no rows; the table set is still noted. Parents use it to
    /// probe standby children cheaply.
    pub meta_only: bool,
}

/// A source of generations that an aggregator merges.
#[async_trait]
pub trait Child: Send + Sync + Debug {
    /// A stable name for logs, visibility and `fleet_nodes`.
    fn name(&self) -> &str;

    /// The child's newest generation restricted to `request.tables`.
    async fn fetch(&self, request: &FetchRequest) -> Result<Arc<Generation>>;
}

/// True when `generation` has answered for every table in `tables`: each
/// requested table is in its visibility, even if no machine had rows.
pub fn covers_all<'a>(
    generation: &Generation,
    tables: impl IntoIterator<Item = &'a String>,
) -> bool {
    tables
        .into_iter()
        .all(|t| generation.meta.visibility.tables.contains_key(t))
}
