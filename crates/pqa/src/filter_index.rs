//! The shared filter index: which statements an event of a stream can
//! possibly trigger, found without asking every statement.
//!
//! Like Esper's filter service, statements' predicates on one property are
//! indexed across statements: for `v > N` the thresholds N are kept sorted,
//! so one binary search yields every statement whose `v > N` holds for the
//! event; `=`, `<`, `<=`, `>=` likewise, for numbers and for strings.
//! Each statement input contributes at most one conjunct (see
//! [`IndexKey`]): from its stream filter, or from its `where` clause when
//! skipping an event that fails it changes nothing else (see
//! `statement::compile`). The index is only a pre-filter: a statement it
//! selects still evaluates its whole filter and where clause, so the index
//! must only never leave out a statement that would have matched.
//! Statements without an indexable conjunct (patterns, kernels, `!=`,
//! functions...) are visited for every event, as before.
//!
//! Dispatch costs O(log n + matches) per indexed property instead of O(n).
//! Matches are handed out in registration order, the order the naive loop
//! visits them, so outputs come out in the same order.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::parser::ast::BinOp;
use crate::stream::Event;
use crate::value::Value;

/// A (statement, input) pair reading a stream.
pub(crate) type Reader = (usize, usize);

/// Largest integer magnitude every f64 holds exactly: within it, comparing
/// as f64 agrees with comparing integers, as `Value::sql_cmp` does.
const EXACT: i64 = 1 << 53;

/// One indexable conjunct: `event.field <op> value` must hold for the
/// statement input to produce anything.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IndexKey {
    pub(crate) field: usize,
    pub(crate) op: Op,
    pub(crate) value: Key,
}

/// The comparison, with the event's property on the left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    /// The operator of `field <op> constant`; `flipped` when the constant
    /// was on the left (`5 < v` is `v > 5`). `!=` is not indexed.
    pub(crate) fn from_bin(op: BinOp, flipped: bool) -> Option<Op> {
        let op = match op {
            BinOp::Eq => Op::Eq,
            BinOp::Lt => Op::Lt,
            BinOp::Le => Op::Le,
            BinOp::Gt => Op::Gt,
            BinOp::Ge => Op::Ge,
            _ => return None,
        };
        Some(if flipped { op.flip() } else { op })
    }

    fn flip(self) -> Op {
        match self {
            Op::Eq => Op::Eq,
            Op::Lt => Op::Gt,
            Op::Le => Op::Ge,
            Op::Gt => Op::Lt,
            Op::Ge => Op::Le,
        }
    }
}

/// An indexable constant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Key {
    /// A finite number (integers only up to 2^53 in magnitude).
    Num(f64),
    Str(Arc<str>),
}

impl Key {
    /// The constant as a key, when comparisons with it can be indexed
    /// exactly as `Value::sql_cmp` makes them.
    pub(crate) fn from_value(v: &Value) -> Option<Key> {
        match v {
            Value::Int(i) if i.unsigned_abs() <= EXACT as u64 => Some(Key::Num(*i as f64)),
            // `+ 0.0` turns -0 into 0: the sorted lists use `total_cmp`, which
            // orders them, where `sql_cmp` finds them equal.
            Value::Float(f) if f.is_finite() => Some(Key::Num(*f + 0.0)),
            Value::Str(s) => Some(Key::Str(s.clone())),
            _ => None,
        }
    }
}

/// What an event's property is, for looking it up.
enum Probe<'a> {
    Num(f64),
    Str(&'a str),
    /// Compares false with every indexed constant (booleans, JSON).
    Nothing,
    /// Cannot be looked up exactly (NaN, huge integers, null): visit all.
    Unsure,
}

fn probe(v: &Value) -> Probe<'_> {
    match v {
        Value::Int(i) if i.unsigned_abs() <= EXACT as u64 => Probe::Num(*i as f64),
        Value::Float(f) if !f.is_nan() => Probe::Num(*f + 0.0),
        Value::Str(s) => Probe::Str(s),
        Value::Bool(_) | Value::Json(_) => Probe::Nothing,
        _ => Probe::Unsure,
    }
}

/// Readers by constant, one sorted list per operator.
#[derive(Debug)]
struct Sorted<K> {
    eq: Vec<(K, Reader)>,
    lt: Vec<(K, Reader)>,
    le: Vec<(K, Reader)>,
    gt: Vec<(K, Reader)>,
    ge: Vec<(K, Reader)>,
}

impl<K> Default for Sorted<K> {
    fn default() -> Self {
        Sorted {
            eq: Vec::new(),
            lt: Vec::new(),
            le: Vec::new(),
            gt: Vec::new(),
            ge: Vec::new(),
        }
    }
}

impl<K: Clone> Sorted<K> {
    fn list(&mut self, op: Op) -> &mut Vec<(K, Reader)> {
        match op {
            Op::Eq => &mut self.eq,
            Op::Lt => &mut self.lt,
            Op::Le => &mut self.le,
            Op::Gt => &mut self.gt,
            Op::Ge => &mut self.ge,
        }
    }

    fn insert(&mut self, op: Op, k: K, r: Reader, cmp: impl Fn(&K, &K) -> Ordering) {
        let list = self.list(op);
        let at = list.partition_point(|(c, _)| cmp(c, &k) != Ordering::Greater);
        list.insert(at, (k, r));
    }

    fn remove(&mut self, id: usize) {
        for list in [
            &mut self.eq,
            &mut self.lt,
            &mut self.le,
            &mut self.gt,
            &mut self.ge,
        ] {
            list.retain(|(_, (s, _))| *s != id);
        }
    }

    fn is_empty(&self) -> bool {
        self.eq.is_empty()
            && self.lt.is_empty()
            && self.le.is_empty()
            && self.gt.is_empty()
            && self.ge.is_empty()
    }

    /// Appends the readers whose `x <op> constant` holds; `cmp(c)` orders
    /// the constant `c` against `x`.
    fn collect(&self, cmp: impl Fn(&K) -> Ordering, out: &mut Vec<Reader>) {
        let take = |l: &[(K, Reader)], out: &mut Vec<Reader>| out.extend(l.iter().map(|(_, r)| *r));
        // Constants below x: `x > c` holds for them.
        let below = self.gt.partition_point(|(c, _)| cmp(c) == Ordering::Less);
        take(&self.gt[..below], out);
        let upto = self
            .ge
            .partition_point(|(c, _)| cmp(c) != Ordering::Greater);
        take(&self.ge[..upto], out);
        let from = self
            .lt
            .partition_point(|(c, _)| cmp(c) != Ordering::Greater);
        take(&self.lt[from..], out);
        let from = self.le.partition_point(|(c, _)| cmp(c) == Ordering::Less);
        take(&self.le[from..], out);
        let lo = self.eq.partition_point(|(c, _)| cmp(c) == Ordering::Less);
        let hi = self
            .eq
            .partition_point(|(c, _)| cmp(c) != Ordering::Greater);
        take(&self.eq[lo..hi], out);
    }
}

/// The indexed readers of one property.
#[derive(Debug)]
struct FieldIndex {
    field: usize,
    num: Sorted<f64>,
    str: Sorted<Arc<str>>,
}

/// One stream's readers: the indexed ones by property, the others in a list.
#[derive(Debug, Default)]
pub(crate) struct StreamIndex {
    /// Readers visited for every event.
    always: Vec<Reader>,
    fields: Vec<FieldIndex>,
    /// Fields some indexed reader requires, with how many do: an event
    /// lacking one makes those readers count a missing field, so such an
    /// event visits every reader.
    required: Vec<(usize, usize)>,
    /// Indexed readers.
    indexed: usize,
}

impl StreamIndex {
    /// Adds a reader: under `key` when it has one. `required` are the
    /// fields the reader needs (an event lacking one is counted missing).
    pub(crate) fn insert(&mut self, r: Reader, key: Option<&IndexKey>, required: &[usize]) {
        let Some(key) = key else {
            self.always.push(r);
            return;
        };
        self.indexed += 1;
        for &f in required {
            match self.required.iter_mut().find(|(g, _)| *g == f) {
                Some((_, n)) => *n += 1,
                None => self.required.push((f, 1)),
            }
        }
        let fi = match self.fields.iter().position(|x| x.field == key.field) {
            Some(i) => &mut self.fields[i],
            None => {
                self.fields.push(FieldIndex {
                    field: key.field,
                    num: Sorted::default(),
                    str: Sorted::default(),
                });
                let last = self.fields.len() - 1;
                &mut self.fields[last]
            }
        };
        match &key.value {
            Key::Num(c) => fi.num.insert(key.op, *c, r, |a, b| a.total_cmp(b)),
            Key::Str(s) => fi.str.insert(key.op, s.clone(), r, |a, b| a.cmp(b)),
        }
    }

    /// Removes statement `id`'s readers; `keyed` says, per removed reader,
    /// whether it was indexed and what it required.
    pub(crate) fn remove(&mut self, id: usize, keyed: &[(bool, &[usize])]) {
        self.always.retain(|(s, _)| *s != id);
        for (indexed, required) in keyed {
            if !indexed {
                continue;
            }
            self.indexed = self.indexed.saturating_sub(1);
            for f in *required {
                if let Some(i) = self.required.iter().position(|(g, _)| g == f) {
                    self.required[i].1 -= 1;
                    if self.required[i].1 == 0 {
                        self.required.swap_remove(i);
                    }
                }
            }
        }
        for fi in &mut self.fields {
            fi.num.remove(id);
            fi.str.remove(id);
        }
        self.fields
            .retain(|fi| !(fi.num.is_empty() && fi.str.is_empty()));
    }

    /// True when some reader is indexed (routing can skip readers).
    pub(crate) fn has_indexed(&self) -> bool {
        self.indexed > 0
    }

    /// The readers `ev` may trigger, in registration order, into `out`.
    /// False when the index cannot tell (nothing indexed, or the event
    /// lacks a required field or holds a value the index cannot compare
    /// exactly): then every reader must be visited.
    pub(crate) fn candidates(&self, ev: &Event, out: &mut Vec<Reader>) -> bool {
        out.clear();
        if self.indexed == 0 {
            return false;
        }
        if self.required.iter().any(|(f, _)| ev.get(*f).is_null()) {
            return false;
        }
        out.extend_from_slice(&self.always);
        for fi in &self.fields {
            match probe(ev.get(fi.field)) {
                Probe::Num(x) => fi.num.collect(|c| c.total_cmp(&x), out),
                Probe::Str(x) => fi.str.collect(|c| (**c).cmp(x), out),
                Probe::Nothing => {}
                Probe::Unsure => return false,
            }
        }
        // Statement ids grow with registration, and a statement's inputs
        // were added in input order: sorting restores the naive order.
        out.sort_unstable();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Schema;

    fn event(v: Value) -> Event {
        Event {
            ts: 0,
            schema: Arc::new(Schema::default()),
            values: Box::new([v]),
        }
    }

    /// The index is a pre-filter, so the equivalence property test only
    /// catches a statement left out; this one checks it is also exact:
    /// at, below and above every boundary, the candidates are precisely
    /// the statements whose conjunct holds (an extra one costs a visit
    /// per event, which is what the index exists to save).
    #[test]
    fn candidates_are_exactly_the_statements_whose_conjunct_holds() {
        let ops = [Op::Eq, Op::Lt, Op::Le, Op::Gt, Op::Ge];
        let constants = [-1.5, 0.0, 1.0, 2.0];
        let mut index = StreamIndex::default();
        let mut keys = Vec::new();
        for op in ops {
            for c in constants {
                let id = keys.len();
                let key = IndexKey {
                    field: 0,
                    op,
                    value: Key::Num(c),
                };
                index.insert((id, 0), Some(&key), &[0]);
                keys.push((op, c));
            }
        }
        let holds = |op: Op, x: f64, c: f64| match op {
            Op::Eq => x == c,
            Op::Lt => x < c,
            Op::Le => x <= c,
            Op::Gt => x > c,
            Op::Ge => x >= c,
        };
        let mut out = Vec::new();
        for x in [-2.0, -1.5, -0.0, 0.0, 0.5, 1.0, 2.0, 3.0] {
            for probe in [Value::Float(x), Value::Int(x as i64)] {
                let x = match probe {
                    Value::Int(i) => i as f64,
                    _ => x,
                };
                assert!(index.candidates(&event(probe.clone()), &mut out));
                let expected: Vec<Reader> = keys
                    .iter()
                    .enumerate()
                    .filter(|(_, (op, c))| holds(*op, x, *c))
                    .map(|(id, _)| (id, 0))
                    .collect();
                assert_eq!(out, expected, "event value {probe:?}");
            }
        }
    }
}
