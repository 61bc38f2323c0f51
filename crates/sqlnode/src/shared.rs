//! Identical queries over one generation share one computation (seed 6.2's
//! caching, for whole queries): a dashboard refreshed by twenty people, or
//! twenty alerts with the same SQL, cost one run per generation on every
//! front end.
//!
//! Answers are kept by their normalised SQL text (the statement as the
//! parser prints it) for the newest generation only, and only for queries
//! whose answer depends on nothing but that generation: a kept, optimised
//! plan over fleet tables and views (no `now()`, `random()`, system or node
//! tables). Concurrent identical queries wait for the first. An answer over
//! its size bound is handed to those already waiting and not kept; the
//! whole set is bounded in bytes and dropped when the next generation is
//! installed. The answer carries its generation, so every sharer's
//! completeness notice is that of the generation it read.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fleetsql_model::Generation;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use crate::QueryOutput;

/// How many bytes of answers a node keeps for sharing, by default.
pub const SHARED_ANSWERS_BYTES: usize = 64 << 20;

type Cell = Arc<OnceCell<QueryOutput>>;

/// What sharing did, for self-monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedAnswersStats {
    /// Queries run because no identical one had run over their generation.
    pub runs: u64,
    /// Queries answered from another's run (kept or awaited).
    pub shared: u64,
    /// Answers too big to keep (served to those waiting, then dropped).
    pub too_big: u64,
    /// Answers kept now, and their bytes.
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct Kept {
    generation: Option<Arc<Generation>>,
    cells: HashMap<String, Cell>,
    bytes: usize,
}

pub(crate) struct SharedAnswers {
    capacity: usize,
    kept: Mutex<Kept>,
    runs: AtomicU64,
    shared: AtomicU64,
    too_big: AtomicU64,
}

impl std::fmt::Debug for SharedAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedAnswers")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn output_bytes(output: &QueryOutput) -> usize {
    output
        .batches
        .iter()
        .map(|b| b.get_array_memory_size())
        .sum()
}

impl SharedAnswers {
    pub(crate) fn new(capacity: usize) -> SharedAnswers {
        SharedAnswers {
            capacity,
            kept: Mutex::new(Kept::default()),
            runs: AtomicU64::new(0),
            shared: AtomicU64::new(0),
            too_big: AtomicU64::new(0),
        }
    }

    /// The cell for `key` over `generation` when `generation` is `newest`
    /// (the installed one); older pins run on their own.
    fn cell(
        &self,
        key: &str,
        generation: &Arc<Generation>,
        newest: &Arc<Generation>,
    ) -> Option<Cell> {
        if self.capacity == 0 || !Arc::ptr_eq(generation, newest) {
            return None;
        }
        let mut kept = self.kept.lock();
        if !kept
            .generation
            .as_ref()
            .is_some_and(|g| Arc::ptr_eq(g, generation))
        {
            *kept = Kept {
                generation: Some(generation.clone()),
                ..Kept::default()
            };
        }
        Some(kept.cells.entry(key.to_string()).or_default().clone())
    }

    /// `run`'s answer, or that of an identical query over the same
    /// generation.
    pub(crate) async fn answer<F, Fut>(
        &self,
        key: &str,
        generation: &Arc<Generation>,
        newest: &Arc<Generation>,
        run: F,
    ) -> crate::Result<QueryOutput>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = crate::Result<QueryOutput>>,
    {
        let Some(cell) = self.cell(key, generation, newest) else {
            return run().await;
        };
        let mut ran = false;
        let output = cell
            .get_or_try_init(|| {
                ran = true;
                run()
            })
            .await?
            .clone();
        if ran {
            self.runs.fetch_add(1, Ordering::Relaxed);
            self.keep_or_drop(key, generation, &cell, &output);
        } else {
            self.shared.fetch_add(1, Ordering::Relaxed);
        }
        Ok(output)
    }

    /// The answer kept for `key` over `generation`, if an identical query
    /// over it has finished (a streaming front end serves it instead of
    /// running again).
    pub(crate) fn kept(
        &self,
        key: &str,
        generation: &Arc<Generation>,
        newest: &Arc<Generation>,
    ) -> Option<QueryOutput> {
        let output = self.cell(key, generation, newest)?.get()?.clone();
        self.shared.fetch_add(1, Ordering::Relaxed);
        Some(output)
    }

    /// Keeps `output`, which a streaming run over `generation` computed
    /// while sending it, for the identical queries after it. Identical
    /// queries started while it ran ran on their own: a streamed answer
    /// is not awaited, since its rows already left.
    pub(crate) fn offer(
        &self,
        key: &str,
        generation: &Arc<Generation>,
        newest: &Arc<Generation>,
        output: QueryOutput,
    ) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let Some(cell) = self.cell(key, generation, newest) else {
            return;
        };
        if cell.set(output.clone()).is_ok() {
            self.keep_or_drop(key, generation, &cell, &output);
        }
    }

    /// The most one kept answer may take.
    pub(crate) fn max_answer_bytes(&self) -> usize {
        self.capacity / 8
    }

    fn keep_or_drop(
        &self,
        key: &str,
        generation: &Arc<Generation>,
        cell: &Cell,
        output: &QueryOutput,
    ) {
        let bytes = output_bytes(output);
        let mut kept = self.kept.lock();
        if !kept
            .generation
            .as_ref()
            .is_some_and(|g| Arc::ptr_eq(g, generation))
        {
            return;
        }
        // One answer may take an eighth of the budget, so a few big ones
        // cannot crowd out the many small ones alerts share.
        if bytes > self.capacity / 8 || kept.bytes + bytes > self.capacity {
            self.too_big.fetch_add(1, Ordering::Relaxed);
            if kept.cells.get(key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
                kept.cells.remove(key);
            }
            return;
        }
        kept.bytes += bytes;
    }

    /// Drops every kept answer; runs under way finish for their waiters.
    pub(crate) fn clear(&self) {
        *self.kept.lock() = Kept::default();
    }

    pub(crate) fn stats(&self) -> SharedAnswersStats {
        let kept = self.kept.lock();
        SharedAnswersStats {
            runs: self.runs.load(Ordering::Relaxed),
            shared: self.shared.load(Ordering::Relaxed),
            too_big: self.too_big.load(Ordering::Relaxed),
            entries: kept.cells.values().filter(|c| c.initialized()).count() as u64,
            bytes: kept.bytes as u64,
        }
    }
}

/// The key under which a plan's answer is shared (front ends that plan
/// themselves: Flight SQL, with parameters bound): its printed form, when
/// it reads only fleet tables and views and nothing that changes between
/// runs. `is_node_table` names tables other components own.
pub(crate) fn plan_key(
    plan: &datafusion::logical_expr::LogicalPlan,
    is_node_table: impl Fn(&str) -> bool,
) -> Option<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;

    if crate::prepared::folds_changing_values(plan) {
        return None;
    }
    let mut scans = 0;
    let mut shareable = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scans += 1;
            let name = &scan.table_name;
            if name.schema().is_some_and(|s| s != "public")
                || crate::SYSTEM_TABLES.contains(&name.table())
                || is_node_table(name.table())
            {
                shareable = false;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    (shareable && scans > 0).then(|| format!("plan\n{}", plan.display_indent()))
}
