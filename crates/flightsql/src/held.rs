//! What the server keeps between calls: plans pinned by `GetFlightInfo`
//! until their `DoGet`, and open prepared statements with their bound
//! parameters.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datafusion::logical_expr::LogicalPlan;
use datafusion::scalar::ScalarValue;
use fleetsql_model::Generation;
use fleetsql_sqlnode::Prepared;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// How long a plan pinned by `GetFlightInfo` waits for its `DoGet`. It
/// holds its generation (every table of it) in memory, so not long; a
/// ticket redeemed later runs its statement again.
pub const HELD_PLAN_TTL: Duration = Duration::from_secs(60);
/// Plans waiting for their `DoGet` at once; more are refused until some are
/// read or expire.
pub const MAX_HELD_PLANS: usize = 256;
/// Open prepared statements at once; the least recently used goes first.
pub const MAX_PREPARED: usize = 4096;

/// A plan pinned to the generation its `FlightInfo` described. Plans and
/// statements are numbered in sequence, so each is kept for the principal
/// that made it: another one's number finds nothing.
#[derive(Debug)]
pub(crate) struct HeldPlan {
    pub(crate) plan: LogicalPlan,
    pub(crate) generation: Arc<Generation>,
    owner: String,
    made: Instant,
}

/// An open prepared statement.
#[derive(Debug, Clone)]
pub(crate) struct OpenStatement {
    pub(crate) prepared: Arc<Prepared>,
    owner: String,
    /// The values bound by the last `DoPut`, in `$1, $2, ...` order.
    pub(crate) params: Vec<ScalarValue>,
    used: Instant,
}

/// What a `DoGet` ticket carries: the held plan, and what to run again when
/// that plan is gone (read already, or expired).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TicketBody {
    /// The held plan's number.
    pub(crate) plan: u64,
    /// The generation the `FlightInfo` described.
    pub(crate) generation: u64,
    /// A statement's SQL, run again when the plan is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sql: Option<String>,
    /// A prepared statement's handle, executed again when the plan is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) prepared: Option<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Held {
    next: AtomicU64,
    plans: Mutex<HashMap<u64, HeldPlan>>,
    statements: Mutex<HashMap<u64, OpenStatement>>,
}

impl Held {
    fn number(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Keeps `plan` for its `DoGet`; `None` when [`MAX_HELD_PLANS`] wait
    /// already.
    pub(crate) fn hold_plan(
        &self,
        plan: LogicalPlan,
        generation: Arc<Generation>,
        owner: &str,
    ) -> Option<u64> {
        let now = Instant::now();
        let mut plans = self.plans.lock();
        plans.retain(|_, held| now.duration_since(held.made) < HELD_PLAN_TTL);
        if plans.len() >= MAX_HELD_PLANS {
            return None;
        }
        let number = self.number();
        plans.insert(
            number,
            HeldPlan {
                plan,
                generation,
                owner: owner.to_string(),
                made: now,
            },
        );
        Some(number)
    }

    /// The plan of a ticket, once: a second `DoGet` runs the statement again.
    pub(crate) fn take_plan(&self, number: u64, owner: &str) -> Option<HeldPlan> {
        let mut plans = self.plans.lock();
        if plans.get(&number)?.owner != owner {
            return None;
        }
        let held = plans.remove(&number)?;
        (held.made.elapsed() < HELD_PLAN_TTL).then_some(held)
    }

    #[cfg(test)]
    pub(crate) fn held_plans(&self) -> usize {
        self.plans.lock().len()
    }

    pub(crate) fn open(&self, prepared: Arc<Prepared>, owner: &str) -> u64 {
        let now = Instant::now();
        let mut statements = self.statements.lock();
        if statements.len() >= MAX_PREPARED
            && let Some(oldest) = statements
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(number, _)| *number)
        {
            statements.remove(&oldest);
        }
        let number = self.number();
        statements.insert(
            number,
            OpenStatement {
                prepared,
                owner: owner.to_string(),
                params: Vec::new(),
                used: now,
            },
        );
        number
    }

    pub(crate) fn statement(&self, number: u64, owner: &str) -> Option<OpenStatement> {
        let mut statements = self.statements.lock();
        let statement = statements.get_mut(&number).filter(|s| s.owner == owner)?;
        statement.used = Instant::now();
        Some(statement.clone())
    }

    /// Binds `params` to an open statement; false when it is not open.
    pub(crate) fn bind(&self, number: u64, owner: &str, params: Vec<ScalarValue>) -> bool {
        match self
            .statements
            .lock()
            .get_mut(&number)
            .filter(|s| s.owner == owner)
        {
            Some(statement) => {
                statement.params = params;
                statement.used = Instant::now();
                true
            }
            None => false,
        }
    }

    pub(crate) fn close(&self, number: u64, owner: &str) -> bool {
        let mut statements = self.statements.lock();
        if statements.get(&number).is_none_or(|s| s.owner != owner) {
            return false;
        }
        statements.remove(&number).is_some()
    }
}

/// A handle as Flight SQL carries it (opaque bytes): the number in decimal.
pub(crate) fn handle_bytes(number: u64) -> bytes::Bytes {
    bytes::Bytes::from(number.to_string())
}

pub(crate) fn handle_number(handle: &[u8]) -> Option<u64> {
    std::str::from_utf8(handle).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{EmptyRelation, LogicalPlan};

    fn empty_plan() -> LogicalPlan {
        LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(datafusion::common::DFSchema::empty()),
        })
    }

    #[test]
    fn a_plan_is_read_once_and_the_count_is_bounded() {
        let held = Held::default();
        let generation = Arc::new(Generation::empty("t"));
        let first = held
            .hold_plan(empty_plan(), generation.clone(), "alice")
            .unwrap();
        assert!(
            held.take_plan(first, "bob").is_none(),
            "another principal's number finds nothing"
        );
        assert!(held.take_plan(first, "alice").is_some());
        assert!(
            held.take_plan(first, "alice").is_none(),
            "a plan is read once"
        );
        for _ in 0..MAX_HELD_PLANS {
            assert!(
                held.hold_plan(empty_plan(), generation.clone(), "alice")
                    .is_some()
            );
        }
        assert!(held.hold_plan(empty_plan(), generation, "alice").is_none());
        assert_eq!(held.held_plans(), MAX_HELD_PLANS);
    }

    #[test]
    fn handles_round_trip_and_refuse_garbage() {
        assert_eq!(handle_number(&handle_bytes(42)), Some(42));
        assert_eq!(handle_number(b"x1"), None);
        assert_eq!(handle_number(&[0xff]), None);
    }

    #[test]
    fn tickets_carry_what_runs_again() {
        let body = TicketBody {
            plan: 3,
            generation: 9,
            sql: Some("SELECT 1".into()),
            prepared: None,
        };
        let text = serde_json::to_string(&body).unwrap();
        assert_eq!(text, r#"{"plan":3,"generation":9,"sql":"SELECT 1"}"#);
        assert_eq!(serde_json::from_str::<TicketBody>(&text).unwrap(), body);
    }
}
