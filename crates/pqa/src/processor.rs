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
//!
//! The remove stream (`select irstream|rstream`, `insert rstream into`)
//! follows the same three shapes: without aggregates, one row per event
//! (or combination) leaving; fully aggregated, one row per touched group
//! holding its values *before* the update (a new group's is all null);
//! aggregates plus other fields, one row per leaving event carrying its
//! group's aggregates after the update.

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

/// A row on its way out: what order by sorts on and, when an output clause
/// works per group, the row's group key.
#[derive(Debug)]
pub(crate) struct OutRow {
    pub(crate) row: Row,
    pub(crate) sort: Vec<Value>,
    pub(crate) group: Option<Box<[Value]>>,
}

/// Rows of one update, insert and remove stream.
#[derive(Debug, Default)]
pub(crate) struct Update {
    pub(crate) new: Vec<OutRow>,
    pub(crate) old: Vec<OutRow>,
    /// Events (or combinations) that entered / left past `where`.
    pub(crate) fed_new: u64,
    pub(crate) fed_old: u64,
}

impl Update {
    pub(crate) fn clear(&mut self) {
        self.new.clear();
        self.old.clear();
        self.fed_new = 0;
        self.fed_old = 0;
    }
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
    /// Produce the remove stream too.
    pub(crate) rstream: bool,
    /// Tag rows with their group key (an output clause that works per group).
    pub(crate) tag_groups: bool,
}

#[derive(Debug)]
pub(crate) struct Processor {
    s: ProcessorSpec,
    groups: Vec<Group>,
    index: HashMap<Box<[Value]>, usize, ahash::RandomState>,
    free: Vec<usize>,
    touched: Vec<usize>,
    pending: Vec<(Vec<Arc<Event>>, usize)>,
    pending_old: Vec<(Vec<Arc<Event>>, usize)>,
    keybuf: Vec<Value>,
    up: Update,
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
            pending_old: Vec::new(),
            keybuf: Vec::new(),
            up: Update::default(),
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
        self.up.fed_new += 1;
        if !self.s.aggregated {
            project_into(&self.s, &ctx, None, &mut self.up.new);
            return;
        }
        let gi = self.group_for(&ctx);
        self.touch(gi);
        let g = &mut self.groups[gi];
        for (spec, st) in self.s.specs.iter().zip(g.aggs.iter_mut()) {
            let v = match &spec.arg {
                Some(a) => a.eval(&ctx),
                None => Value::Bool(true),
            };
            st.add(v);
        }
        g.rows += 1;
        if self.s.per_event {
            self.pending.push((row.to_vec(), gi));
        }
    }

    /// An event (or join combination) leaves a window.
    pub(crate) fn on_old(&mut self, row: &[Arc<Event>]) {
        if !self.s.aggregated && !self.s.rstream {
            return;
        }
        let ctx = Ctx::row(row);
        if let Some(w) = &self.s.where_
            && !w.test(&ctx)
        {
            return;
        }
        self.up.fed_old += 1;
        if !self.s.aggregated {
            project_into(&self.s, &ctx, None, &mut self.up.old);
            return;
        }
        let gi = self.group_for(&ctx);
        self.touch(gi);
        if self.s.per_event && self.s.rstream {
            self.pending_old.push((row.to_vec(), gi));
        }
        let g = &mut self.groups[gi];
        for (spec, st) in self.s.specs.iter().zip(g.aggs.iter_mut()) {
            let v = match &spec.arg {
                Some(a) => a.eval(&ctx),
                None => Value::Bool(true),
            };
            st.remove(v);
        }
        g.rows -= 1;
    }

    /// Marks a group as changed by this update; a fully aggregated remove
    /// stream reports the group as it was before its first change.
    #[inline]
    fn touch(&mut self, gi: usize) {
        let g = &mut self.groups[gi];
        if g.touched {
            return;
        }
        g.touched = true;
        self.touched.push(gi);
        if self.s.rstream && !self.s.per_event {
            let g = &self.groups[gi];
            let ctx = Ctx {
                events: &[],
                aggs: &g.aggs,
                key: &g.key,
            };
            let tag = self.s.tag_groups.then(|| g.key.clone());
            project_into(&self.s, &ctx, tag, &mut self.up.old);
        }
    }

    /// Ends an update: its rows (possibly none) stay in the update buffer
    /// for [`Processor::finish`] or [`Processor::take_update`].
    fn close_update(&mut self) {
        if !self.s.aggregated {
            return;
        }
        let tag = self.s.tag_groups;
        if self.s.per_event {
            for (pending, into_old) in [(&mut self.pending, false), (&mut self.pending_old, true)] {
                for (row, gi) in pending.drain(..) {
                    let g = &self.groups[gi];
                    let ctx = Ctx {
                        events: &row,
                        aggs: &g.aggs,
                        key: &g.key,
                    };
                    let out = if into_old {
                        &mut self.up.old
                    } else {
                        &mut self.up.new
                    };
                    project_into(&self.s, &ctx, tag.then(|| g.key.clone()), out);
                }
            }
        } else {
            for &gi in &self.touched {
                let g = &self.groups[gi];
                let ctx = Ctx {
                    events: &[],
                    aggs: &g.aggs,
                    key: &g.key,
                };
                project_into(&self.s, &ctx, tag.then(|| g.key.clone()), &mut self.up.new);
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

    /// Ends an update: distinct, order by and limit, then its rows
    /// (possibly none) into `new` and `old`.
    pub(crate) fn finish(&mut self, new: &mut Vec<Row>, old: &mut Vec<Row>) {
        self.close_update();
        self.up.fed_new = 0;
        self.up.fed_old = 0;
        if !self.up.new.is_empty() {
            finalize(&self.s, &mut self.up.new, new);
        }
        if !self.up.old.is_empty() {
            finalize(&self.s, &mut self.up.old, old);
        }
    }

    /// Ends an update and hands its raw rows over (to an output clause,
    /// which applies distinct, order by and limit to each batch it outputs).
    pub(crate) fn take_update(&mut self, into: &mut Update) {
        self.close_update();
        into.new.append(&mut self.up.new);
        into.old.append(&mut self.up.old);
        into.fed_new += std::mem::take(&mut self.up.fed_new);
        into.fed_old += std::mem::take(&mut self.up.fed_old);
    }

    /// The current result of a fully aggregated statement: one row per
    /// group that holds events (the single row when ungrouped).
    pub(crate) fn snapshot_groups(&self, out: &mut Vec<OutRow>) {
        for g in &self.groups {
            if !g.live || (g.rows <= 0 && !self.s.group_by.is_empty()) {
                continue;
            }
            let ctx = Ctx {
                events: &[],
                aggs: &g.aggs,
                key: &g.key,
            };
            let tag = self.s.tag_groups.then(|| g.key.clone());
            project_into(&self.s, &ctx, tag, out);
        }
    }

    /// The current result over retained events (or join combinations):
    /// each one that passes `where`, with its group's aggregates.
    pub(crate) fn snapshot_events(&self, rows: &[Vec<Arc<Event>>], out: &mut Vec<OutRow>) {
        let mut key = Vec::new();
        for row in rows {
            let ctx = Ctx::row(row);
            if let Some(w) = &self.s.where_
                && !w.test(&ctx)
            {
                continue;
            }
            if !self.s.aggregated {
                project_into(&self.s, &ctx, None, out);
                continue;
            }
            key.clear();
            for g in &self.s.group_by {
                key.push(g.eval(&ctx));
            }
            let gi = if self.s.group_by.is_empty() {
                Some(0)
            } else {
                self.index.get(&key[..]).copied()
            };
            let Some(gi) = gi else { continue };
            let g = &self.groups[gi];
            let ctx = Ctx {
                events: row,
                aggs: &g.aggs,
                key: &g.key,
            };
            project_into(&self.s, &ctx, self.s.tag_groups.then(|| g.key.clone()), out);
        }
    }

    /// Distinct, order by and limit over one batch of rows.
    pub(crate) fn finalize(&self, rows: &mut Vec<OutRow>, out: &mut Vec<Row>) {
        finalize(&self.s, rows, out)
    }

    /// True when rows carry group keys (grouped, per-group output clause).
    pub(crate) fn grouped(&self) -> bool {
        !self.s.group_by.is_empty()
    }

    pub(crate) fn aggregated_per_group(&self) -> bool {
        self.s.aggregated && !self.s.per_event
    }
}

fn finalize(s: &ProcessorSpec, rows: &mut Vec<OutRow>, out: &mut Vec<Row>) {
    if s.distinct {
        let mut seen = std::collections::HashSet::new();
        rows.retain(|r| {
            seen.insert(
                r.row
                    .cols
                    .iter()
                    .map(|(_, v)| v.clone())
                    .collect::<Vec<_>>(),
            )
        });
    }
    if !s.order_by.is_empty() {
        let desc: Vec<bool> = s.order_by.iter().map(|(_, d)| *d).collect();
        // Stable: rows of equal keys keep the order they were produced in.
        rows.sort_by(|a, b| {
            for (i, d) in desc.iter().enumerate() {
                let o = a.sort[i].total_cmp(&b.sort[i]);
                if o != std::cmp::Ordering::Equal {
                    return if *d { o.reverse() } else { o };
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    if let Some(l) = s.limit {
        rows.truncate(l as usize);
    }
    out.extend(rows.drain(..).map(|r| r.row));
}

fn project_into(
    s: &ProcessorSpec,
    ctx: &Ctx<'_>,
    group: Option<Box<[Value]>>,
    rows: &mut Vec<OutRow>,
) {
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
    let sort = s.order_by.iter().map(|(e, _)| e.eval(ctx)).collect();
    rows.push(OutRow {
        row: Row { cols },
        sort,
        group,
    });
}
