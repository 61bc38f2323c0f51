//! `win:length(N)` / `#length(N)`: the last N events; the oldest leaves as a new one enters.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Delta, Window};
use crate::stream::Event;

#[derive(Debug)]
pub(crate) struct Length {
    n: usize,
    buf: VecDeque<Arc<Event>>,
}

impl Length {
    pub(crate) fn new(n: usize) -> Self {
        Length {
            n,
            buf: VecDeque::with_capacity(n.min(1024)),
        }
    }
}

impl Window for Length {
    fn shape(&self) -> super::Shape {
        super::Shape::Length(self.n)
    }
    fn insert(&mut self, ev: Arc<Event>, _now: i64, out: &mut Delta) {
        self.buf.push_back(ev.clone());
        out.new.push(ev);
        while self.buf.len() > self.n {
            if let Some(old) = self.buf.pop_front() {
                out.old.push(old);
            }
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        self.buf.iter().for_each(f)
    }
}
