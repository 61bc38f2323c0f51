//! `win:keepall()`: retains every event forever (until the statement is removed).

use std::sync::Arc;

use super::{Delta, Window};
use crate::stream::Event;

#[derive(Debug, Default)]
pub(crate) struct KeepAll {
    buf: Vec<Arc<Event>>,
}

impl Window for KeepAll {
    fn insert(&mut self, ev: Arc<Event>, _now: i64, out: &mut Delta) {
        self.buf.push(ev.clone());
        out.new.push(ev);
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        self.buf.iter().for_each(f)
    }
}
