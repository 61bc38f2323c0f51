//! `win:time(period)` / `#time(period)`: events of the last period; an
//! event leaves when the clock reaches its time plus the period.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Delta, Window};
use crate::stream::Event;

#[derive(Debug)]
pub(crate) struct Time {
    ms: i64,
    /// (entry time, event); entry times are non-decreasing.
    buf: VecDeque<(i64, Arc<Event>)>,
}

impl Time {
    pub(crate) fn new(ms: i64) -> Self {
        Time {
            ms,
            buf: VecDeque::new(),
        }
    }
}

impl Window for Time {
    fn shape(&self) -> super::Shape {
        super::Shape::Time(self.ms)
    }
    fn insert(&mut self, ev: Arc<Event>, now: i64, out: &mut Delta) {
        self.advance(now, out);
        self.buf.push_back((now, ev.clone()));
        out.new.push(ev);
    }
    fn advance(&mut self, now: i64, out: &mut Delta) {
        while let Some((t, _)) = self.buf.front() {
            if t + self.ms > now {
                break;
            }
            if let Some((_, ev)) = self.buf.pop_front() {
                out.old.push(ev);
            }
        }
    }
    fn next_deadline(&self) -> Option<i64> {
        self.buf.front().map(|(t, _)| t + self.ms)
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        self.buf.iter().for_each(|(_, e)| f(e))
    }
}
