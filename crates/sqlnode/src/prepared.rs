//! Statements kept by their SQL text, with their optimised plans.
//!
//! Alerting pipelines and dashboards send the same SQL again and again,
//! each time over a new generation. Parsing, resolving, planning and
//! optimising cost a few milliseconds each time, as much as running a
//! filter over a fleet table. A plan does not depend on the generation:
//! fleet tables read the pinned generation at scan time. So a plan stays
//! valid while the schemas of the tables it reads are unchanged; it is
//! rebuilt when one changes.
//!
//! Not every plan can be kept optimised: the optimiser folds `now()` and
//! other stable functions into constants, so such plans are kept as
//! planned and optimised at each run. System tables are computed while
//! planning, and node tables belong to other components, so plans reading
//! them are not kept at all.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::sql::sqlparser::ast::Statement;
use fleetsql_model::Generation;
use parking_lot::Mutex;

/// How many distinct SQL texts are kept; past this the cache starts over
/// (a client generating unique SQL must not grow the node without bound).
pub(crate) const PREPARED_CAPACITY: usize = 1024;

/// A parsed, read-only statement and what it reads.
#[derive(Debug)]
pub struct Prepared {
    statement: Statement,
    /// The statement as the parser prints it: identical queries written
    /// differently (spaces, keyword case) share one text.
    text: String,
    fleet_tables: BTreeSet<String>,
    /// Reads only fleet tables (no system or node tables), as a query.
    plan_reusable: bool,
    plan: Mutex<Option<KeptPlan>>,
}

#[derive(Debug, Clone)]
pub(crate) struct KeptPlan {
    /// Schemas of `fleet_tables` when planned, in the same order.
    schemas: Vec<SchemaRef>,
    pub(crate) plan: LogicalPlan,
    /// Already optimised: run it without the optimiser.
    pub(crate) optimised: bool,
}

impl KeptPlan {
    pub(crate) fn new(plan: LogicalPlan, optimised: bool) -> KeptPlan {
        KeptPlan {
            schemas: Vec::new(),
            plan,
            optimised,
        }
    }
}

impl Prepared {
    pub(crate) fn new(
        statement: Statement,
        fleet_tables: BTreeSet<String>,
        reads_other_tables: bool,
    ) -> Prepared {
        let plan_reusable = matches!(statement, Statement::Query(_))
            && !fleet_tables.is_empty()
            && !reads_other_tables;
        Prepared {
            text: statement.to_string(),
            statement,
            fleet_tables,
            plan_reusable,
            plan: Mutex::new(None),
        }
    }

    /// The fleet tables the statement reads (system tables and tables
    /// registered on the node excluded).
    pub fn fleet_tables(&self) -> &BTreeSet<String> {
        &self.fleet_tables
    }

    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// Reads only fleet tables and views, as a query: its plan may be kept
    /// and its answer depends on the generation alone (when optimised).
    pub(crate) fn plan_reusable(&self) -> bool {
        self.plan_reusable
    }

    /// The normalised SQL text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A query (not EXPLAIN, SHOW, SET, ...): run through the kept-plan path.
    pub(crate) fn is_query(&self) -> bool {
        matches!(self.statement, Statement::Query(_))
    }

    fn schemas_in(&self, generation: &Generation) -> Option<Vec<SchemaRef>> {
        self.fleet_tables
            .iter()
            .map(|t| generation.table(t).map(|table| table.schema().clone()))
            .collect()
    }

    /// The kept plan, when it is still valid for `generation`.
    pub(crate) fn kept_plan(&self, generation: &Generation) -> Option<KeptPlan> {
        if !self.plan_reusable {
            return None;
        }
        let kept = self.plan.lock().clone()?;
        let valid = self.fleet_tables.iter().zip(&kept.schemas).all(|(t, s)| {
            generation
                .table(t)
                .is_some_and(|table| Arc::ptr_eq(table.schema(), s) || table.schema() == s)
        });
        valid.then_some(kept)
    }

    /// Keeps `kept`, planned over `generation`, for later runs.
    pub(crate) fn keep_plan(&self, generation: &Generation, kept: &KeptPlan) {
        if !self.plan_reusable {
            return;
        }
        if let Some(schemas) = self.schemas_in(generation) {
            *self.plan.lock() = Some(KeptPlan {
                schemas,
                ..kept.clone()
            });
        }
    }
}

/// Whether optimising `plan` would fold something that changes between
/// runs (`now()`, `random()`, session variables) into a constant.
pub(crate) fn folds_changing_values(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                let changing = match e {
                    Expr::ScalarFunction(f) => {
                        f.func.signature().volatility != Volatility::Immutable
                    }
                    Expr::ScalarVariable(..) => true,
                    _ => false,
                };
                if changing {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// Prepared statements by SQL text.
#[derive(Debug, Default)]
pub(crate) struct PreparedCache {
    by_sql: Mutex<HashMap<String, Arc<Prepared>>>,
}

impl PreparedCache {
    pub(crate) fn get(&self, sql: &str) -> Option<Arc<Prepared>> {
        self.by_sql.lock().get(sql).cloned()
    }

    pub(crate) fn insert(&self, sql: &str, prepared: Arc<Prepared>) {
        let mut by_sql = self.by_sql.lock();
        if by_sql.len() >= PREPARED_CAPACITY {
            by_sql.clear();
        }
        by_sql.insert(sql.to_string(), prepared);
    }

    pub(crate) fn clear(&self) {
        self.by_sql.lock().clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.by_sql.lock().len()
    }
}
