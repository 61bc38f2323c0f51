//! Kernels: the fast path for the most common continuous query, an
//! aggregation over one stream (`select k, sum(x) from S(...).win:time(...)
//! where ... group by k having ...`).
//!
//! A statement qualifies when it reads one stream, every select item is a
//! group key or an aggregate, it groups by at most one plain field, its
//! aggregates are `count`, `sum` or `avg` over a plain field (or
//! `count(*)`), its window is none, `win:length` or `win:time`, and its
//! filters use comparisons of fields with literals. Its expressions are then
//! compiled to closures over column indices, groups are found through the
//! stream's interned strings (an array index instead of hashing), and the
//! window keeps only the aggregated numbers of each event instead of the
//! event. Anything else runs on the general path ([`crate::processor`]);
//! both paths produce the same rows (tests run statements on both).
//!
//! With a remove stream (`select irstream|rstream`, `insert rstream into`)
//! a kernel also reports each touched group as it was before the update,
//! as the general path does for a fully aggregated statement: that keeps
//! the `irstream` statements of issue 23's measure off the slower path.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::agg::{AggFunc, AggSpec};
use crate::batch::{ColData, EventBatch, Symbols};
use crate::expr::{CExpr, arith, compare};
use crate::parser::ast::BinOp;
use crate::processor::{Item, Row};
use crate::stream::Event;
use crate::value::Value;
use crate::window::Shape;

/// One row to read: an event, or a row of a batch.
#[derive(Clone, Copy)]
pub(crate) enum RowRef<'a> {
    Event(&'a Event),
    Batch(&'a EventBatch, usize),
}

/// A number read from a row without building a [`Value`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Num {
    Null,
    Int(i64),
    Float(f64),
    /// Not a number (string, boolean...).
    Other,
}

impl<'a> RowRef<'a> {
    #[inline]
    pub(crate) fn num(self, idx: usize) -> Num {
        match self {
            RowRef::Event(e) => match e.get(idx) {
                Value::Int(i) => Num::Int(*i),
                Value::Float(f) => Num::Float(*f),
                Value::Null => Num::Null,
                _ => Num::Other,
            },
            RowRef::Batch(b, r) => match b.col(idx) {
                None => Num::Null,
                Some(c) => {
                    if !c.is_valid(r) {
                        return Num::Null;
                    }
                    match &c.data {
                        ColData::Int(v) => Num::Int(v[r]),
                        ColData::Float(v) => Num::Float(v[r]),
                        ColData::Val(v) => match &v[r] {
                            Value::Int(i) => Num::Int(*i),
                            Value::Float(f) => Num::Float(*f),
                            Value::Null => Num::Null,
                            _ => Num::Other,
                        },
                        ColData::Null => Num::Null,
                        ColData::Sym(_) => Num::Other,
                    }
                }
            },
        }
    }

    #[inline]
    pub(crate) fn is_null(self, idx: usize) -> bool {
        match self {
            RowRef::Event(e) => e.get(idx).is_null(),
            RowRef::Batch(b, r) => match b.col(idx) {
                None => true,
                Some(c) => !c.is_valid(r) || matches!(&c.data, ColData::Val(v) if v[r].is_null()),
            },
        }
    }

    /// The symbol of a string field, when the row comes from a batch that interned it.
    #[inline]
    pub(crate) fn sym(self, idx: usize) -> Option<u32> {
        match self {
            RowRef::Event(_) => None,
            RowRef::Batch(b, r) => match b.col(idx) {
                Some(c) if c.is_valid(r) => match &c.data {
                    ColData::Sym(v) => Some(v[r]),
                    _ => None,
                },
                _ => None,
            },
        }
    }

    /// The value of a field (allocation-free for numbers; strings share their `Arc`).
    pub(crate) fn value(self, idx: usize, symbols: &Symbols) -> Value {
        match self {
            RowRef::Event(e) => e.get(idx).clone(),
            RowRef::Batch(b, r) => b.col(idx).map_or(Value::Null, |c| c.value(r, symbols)),
        }
    }
}

/// A row predicate compiled to a closure over column indices.
type RowPred = Box<dyn Fn(RowRef<'_>, &Symbols) -> bool + Send + Sync>;
/// An expression over one group's aggregates and key.
type GroupFn = Box<dyn Fn(&[Acc], &Value) -> Value + Send + Sync>;
type GroupPred = Box<dyn Fn(&[Acc], &Value) -> bool + Send + Sync>;

/// Running state of a count, sum or avg (they can all be removed from).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Acc {
    int: i64,
    float: f64,
    n: i64,
    is_float: bool,
}

impl Acc {
    #[inline]
    fn add(&mut self, v: Num) {
        match v {
            Num::Int(i) => {
                self.int = self.int.wrapping_add(i);
                self.float += i as f64;
            }
            Num::Float(f) => {
                self.is_float = true;
                self.float += f;
            }
            Num::Null | Num::Other => return,
        }
        self.n += 1;
    }

    #[inline]
    fn remove(&mut self, v: Num) {
        match v {
            Num::Int(i) => {
                self.int = self.int.wrapping_sub(i);
                self.float -= i as f64;
            }
            Num::Float(f) => self.float -= f,
            Num::Null | Num::Other => return,
        }
        self.n -= 1;
    }

    #[inline]
    fn value(&self, f: AggFunc) -> Value {
        match f {
            AggFunc::Count => Value::Int(self.n),
            AggFunc::Avg if self.n == 0 => Value::Null,
            AggFunc::Avg => Value::Float(self.float / self.n as f64),
            _ if self.n == 0 => Value::Null,
            _ if self.is_float => Value::Float(self.float),
            _ => Value::Int(self.int),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum KWindow {
    None,
    Length(usize),
    Time(i64),
}

/// What the window keeps of an event: its time, group and aggregated inputs.
#[derive(Debug, Clone, Copy)]
struct Kept {
    ts: i64,
    /// `u32::MAX` when the event failed `where` (it still takes a length slot).
    group: u32,
}

#[derive(Debug)]
struct Group {
    key: Value,
    sym: u32,
    rows: i64,
    touched: bool,
    live: bool,
}

const NO_GROUP: u32 = u32::MAX;

/// Everything a kernel is built from; see [`Kernel::build`].
pub(crate) struct KernelSpec<'a> {
    pub(crate) filter: Option<&'a CExpr>,
    pub(crate) where_: Option<&'a CExpr>,
    pub(crate) required: &'a [usize],
    pub(crate) group_by: &'a [CExpr],
    pub(crate) specs: &'a [AggSpec],
    pub(crate) having: Option<&'a CExpr>,
    pub(crate) items: &'a [Item],
    pub(crate) view: Shape,
    pub(crate) per_event: bool,
    pub(crate) aggregated: bool,
    pub(crate) plain: bool,
    /// Produce the remove stream too.
    pub(crate) rstream: bool,
}

/// A compiled single-stream aggregation.
pub(crate) struct Kernel {
    filter: Option<RowPred>,
    where_: Option<RowPred>,
    required: Vec<usize>,
    key: Option<usize>,
    funcs: Vec<AggFunc>,
    /// Field each aggregate reads; `None` for `count(*)`.
    args: Vec<Option<usize>>,
    having: Option<GroupPred>,
    items: Vec<(Arc<str>, GroupFn)>,
    window: KWindow,
    kept: VecDeque<Kept>,
    /// The aggregated inputs of kept events, `args.len()` per event.
    kept_vals: VecDeque<Num>,
    groups: Vec<Group>,
    /// `args.len()` accumulators per group.
    accs: Vec<Acc>,
    index: HashMap<Value, u32, ahash::RandomState>,
    /// Group by symbol of the key (`NO_GROUP` when not known yet).
    by_sym: Vec<u32>,
    free: Vec<u32>,
    touched: Vec<u32>,
    /// Produce the remove stream: each touched group's row before the update.
    rstream: bool,
    /// Remove-stream rows of the current update, in the order groups were touched.
    old: Vec<Row>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("key", &self.key)
            .field("funcs", &self.funcs)
            .field("window", &self.window)
            .field("groups", &self.groups.len())
            .finish_non_exhaustive()
    }
}

fn field_of(e: &CExpr) -> Option<usize> {
    match e {
        CExpr::Field { slot: 0, idx } => Some(*idx as usize),
        _ => None,
    }
}

fn flip(op: BinOp) -> BinOp {
    match op {
        BinOp::Lt => BinOp::Gt,
        BinOp::Le => BinOp::Ge,
        BinOp::Gt => BinOp::Lt,
        BinOp::Ge => BinOp::Le,
        other => other,
    }
}

#[inline]
fn cmp_ok(op: BinOp, o: std::cmp::Ordering) -> bool {
    match op {
        BinOp::Eq => o.is_eq(),
        BinOp::Ne => o.is_ne(),
        BinOp::Lt => o.is_lt(),
        BinOp::Le => o.is_le(),
        BinOp::Gt => o.is_gt(),
        _ => o.is_ge(),
    }
}

fn is_cmp(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
    )
}

/// Compiles a row predicate; `None` when it uses something kernels do not handle.
fn row_pred(e: &CExpr, symbols: &mut Symbols) -> Option<RowPred> {
    Some(match e {
        CExpr::And(a, b) => {
            let (a, b) = (row_pred(a, symbols)?, row_pred(b, symbols)?);
            Box::new(move |r, s| a(r, s) && b(r, s))
        }
        CExpr::Or(a, b) => {
            let (a, b) = (row_pred(a, symbols)?, row_pred(b, symbols)?);
            Box::new(move |r, s| a(r, s) || b(r, s))
        }
        CExpr::IsNull(x, negated) => {
            let idx = field_of(x)?;
            let negated = *negated;
            Box::new(move |r, _| r.is_null(idx) != negated)
        }
        CExpr::Bin(op, l, r) if is_cmp(*op) => {
            let (op, idx, lit) = match (l.as_ref(), r.as_ref()) {
                (CExpr::Field { slot: 0, idx }, CExpr::Lit(v)) => (*op, *idx as usize, v.clone()),
                (CExpr::Lit(v), CExpr::Field { slot: 0, idx }) => {
                    (flip(*op), *idx as usize, v.clone())
                }
                _ => return None,
            };
            match lit {
                Value::Int(li) => Box::new(move |r, s| match r.num(idx) {
                    Num::Int(i) => cmp_ok(op, i.cmp(&li)),
                    Num::Float(f) => f.partial_cmp(&(li as f64)).is_some_and(|o| cmp_ok(op, o)),
                    Num::Null => false,
                    Num::Other => compare(op, &r.value(idx, s), &Value::Int(li)).is_true(),
                }),
                Value::Float(lf) => Box::new(move |r, s| match r.num(idx) {
                    Num::Int(i) => (i as f64).partial_cmp(&lf).is_some_and(|o| cmp_ok(op, o)),
                    Num::Float(f) => f.partial_cmp(&lf).is_some_and(|o| cmp_ok(op, o)),
                    Num::Null => false,
                    Num::Other => compare(op, &r.value(idx, s), &Value::Float(lf)).is_true(),
                }),
                Value::Str(ls) if matches!(op, BinOp::Eq | BinOp::Ne) => {
                    // Equal strings have equal symbols, so a batch row compares two integers.
                    let lsym = symbols.intern(&ls);
                    Box::new(move |r, s| match (r.sym(idx), lsym) {
                        (Some(x), Some(y)) => (x == y) == (op == BinOp::Eq),
                        _ => compare(op, &r.value(idx, s), &Value::Str(ls.clone())).is_true(),
                    })
                }
                lit => Box::new(move |r, s| compare(op, &r.value(idx, s), &lit).is_true()),
            }
        }
        _ => return None,
    })
}

/// Compiles an expression over a group's aggregates and key.
fn group_fn(e: &CExpr, funcs: &[AggFunc]) -> Option<GroupFn> {
    Some(match e {
        CExpr::Lit(v) => {
            let v = v.clone();
            Box::new(move |_, _| v.clone())
        }
        CExpr::Agg(i) => {
            let i = *i as usize;
            let f = *funcs.get(i)?;
            Box::new(move |a, _| a[i].value(f))
        }
        CExpr::GroupKey(0) => Box::new(|_, k| k.clone()),
        CExpr::Bin(op, l, r) => {
            let (op, l, r) = (*op, group_fn(l, funcs)?, group_fn(r, funcs)?);
            if is_cmp(op) {
                Box::new(move |a, k| compare(op, &l(a, k), &r(a, k)))
            } else if matches!(op, BinOp::Concat) {
                return None;
            } else {
                Box::new(move |a, k| arith(op, &l(a, k), &r(a, k)))
            }
        }
        CExpr::Neg(x) => {
            let x = group_fn(x, funcs)?;
            Box::new(move |a, k| match x(a, k) {
                Value::Int(i) => Value::Int(i.wrapping_neg()),
                Value::Float(f) => Value::Float(-f),
                _ => Value::Null,
            })
        }
        _ => return None,
    })
}

/// Compiles a condition over a group (null is false).
fn group_pred(e: &CExpr, funcs: &[AggFunc]) -> Option<GroupPred> {
    Some(match e {
        CExpr::And(a, b) => {
            let (a, b) = (group_pred(a, funcs)?, group_pred(b, funcs)?);
            Box::new(move |x, k| a(x, k) && b(x, k))
        }
        CExpr::Or(a, b) => {
            let (a, b) = (group_pred(a, funcs)?, group_pred(b, funcs)?);
            Box::new(move |x, k| a(x, k) || b(x, k))
        }
        // The common `having sum(x) >= N`: no Value built at all.
        CExpr::Bin(op, l, r)
            if is_cmp(*op)
                && matches!(l.as_ref(), CExpr::Agg(_))
                && matches!(r.as_ref(), CExpr::Lit(Value::Int(_) | Value::Float(_))) =>
        {
            let (CExpr::Agg(i), CExpr::Lit(lit)) = (l.as_ref(), r.as_ref()) else {
                return None;
            };
            let (op, i, f) = (*op, *i as usize, *funcs.get(*i as usize)?);
            let lf = lit.as_f64()?;
            let li = match lit {
                Value::Int(v) => Some(*v),
                _ => None,
            };
            Box::new(move |a, _| {
                let acc = &a[i];
                match (f, li) {
                    (AggFunc::Count, Some(li)) => cmp_ok(op, acc.n.cmp(&li)),
                    (AggFunc::Sum, Some(li)) if !acc.is_float => {
                        acc.n > 0 && cmp_ok(op, acc.int.cmp(&li))
                    }
                    _ => match acc.value(f).as_f64() {
                        Some(v) => v.partial_cmp(&lf).is_some_and(|o| cmp_ok(op, o)),
                        None => false,
                    },
                }
            })
        }
        other => {
            let g = group_fn(other, funcs)?;
            Box::new(move |a, k| g(a, k).is_true())
        }
    })
}

impl Kernel {
    /// A kernel for the statement, or `None` when it does not qualify.
    pub(crate) fn build(spec: KernelSpec<'_>, symbols: &mut Symbols) -> Option<Kernel> {
        if !spec.aggregated || spec.per_event || !spec.plain || spec.group_by.len() > 1 {
            return None;
        }
        let key = match spec.group_by.first() {
            Some(g) => Some(field_of(g)?),
            None => None,
        };
        let mut funcs = Vec::new();
        let mut args = Vec::new();
        for s in spec.specs {
            if s.distinct || !matches!(s.func, AggFunc::Count | AggFunc::Sum | AggFunc::Avg) {
                return None;
            }
            funcs.push(s.func);
            args.push(match &s.arg {
                None => None,
                Some(a) => Some(field_of(a)?),
            });
        }
        let mut items = Vec::new();
        for it in spec.items {
            let Item::Expr { name, expr } = it else {
                return None;
            };
            items.push((name.clone(), group_fn(expr, &funcs)?));
        }
        let filter = match spec.filter {
            Some(f) => Some(row_pred(f, symbols)?),
            None => None,
        };
        let where_ = match spec.where_ {
            Some(f) => Some(row_pred(f, symbols)?),
            None => None,
        };
        let having = match spec.having {
            Some(h) => Some(group_pred(h, &funcs)?),
            None => None,
        };
        let window = match spec.view {
            Shape::None => KWindow::None,
            Shape::Length(n) => KWindow::Length(n),
            Shape::Time(ms) => KWindow::Time(ms),
            Shape::Other => return None,
        };
        let mut k = Kernel {
            filter,
            where_,
            required: spec.required.to_vec(),
            key,
            funcs,
            args,
            having,
            items,
            window,
            kept: VecDeque::new(),
            kept_vals: VecDeque::new(),
            groups: Vec::new(),
            accs: Vec::new(),
            index: HashMap::default(),
            by_sym: Vec::new(),
            free: Vec::new(),
            touched: Vec::new(),
            rstream: spec.rstream,
            old: Vec::new(),
        };
        if k.key.is_none() {
            // The single group of an ungrouped aggregation lives forever.
            k.new_group(Value::Null, NO_GROUP);
        }
        Some(k)
    }

    fn new_group(&mut self, key: Value, sym: u32) -> u32 {
        let n = self.funcs.len();
        let g = Group {
            key,
            sym,
            rows: 0,
            touched: false,
            live: true,
        };
        let gi = match self.free.pop() {
            Some(gi) => {
                self.groups[gi as usize] = g;
                self.accs[gi as usize * n..(gi as usize + 1) * n].fill(Acc::default());
                gi
            }
            None => {
                self.groups.push(g);
                self.accs.resize(self.accs.len() + n, Acc::default());
                (self.groups.len() - 1) as u32
            }
        };
        if sym != NO_GROUP {
            if self.by_sym.len() <= sym as usize {
                self.by_sym.resize(sym as usize + 1, NO_GROUP);
            }
            self.by_sym[sym as usize] = gi;
        }
        gi
    }

    #[inline]
    fn group_of(&mut self, r: RowRef<'_>, symbols: &Symbols) -> u32 {
        let Some(kf) = self.key else {
            return 0;
        };
        let sym = r.sym(kf);
        if let Some(s) = sym
            && let Some(&gi) = self.by_sym.get(s as usize)
            && gi != NO_GROUP
        {
            return gi;
        }
        let key = r.value(kf, symbols);
        if let Some(&gi) = self.index.get(&key) {
            if let Some(s) = sym {
                // Known from an event row; remember its symbol too.
                if self.by_sym.len() <= s as usize {
                    self.by_sym.resize(s as usize + 1, NO_GROUP);
                }
                self.by_sym[s as usize] = gi;
                self.groups[gi as usize].sym = s;
            }
            return gi;
        }
        let gi = self.new_group(key.clone(), sym.unwrap_or(NO_GROUP));
        self.index.insert(key, gi);
        gi
    }

    /// Marks a group as changed by this update; must run before the change,
    /// since the remove stream reports the group as it was.
    #[inline]
    fn touch(&mut self, gi: u32) {
        let g = &mut self.groups[gi as usize];
        if !g.touched {
            g.touched = true;
            self.touched.push(gi);
            if self.rstream {
                let n = self.funcs.len();
                let g = &self.groups[gi as usize];
                let accs = &self.accs[gi as usize * n..(gi as usize + 1) * n];
                if let Some(row) = self.row(accs, &g.key) {
                    self.old.push(row);
                }
            }
        }
    }

    /// The group's output row, or `None` when `having` filters it out.
    #[inline]
    fn row(&self, accs: &[Acc], key: &Value) -> Option<Row> {
        if let Some(h) = &self.having
            && !h(accs, key)
        {
            return None;
        }
        let cols = self
            .items
            .iter()
            .map(|(name, f)| (name.clone(), f(accs, key)))
            .collect();
        Some(Row { cols })
    }

    /// Removes the oldest kept event from its group.
    fn expire_front(&mut self) {
        let n = self.args.len();
        let Some(k) = self.kept.pop_front() else {
            return;
        };
        if k.group == NO_GROUP {
            self.kept_vals.drain(..n);
            return;
        }
        self.touch(k.group);
        let base = k.group as usize * n;
        for i in 0..n {
            let v = self.kept_vals.pop_front().unwrap_or(Num::Null);
            let acc = &mut self.accs[base + i];
            match (self.args[i], self.funcs[i]) {
                (None, _) => acc.n -= 1,
                (Some(_), AggFunc::Count) if !matches!(v, Num::Null) => acc.n -= 1,
                (Some(_), AggFunc::Count) => {}
                (Some(_), _) => acc.remove(v),
            }
        }
        self.groups[k.group as usize].rows -= 1;
    }

    /// An event arrives at `now`: returns false when it lacks a required field.
    #[inline]
    pub(crate) fn on_row(
        &mut self,
        r: RowRef<'_>,
        now: i64,
        symbols: &Symbols,
        out: &mut Vec<Row>,
        old: &mut Vec<Row>,
    ) -> bool {
        if self.required.iter().any(|&f| r.is_null(f)) {
            return false;
        }
        if let Some(f) = &self.filter
            && !f(r, symbols)
        {
            return true;
        }
        if let KWindow::Time(ms) = self.window {
            while self.kept.front().is_some_and(|k| k.ts + ms <= now) {
                self.expire_front();
            }
        }
        if let KWindow::Length(len) = self.window {
            // The leaving event is reported before the arriving one, as on the general path.
            while self.kept.len() >= len {
                self.expire_front();
            }
        }
        let counted = self.where_.as_ref().is_none_or(|w| w(r, symbols));
        let n = self.args.len();
        let retain = !matches!(self.window, KWindow::None);
        if counted {
            let gi = self.group_of(r, symbols);
            self.touch(gi);
            let base = gi as usize * n;
            for i in 0..n {
                let acc = &mut self.accs[base + i];
                let v = match self.args[i] {
                    Some(f) => {
                        let v = r.num(f);
                        if self.funcs[i] != AggFunc::Count {
                            acc.add(v);
                        } else if !matches!(v, Num::Null) {
                            // count(x) counts every non-null value, numbers or not.
                            acc.n += 1;
                        }
                        v
                    }
                    None => {
                        acc.n += 1;
                        Num::Null
                    }
                };
                if retain {
                    self.kept_vals.push_back(v);
                }
            }
            self.groups[gi as usize].rows += 1;
            if retain {
                self.kept.push_back(Kept { ts: now, group: gi });
            }
        } else if let KWindow::Length(_) = self.window {
            for _ in 0..n {
                self.kept_vals.push_back(Num::Null);
            }
            self.kept.push_back(Kept {
                ts: now,
                group: NO_GROUP,
            });
        }
        self.finish(out, old);
        true
    }

    /// The clock reached `now`: expire what is due.
    pub(crate) fn advance(&mut self, now: i64, out: &mut Vec<Row>, old: &mut Vec<Row>) {
        if let KWindow::Time(ms) = self.window {
            while self.kept.front().is_some_and(|k| k.ts + ms <= now) {
                self.expire_front();
            }
        }
        self.finish(out, old);
    }

    pub(crate) fn next_deadline(&self) -> Option<i64> {
        match self.window {
            KWindow::Time(ms) => self.kept.front().map(|k| k.ts + ms),
            _ => None,
        }
    }

    /// One row per touched group that passes `having` (and the rows of the
    /// remove stream), then forgets empty groups.
    #[inline]
    fn finish(&mut self, out: &mut Vec<Row>, old: &mut Vec<Row>) {
        let n = self.funcs.len();
        for &gi in &self.touched {
            let g = &self.groups[gi as usize];
            let accs = &self.accs[gi as usize * n..(gi as usize + 1) * n];
            if let Some(row) = self.row(accs, &g.key) {
                out.push(row);
            }
        }
        if !self.old.is_empty() {
            old.append(&mut self.old);
        }
        let grouped = self.key.is_some();
        for i in 0..self.touched.len() {
            let gi = self.touched[i];
            let g = &mut self.groups[gi as usize];
            g.touched = false;
            if grouped && g.rows <= 0 && g.live {
                g.live = false;
                let key = std::mem::take(&mut g.key);
                if g.sym != NO_GROUP {
                    self.by_sym[g.sym as usize] = NO_GROUP;
                }
                self.index.remove(&key);
                self.free.push(gi);
            }
        }
        self.touched.clear();
    }
}
