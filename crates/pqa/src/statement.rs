//! A registered statement: compilation from the syntax tree, and the run-time
//! path from an arriving event through filter, window, join or pattern, the
//! result-set processor and the output limiter.

use std::sync::Arc;

use crate::error::{Pos, PqaError, Result};
use crate::expr::{CExpr, Compiler, Slot, Streams, has_aggregate};
use crate::filter_index::{IndexKey, Key, Op};
use crate::kernel::{Kernel, KernelSpec, RowRef};
use crate::output::OutputLimiter;
use crate::parser::ast::{
    self, BinOp, Body, Expr, From, JoinKind, PatternExpr, SelectItem, Statement, StreamSel,
};
use crate::pattern::{Binding, PNode, State, unbound};
use crate::processor::{Item, OutRow, Processor, ProcessorSpec, Row, Update};
use crate::stream::Event;
use crate::stream::StreamState;
use crate::value::Kind;
use crate::window::{self, Delta, Shape, Window};

#[derive(Debug)]
struct Input {
    filter: Option<CExpr>,
    window: Box<dyn Window>,
    required: Vec<usize>,
}

#[derive(Debug)]
struct PatternRt {
    root: State,
}

/// A compiled, running statement.
#[derive(Debug)]
pub(crate) struct Stmt {
    inputs: Vec<Input>,
    pattern: Option<PatternRt>,
    join_where: Option<CExpr>,
    /// An outer join: of two streams, its kind and `on` condition; of more,
    /// every stream's join to those before it (the
    /// where clause then filters the joined rows).
    outer: Option<Outer>,
    /// The one stream whose events trigger the join (`unidirectional`).
    unidirectional: Option<usize>,
    processor: Processor,
    /// The output clause, if any.
    output: Option<OutputLimiter>,
    /// Rows of the current update on their way to the output clause.
    update: Update,
    /// `insert into` target stream.
    pub(crate) insert_into: Option<usize>,
    /// Which rows `insert into` routes.
    pub(crate) insert_stream: StreamSel,
    /// What listeners receive.
    pub(crate) select_stream: StreamSel,
    /// (stream, input index) pairs this statement consumes.
    pub(crate) listen: Vec<(usize, usize)>,
    delta: Delta,
    /// The compiled fast path, when the statement qualifies.
    kernel: Option<Kernel>,
    /// Per input, its entry in the shared filter index (empty: none).
    index_keys: Vec<Option<IndexKey>>,
}

/// How an outer join joins its streams.
#[derive(Debug)]
enum Outer {
    /// Two streams.
    Two(JoinKind, CExpr),
    /// Three or more, joined left to right: stream `j + 1` joins the row of
    /// the streams before it by `chain[j]` (a comma is an inner join
    /// without a condition).
    Chain(Vec<(JoinKind, Option<CExpr>)>),
}

/// Rows a statement produced: its insert stream and its remove stream.
#[derive(Debug, Default)]
pub(crate) struct Emit {
    pub(crate) new: Vec<Row>,
    pub(crate) old: Vec<Row>,
}

impl Emit {
    pub(crate) fn is_empty(&self) -> bool {
        self.new.is_empty() && self.old.is_empty()
    }
}

/// What compiling a statement yields.
#[derive(Debug)]
pub(crate) enum Compiled {
    /// `create schema`: applied to the stream registry, nothing runs.
    Schema,
    Stmt(Box<Stmt>),
}

fn semantic<T>(pos: Pos, message: impl Into<String>) -> Result<T> {
    Err(PqaError::Semantic {
        pos,
        message: message.into(),
    })
}

fn conjuncts(e: Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::Binary(BinOp::And, l, r) => {
            conjuncts(*l, out);
            conjuncts(*r, out);
        }
        other => out.push(other),
    }
}

fn and_all(mut v: Vec<Expr>) -> Option<Expr> {
    let first = if v.is_empty() {
        return None;
    } else {
        v.remove(0)
    };
    Some(v.into_iter().fold(first, |a, b| {
        Expr::Binary(BinOp::And, Box::new(a), Box::new(b))
    }))
}

fn names_field(e: &Expr, names: &[String]) -> bool {
    let mut hit = false;
    e.walk(&mut |x| {
        if let Expr::Field {
            qualifier: None,
            name,
        } = x
            && names.contains(&name.name)
        {
            hit = true;
        }
    });
    hit
}

pub(crate) fn compile(
    st: &Statement,
    streams: &mut Streams,
    now: i64,
    kernels: bool,
) -> Result<Compiled> {
    let sel = match &st.body {
        Body::CreateSchema(cs) => {
            let id = streams.id(&cs.name.name);
            let s = &mut streams.list[id];
            for (f, kind) in &cs.fields {
                let idx = s.field(&f.name);
                if let Some(k0) = s.kinds[idx]
                    && k0 != *kind
                {
                    return semantic(
                        f.pos,
                        format!("field {} was already seen as {k0:?}", f.name),
                    );
                }
                s.declare(&f.name, *kind);
            }
            s.declared = true;
            return Ok(Compiled::Schema);
        }
        Body::Select(sel) => sel,
    };

    // Slots: one per stream of the from clause, or one per pattern tag.
    let mut slots: Vec<Slot> = Vec::new();
    let mut specs: Vec<&ast::StreamSpec> = Vec::new();
    match &sel.from {
        From::Streams(list) => {
            for s in list {
                let id = streams.id(&s.name.name);
                let mut names = Vec::new();
                if let Some(a) = &s.alias {
                    if slots.iter().any(|x| x.names.first() == Some(&a.name)) {
                        return semantic(a.pos, format!("alias '{}' is used twice", a.name));
                    }
                    names.push(a.name.clone());
                }
                names.push(s.name.name.clone());
                slots.push(Slot {
                    names,
                    stream: id,
                    repeated: false,
                });
                specs.push(s);
            }
        }
        From::Pattern(p, _) => collect_tags(p, streams, &mut slots)?,
    }
    let slot_names: Vec<Arc<str>> = slots
        .iter()
        .map(|s| Arc::from(s.names[0].as_str()))
        .collect();

    // The seed's extension: a where conjunct naming an aggregate's alias is a having condition.
    let agg_aliases: Vec<String> = sel
        .items
        .iter()
        .filter_map(|i| match i {
            SelectItem::Expr {
                expr,
                alias: Some(a),
            } if has_aggregate(expr) => Some(a.name.clone()),
            _ => None,
        })
        .collect();
    let mut where_parts = Vec::new();
    let mut having_parts = Vec::new();
    // An inner join's `on` is one more condition on the joined rows, as the
    // where clause is; an outer join's decides which rows match.
    let mut filters: Vec<Expr> = sel.where_.iter().cloned().collect();
    let mut outer_on = None;
    // Three or more streams with an outer join: every join's `on` decides
    // which rows of the streams before it the stream's events join.
    let chained = specs.len() > 2
        && specs
            .iter()
            .any(|s| s.join.as_ref().is_some_and(|j| j.kind != JoinKind::Inner));
    let mut chain: Vec<(JoinKind, Option<Expr>)> = Vec::new();
    let mut unidirectional = None;
    for (k, spec) in specs.iter().enumerate() {
        if chained && k > 0 {
            chain.push(match &spec.join {
                Some(j) => (j.kind, j.on.clone()),
                None => (JoinKind::Inner, None),
            });
        } else if let Some(join) = &spec.join {
            match (join.kind, &join.on) {
                (JoinKind::Inner, Some(on)) => filters.push(on.clone()),
                (JoinKind::Inner, None) => {}
                (kind, on) => {
                    if k != 1 {
                        return semantic(
                            join.pos,
                            "an outer join needs a stream before it to join",
                        );
                    }
                    outer_on = on.clone().map(|on| (kind, on));
                }
            }
        }
        if spec.unidirectional {
            if unidirectional.is_some() {
                return semantic(spec.name.pos, "only one stream may be unidirectional");
            }
            if specs.len() < 2 {
                return semantic(spec.name.pos, "unidirectional is for a stream of a join");
            }
            unidirectional = Some(k);
        }
    }
    if let (Some(k), true) = (unidirectional, outer_on.is_some() || chained) {
        return semantic(
            specs[k].name.pos,
            "unidirectional with an outer join is not supported; use an inner join",
        );
    }
    let mut all = Vec::new();
    for w in filters {
        conjuncts(w, &mut all);
    }
    for c in all {
        if names_field(&c, &agg_aliases) {
            having_parts.push(c);
        } else if has_aggregate(&c) {
            return semantic(
                c.pos(),
                "aggregates are not allowed in where; use having (or name the aggregate's alias)",
            );
        } else {
            where_parts.push(c);
        }
    }
    if let Some(h) = &sel.having {
        having_parts.push(h.clone());
    }
    let where_expr = and_all(where_parts);
    let having_expr = and_all(having_parts);
    let has_star = sel
        .items
        .iter()
        .any(|i| !matches!(i, SelectItem::Expr { .. }));
    let aggregated = !sel.group_by.is_empty()
        || having_expr.is_some()
        || sel
            .items
            .iter()
            .any(|i| matches!(i, SelectItem::Expr { expr, .. } if has_aggregate(expr)));

    let mut c = Compiler::new(streams, slots.clone());
    c.clause = "group by";
    let group_by = sel
        .group_by
        .iter()
        .map(|g| c.compile(g))
        .collect::<Result<Vec<_>>>()?;
    c.clause = "where clause";
    let where_c = match where_expr.as_ref() {
        Some(w) => {
            let wc = c.compile(w)?;
            c.check_kind(w, &wc, Kind::Bool, "the where clause")?;
            Some(wc)
        }
        None => None,
    };
    c.clause = "on condition";
    let outer = match outer_on {
        Some((kind, on)) => Some(Outer::Two(kind, c.compile(&on)?)),
        None if chained => Some(Outer::Chain(
            chain
                .iter()
                .map(|(kind, on)| Ok((*kind, on.as_ref().map(|e| c.compile(e)).transpose()?)))
                .collect::<Result<Vec<_>>>()?,
        )),
        None => None,
    };
    c.clause = "select clause";
    c.aggs = Some(Vec::new());
    c.group_keys = sel.group_by.iter().map(|g| g.to_string()).collect();
    c.bare_field = false;
    let mut items = Vec::new();
    let mut aliases = Vec::new();
    for item in &sel.items {
        match item {
            SelectItem::Wildcard(_) => items.push(Item::All),
            SelectItem::StreamWildcard(id) => {
                let Some(slot) = slots.iter().position(|s| s.names.contains(&id.name)) else {
                    return semantic(id.pos, format!("unknown stream alias '{}'", id.name));
                };
                items.push(Item::SlotFields(slot as u16));
            }
            SelectItem::Expr { expr, alias } => {
                let name: Arc<str> = match alias {
                    Some(a) => Arc::from(a.name.as_str()),
                    None => match expr {
                        Expr::Field {
                            qualifier: None,
                            name,
                        } => Arc::from(name.name.as_str()),
                        Expr::Field {
                            qualifier: Some(_),
                            name,
                        } if slots.len() == 1 => Arc::from(name.name.as_str()),
                        other => Arc::from(other.to_string().as_str()),
                    },
                };
                if let Some(a) = alias {
                    aliases.push((a.name.clone(), expr.clone()));
                }
                items.push(Item::Expr {
                    name,
                    expr: c.compile(expr)?,
                });
            }
        }
    }
    let per_event = aggregated && (c.bare_field || has_star);
    // Having and order by may name select aliases.
    c.aliases = aliases.clone();
    c.clause = "having clause";
    let having = match having_expr.as_ref() {
        Some(h) => {
            let hc = c.compile(h)?;
            c.check_kind(h, &hc, Kind::Bool, "the having clause")?;
            Some(hc)
        }
        None => None,
    };
    c.clause = "order by clause";
    let order_by = sel
        .order_by
        .iter()
        .map(|(e, d)| Ok((c.compile(e)?, *d)))
        .collect::<Result<Vec<_>>>()?;
    let agg_specs = c.aggs.take().unwrap_or_default();
    let required = std::mem::take(&mut c.required);
    drop(c);

    let is_join = slots.len() > 1 && matches!(sel.from, From::Streams(_));
    let rstream =
        sel.stream.has_remove() || (st.insert_into.is_some() && st.insert_stream.has_remove());
    let tag_groups =
        sel.output.as_ref().is_some_and(OutputLimiter::needs_groups) && !sel.group_by.is_empty();
    let processor = Processor::new(ProcessorSpec {
        where_: if is_join { None } else { where_c.clone() },
        items,
        slot_names,
        aggregated,
        per_event,
        specs: agg_specs,
        group_by,
        having,
        order_by,
        distinct: sel.distinct,
        limit: sel.limit,
        rstream,
        tag_groups,
    });
    let output = sel
        .output
        .clone()
        .map(|c| OutputLimiter::new(c, &processor, now))
        .transpose()?;
    let mut stmt = Stmt {
        inputs: Vec::new(),
        pattern: None,
        join_where: None,
        outer,
        unidirectional,
        processor,
        output,
        update: Update::default(),
        insert_into: st.insert_into.as_ref().map(|i| streams.id(&i.name)),
        insert_stream: st.insert_stream,
        select_stream: sel.stream,
        listen: Vec::new(),
        delta: Delta::default(),
        kernel: None,
        index_keys: Vec::new(),
    };
    if is_join {
        stmt.join_where = where_c;
    }

    match &sel.from {
        From::Streams(_) => {
            for (k, spec) in specs.iter().enumerate() {
                let mut one = Compiler::new(streams, vec![slots[k].clone()]);
                one.clause = "stream filter";
                let filter = match spec.filter.as_ref() {
                    Some(f) => {
                        let fc = one.compile(f)?;
                        one.check_kind(f, &fc, Kind::Bool, "a filter")?;
                        Some(fc)
                    }
                    None => None,
                };
                let mut req = required.get(k).cloned().unwrap_or_default();
                let window_spec = window::compile(&spec.views, now, &mut |e, kind| match kind {
                    window::ArgKind::Plain => one.compile(e),
                    window::ArgKind::Expiry => compile_expiry(&mut one, e, false),
                    window::ArgKind::BatchExpiry => compile_expiry(&mut one, e, true),
                })?;
                for f in one.required.first().cloned().unwrap_or_default() {
                    if !req.contains(&f) {
                        req.push(f);
                    }
                }
                let win = window_spec.instantiate();
                stmt.inputs.push(Input {
                    filter,
                    window: win,
                    required: req,
                });
                stmt.listen.push((slots[k].stream, k));
            }
        }
        From::Pattern(p, _) => {
            let mut next_slot = 0;
            let node = compile_pattern(p, streams, &slots, &mut next_slot)?;
            let mut listen: Vec<usize> = Vec::new();
            pattern_streams(&node, &mut listen);
            stmt.listen = listen.into_iter().map(|s| (s, 0)).collect();
            let base: Binding = vec![unbound().clone(); slots.len()];
            stmt.pattern = Some(PatternRt {
                root: State::start(&node, base, now),
            });
        }
    }
    // Kernels produce the insert and remove streams of plain updates;
    // output clauses (which need group keys, snapshots, order per batch)
    // stay on the general path.
    if kernels && stmt.pattern.is_none() && stmt.inputs.len() == 1 && stmt.output.is_none() {
        let spec = stmt.processor.spec();
        let input = &stmt.inputs[0];
        let view = input.window.shape();
        if view != Shape::Other {
            stmt.kernel = Kernel::build(
                KernelSpec {
                    filter: input.filter.as_ref(),
                    where_: spec.where_.as_ref(),
                    required: &input.required,
                    group_by: &spec.group_by,
                    specs: &spec.specs,
                    having: spec.having.as_ref(),
                    items: &spec.items,
                    view,
                    per_event: spec.per_event,
                    aggregated: spec.aggregated,
                    plain: !spec.distinct && spec.order_by.is_empty() && spec.limit.is_none(),
                    rstream,
                },
                &mut streams.list[slots[0].stream].symbols,
            );
        }
    }
    stmt.index_keys = index_keys(&stmt);
    Ok(Compiled::Stmt(Box::new(stmt)))
}

/// Per input, the conjunct the shared filter index files the input under
/// (see `crate::filter_index`). The stream filter's conjuncts always
/// qualify: an event failing it leaves the statement untouched. The where
/// clause's only when failing it changes nothing either: one stream, no
/// window (a window keeps events the where clause drops), no aggregation,
/// no output clause. Kernels and patterns test their filters themselves.
fn index_keys(stmt: &Stmt) -> Vec<Option<IndexKey>> {
    if stmt.kernel.is_some() || stmt.pattern.is_some() {
        return Vec::new();
    }
    let spec = stmt.processor.spec();
    let stateless = stmt.inputs.len() == 1
        && stmt.output.is_none()
        && !spec.aggregated
        && stmt.inputs[0].window.shape() == Shape::None;
    stmt.inputs
        .iter()
        .enumerate()
        .map(|(k, input)| {
            let mut parts = Vec::new();
            if let Some(f) = &input.filter {
                cconjuncts(f, &mut parts);
            }
            if k == 0
                && stateless
                && let Some(w) = &spec.where_
            {
                cconjuncts(w, &mut parts);
            }
            let keys: Vec<IndexKey> = parts.into_iter().filter_map(index_key).collect();
            // Equality narrows most; any range beats visiting every event.
            keys.iter()
                .find(|k| k.op == Op::Eq)
                .or(keys.first())
                .cloned()
        })
        .collect()
}

fn cconjuncts<'a>(e: &'a CExpr, out: &mut Vec<&'a CExpr>) {
    match e {
        CExpr::And(a, b) => {
            cconjuncts(a, out);
            cconjuncts(b, out);
        }
        other => out.push(other),
    }
}

/// `field <op> literal` (or `literal <op> field`) of the input's own event.
fn index_key(e: &CExpr) -> Option<IndexKey> {
    let CExpr::Bin(op, l, r) = e else {
        return None;
    };
    let (field, lit, flipped) = match (l.as_ref(), r.as_ref()) {
        (CExpr::Field { slot: 0, idx }, CExpr::Lit(v)) => (*idx, v, false),
        (CExpr::Lit(v), CExpr::Field { slot: 0, idx }) => (*idx, v, true),
        _ => return None,
    };
    Some(IndexKey {
        field: field as usize,
        op: Op::from_bin(*op, flipped)?,
        value: Key::from_value(lit)?,
    })
}

/// `win:expr`'s expiry expression, against the stream's oldest event (also
/// `oldest_event`), its newest (`newest_event`) and the built-in properties.
/// For `win:expr_batch` (`batch`) the unqualified names are the arriving
/// event's, and the slots are arriving, `oldest_event`, `newest_event`.
fn compile_expiry(one: &mut Compiler<'_>, e: &Expr, batch: bool) -> Result<CExpr> {
    let Some(slot) = one.slots.first().cloned() else {
        return semantic(e.pos(), "win:expr needs a stream");
    };
    let mut oldest = slot.clone();
    let mut newest = slot.clone();
    newest.names = vec!["newest_event".into()];
    let slots = if batch {
        oldest.names = vec!["oldest_event".into()];
        vec![slot, oldest, newest]
    } else {
        oldest.names.insert(0, "oldest_event".into());
        vec![oldest, newest]
    };
    let mut c = Compiler::new(&mut *one.streams, slots);
    c.default_slot = Some(0);
    c.group_keys = window::EXPR_BUILTINS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let compiled = c.compile(e)?;
    let required = std::mem::take(&mut c.required);
    drop(c);
    for f in required.into_iter().flatten() {
        if !one.required[0].contains(&f) {
            one.required[0].push(f);
        }
    }
    Ok(compiled)
}

fn collect_tags(p: &PatternExpr, streams: &mut Streams, slots: &mut Vec<Slot>) -> Result<()> {
    match p {
        PatternExpr::Filter { tag, stream, .. } => {
            let id = streams.id(&stream.name);
            let name = match tag {
                Some(t) => {
                    if slots.iter().any(|s| s.names[0] == t.name) {
                        return semantic(t.pos, format!("tag '{}' is bound twice", t.name));
                    }
                    t.name.clone()
                }
                None => stream.name.clone(),
            };
            slots.push(Slot {
                names: vec![name, stream.name.clone()],
                stream: id,
                repeated: false,
            });
        }
        PatternExpr::EveryDistinct { inner, .. } => collect_tags(inner, streams, slots)?,
        PatternExpr::TimerAt(_) => {}
        PatternExpr::Repeat { inner, until, .. } => {
            let first = slots.len();
            collect_tags(inner, streams, slots)?;
            for s in &mut slots[first..] {
                s.repeated = true;
            }
            if let Some(u) = until {
                collect_tags(u, streams, slots)?;
            }
        }
        PatternExpr::FollowedBy(v) | PatternExpr::Or(v) | PatternExpr::And(v) => {
            for x in v {
                collect_tags(x, streams, slots)?;
            }
        }
        PatternExpr::Every(x) | PatternExpr::Not(x) | PatternExpr::Within(x, _) => {
            collect_tags(x, streams, slots)?
        }
        PatternExpr::Interval(_) => {}
    }
    Ok(())
}

/// Compiles pattern nodes; `next` walks the slots in the same order `collect_tags` made them.
fn compile_pattern(
    p: &PatternExpr,
    streams: &mut Streams,
    slots: &[Slot],
    next: &mut usize,
) -> Result<Arc<PNode>> {
    Ok(Arc::new(match p {
        PatternExpr::Filter { filter, .. } => {
            let slot = *next;
            *next += 1;
            let mut c = Compiler::new(streams, slots.to_vec());
            c.clause = "pattern filter";
            c.default_slot = Some(slot);
            let filter = match filter.as_ref() {
                Some(f) => {
                    let fc = c.compile(f)?;
                    c.check_kind(f, &fc, Kind::Bool, "a filter")?;
                    Some(fc)
                }
                None => None,
            };
            PNode::Filter {
                slot,
                stream: slots[slot].stream,
                filter,
            }
        }
        PatternExpr::FollowedBy(v) => {
            // a -> b -> c is a -> (b -> c).
            let nodes = v
                .iter()
                .map(|x| compile_pattern(x, streams, slots, next))
                .collect::<Result<Vec<_>>>()?;
            let mut it = nodes.into_iter().rev();
            let mut acc = it.next().ok_or_else(|| PqaError::Semantic {
                pos: Pos::default(),
                message: "empty pattern".into(),
            })?;
            for n in it {
                acc = Arc::new(PNode::FollowedBy(n, acc));
            }
            return Ok(acc);
        }
        PatternExpr::Or(v) => PNode::Or(
            v.iter()
                .map(|x| compile_pattern(x, streams, slots, next))
                .collect::<Result<_>>()?,
        ),
        PatternExpr::And(v) => PNode::And(
            v.iter()
                .map(|x| compile_pattern(x, streams, slots, next))
                .collect::<Result<_>>()?,
        ),
        PatternExpr::Every(x) => PNode::Every(compile_pattern(x, streams, slots, next)?),
        PatternExpr::Not(x) => PNode::Not(compile_pattern(x, streams, slots, next)?),
        PatternExpr::Within(x, ms) => PNode::Within(compile_pattern(x, streams, slots, next)?, *ms),
        PatternExpr::Interval(ms) => PNode::Interval(*ms),
        PatternExpr::TimerAt(spec) => PNode::TimerAt(spec.clone()),
        PatternExpr::EveryDistinct {
            inner,
            keys,
            expiry,
        } => {
            let child = compile_pattern(inner, streams, slots, next)?;
            let mut c = Compiler::new(streams, slots.to_vec());
            let keys = keys
                .iter()
                .map(|k| c.compile(k))
                .collect::<Result<Vec<_>>>()?;
            PNode::EveryDistinct {
                child,
                keys,
                expiry: *expiry,
            }
        }
        PatternExpr::Repeat {
            inner,
            min,
            max,
            until,
        } => {
            if max.is_none() && until.is_none() {
                return semantic(
                    Pos::default(),
                    "a repeat without an upper bound ([n:]) needs 'until': [2:] a=A until b=B",
                );
            }
            let first = *next;
            let child = compile_pattern(inner, streams, slots, next)?;
            let repeated: Vec<usize> = (first..*next).collect();
            let until = until
                .as_ref()
                .map(|u| compile_pattern(u, streams, slots, next))
                .transpose()?;
            PNode::Repeat {
                child,
                until,
                min: *min,
                max: *max,
                repeated,
            }
        }
    }))
}

fn pattern_streams(n: &PNode, out: &mut Vec<usize>) {
    match n {
        PNode::Filter { stream, .. } => {
            if !out.contains(stream) {
                out.push(*stream)
            }
        }
        PNode::FollowedBy(a, b) => {
            pattern_streams(a, out);
            pattern_streams(b, out);
        }
        PNode::Or(v) | PNode::And(v) => v.iter().for_each(|x| pattern_streams(x, out)),
        PNode::Every(x)
        | PNode::Not(x)
        | PNode::Within(x, _)
        | PNode::EveryDistinct { child: x, .. } => pattern_streams(x, out),
        PNode::Repeat { child, until, .. } => {
            pattern_streams(child, out);
            if let Some(u) = until {
                pattern_streams(u, out);
            }
        }
        PNode::Interval(_) | PNode::TimerAt(_) => {}
    }
}

/// What one event did to a statement.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fed {
    Ok,
    /// The event lacks a field the statement reads.
    MissingField,
}

impl Stmt {
    /// An event of the stream bound to input `k` arrives at `now`.
    pub(crate) fn on_event(
        &mut self,
        k: usize,
        stream: usize,
        ev: &Arc<Event>,
        now: i64,
        stream_state: &StreamState,
        out: &mut Emit,
    ) -> Fed {
        if let Some(kn) = &mut self.kernel {
            if !kn.on_row(
                RowRef::Event(ev),
                now,
                &stream_state.symbols,
                &mut out.new,
                &mut out.old,
            ) {
                return Fed::MissingField;
            }
            return Fed::Ok;
        }
        if let Some(p) = &mut self.pattern {
            let mut got = Vec::new();
            p.root.on_event(stream, ev, now, &mut got);
            for b in &got {
                self.processor.on_new(b);
            }
        } else {
            let input = &mut self.inputs[k];
            if input.required.iter().any(|&f| ev.get(f).is_null()) {
                return Fed::MissingField;
            }
            if let Some(f) = &input.filter
                && !f.test(&crate::expr::Ctx::row(std::slice::from_ref(ev)))
            {
                return Fed::Ok;
            }
            self.delta.clear();
            input.window.insert(ev.clone(), now, &mut self.delta);
            self.process_delta(k);
        }
        self.end_update(now, out);
        Fed::Ok
    }

    /// Hands the processor's rows of this update to the output clause (or
    /// straight out).
    fn end_update(&mut self, now: i64, out: &mut Emit) {
        let Stmt {
            output,
            update,
            processor,
            inputs,
            join_where,
            outer,
            ..
        } = self;
        match output {
            None => processor.finish(&mut out.new, &mut out.old),
            Some(limiter) => {
                processor.take_update(update);
                let p: &Processor = processor;
                limiter.offer(update, now, p, &mut out.new, &mut out.old, &mut |rows| {
                    snapshot(inputs, join_where.as_ref(), outer.as_ref(), p, rows)
                });
            }
        }
    }

    fn process_delta(&mut self, k: usize) {
        if self.delta.is_empty() {
            return;
        }
        if self.inputs.len() == 1 {
            for e in &self.delta.old {
                self.processor.on_old(std::slice::from_ref(e));
            }
            for e in &self.delta.new {
                self.processor.on_new(std::slice::from_ref(e));
            }
            return;
        }
        if self.unidirectional.is_some_and(|u| u != k) {
            // The other streams only fill their windows.
            return;
        }
        let join = Join {
            inputs: &self.inputs,
            where_: self.join_where.as_ref(),
            outer: self.outer.as_ref(),
        };
        let old = join.rows(k, &self.delta.old);
        let new = join.rows(k, &self.delta.new);
        for r in &old {
            self.processor.on_old(r);
        }
        for r in &new {
            self.processor.on_new(r);
        }
    }

    /// Input `k`'s entry in the shared filter index, if it has one.
    pub(crate) fn index_key(&self, k: usize) -> Option<&IndexKey> {
        self.index_keys.get(k).and_then(Option::as_ref)
    }

    /// Fields input `k` needs: an event lacking one is counted missing.
    pub(crate) fn required(&self, k: usize) -> &[usize] {
        self.inputs.get(k).map_or(&[], |i| &i.required)
    }

    /// True when events can be handed over as batch rows ([`Stmt::on_batch_row`]).
    #[inline]
    pub(crate) fn has_kernel(&self) -> bool {
        self.kernel.is_some()
    }

    /// A row of a batch arrives (only for statements with a kernel).
    #[inline]
    pub(crate) fn on_batch_row(
        &mut self,
        batch: &crate::batch::EventBatch,
        row: usize,
        now: i64,
        stream_state: &StreamState,
        out: &mut Emit,
    ) -> Fed {
        let Some(kn) = &mut self.kernel else {
            return Fed::Ok;
        };
        if !kn.on_row(
            RowRef::Batch(batch, row),
            now,
            &stream_state.symbols,
            &mut out.new,
            &mut out.old,
        ) {
            return Fed::MissingField;
        }
        Fed::Ok
    }

    /// The clock reached `now`.
    pub(crate) fn advance(&mut self, now: i64, out: &mut Emit) {
        if let Some(kn) = &mut self.kernel {
            kn.advance(now, &mut out.new, &mut out.old);
            return;
        }
        for k in 0..self.inputs.len() {
            self.delta.clear();
            self.inputs[k].window.advance(now, &mut self.delta);
            self.process_delta(k);
        }
        if let Some(p) = &mut self.pattern {
            let mut got = Vec::new();
            p.root.on_time(now, &mut got);
            for b in &got {
                self.processor.on_new(b);
            }
        }
        self.end_update(now, out);
        let Stmt {
            output,
            processor,
            inputs,
            join_where,
            outer,
            ..
        } = self;
        if let Some(limiter) = output {
            let p: &Processor = processor;
            limiter.on_time(now, p, &mut out.new, &mut out.old, &mut |rows| {
                snapshot(inputs, join_where.as_ref(), outer.as_ref(), p, rows)
            });
        }
    }

    /// The next time `advance` has something to do.
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        let mut d = self.output.as_ref().and_then(OutputLimiter::next_deadline);
        let mut take = |x: Option<i64>| {
            if let Some(x) = x {
                d = Some(d.map_or(x, |y| y.min(x)));
            }
        };
        match &self.kernel {
            Some(kn) => take(kn.next_deadline()),
            None => {
                for i in &self.inputs {
                    take(i.window.next_deadline());
                }
            }
        }
        if let Some(p) = &self.pattern {
            take(p.root.next_deadline());
        }
        d
    }
}

/// Every combination of `events` (in slot `k`) with the other windows'
/// contents that satisfies the join's where clause.
/// How a statement joins its inputs.
struct Join<'a> {
    inputs: &'a [Input],
    where_: Option<&'a CExpr>,
    outer: Option<&'a Outer>,
}

impl Join<'_> {
    /// The joined rows of `events`, which arrived on (or left) input `k`.
    fn rows(&self, k: usize, events: &[Arc<Event>]) -> Vec<Vec<Arc<Event>>> {
        match self.outer {
            None => join_combos(self.inputs, self.where_, k, events),
            Some(Outer::Two(kind, on)) => self.outer_rows(*kind, on, k, events),
            Some(Outer::Chain(chain)) => {
                let mut rows = Vec::new();
                for e in events {
                    rows.extend(self.chain_rows(chain, Some((k, e))));
                }
                rows
            }
        }
    }

    /// Three or more streams outer-joined left to right, as Esper joins
    /// them: each stream's window joins the rows built so far on its `on`
    /// condition; a row without a match is kept (the stream's fields null)
    /// when the join is left or full, and a right or full join keeps the
    /// stream's events no row matched (the streams before them null). With
    /// `only = (k, e)` the window of stream `k` is just `e` and only rows
    /// holding `e` are kept: the rows an arriving (or leaving) event makes.
    fn chain_rows(
        &self,
        chain: &[(JoinKind, Option<CExpr>)],
        only: Option<(usize, &Arc<Event>)>,
    ) -> Vec<Vec<Arc<Event>>> {
        let window = |j: usize| -> Vec<Arc<Event>> {
            match only {
                Some((k, e)) if k == j => vec![e.clone()],
                _ => {
                    let mut v = Vec::new();
                    self.inputs[j].window.for_each(&mut |x| v.push(x.clone()));
                    v
                }
            }
        };
        let mut rows: Vec<Vec<Arc<Event>>> = window(0).into_iter().map(|e| vec![e]).collect();
        for (j, (kind, on)) in chain.iter().enumerate() {
            let j = j + 1;
            let events = window(j);
            let mut matched = vec![false; events.len()];
            let mut next = Vec::new();
            for row in &rows {
                let before = next.len();
                for (i, x) in events.iter().enumerate() {
                    let mut r = row.clone();
                    r.push(x.clone());
                    if on
                        .as_ref()
                        .is_none_or(|c| c.test(&crate::expr::Ctx::row(&r)))
                    {
                        matched[i] = true;
                        next.push(r);
                    }
                }
                if next.len() == before && matches!(kind, JoinKind::Left | JoinKind::Full) {
                    let mut r = row.clone();
                    r.push(unbound().clone());
                    next.push(r);
                }
            }
            if matches!(kind, JoinKind::Right | JoinKind::Full) {
                for (i, x) in events.iter().enumerate() {
                    if !matched[i] {
                        let mut r = vec![unbound().clone(); j];
                        r.push(x.clone());
                        next.push(r);
                    }
                }
            }
            rows = next;
        }
        if let Some((k, e)) = only {
            rows.retain(|r| Arc::ptr_eq(&r[k], e));
        }
        if let Some(w) = self.where_ {
            rows.retain(|row| w.test(&crate::expr::Ctx::row(row)));
        }
        rows
    }

    /// Two streams, outer-joined: an event matches the other window's events
    /// for which `on` holds; one without a match on a kept side pairs with an
    /// empty event (its fields null), as in Esper.
    fn outer_rows(
        &self,
        kind: JoinKind,
        on: &CExpr,
        k: usize,
        events: &[Arc<Event>],
    ) -> Vec<Vec<Arc<Event>>> {
        let keeps_unmatched = match kind {
            JoinKind::Left => k == 0,
            JoinKind::Right => k == 1,
            JoinKind::Full => true,
            JoinKind::Inner => false,
        };
        let other = 1 - k;
        let pair = |mine: &Arc<Event>, theirs: &Arc<Event>| {
            if k == 0 {
                vec![mine.clone(), theirs.clone()]
            } else {
                vec![theirs.clone(), mine.clone()]
            }
        };
        let mut rows = Vec::new();
        for e in events {
            let before = rows.len();
            self.inputs[other].window.for_each(&mut |x| {
                let row = pair(e, x);
                if on.test(&crate::expr::Ctx::row(&row)) {
                    rows.push(row);
                }
            });
            if rows.len() == before && keeps_unmatched {
                rows.push(pair(e, unbound()));
            }
        }
        if let Some(w) = self.where_ {
            rows.retain(|row| w.test(&crate::expr::Ctx::row(row)));
        }
        rows
    }
}

fn join_combos(
    inputs: &[Input],
    join_where: Option<&CExpr>,
    k: usize,
    events: &[Arc<Event>],
) -> Vec<Vec<Arc<Event>>> {
    let mut combos: Vec<Vec<Arc<Event>>> = Vec::new();
    for e in events {
        let mut partial: Vec<Vec<Arc<Event>>> = vec![Vec::with_capacity(inputs.len())];
        for (i, input) in inputs.iter().enumerate() {
            let mut next = Vec::new();
            for p in &partial {
                if i == k {
                    let mut q = p.clone();
                    q.push(e.clone());
                    next.push(q);
                } else {
                    input.window.for_each(&mut |x| {
                        let mut q = p.clone();
                        q.push(x.clone());
                        next.push(q);
                    });
                }
            }
            partial = next;
            if partial.is_empty() {
                break;
            }
        }
        for row in partial {
            if join_where.is_none_or(|w| w.test(&crate::expr::Ctx::row(&row))) {
                combos.push(row);
            }
        }
    }
    combos
}

/// The statement's whole current result (`output snapshot`).
fn snapshot(
    inputs: &[Input],
    join_where: Option<&CExpr>,
    outer: Option<&Outer>,
    p: &Processor,
    out: &mut Vec<OutRow>,
) {
    if let Some(Outer::Chain(chain)) = outer {
        let join = Join {
            inputs,
            where_: join_where,
            outer,
        };
        let rows = join.chain_rows(chain, None);
        p.snapshot_events(&rows, out);
        return;
    }
    if p.aggregated_per_group() {
        p.snapshot_groups(out);
        return;
    }
    let Some(first) = inputs.first() else {
        return;
    };
    let mut events = Vec::new();
    first.window.for_each(&mut |e| events.push(e.clone()));
    let combos = if inputs.len() == 1 {
        events.into_iter().map(|e| vec![e]).collect()
    } else {
        let join = Join {
            inputs,
            where_: join_where,
            outer,
        };
        let mut rows = join.rows(0, &events);
        // The right side's unmatched events, which no left event reaches.
        if let Some(Outer::Two(JoinKind::Right | JoinKind::Full, _)) = outer {
            let mut right = Vec::new();
            inputs[1].window.for_each(&mut |e| right.push(e.clone()));
            rows.extend(
                join.rows(1, &right)
                    .into_iter()
                    .filter(|row| Arc::ptr_eq(&row[0], unbound())),
            );
        }
        rows
    };
    p.snapshot_events(&combos, out);
}
