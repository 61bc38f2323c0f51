//! `win:time_batch(period)`: buffers events and releases them together every
//! period; the previous batch leaves when the next is released. The first
//! period starts with the first event, whose time stays the reference
//! point: as in Esper, a batch that starts after the timer stopped (an
//! empty release after an empty one) still ends on that event's grid.

use std::sync::Arc;

use super::{Delta, Window};
use crate::stream::Event;

#[derive(Debug)]
pub(crate) struct TimeBatch {
    ms: i64,
    buf: Vec<Arc<Event>>,
    prev: Vec<Arc<Event>>,
    next_release: Option<i64>,
    /// The first event's time; every release is at it plus a multiple of `ms`.
    reference: Option<i64>,
}

impl TimeBatch {
    pub(crate) fn new(ms: i64) -> Self {
        TimeBatch {
            // A period that rounded to 0 ms would release forever at one instant.
            ms: ms.max(1),
            buf: Vec::new(),
            prev: Vec::new(),
            next_release: None,
            reference: None,
        }
    }
}

impl Window for TimeBatch {
    fn insert(&mut self, ev: Arc<Event>, now: i64, out: &mut Delta) {
        self.advance(now, out);
        if self.next_release.is_none() {
            let reference = *self.reference.get_or_insert(now);
            // The first grid point after `now` (the period is positive).
            let periods = (now - reference).div_euclid(self.ms) + 1;
            self.next_release = Some(reference + periods * self.ms);
        }
        self.buf.push(ev);
    }
    fn advance(&mut self, now: i64, out: &mut Delta) {
        while let Some(at) = self.next_release {
            if at > now {
                break;
            }
            let batch = std::mem::take(&mut self.buf);
            let prev = std::mem::replace(&mut self.prev, batch.clone());
            // An empty interval after an empty one stops the timer until the next event.
            let idle = batch.is_empty() && prev.is_empty();
            out.new.extend(batch);
            out.old.extend(prev);
            self.next_release = if idle { None } else { Some(at + self.ms) };
        }
    }
    fn next_deadline(&self) -> Option<i64> {
        self.next_release
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        self.prev.iter().for_each(f)
    }
}
