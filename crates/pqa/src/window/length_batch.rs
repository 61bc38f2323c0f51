//! `win:length_batch(N)`: releases every N events together; the previous
//! batch leaves when the next is released.

use std::sync::Arc;

use super::{Delta, Window};
use crate::stream::Event;

#[derive(Debug)]
pub(crate) struct LengthBatch {
    n: usize,
    buf: Vec<Arc<Event>>,
    prev: Vec<Arc<Event>>,
}

impl LengthBatch {
    pub(crate) fn new(n: usize) -> Self {
        LengthBatch {
            n,
            buf: Vec::with_capacity(n.min(1024)),
            prev: Vec::new(),
        }
    }
}

impl Window for LengthBatch {
    fn insert(&mut self, ev: Arc<Event>, _now: i64, out: &mut Delta) {
        self.buf.push(ev);
        if self.buf.len() >= self.n {
            let batch = std::mem::take(&mut self.buf);
            let prev = std::mem::replace(&mut self.prev, batch.clone());
            out.new.extend(batch);
            out.old.extend(prev);
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        self.prev.iter().for_each(f)
    }
}
