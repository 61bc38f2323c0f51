//! The "first" windows: `win:firstlength(N)`, `win:firsttime(period)` and
//! `std:firstunique(field, ...)`. Each keeps the first events it is given and
//! then ignores the rest: an ignored event enters no window, so it is not
//! posted to the statement (no insert stream) and nothing ever leaves.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Delta, Window};
use crate::expr::{CExpr, Ctx};
use crate::stream::Event;
use crate::value::Value;

/// `win:firstlength(N)`: the first N events.
#[derive(Debug)]
pub(crate) struct FirstLength {
    n: usize,
    kept: Vec<Arc<Event>>,
}

impl FirstLength {
    pub(crate) fn new(n: usize) -> Self {
        FirstLength {
            n,
            kept: Vec::with_capacity(n.min(1024)),
        }
    }
}

impl Window for FirstLength {
    fn insert(&mut self, ev: Arc<Event>, _now: i64, out: &mut Delta) {
        if self.kept.len() < self.n {
            self.kept.push(ev.clone());
            out.new.push(ev);
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        self.kept.iter().for_each(f)
    }
}

/// `win:firsttime(period)`: the events that arrive before the statement's
/// start plus the period. An event arriving exactly at the end is ignored:
/// Esper closes the window by a schedule that fires when the clock reaches
/// the end, before events at that time are handled.
#[derive(Debug)]
pub(crate) struct FirstTime {
    until: i64,
    kept: Vec<Arc<Event>>,
}

impl FirstTime {
    pub(crate) fn new(until: i64) -> Self {
        FirstTime {
            until,
            kept: Vec::new(),
        }
    }
}

impl Window for FirstTime {
    fn insert(&mut self, ev: Arc<Event>, now: i64, out: &mut Delta) {
        if now < self.until {
            self.kept.push(ev.clone());
            out.new.push(ev);
        }
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        self.kept.iter().for_each(f)
    }
}

/// `std:firstunique(field, ...)`: the first event of each distinct key.
#[derive(Debug)]
pub(crate) struct FirstUnique {
    keys: Vec<CExpr>,
    seen: HashMap<Vec<Value>, usize>,
    /// In arrival order, so joins see a stable order.
    kept: Vec<Arc<Event>>,
}

impl FirstUnique {
    pub(crate) fn new(keys: Vec<CExpr>) -> Self {
        FirstUnique {
            keys,
            seen: HashMap::new(),
            kept: Vec::new(),
        }
    }
}

impl Window for FirstUnique {
    fn insert(&mut self, ev: Arc<Event>, _now: i64, out: &mut Delta) {
        let row = [ev.clone()];
        let ctx = Ctx::row(&row);
        let key: Vec<Value> = self.keys.iter().map(|k| k.eval(&ctx)).collect();
        if self.seen.contains_key(&key) {
            return;
        }
        self.seen.insert(key, self.kept.len());
        self.kept.push(ev.clone());
        out.new.push(ev);
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        self.kept.iter().for_each(f)
    }
}
