//! `win:expr(expiry expression)` / `#expr(...)`: events stay while the
//! expiry expression holds for the oldest of them.
//!
//! On each arrival (the manual: the expression is evaluated when events
//! arrive, and for variables, which this engine does not have) the new event
//! enters, then, oldest first, each event is tested: the first for which the
//! expression is true stops the scan, every earlier one leaves. The
//! expression sees the oldest event's properties (also as `oldest_event.x`),
//! the arriving one as `newest_event.x`, and the built-in properties
//! `current_count` (events in the window, the arriving one included, less
//! those expired so far in this scan), `expired_count` (expired so far in
//! this scan), `oldest_timestamp` and `newest_timestamp` (engine times of
//! their arrival).

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Delta, Window};
use crate::expr::{CExpr, Ctx};
use crate::stream::Event;
use crate::value::Value;

/// The built-in properties, in the order the compiled expression reads them.
pub(crate) const BUILTINS: [&str; 4] = [
    "current_count",
    "expired_count",
    "oldest_timestamp",
    "newest_timestamp",
];

#[derive(Debug)]
pub(crate) struct ExprWindow {
    expiry: CExpr,
    buf: VecDeque<(i64, Arc<Event>)>,
}

impl ExprWindow {
    pub(crate) fn new(expiry: CExpr) -> Self {
        ExprWindow {
            expiry,
            buf: VecDeque::new(),
        }
    }
}

impl Window for ExprWindow {
    fn insert(&mut self, ev: Arc<Event>, now: i64, out: &mut Delta) {
        self.buf.push_back((now, ev.clone()));
        out.new.push(ev.clone());
        let mut expired = 0i64;
        while let Some((ts, oldest)) = self.buf.front() {
            let key = [
                Value::Int(self.buf.len() as i64),
                Value::Int(expired),
                Value::Int(*ts),
                Value::Int(now),
            ];
            let events = [oldest.clone(), ev.clone()];
            let ctx = Ctx {
                events: &events,
                aggs: &[],
                key: &key,
            };
            if self.expiry.test(&ctx) {
                break;
            }
            if let Some((_, gone)) = self.buf.pop_front() {
                out.old.push(gone);
            }
            expired += 1;
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        self.buf.iter().for_each(|(_, e)| f(e))
    }
}
