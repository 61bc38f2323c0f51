//! `std:lastevent()`: only the most recent event.

use std::sync::Arc;

use super::{Delta, Window};
use crate::stream::Event;

#[derive(Debug, Default)]
pub(crate) struct LastEvent {
    last: Option<Arc<Event>>,
}

impl Window for LastEvent {
    fn insert(&mut self, ev: Arc<Event>, _now: i64, out: &mut Delta) {
        if let Some(old) = self.last.replace(ev.clone()) {
            out.old.push(old);
        }
        out.new.push(ev);
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        self.last.iter().for_each(f)
    }
}
