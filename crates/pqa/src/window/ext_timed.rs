//! `win:ext_timed(timestamp, period)`: a sliding time window whose clock is
//! the events' own timestamps (milliseconds), not the engine's. Each arrival
//! expires, from the oldest end, the events whose timestamp is at or before
//! the arriving event's timestamp minus the period, as Esper's externally
//! timed window does; an event that arrives out of order is kept in arrival
//! order, so it leaves only when the ones before it have left.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Delta, Window};
use crate::expr::{CExpr, Ctx};
use crate::stream::Event;

#[derive(Debug)]
pub(crate) struct ExtTimed {
    timestamp: CExpr,
    ms: i64,
    buf: VecDeque<(i64, Arc<Event>)>,
}

impl ExtTimed {
    pub(crate) fn new(timestamp: CExpr, ms: i64) -> Self {
        ExtTimed {
            timestamp,
            ms,
            buf: VecDeque::new(),
        }
    }
}

impl Window for ExtTimed {
    fn insert(&mut self, ev: Arc<Event>, _now: i64, out: &mut Delta) {
        let row = [ev.clone()];
        // An event without a numeric timestamp cannot be placed on the
        // window's clock; it is ignored rather than kept forever.
        let Some(ts) = self.timestamp.eval(&Ctx::row(&row)).as_f64() else {
            return;
        };
        let ts = ts as i64;
        self.buf.push_back((ts, ev.clone()));
        out.new.push(ev);
        let expire_up_to = ts.saturating_sub(self.ms);
        while let Some((t, _)) = self.buf.front() {
            if *t > expire_up_to {
                break;
            }
            if let Some((_, old)) = self.buf.pop_front() {
                out.old.push(old);
            }
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        self.buf.iter().for_each(|(_, e)| f(e))
    }
}
