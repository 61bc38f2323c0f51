//! `win:expr_batch(expression [, include_triggering_event])` /
//! `#expr_batch(...)`: events collect until the expression, evaluated as each
//! event arrives, is true; then the collected events are released together
//! (insert stream) and the previously released batch leaves (remove stream),
//! as `win:length_batch` does.
//!
//! Esper's manual and its regression suite: the expression sees the arriving
//! event's properties (unqualified), `oldest_event.x` (the first event of the
//! batch being collected), `newest_event.x` (the arriving one) and the
//! built-in properties `current_count` (events collected, the arriving one
//! included), `expired_count` (always 0 for the batch window),
//! `oldest_timestamp` (engine time when the first event of the batch came)
//! and `newest_timestamp` (the arriving event's time).
//!
//! With `include_triggering_event` false the event that made the expression
//! true is not released with the batch: it stays and starts the next one
//! (Esper then keeps the previous `oldest_timestamp`: it is only taken when
//! an event arrives at an empty window).

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Delta, Window};
use crate::expr::{CExpr, Ctx};
use crate::stream::Event;
use crate::value::Value;

#[derive(Debug)]
pub(crate) struct ExprBatch {
    expr: CExpr,
    include_triggering: bool,
    buf: VecDeque<Arc<Event>>,
    prev: Vec<Arc<Event>>,
    oldest_ts: i64,
}

impl ExprBatch {
    pub(crate) fn new(expr: CExpr, include_triggering: bool) -> Self {
        ExprBatch {
            expr,
            include_triggering,
            buf: VecDeque::new(),
            prev: Vec::new(),
            oldest_ts: 0,
        }
    }

    fn release(&mut self, n: usize, out: &mut Delta) {
        let batch: Vec<Arc<Event>> = self.buf.drain(..n.min(self.buf.len())).collect();
        let prev = std::mem::replace(&mut self.prev, batch.clone());
        out.new.extend(batch);
        out.old.extend(prev);
    }
}

impl Window for ExprBatch {
    fn insert(&mut self, ev: Arc<Event>, now: i64, out: &mut Delta) {
        if self.buf.is_empty() {
            self.oldest_ts = now;
        }
        self.buf.push_back(ev.clone());
        let oldest = self.buf.front().cloned().unwrap_or_else(|| ev.clone());
        let key = [
            Value::Int(self.buf.len() as i64),
            Value::Int(0),
            Value::Int(self.oldest_ts),
            Value::Int(now),
        ];
        let events = [ev.clone(), oldest, ev];
        let ctx = Ctx {
            events: &events,
            aggs: &[],
            key: &key,
        };
        if !self.expr.test(&ctx) {
            return;
        }
        let n = if self.include_triggering {
            self.buf.len()
        } else {
            self.buf.len() - 1
        };
        self.release(n, out);
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        self.prev.iter().for_each(f)
    }
}
