//! `std:groupwin(field, ...)` followed by a data window, e.g.
//! `std:groupwin(sym).win:length(3)` or `#groupwin(sym)#length(3)`: one
//! window per distinct key, so each group keeps its own last three events and
//! an event pushes out only an event of its own group.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Delta, Window, WindowSpec};
use crate::expr::{CExpr, Ctx};
use crate::stream::Event;
use crate::value::Value;

#[derive(Debug)]
pub(crate) struct GroupWin {
    keys: Vec<CExpr>,
    inner: WindowSpec,
    groups: HashMap<Vec<Value>, usize>,
    /// The groups' windows in the order the groups first appeared, so joins
    /// and the remove stream of one clock tick see a stable order.
    windows: Vec<Box<dyn Window>>,
}

impl GroupWin {
    pub(crate) fn new(keys: Vec<CExpr>, inner: WindowSpec) -> Self {
        GroupWin {
            keys,
            inner,
            groups: HashMap::new(),
            windows: Vec::new(),
        }
    }
}

impl Window for GroupWin {
    fn insert(&mut self, ev: Arc<Event>, now: i64, out: &mut Delta) {
        let row = [ev.clone()];
        let ctx = Ctx::row(&row);
        let key: Vec<Value> = self.keys.iter().map(|k| k.eval(&ctx)).collect();
        let index = match self.groups.get(&key) {
            Some(i) => *i,
            None => {
                self.windows.push(self.inner.instantiate());
                let i = self.windows.len() - 1;
                self.groups.insert(key, i);
                i
            }
        };
        self.windows[index].insert(ev, now, out);
    }
    fn advance(&mut self, now: i64, out: &mut Delta) {
        for window in &mut self.windows {
            if window.next_deadline().is_some_and(|d| d <= now) {
                window.advance(now, out);
            }
        }
    }
    fn next_deadline(&self) -> Option<i64> {
        self.windows.iter().filter_map(|w| w.next_deadline()).min()
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        for window in &self.windows {
            window.for_each(f);
        }
    }
}
