//! The result-set processor: where (before aggregation), grouping and
//! aggregation, having, projection, distinct, order by and limit, following
//! Esper's output rules for the insert stream:
//!
//! - no aggregates, no group by: one row per new event (or join combination);
//! - aggregates and every selected field is a group key ("fully
//!   aggregated"): one row per group touched by the update, whether events
//!   entered or left the window;
//! - aggregates plus fields that are not group keys: one row per new event,
//!   carrying its group's aggregates.

use std::collections::HashMap;
use std::sync::Arc;

use crate::agg::{AggSpec, AggState};
use crate::expr::{CExpr, Ctx};
use crate::stream::Event;
use crate::value::Value;

/// One output row: named columns in select-list order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Column name / value pairs.
    pub cols: Vec<(Arc<str>, Value)>,
}

impl Row {
    /// The row as a JSON object.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.cols
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_json()))
            .collect()
    }

    /// The value of a column.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.cols.iter().find(|(k, _)| &**k == name).map(|(_, v)| v)
    }
}

/// A select-list entry, compiled.
#[derive(Debug)]
pub(crate) enum Item {
    Expr {
        name: Arc<str>,
        expr: CExpr,
    },
    /// `*`: the fields of a single stream, or one object per stream/tag.
    All,
    /// `alias.*`: the fields of one stream.
    SlotFields(u16),
}

#[derive(Debug)]
struct Group {
    key: Box<[Value]>,
    aggs: Vec<AggState>,
    rows: i64,
    touched: bool,
    live: bool,
}

/// Compiled parts handed over by the statement compiler.
#[derive(Debug)]
pub(crate) struct ProcessorSpec {
    pub(crate) where_: Option<CExpr>,
    pub(crate) items: Vec<Item>,
    pub(crate) slot_names: Vec<Arc<str>>,
    pub(crate) aggregated: bool,
    pub(crate) per_event: bool,
    pub(crate) specs: Vec<AggSpec>,
    pub(crate) group_by: Vec<CExpr>,
    pub(crate) having: Option<CExpr>,
    pub(crate) order_by: Vec<(CExpr, bool)>,
    pub(crate) distinct: bool,
    pub(crate) limit: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Processor {
    s: ProcessorSpec,
    groups: Vec<Group>,
    index: HashMap<Box<[Value]>, usize, ahash::RandomState>,
    free: Vec<usize>,
    touched: Vec<usize>,
    pending: Vec<(Vec<Arc<Event>>, usize)>,
    keybuf: Vec<Value>,
    rows: Vec<(Row, Vec<Value>)>,
}

impl Processor {
    pub(crate) fn spec(&self) -> &ProcessorSpec {
        &self.s
    }

    pub(crate) fn new(s: ProcessorSpec) -> Self {
        let mut p = Processor {
            groups: Vec::new(),
            index: HashMap::default(),
            free: Vec::new(),
            touched: Vec::new(),
            pending: Vec::new(),
            keybuf: Vec::new(),
            rows: Vec::new(),
            s,
        };
        if p.s.aggregated && p.s.group_by.is_empty() {
            // The single group of an ungrouped aggregation lives forever.
            let aggs = p.s.specs.iter().map(AggState::new).collect();
            p.groups.push(Group {
                key: Box::new([]),
                aggs,
                rows: 0,
                touched: false,
                live: true,
            });
        }
        p
    }

    fn group_for(&mut self, ctx: &Ctx<'_>) -> usize {
        if self.s.group_by.is_empty() {
            return 0;
        }
        self.keybuf.clear();
        for g in &self.s.group_by {
            self.keybuf.push(g.eval(ctx));
        }
        if let Some(&i) = self.index.get(&self.keybuf[..]) {
            return i;
        }
        let key: Box<[Value]> = self.keybuf.clone().into_boxed_slice();
        let aggs = self.s.specs.iter().map(AggState::new).collect();
        let g = Group {
            key: key.clone(),
            aggs,
            rows: 0,
            touched: false,
            live: true,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.groups[i] = g;
                i
            }
            None => {
                self.groups.push(g);
                self.groups.len() - 1
            }
        };
        self.index.insert(key, i);
        i
    }

    /// An event (or join combination) enters.
    #[inline]
    pub(crate) fn on_new(&mut self, row: &[Arc<Event>]) {
        let ctx = Ctx::row(row);
        if let Some(w) = &self.s.where_
            && !w.test(&ctx)
        {
            return;
        }
        if !self.s.aggregated {
            self.project(&ctx);
            return;
        }
        let gi = self.group_for(&ctx);
        let g = &mut self.groups[gi];
        for (spec, st) in self.s.specs.iter().zip(g.aggs.iter_mut()) {
            let v = match &spec.arg {
                Some(a) => a.eval(&ctx),
                None => Value::Bool(true),
            };
            st.add(v);
        }
        g.rows += 1;
        if !g.touched {
            g.touched = true;
            self.touched.push(gi);
        }
        if self.s.per_event {
            self.pending.push((row.to_vec(), gi));
        }
    }

    /// An event (or join combination) leaves a window.
    pub(crate) fn on_old(&mut self, row: &[Arc<Event>]) {
        if !self.s.aggregated {
            return;
        }
        let ctx = Ctx::row(row);
        if let Some(w) = &self.s.where_
            && !w.test(&ctx)
        {
            return;
        }
        let gi = self.group_for(&ctx);
        let g = &mut self.groups[gi];
        for (spec, st) in self.s.specs.iter().zip(g.aggs.iter_mut()) {
            let v = match &spec.arg {
                Some(a) => a.eval(&ctx),
                None => Value::Bool(true),
            };
            st.remove(v);
        }
        g.rows -= 1;
        if !g.touched {
            g.touched = true;
            self.touched.push(gi);
        }
    }

    fn project(&mut self, ctx: &Ctx<'_>) {
        project_into(&self.s, ctx, &mut self.rows);
    }

    /// Ends an update: produces its rows (possibly none) into `out`.
    pub(crate) fn finish(&mut self, out: &mut Vec<Row>) {
        if self.s.aggregated {
            if self.s.per_event {
                let pending = std::mem::take(&mut self.pending);
                for (row, gi) in &pending {
                    let g = &self.groups[*gi];
                    let ctx = Ctx {
                        events: row,
                        aggs: &g.aggs,
                        key: &g.key,
                    };
                    project_into(&self.s, &ctx, &mut self.rows);
                }
                self.pending = pending;
                self.pending.clear();
            } else {
                for &gi in &self.touched {
                    let g = &self.groups[gi];
                    let ctx = Ctx {
                        events: &[],
                        aggs: &g.aggs,
                        key: &g.key,
                    };
                    project_into(&self.s, &ctx, &mut self.rows);
                }
            }
            for gi in self.touched.drain(..) {
                let g = &mut self.groups[gi];
                g.touched = false;
                // A group whose last event left is forgotten once reported.
                if g.rows <= 0 && !self.s.group_by.is_empty() && g.live {
                    g.live = false;
                    self.index.remove(&g.key);
                    self.free.push(gi);
                }
            }
        }
        if self.rows.is_empty() {
            return;
        }
        if self.s.distinct {
            let mut seen = std::collections::HashSet::new();
            self.rows.retain(|(r, _)| {
                seen.insert(r.cols.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>())
            });
        }
        if !self.s.order_by.is_empty() {
            let desc: Vec<bool> = self.s.order_by.iter().map(|(_, d)| *d).collect();
            self.rows.sort_by(|(_, a), (_, b)| {
                for (i, d) in desc.iter().enumerate() {
                    let o = a[i].total_cmp(&b[i]);
                    if o != std::cmp::Ordering::Equal {
                        return if *d { o.reverse() } else { o };
                    }
                }
                std::cmp::Ordering::Equal
            });
        }
        if let Some(l) = self.s.limit {
            self.rows.truncate(l as usize);
        }
        out.extend(self.rows.drain(..).map(|(r, _)| r));
    }
}

fn project_into(s: &ProcessorSpec, ctx: &Ctx<'_>, rows: &mut Vec<(Row, Vec<Value>)>) {
    if let Some(h) = &s.having
        && !h.test(ctx)
    {
        return;
    }
    let mut cols = Vec::with_capacity(s.items.len());
    for item in &s.items {
        match item {
            Item::Expr { name, expr } => cols.push((name.clone(), expr.eval(ctx))),
            Item::All if ctx.events.len() == 1 => {
                for (k, v) in ctx.events[0].fields() {
                    cols.push((k.clone(), v.clone()));
                }
            }
            Item::All => {
                for (i, name) in s.slot_names.iter().enumerate() {
                    cols.push((name.clone(), CExpr::Event(i as u16).eval(ctx)));
                }
            }
            Item::SlotFields(slot) => {
                if let Some(e) = ctx.events.get(*slot as usize) {
                    for (k, v) in e.fields() {
                        cols.push((k.clone(), v.clone()));
                    }
                }
            }
        }
    }
    let keys = s.order_by.iter().map(|(e, _)| e.eval(ctx)).collect();
    rows.push((Row { cols }, keys));
}
