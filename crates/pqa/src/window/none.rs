//! No window: every event is new data once and is not retained.

use std::sync::Arc;

use super::{Delta, Window};
use crate::stream::Event;

#[derive(Debug)]
pub(crate) struct NoWindow;

impl Window for NoWindow {
    fn shape(&self) -> super::Shape {
        super::Shape::None
    }
    #[inline]
    fn insert(&mut self, ev: Arc<Event>, _now: i64, out: &mut Delta) {
        out.new.push(ev);
    }
    fn for_each(&self, _f: &mut dyn FnMut(&Arc<Event>)) {}
}
