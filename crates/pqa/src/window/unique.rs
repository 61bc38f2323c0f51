//! `std:unique(field, ...)`: the last event per distinct key; an event
//! replaces (and removes) the previous one with the same key.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Delta, Window};
use crate::expr::{CExpr, Ctx};
use crate::stream::Event;
use crate::value::Value;

#[derive(Debug)]
pub(crate) struct Unique {
    keys: Vec<CExpr>,
    /// Insertion order is kept so joins and `first()` see a stable order.
    map: HashMap<Vec<Value>, (u64, Arc<Event>)>,
    seq: u64,
}

impl Unique {
    pub(crate) fn new(keys: Vec<CExpr>) -> Self {
        Unique {
            keys,
            map: HashMap::new(),
            seq: 0,
        }
    }
}

impl Window for Unique {
    fn insert(&mut self, ev: Arc<Event>, _now: i64, out: &mut Delta) {
        let row = [ev.clone()];
        let ctx = Ctx::row(&row);
        let key: Vec<Value> = self.keys.iter().map(|k| k.eval(&ctx)).collect();
        self.seq += 1;
        if let Some((_, old)) = self.map.insert(key, (self.seq, ev.clone())) {
            out.old.push(old);
        }
        out.new.push(ev);
    }
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>)) {
        let mut v: Vec<&(u64, Arc<Event>)> = self.map.values().collect();
        v.sort_by_key(|(s, _)| *s);
        v.into_iter().for_each(|(_, e)| f(e))
    }
}
