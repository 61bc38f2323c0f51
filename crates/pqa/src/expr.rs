//! Compiled expressions and the compiler from the syntax tree.
//!
//! Names are resolved once, at registration: `b.metricValue` becomes
//! "slot 0, field 3", so evaluating an expression never looks a name up.

use std::collections::HashMap;
use std::sync::Arc;

use crate::agg::{AggFunc, AggSpec, AggState};
use crate::error::{Pos, PqaError, Result};
use crate::parser::ast::{BinOp, Expr, Ident, UnOp};
use crate::stream::{Event, StreamState};
use crate::value::{Kind, Value};

/// Scalar functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    Abs,
    Round,
    Floor,
    Ceil,
    Sqrt,
    Pow,
    Ln,
    Exp,
    Coalesce,
    Upper,
    Lower,
    Strlen,
    MaxOf,
    MinOf,
}

/// A compiled expression.
#[derive(Debug, Clone)]
pub(crate) enum CExpr {
    Lit(Value),
    Field {
        slot: u16,
        idx: u32,
    },
    /// A whole event (a pattern tag or stream alias used as a value).
    Event(u16),
    /// The newest timestamp among the row's events (`rate(N)`'s clock).
    Now,
    /// `a[i].x`: a property of the i-th event a repeated tag collected.
    Indexed {
        slot: u16,
        index: usize,
        name: Arc<str>,
    },
    Agg(u32),
    GroupKey(u32),
    Not(Box<CExpr>),
    Neg(Box<CExpr>),
    And(Box<CExpr>, Box<CExpr>),
    Or(Box<CExpr>, Box<CExpr>),
    Bin(BinOp, Box<CExpr>, Box<CExpr>),
    IsNull(Box<CExpr>, bool),
    In(Box<CExpr>, Vec<CExpr>, bool),
    Between(Box<CExpr>, Box<CExpr>, Box<CExpr>, bool),
    Like(Box<CExpr>, Box<CExpr>, bool),
    Regexp(Box<CExpr>, Arc<regex::Regex>, bool),
    Case {
        operand: Option<Box<CExpr>>,
        whens: Vec<(CExpr, CExpr)>,
        else_: Option<Box<CExpr>>,
    },
    Func(Func, Vec<CExpr>),
}

/// What an expression is evaluated against.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) events: &'a [Arc<Event>],
    pub(crate) aggs: &'a [AggState],
    pub(crate) key: &'a [Value],
}

impl<'a> Ctx<'a> {
    pub(crate) fn row(events: &'a [Arc<Event>]) -> Ctx<'a> {
        Ctx {
            events,
            aggs: &[],
            key: &[],
        }
    }
}

static NULL: Value = Value::Null;

impl CExpr {
    /// Evaluates to a boolean condition (null is false).
    #[inline]
    pub(crate) fn test(&self, ctx: &Ctx<'_>) -> bool {
        match self {
            CExpr::And(a, b) => a.test(ctx) && b.test(ctx),
            CExpr::Or(a, b) => a.test(ctx) || b.test(ctx),
            CExpr::Bin(
                op @ (BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge),
                l,
                r,
            ) => {
                let (lv, rv);
                let l = match l.as_ref() {
                    CExpr::Field { slot, idx } => field(ctx, *slot, *idx),
                    other => {
                        lv = other.eval(ctx);
                        &lv
                    }
                };
                let r = match r.as_ref() {
                    CExpr::Lit(v) => v,
                    CExpr::Field { slot, idx } => field(ctx, *slot, *idx),
                    other => {
                        rv = other.eval(ctx);
                        &rv
                    }
                };
                compare(*op, l, r).is_true()
            }
            other => other.eval(ctx).is_true(),
        }
    }

    pub(crate) fn eval(&self, ctx: &Ctx<'_>) -> Value {
        match self {
            CExpr::Lit(v) => v.clone(),
            CExpr::Field { slot, idx } => field(ctx, *slot, *idx).clone(),
            CExpr::Event(slot) => match ctx.events.get(*slot as usize) {
                Some(e) if crate::pattern::repeated(e).is_some() => e.get(0).clone(),
                Some(e) if !e.values.is_empty() => Value::Json(Arc::new(e.to_json())),
                _ => Value::Null,
            },
            CExpr::Indexed { slot, index, name } => ctx
                .events
                .get(*slot as usize)
                .and_then(|e| crate::pattern::repeated(e))
                .and_then(|list| list.get(*index))
                .and_then(|o| o.get(&**name))
                .map_or(Value::Null, Value::from_json),
            CExpr::Now => Value::Int(ctx.events.iter().map(|e| e.ts).max().unwrap_or(0)),
            CExpr::Agg(i) => ctx.aggs.get(*i as usize).map_or(Value::Null, |a| a.value()),
            CExpr::GroupKey(i) => ctx.key.get(*i as usize).cloned().unwrap_or(Value::Null),
            CExpr::Not(e) => match e.eval(ctx) {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            },
            CExpr::Neg(e) => match e.eval(ctx) {
                Value::Int(i) => Value::Int(i.wrapping_neg()),
                Value::Float(f) => Value::Float(-f),
                _ => Value::Null,
            },
            CExpr::And(a, b) => {
                // Three-valued logic: false wins over null.
                let (x, y) = (a.eval(ctx), b.eval(ctx));
                match (&x, &y) {
                    (Value::Bool(false), _) | (_, Value::Bool(false)) => Value::Bool(false),
                    (Value::Bool(true), Value::Bool(true)) => Value::Bool(true),
                    _ => Value::Null,
                }
            }
            CExpr::Or(a, b) => {
                let (x, y) = (a.eval(ctx), b.eval(ctx));
                match (&x, &y) {
                    (Value::Bool(true), _) | (_, Value::Bool(true)) => Value::Bool(true),
                    (Value::Bool(false), Value::Bool(false)) => Value::Bool(false),
                    _ => Value::Null,
                }
            }
            CExpr::Bin(op, l, r) => {
                let (l, r) = (l.eval(ctx), r.eval(ctx));
                match op {
                    BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                        compare(*op, &l, &r)
                    }
                    BinOp::Concat => match (&l, &r) {
                        (Value::Null, _) | (_, Value::Null) => Value::Null,
                        _ => Value::from(format!("{}{}", text(&l), text(&r)).as_str()),
                    },
                    _ => arith(*op, &l, &r),
                }
            }
            CExpr::IsNull(e, neg) => Value::Bool(e.eval(ctx).is_null() != *neg),
            CExpr::In(e, list, neg) => {
                let v = e.eval(ctx);
                if v.is_null() {
                    return Value::Null;
                }
                let found = list
                    .iter()
                    .any(|x| v.sql_cmp(&x.eval(ctx)) == Some(std::cmp::Ordering::Equal));
                Value::Bool(found != *neg)
            }
            CExpr::Between(e, lo, hi, neg) => {
                let (v, lo, hi) = (e.eval(ctx), lo.eval(ctx), hi.eval(ctx));
                match (v.sql_cmp(&lo), v.sql_cmp(&hi)) {
                    (Some(a), Some(b)) => Value::Bool((a.is_ge() && b.is_le()) != *neg),
                    _ => Value::Null,
                }
            }
            CExpr::Like(e, p, neg) => match (e.eval(ctx), p.eval(ctx)) {
                (Value::Str(s), Value::Str(p)) => Value::Bool(like(&s, &p) != *neg),
                _ => Value::Null,
            },
            CExpr::Regexp(e, re, neg) => match e.eval(ctx) {
                Value::Str(s) => Value::Bool(re.is_match(&s) != *neg),
                _ => Value::Null,
            },
            CExpr::Case {
                operand,
                whens,
                else_,
            } => {
                let op = operand.as_ref().map(|o| o.eval(ctx));
                for (w, t) in whens {
                    let hit = match &op {
                        Some(o) => o.sql_cmp(&w.eval(ctx)) == Some(std::cmp::Ordering::Equal),
                        None => w.test(ctx),
                    };
                    if hit {
                        return t.eval(ctx);
                    }
                }
                else_.as_ref().map_or(Value::Null, |e| e.eval(ctx))
            }
            CExpr::Func(f, args) => call(*f, args, ctx),
        }
    }
}

#[inline]
fn field<'c>(ctx: &Ctx<'c>, slot: u16, idx: u32) -> &'c Value {
    match ctx.events.get(slot as usize) {
        Some(e) => e.get(idx as usize),
        None => &NULL,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        other => other.to_json().to_string(),
    }
}

#[inline]
pub(crate) fn compare(op: BinOp, l: &Value, r: &Value) -> Value {
    let Some(o) = l.sql_cmp(r) else {
        return Value::Null;
    };
    Value::Bool(match op {
        BinOp::Eq => o.is_eq(),
        BinOp::Ne => o.is_ne(),
        BinOp::Lt => o.is_lt(),
        BinOp::Le => o.is_le(),
        BinOp::Gt => o.is_gt(),
        _ => o.is_ge(),
    })
}

pub(crate) fn arith(op: BinOp, l: &Value, r: &Value) -> Value {
    match (l, r) {
        (Value::Int(a), Value::Int(b)) => match op {
            BinOp::Add => Value::Int(a.wrapping_add(*b)),
            BinOp::Sub => Value::Int(a.wrapping_sub(*b)),
            BinOp::Mul => Value::Int(a.wrapping_mul(*b)),
            // Division is floating point, as in Esper for doubles; integer
            // division surprises monitoring users (5/2 = 2).
            BinOp::Div => {
                if *b == 0 {
                    Value::Null
                } else {
                    Value::Float(*a as f64 / *b as f64)
                }
            }
            BinOp::Mod => {
                if *b == 0 {
                    Value::Null
                } else {
                    Value::Int(a.wrapping_rem(*b))
                }
            }
            _ => Value::Null,
        },
        _ => match (l.as_f64(), r.as_f64()) {
            (Some(a), Some(b)) => match op {
                BinOp::Add => Value::Float(a + b),
                BinOp::Sub => Value::Float(a - b),
                BinOp::Mul => Value::Float(a * b),
                BinOp::Div => {
                    if b == 0.0 {
                        Value::Null
                    } else {
                        Value::Float(a / b)
                    }
                }
                BinOp::Mod => {
                    if b == 0.0 {
                        Value::Null
                    } else {
                        Value::Float(a % b)
                    }
                }
                _ => Value::Null,
            },
            _ => Value::Null,
        },
    }
}

/// SQL LIKE with `%` and `_`.
fn like(s: &str, p: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = p.chars().collect();
    // dp[j]: does s[..i] match p[..j]
    let mut dp = vec![false; p.len() + 1];
    dp[0] = true;
    for j in 1..=p.len() {
        dp[j] = dp[j - 1] && p[j - 1] == '%';
    }
    for &c in &s {
        let mut prev = dp[0];
        dp[0] = false;
        for j in 1..=p.len() {
            let cur = dp[j];
            dp[j] = match p[j - 1] {
                '%' => dp[j - 1] || dp[j],
                '_' => prev,
                pc => prev && pc == c,
            };
            prev = cur;
        }
    }
    dp[p.len()]
}

fn call(f: Func, args: &[CExpr], ctx: &Ctx<'_>) -> Value {
    let num = |i: usize| args.get(i).and_then(|a| a.eval(ctx).as_f64());
    let float = |x: Option<f64>| x.map_or(Value::Null, Value::Float);
    match f {
        Func::Abs => match args.first().map(|a| a.eval(ctx)) {
            Some(Value::Int(i)) => Value::Int(i.wrapping_abs()),
            Some(Value::Float(x)) => Value::Float(x.abs()),
            _ => Value::Null,
        },
        Func::Round => {
            let digits = num(1).unwrap_or(0.0) as i32;
            let m = 10f64.powi(digits);
            float(num(0).map(|x| (x * m).round() / m))
        }
        Func::Floor => float(num(0).map(f64::floor)),
        Func::Ceil => float(num(0).map(f64::ceil)),
        Func::Sqrt => float(num(0).map(f64::sqrt)),
        Func::Pow => float(num(0).zip(num(1)).map(|(a, b)| a.powf(b))),
        Func::Ln => float(num(0).map(f64::ln)),
        Func::Exp => float(num(0).map(f64::exp)),
        Func::Coalesce => args
            .iter()
            .map(|a| a.eval(ctx))
            .find(|v| !v.is_null())
            .unwrap_or(Value::Null),
        Func::Upper | Func::Lower | Func::Strlen => match args.first().map(|a| a.eval(ctx)) {
            Some(Value::Str(s)) => match f {
                Func::Upper => Value::from(s.to_uppercase().as_str()),
                Func::Lower => Value::from(s.to_lowercase().as_str()),
                _ => Value::Int(s.chars().count() as i64),
            },
            _ => Value::Null,
        },
        Func::MaxOf | Func::MinOf => {
            let mut best: Option<Value> = None;
            for a in args {
                let v = a.eval(ctx);
                if v.is_null() {
                    return Value::Null;
                }
                best = Some(match best {
                    None => v,
                    Some(b) => {
                        let take = match v.sql_cmp(&b) {
                            Some(o) => {
                                (f == Func::MaxOf && o.is_gt()) || (f == Func::MinOf && o.is_lt())
                            }
                            None => false,
                        };
                        if take { v } else { b }
                    }
                });
            }
            best.unwrap_or(Value::Null)
        }
    }
}

/// A from-clause entry or pattern tag that names can be resolved against.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// Names that qualify it: the alias or tag, and the stream name.
    pub(crate) names: Vec<String>,
    /// The stream whose schema the fields come from.
    pub(crate) stream: usize,
    /// A pattern tag inside a repetition (`[3] a=A`, `a=A until b=B`): it
    /// holds every event matched, read as `a[0].x`.
    pub(crate) repeated: bool,
}

/// Registered streams by name.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    pub(crate) list: Vec<StreamState>,
    pub(crate) ids: HashMap<String, usize>,
}

impl Streams {
    pub(crate) fn id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        let i = self.list.len();
        self.list.push(StreamState::new(name));
        self.ids.insert(name.to_string(), i);
        i
    }
}

fn kind_name(k: crate::value::Kind) -> &'static str {
    match k {
        crate::value::Kind::Bool => "a boolean",
        crate::value::Kind::Number => "a number",
        crate::value::Kind::String => "a string",
        crate::value::Kind::Json => "an object",
    }
}

fn kind_name_plural(k: crate::value::Kind) -> &'static str {
    match k {
        crate::value::Kind::Bool => "a boolean (a condition)",
        crate::value::Kind::Number => "numbers",
        crate::value::Kind::String => "strings",
        crate::value::Kind::Json => "objects",
    }
}

/// Compiles syntax-tree expressions against a set of slots.
#[derive(Debug)]
pub(crate) struct Compiler<'a> {
    pub(crate) streams: &'a mut Streams,
    pub(crate) slots: Vec<Slot>,
    /// Slot for unqualified names when several slots exist (a pattern filter's own event).
    pub(crate) default_slot: Option<usize>,
    /// Aggregates found so far; `None` means aggregates are not allowed here.
    pub(crate) aggs: Option<Vec<AggSpec>>,
    /// Canonical text of the group-by expressions.
    pub(crate) group_keys: Vec<String>,
    /// Set when a field is used outside an aggregate and outside the group-by keys.
    pub(crate) bare_field: bool,
    /// Fields each slot's events must carry.
    pub(crate) required: Vec<Vec<usize>>,
    in_agg: bool,
    /// Compiling the operand of `is [not] null`.
    testing_null: bool,
    /// Select aliases usable in having / order by, with their expressions.
    pub(crate) aliases: Vec<(String, Expr)>,
    /// The clause being compiled, for error messages.
    pub(crate) clause: &'static str,
}

impl<'a> Compiler<'a> {
    pub(crate) fn new(streams: &'a mut Streams, slots: Vec<Slot>) -> Self {
        let n = slots.len();
        Compiler {
            streams,
            slots,
            default_slot: None,
            aggs: None,
            group_keys: Vec::new(),
            bare_field: false,
            required: vec![Vec::new(); n],
            in_agg: false,
            testing_null: false,
            aliases: Vec::new(),
            clause: "expression",
        }
    }

    /// The kind a compiled expression is known to have at registration: a
    /// literal's, a declared property's, arithmetic's (a number).
    fn kind_of(&self, c: &CExpr) -> Option<crate::value::Kind> {
        match c {
            CExpr::Lit(v) => v.kind(),
            CExpr::Field { slot, idx } => {
                let stream = &self.streams.list[self.slots.get(*slot as usize)?.stream];
                if stream.declared {
                    stream.kinds.get(*idx as usize).copied().flatten()
                } else {
                    None
                }
            }
            CExpr::Bin(BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod, ..)
            | CExpr::Neg(_) => Some(Kind::Number),
            CExpr::Bin(BinOp::Concat, ..) => Some(Kind::String),
            CExpr::Bin(
                BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge,
                ..,
            )
            | CExpr::And(..)
            | CExpr::Or(..)
            | CExpr::Not(_)
            | CExpr::In(..)
            | CExpr::Between(..)
            | CExpr::Like(..)
            | CExpr::Regexp(..)
            | CExpr::IsNull(..) => Some(Kind::Bool),
            _ => None,
        }
    }

    /// Refuses an operand whose kind is known at registration and is not
    /// `want` (a string property in arithmetic, a number in `like`, a where
    /// clause that is not a condition), as Esper refuses such an implicit
    /// conversion when the statement is created. `what` names what needs it.
    pub(crate) fn check_kind(
        &self,
        e: &Expr,
        c: &CExpr,
        want: crate::value::Kind,
        what: &str,
    ) -> Result<()> {
        match self.kind_of(c) {
            Some(k) if k != want => Self::semantic(
                e.pos(),
                format!(
                    "type mismatch in the {}: {} is {} but {what} needs {}",
                    self.clause,
                    e,
                    kind_name(k),
                    kind_name_plural(want)
                ),
            ),
            _ => Ok(()),
        }
    }

    /// Refuses comparing values of two different known kinds (a string
    /// property with a number, say), as Esper does at registration.
    fn check_comparable(&self, l: (&Expr, &CExpr), r: (&Expr, &CExpr)) -> Result<()> {
        let (Some(a), Some(b)) = (self.kind_of(l.1), self.kind_of(r.1)) else {
            return Ok(());
        };
        if a == b {
            return Ok(());
        }
        let name = kind_name;
        Self::semantic(
            l.0.pos(),
            format!(
                "type mismatch in the {}: {} is {} but {} is {}; compare values of one type",
                self.clause,
                l.0,
                name(a),
                r.0,
                name(b)
            ),
        )
    }

    fn semantic<T>(pos: Pos, message: impl Into<String>) -> Result<T> {
        Err(PqaError::Semantic {
            pos,
            message: message.into(),
        })
    }

    fn slot_named(&self, name: &str) -> Option<usize> {
        // Aliases and tags (first name) win over stream names.
        self.slots
            .iter()
            .position(|s| s.names.first().is_some_and(|n| n == name))
            .or_else(|| {
                self.slots
                    .iter()
                    .position(|s| s.names.iter().any(|n| n == name))
            })
    }

    fn field_ref(&mut self, slot: usize, name: &Ident) -> Result<CExpr> {
        let stream = self.slots[slot].stream;
        // A stream declared with `create schema` has a fixed set of
        // properties: a name outside it is a mistake to report now, as Esper
        // does, rather than a statement that silently never matches.
        let state = &self.streams.list[stream];
        if state.declared && !state.has_field(&name.name) {
            let mut known: Vec<&str> = state.field_names().collect();
            known.sort_unstable();
            return Self::semantic(
                name.pos,
                format!(
                    "unknown property '{}' of stream {} (its schema declares: {})",
                    name.name,
                    self.slots[slot].names.last().map_or("", String::as_str),
                    known.join(", ")
                ),
            );
        }
        let name = name.name.as_str();
        let idx = self.streams.list[stream].field(name);
        if !self.testing_null && !self.required[slot].contains(&idx) {
            self.required[slot].push(idx);
        }
        Ok(CExpr::Field {
            slot: slot as u16,
            idx: idx as u32,
        })
    }

    pub(crate) fn compile(&mut self, e: &Expr) -> Result<CExpr> {
        if !self.in_agg && !self.group_keys.is_empty() {
            let text = e.to_string();
            if let Some(i) = self.group_keys.iter().position(|k| *k == text) {
                return Ok(CExpr::GroupKey(i as u32));
            }
        }
        Ok(match e {
            Expr::Lit(v, _) => CExpr::Lit(v.clone()),
            Expr::Field {
                qualifier: Some(q),
                name,
            } => {
                let Some(slot) = self.slot_named(&q.name) else {
                    let known: Vec<&str> = self
                        .slots
                        .iter()
                        .filter_map(|s| s.names.first().map(|n| n.as_str()))
                        .collect();
                    return Self::semantic(
                        q.pos,
                        format!(
                            "unknown stream alias or tag '{}' (known: {})",
                            q.name,
                            known.join(", ")
                        ),
                    );
                };
                if !self.in_agg {
                    self.bare_field = true;
                }
                if self.slots[slot].repeated && self.default_slot != Some(slot) {
                    return Self::semantic(
                        q.pos,
                        format!(
                            "tag '{}' collects repeated events: name one, such as {}[0].{}",
                            q.name, q.name, name.name
                        ),
                    );
                }
                self.field_ref(slot, name)?
            }
            Expr::Indexed { tag, index, name } => {
                let Some(slot) = self
                    .slot_named(&tag.name)
                    .filter(|&s| self.slots[s].repeated)
                else {
                    return Self::semantic(
                        tag.pos,
                        format!(
                            "'{}[{index}]' needs a tag of a repeated pattern ([n] a=A or a=A until B)",
                            tag.name
                        ),
                    );
                };
                if !self.in_agg {
                    self.bare_field = true;
                }
                let stream = self.slots[slot].stream;
                self.streams.list[stream].field(&name.name);
                CExpr::Indexed {
                    slot: slot as u16,
                    index: *index,
                    name: Arc::from(name.name.as_str()),
                }
            }
            Expr::Field {
                qualifier: None,
                name,
            } => {
                if let Some((_, aliased)) =
                    self.aliases.iter().find(|(a, _)| *a == name.name).cloned()
                {
                    return self.compile(&aliased);
                }
                // A bare tag or alias stands for the whole event.
                if (self.slots.len() > 1 || self.default_slot.is_some())
                    && let Some(slot) = self
                        .slots
                        .iter()
                        .position(|s| s.names.first().is_some_and(|n| *n == name.name))
                {
                    if !self.in_agg {
                        self.bare_field = true;
                    }
                    return Ok(CExpr::Event(slot as u16));
                }
                let slot = if self.slots.len() == 1 {
                    0
                } else if let Some(d) = self.default_slot {
                    d
                } else {
                    // Several streams: the field must be known in exactly one of them.
                    let owners: Vec<usize> = (0..self.slots.len())
                        .filter(|&i| self.streams.list[self.slots[i].stream].has_field(&name.name))
                        .collect();
                    match owners.as_slice() {
                        [one] => *one,
                        [] => {
                            return Self::semantic(
                                name.pos,
                                format!(
                                    "field '{}' is not known in any stream yet: qualify it with a stream alias",
                                    name.name
                                ),
                            );
                        }
                        _ => {
                            return Self::semantic(
                                name.pos,
                                format!(
                                    "field '{}' is ambiguous: qualify it with a stream alias",
                                    name.name
                                ),
                            );
                        }
                    }
                };
                if self.slots.is_empty() {
                    return Self::semantic(
                        name.pos,
                        format!("field '{}' has no stream to come from", name.name),
                    );
                }
                if !self.in_agg {
                    self.bare_field = true;
                }
                self.field_ref(slot, name)?
            }
            Expr::Unary(UnOp::Not, e, _) => {
                let ec = self.compile(e)?;
                self.check_kind(e, &ec, Kind::Bool, "'not'")?;
                CExpr::Not(Box::new(ec))
            }
            Expr::Unary(UnOp::Neg, e, _) => {
                let ec = self.compile(e)?;
                self.check_kind(e, &ec, Kind::Number, "unary '-'")?;
                CExpr::Neg(Box::new(ec))
            }
            Expr::Binary(op @ (BinOp::And | BinOp::Or), l, r) => {
                let (lc, rc) = (self.compile(l)?, self.compile(r)?);
                let what = if *op == BinOp::And { "'and'" } else { "'or'" };
                self.check_kind(l, &lc, Kind::Bool, what)?;
                self.check_kind(r, &rc, Kind::Bool, what)?;
                if *op == BinOp::And {
                    CExpr::And(Box::new(lc), Box::new(rc))
                } else {
                    CExpr::Or(Box::new(lc), Box::new(rc))
                }
            }
            Expr::Binary(op, l, r) => {
                let (lc, rc) = (self.compile(l)?, self.compile(r)?);
                let arith = match op {
                    BinOp::Add => Some("'+'"),
                    BinOp::Sub => Some("'-'"),
                    BinOp::Mul => Some("'*'"),
                    BinOp::Div => Some("'/'"),
                    BinOp::Mod => Some("'%'"),
                    _ => None,
                };
                if let Some(what) = arith {
                    // Esper has no implicit conversion from string to number
                    // (and concatenates with ||, not +).
                    self.check_kind(l, &lc, Kind::Number, what)?;
                    self.check_kind(r, &rc, Kind::Number, what)?;
                } else if matches!(
                    op,
                    BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
                ) {
                    self.check_comparable((l, &lc), (r, &rc))?;
                }
                CExpr::Bin(*op, Box::new(lc), Box::new(rc))
            }
            Expr::IsNull(e, n) => {
                // A field only tested for null must not be required: an
                // event without it is exactly what `x is null` looks for.
                let outer = std::mem::replace(&mut self.testing_null, true);
                let inner = self.compile(e);
                self.testing_null = outer;
                CExpr::IsNull(Box::new(inner?), *n)
            }
            Expr::In(e, list, n) => {
                let ec = self.compile(e)?;
                let mut out = Vec::with_capacity(list.len());
                for x in list {
                    let xc = self.compile(x)?;
                    self.check_comparable((e, &ec), (x, &xc))?;
                    out.push(xc);
                }
                CExpr::In(Box::new(ec), out, *n)
            }
            Expr::Between(e, lo, hi, n) => {
                let (ec, loc, hic) = (self.compile(e)?, self.compile(lo)?, self.compile(hi)?);
                self.check_comparable((e, &ec), (lo, &loc))?;
                self.check_comparable((e, &ec), (hi, &hic))?;
                CExpr::Between(Box::new(ec), Box::new(loc), Box::new(hic), *n)
            }
            Expr::Regexp(e, p, n) => {
                let Expr::Lit(Value::Str(pattern), pos) = &**p else {
                    return Self::semantic(
                        p.pos(),
                        "regexp needs its pattern as a string literal, such as x regexp 'eth[0-9]+'",
                    );
                };
                // Anchored: Esper's regexp matches the whole string. The size
                // limit bounds what one registration may make the node build.
                let re = regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|err| PqaError::Semantic {
                        pos: *pos,
                        message: format!("regexp pattern is not valid: {err}"),
                    })?;
                let ec = self.compile(e)?;
                self.check_kind(e, &ec, Kind::String, "'regexp'")?;
                CExpr::Regexp(Box::new(ec), Arc::new(re), *n)
            }
            Expr::Like(e, p, n) => {
                let (ec, pc) = (self.compile(e)?, self.compile(p)?);
                self.check_kind(e, &ec, Kind::String, "'like'")?;
                self.check_kind(p, &pc, Kind::String, "'like'")?;
                CExpr::Like(Box::new(ec), Box::new(pc), *n)
            }
            Expr::Case {
                operand,
                whens,
                else_,
            } => CExpr::Case {
                operand: match operand {
                    Some(o) => Some(Box::new(self.compile(o)?)),
                    None => None,
                },
                whens: whens
                    .iter()
                    .map(|(w, t)| Ok((self.compile(w)?, self.compile(t)?)))
                    .collect::<Result<Vec<_>>>()?,
                else_: match else_ {
                    Some(e) => Some(Box::new(self.compile(e)?)),
                    None => None,
                },
            },
            Expr::Call {
                name,
                distinct,
                star,
                args,
            } => self.compile_call(e, name, *distinct, *star, args)?,
        })
    }

    fn compile_call(
        &mut self,
        whole: &Expr,
        name: &crate::parser::ast::Ident,
        distinct: bool,
        star: bool,
        args: &[Expr],
    ) -> Result<CExpr> {
        let lower = name.name.to_ascii_lowercase();
        // min/max with several arguments are the scalar functions.
        let agg = AggFunc::from_name(&lower)
            .filter(|_| !(matches!(lower.as_str(), "min" | "max") && args.len() > 1));
        if let Some(func) = agg {
            if self.in_agg {
                return Self::semantic(
                    name.pos,
                    format!("aggregate {lower}() cannot be nested inside another aggregate"),
                );
            }
            if self.aggs.is_none() {
                return Self::semantic(
                    name.pos,
                    format!(
                        "aggregate {lower}() is not allowed here (stream filters, pattern filters and group by take no aggregates)"
                    ),
                );
            }
            let takes_star = matches!(
                func,
                AggFunc::Count
                    | AggFunc::CountEver
                    | AggFunc::First
                    | AggFunc::Last
                    | AggFunc::Window
            );
            if star && !takes_star {
                return Self::semantic(
                    name.pos,
                    format!(
                        "{lower}(*) is not valid; * is taken by count, countever, first, last and window"
                    ),
                );
            }
            let arity = if func == AggFunc::Nth { 2 } else { 1 };
            if !star && args.len() != arity {
                let what = if arity == 2 {
                    "nth() takes a value and how many events back, such as nth(price, 1)"
                        .to_string()
                } else if func == AggFunc::Rate {
                    "rate() takes a number of seconds, rate(10), or a timestamp property, rate(ts); the accumulator form rate(ts, x) is not supported"
                        .to_string()
                } else {
                    format!("{lower}() takes exactly one argument")
                };
                return Self::semantic(name.pos, what);
            }
            let nth = if func == AggFunc::Nth {
                match &args[1] {
                    Expr::Lit(Value::Int(n), _) if *n >= 0 => *n as usize,
                    other => {
                        return Self::semantic(
                            other.pos(),
                            "nth()'s second argument is a whole number of events back, 0 or more",
                        );
                    }
                }
            } else {
                0
            };
            // first(*), last(*) and window(*) are about whole events; with
            // several streams the event is named by its alias instead.
            let whole_event = star && func != AggFunc::Count && func != AggFunc::CountEver;
            if whole_event && self.slots.len() != 1 {
                return Self::semantic(
                    name.pos,
                    format!(
                        "{lower}(*) needs one stream; in a join name the stream: {lower}(alias)"
                    ),
                );
            }
            // rate(10): per second over the last 10 seconds of arrivals.
            let rate_secs = match (func, args.first()) {
                (AggFunc::Rate, Some(Expr::Lit(v, pos))) => match v.as_f64() {
                    Some(s) if s > 0.0 => Some((s * 1000.0).round() as usize),
                    _ => {
                        return Self::semantic(
                            *pos,
                            "rate()'s number of seconds must be positive, such as rate(10)",
                        );
                    }
                },
                _ => None,
            };
            let (func, nth) = match rate_secs {
                Some(ms) => (AggFunc::RateEver, ms),
                None => (func, nth),
            };
            self.in_agg = true;
            let arg = if rate_secs.is_some() {
                Some(Ok(CExpr::Now))
            } else if whole_event {
                Some(Ok(CExpr::Event(0)))
            } else if star {
                None
            } else {
                Some(self.compile(&args[0]))
            };
            self.in_agg = false;
            let arg = arg.transpose()?;
            if let (Some(a), Some(c)) = (args.first(), &arg)
                && matches!(
                    func,
                    AggFunc::Sum
                        | AggFunc::Avg
                        | AggFunc::Stddev
                        | AggFunc::Avedev
                        | AggFunc::Median
                )
                && rate_secs.is_none()
            {
                self.check_kind(a, c, Kind::Number, &format!("{lower}()"))?;
            }
            let key = whole.to_string();
            let aggs = self.aggs.get_or_insert_with(Vec::new);
            if let Some(i) = aggs.iter().position(|a| a.key == key) {
                return Ok(CExpr::Agg(i as u32));
            }
            aggs.push(AggSpec {
                func,
                arg,
                distinct,
                nth,
                key,
            });
            return Ok(CExpr::Agg((aggs.len() - 1) as u32));
        }
        let (func, arity): (Func, Option<usize>) = match lower.as_str() {
            "abs" => (Func::Abs, Some(1)),
            "round" => (Func::Round, None),
            "floor" => (Func::Floor, Some(1)),
            "ceil" | "ceiling" => (Func::Ceil, Some(1)),
            "sqrt" => (Func::Sqrt, Some(1)),
            "pow" | "power" => (Func::Pow, Some(2)),
            "ln" | "log" => (Func::Ln, Some(1)),
            "exp" => (Func::Exp, Some(1)),
            "coalesce" => (Func::Coalesce, None),
            "upper" => (Func::Upper, Some(1)),
            "lower" => (Func::Lower, Some(1)),
            "strlen" | "length" => (Func::Strlen, Some(1)),
            "max" => (Func::MaxOf, None),
            "min" => (Func::MinOf, None),
            _ => {
                return Self::semantic(
                    name.pos,
                    format!(
                        "unknown function '{}' (aggregates: avg, sum, count, min, max, stddev, first, last, avedev, median, firstever, lastever, countever, nth, window, rate)",
                        name.name
                    ),
                );
            }
        };
        if let Some(n) = arity
            && args.len() != n
        {
            return Self::semantic(
                name.pos,
                format!("{lower}() takes {n} argument(s), got {}", args.len()),
            );
        }
        if func == Func::Round && !(1..=2).contains(&args.len()) {
            return Self::semantic(name.pos, "round() takes 1 or 2 arguments");
        }
        let args = args
            .iter()
            .map(|a| self.compile(a))
            .collect::<Result<Vec<_>>>()?;
        Ok(CExpr::Func(func, args))
    }
}

/// True when the expression contains an aggregate call.
pub(crate) fn has_aggregate(e: &Expr) -> bool {
    let mut found = false;
    e.walk(&mut |x| {
        if let Expr::Call { name, args, .. } = x {
            let lower = name.name.to_ascii_lowercase();
            if AggFunc::from_name(&lower).is_some()
                && !(matches!(lower.as_str(), "min" | "max") && args.len() > 1)
            {
                found = true;
            }
        }
    });
    found
}

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn like_patterns() {
        assert!(like("eth0", "eth%"));
        assert!(like("eth0", "e_h0"));
        assert!(!like("eth0", "wlan%"));
        assert!(like("", "%"));
    }
}
