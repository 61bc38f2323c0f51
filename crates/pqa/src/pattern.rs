//! Pattern matching (`pattern [every a=A -> b=B(b.x > a.x) where timer:within(30 sec)]`).
//!
//! A pattern compiles to a tree of nodes; at run time each node has live
//! *instances* that hold the tags bound so far. Events and clock ticks are
//! fed to the root instance; an instance that turns true hands its bindings
//! up to its parent (`->` starts its right side with them, `every` restarts
//! its child, the root emits a match). Instances that can never turn true
//! again are dropped.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::expr::{CExpr, Ctx};
use crate::parser::ast::{CronDay, CronSpec};
use crate::stream::{Event, Schema};
use crate::value::Value;

/// Tag slots of one (partial) match; unbound tags hold the shared empty event.
pub(crate) type Binding = Vec<Arc<Event>>;

pub(crate) fn unbound() -> &'static Arc<Event> {
    static EMPTY: OnceLock<Arc<Event>> = OnceLock::new();
    EMPTY.get_or_init(Event::empty)
}

fn array_schema() -> &'static Arc<Schema> {
    static S: OnceLock<Arc<Schema>> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema {
            names: vec![Arc::from("[]")],
        })
    })
}

/// The events a repeated tag collected, as one value of its slot.
fn repeated_event(list: &[Arc<Event>]) -> Arc<Event> {
    let rows = list.iter().map(|e| e.to_json()).collect();
    Arc::new(Event {
        ts: list.last().map_or(0, |e| e.ts),
        schema: array_schema().clone(),
        values: Box::new([Value::Json(Arc::new(serde_json::Value::Array(rows)))]),
    })
}

/// The events of a repeated tag (`a[0].x`), if `e` holds them.
pub(crate) fn repeated(e: &Event) -> Option<&Vec<serde_json::Value>> {
    if !Arc::ptr_eq(&e.schema, array_schema()) {
        return None;
    }
    match e.values.first() {
        Some(Value::Json(j)) => j.as_array(),
        _ => None,
    }
}

/// The first time after `after` (milliseconds since the epoch, UTC) that the
/// schedule matches, at whole seconds plus `after`'s milliseconds (Esper
/// computes at second resolution and keeps the start's milliseconds: from
/// 9.5 s, `*/10` seconds next match at 10.5 s); `None` when none comes within
/// eight years (a schedule such as February 30th).
///
/// Days as Esper has them: a special day (`last`, `lastweekday`, `N
/// weekday`, `N last`) alone decides; otherwise when both days of month and
/// days of week are restricted a day matching either will do, and a
/// wildcard leaves the other field to decide.
pub(crate) fn next_occurrence(spec: &CronSpec, after: i64) -> Option<i64> {
    use chrono::{Datelike, Duration, Timelike};
    let has = |set: u64, v: u32| set & (1u64 << v) != 0;
    let all_dom = (1..=31).fold(0u64, |m, v| m | 1 << v);
    let all_dow = (0..=6).fold(0u64, |m, v| m | 1 << v);
    let day_ok = |d: chrono::NaiveDate| -> bool {
        let dom = d.day();
        let dow = d.weekday().num_days_from_sunday();
        let last = last_day_of_month(d);
        let weekday = (1..=5).contains(&dow);
        match spec.day_op {
            Some(CronDay::LastOfMonth) => dom == last,
            Some(CronDay::LastWeekday) => {
                // The last day if a weekday, else the Friday just before.
                weekday && (dom == last || (dom + 2 >= last && dow == 5))
            }
            Some(CronDay::NearestWeekday(None)) => weekday,
            Some(CronDay::NearestWeekday(Some(n))) => {
                weekday && dom == nearest_weekday(d, u32::from(n), last)
            }
            Some(CronDay::LastOfWeek(None)) => dow == 6,
            Some(CronDay::LastOfWeek(Some(n))) => dow == u32::from(n) && dom + 7 > last,
            None => {
                let dom_any = spec.days_of_month == all_dom;
                let dow_any = spec.days_of_week == all_dow;
                match (dom_any, dow_any) {
                    (_, true) => has(spec.days_of_month, dom),
                    (true, false) => has(spec.days_of_week, dow),
                    (false, false) => has(spec.days_of_month, dom) || has(spec.days_of_week, dow),
                }
            }
        }
    };
    let start = after.div_euclid(1000) * 1000 + 1000;
    let mut t = chrono::DateTime::from_timestamp_millis(start)?.naive_utc();
    let limit = t + Duration::days(8 * 366);
    while t < limit {
        if !has(spec.months, t.month()) {
            let (y, m) = if t.month() == 12 {
                (t.year() + 1, 1)
            } else {
                (t.year(), t.month() + 1)
            };
            t = chrono::NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
            continue;
        }
        if !day_ok(t.date()) {
            t = (t.date() + Duration::days(1)).and_hms_opt(0, 0, 0)?;
            continue;
        }
        if !has(spec.hours, t.hour()) {
            t = t.date().and_hms_opt(t.hour(), 0, 0)? + Duration::hours(1);
            continue;
        }
        if !has(spec.minutes, t.minute()) {
            t = t.date().and_hms_opt(t.hour(), t.minute(), 0)? + Duration::minutes(1);
            continue;
        }
        if !has(spec.seconds, t.second()) {
            t += Duration::seconds(1);
            continue;
        }
        return Some(t.and_utc().timestamp_millis() + after.rem_euclid(1000));
    }
    None
}

fn last_day_of_month(d: chrono::NaiveDate) -> u32 {
    use chrono::Datelike;
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    chrono::NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|first| first.pred_opt())
        .map_or(28, |l| l.day())
}

/// The Monday to Friday nearest day `n` of `d`'s month, never leaving the
/// month (Esper: a Saturday moves to Friday unless it is the 1st, then to
/// Monday the 3rd; a Sunday moves to Monday unless it is the last day, then
/// to Friday); a day past the month's end is its last day.
fn nearest_weekday(d: chrono::NaiveDate, n: u32, last: u32) -> u32 {
    use chrono::Datelike;
    let day = n.min(last);
    let Some(target) = d.with_day(day) else {
        return day;
    };
    match target.weekday().num_days_from_sunday() {
        6 if day > 1 => day - 1,
        6 => day + 2,
        0 if day == last => day - 2,
        0 => day + 1,
        _ => day,
    }
}

/// A compiled pattern node.
#[derive(Debug)]
pub(crate) enum PNode {
    Filter {
        slot: usize,
        stream: usize,
        filter: Option<CExpr>,
    },
    FollowedBy(Arc<PNode>, Arc<PNode>),
    Or(Vec<Arc<PNode>>),
    And(Vec<Arc<PNode>>),
    Every(Arc<PNode>),
    Not(Arc<PNode>),
    Within(Arc<PNode>, i64),
    Interval(i64),
    TimerAt(Box<CronSpec>),
    EveryDistinct {
        child: Arc<PNode>,
        keys: Vec<CExpr>,
        expiry: Option<i64>,
    },
    Repeat {
        child: Arc<PNode>,
        until: Option<Arc<PNode>>,
        min: u32,
        max: Option<u32>,
        /// The slots of the tags inside `child`.
        repeated: Vec<usize>,
    },
}

/// A live instance of a node.
#[derive(Debug)]
pub(crate) enum State {
    Filter {
        node: Arc<PNode>,
        base: Binding,
        done: bool,
    },
    FollowedBy {
        lhs: Box<State>,
        rhs_node: Arc<PNode>,
        rhs: Vec<State>,
    },
    Or {
        insts: Vec<State>,
        done: bool,
    },
    And {
        parts: Vec<(State, Option<Binding>, bool)>,
        base: Binding,
        done: bool,
    },
    Every {
        node: Arc<PNode>,
        base: Binding,
        insts: Vec<State>,
    },
    Not {
        inner: Box<State>,
        tripped: bool,
    },
    Within {
        inner: Box<State>,
        deadline: i64,
        expired: bool,
    },
    Interval {
        at: i64,
        base: Binding,
        done: bool,
    },
    EveryDistinct {
        node: Arc<PNode>,
        base: Binding,
        insts: Vec<State>,
        /// Distinct values seen, with when.
        seen: HashMap<Vec<Value>, i64>,
    },
    Repeat {
        node: Arc<PNode>,
        base: Binding,
        child: Option<Box<State>>,
        until: Option<Box<State>>,
        /// Per repeated slot, the events matched so far.
        collected: Vec<Vec<Arc<Event>>>,
        count: u32,
        done: bool,
    },
}

impl State {
    pub(crate) fn start(node: &Arc<PNode>, base: Binding, now: i64) -> State {
        match node.as_ref() {
            PNode::Filter { .. } => State::Filter {
                node: node.clone(),
                base,
                done: false,
            },
            PNode::FollowedBy(l, r) => State::FollowedBy {
                lhs: Box::new(State::start(l, base, now)),
                rhs_node: r.clone(),
                rhs: Vec::new(),
            },
            PNode::Or(children) => State::Or {
                insts: children
                    .iter()
                    .map(|c| State::start(c, base.clone(), now))
                    .collect(),
                done: false,
            },
            PNode::And(children) => State::And {
                parts: children
                    .iter()
                    .map(|c| {
                        (
                            State::start(c, base.clone(), now),
                            None,
                            matches!(c.as_ref(), PNode::Not(_)),
                        )
                    })
                    .collect(),
                base,
                done: false,
            },
            PNode::Every(child) => State::Every {
                node: child.clone(),
                insts: vec![State::start(child, base.clone(), now)],
                base,
            },
            PNode::Not(child) => State::Not {
                inner: Box::new(State::start(child, base, now)),
                tripped: false,
            },
            PNode::Within(child, ms) => State::Within {
                inner: Box::new(State::start(child, base, now)),
                deadline: now + ms,
                expired: false,
            },
            PNode::Interval(ms) => State::Interval {
                at: now + ms,
                base,
                done: false,
            },
            PNode::TimerAt(spec) => match next_occurrence(spec, now) {
                Some(at) => State::Interval {
                    at,
                    base,
                    done: false,
                },
                None => State::Interval {
                    at: i64::MAX,
                    base,
                    done: true,
                },
            },
            PNode::EveryDistinct { child, .. } => State::EveryDistinct {
                node: node.clone(),
                insts: vec![State::start(child, base.clone(), now)],
                base,
                seen: HashMap::new(),
            },
            PNode::Repeat {
                child,
                until,
                repeated,
                ..
            } => State::Repeat {
                node: node.clone(),
                child: Some(Box::new(State::start(child, base.clone(), now))),
                until: until
                    .as_ref()
                    .map(|u| Box::new(State::start(u, base.clone(), now))),
                collected: vec![Vec::new(); repeated.len()],
                base,
                count: 0,
                done: false,
            },
        }
    }

    /// True when the instance can never turn true again.
    pub(crate) fn dead(&self) -> bool {
        match self {
            State::Filter { done, .. } | State::Interval { done, .. } => *done,
            State::FollowedBy { lhs, rhs, .. } => lhs.dead() && rhs.is_empty(),
            State::Or { insts, done } => *done || insts.iter().all(State::dead),
            State::And { done, parts, .. } => {
                *done
                    || parts
                        .iter()
                        .any(|(s, got, is_not)| !*is_not && got.is_none() && s.dead())
            }
            State::Every { insts, .. } | State::EveryDistinct { insts, .. } => insts.is_empty(),
            State::Repeat { done, .. } => *done,
            State::Not { tripped, .. } => *tripped,
            State::Within { inner, expired, .. } => *expired || inner.dead(),
        }
    }

    /// Feeds an event of `stream`; bindings that turned true are pushed to `out`.
    pub(crate) fn on_event(
        &mut self,
        stream: usize,
        ev: &Arc<Event>,
        now: i64,
        out: &mut Vec<Binding>,
    ) {
        match self {
            State::Filter { node, base, done } => {
                if *done {
                    return;
                }
                let PNode::Filter {
                    slot,
                    stream: s,
                    filter,
                } = node.as_ref()
                else {
                    return;
                };
                if *s != stream {
                    return;
                }
                let mut b = base.clone();
                b[*slot] = ev.clone();
                if filter.as_ref().is_none_or(|f| f.test(&Ctx::row(&b))) {
                    *done = true;
                    out.push(b);
                }
            }
            State::FollowedBy { lhs, rhs_node, rhs } => {
                // The right side sees the event before the left side can spawn a new
                // right instance: one event never satisfies both sides of `->`.
                for r in rhs.iter_mut() {
                    r.on_event(stream, ev, now, out);
                }
                rhs.retain(|r| !r.dead());
                let mut got = Vec::new();
                lhs.on_event(stream, ev, now, &mut got);
                for b in got {
                    rhs.push(State::start(rhs_node, b, now));
                }
            }
            State::Or { insts, done } => {
                if *done {
                    return;
                }
                let before = out.len();
                for i in insts.iter_mut() {
                    i.on_event(stream, ev, now, out);
                    if out.len() > before {
                        out.truncate(before + 1);
                        *done = true;
                        insts.clear();
                        return;
                    }
                }
            }
            State::And { parts, base, done } => {
                if *done {
                    return;
                }
                for (s, got, is_not) in parts.iter_mut() {
                    if got.is_some() {
                        continue;
                    }
                    let mut o = Vec::new();
                    s.on_event(stream, ev, now, &mut o);
                    if *is_not {
                        if s.dead() {
                            *done = true;
                            return;
                        }
                    } else if let Some(b) = o.into_iter().next() {
                        *got = Some(b);
                    }
                }
                and_complete(parts, base, done, out);
            }
            State::Every { node, base, insts } => {
                every_step(node, base, insts, now, out, &mut |i, o| {
                    i.on_event(stream, ev, now, o)
                });
            }
            State::EveryDistinct {
                node,
                base,
                insts,
                seen,
            } => {
                let mut got = Vec::new();
                let PNode::EveryDistinct { child, .. } = node.as_ref() else {
                    return;
                };
                every_step(child, base, insts, now, &mut got, &mut |i, o| {
                    i.on_event(stream, ev, now, o)
                });
                distinct_pass(node, seen, now, got, out);
            }
            State::Repeat { .. } => {
                self.repeat_step(now, out, &mut |i, o| i.on_event(stream, ev, now, o))
            }
            State::Not { inner, tripped } => {
                let mut o = Vec::new();
                inner.on_event(stream, ev, now, &mut o);
                if !o.is_empty() {
                    *tripped = true;
                }
            }
            State::Within {
                inner,
                deadline,
                expired,
            } => {
                if now >= *deadline {
                    *expired = true;
                }
                if !*expired {
                    inner.on_event(stream, ev, now, out);
                }
            }
            State::Interval { .. } => {}
        }
    }

    /// The clock reached `now`.
    pub(crate) fn on_time(&mut self, now: i64, out: &mut Vec<Binding>) {
        match self {
            State::Filter { .. } => {}
            State::FollowedBy { lhs, rhs_node, rhs } => {
                for r in rhs.iter_mut() {
                    r.on_time(now, out);
                }
                rhs.retain(|r| !r.dead());
                let mut got = Vec::new();
                lhs.on_time(now, &mut got);
                for b in got {
                    rhs.push(State::start(rhs_node, b, now));
                }
            }
            State::Or { insts, done } => {
                if *done {
                    return;
                }
                let before = out.len();
                for i in insts.iter_mut() {
                    i.on_time(now, out);
                    if out.len() > before {
                        out.truncate(before + 1);
                        *done = true;
                        insts.clear();
                        return;
                    }
                }
            }
            State::And { parts, base, done } => {
                if *done {
                    return;
                }
                for (s, got, _) in parts.iter_mut() {
                    if got.is_none() {
                        let mut o = Vec::new();
                        s.on_time(now, &mut o);
                        if let Some(b) = o.into_iter().next() {
                            *got = Some(b);
                        }
                    }
                }
                and_complete(parts, base, done, out);
            }
            State::Every { node, base, insts } => {
                every_step(node, base, insts, now, out, &mut |i, o| i.on_time(now, o));
            }
            State::EveryDistinct {
                node,
                base,
                insts,
                seen,
            } => {
                let mut got = Vec::new();
                let PNode::EveryDistinct { child, .. } = node.as_ref() else {
                    return;
                };
                every_step(child, base, insts, now, &mut got, &mut |i, o| {
                    i.on_time(now, o)
                });
                distinct_pass(node, seen, now, got, out);
            }
            State::Repeat { .. } => self.repeat_step(now, out, &mut |i, o| i.on_time(now, o)),
            State::Not { inner, tripped } => {
                let mut o = Vec::new();
                inner.on_time(now, &mut o);
                if !o.is_empty() {
                    *tripped = true;
                }
            }
            State::Within {
                inner,
                deadline,
                expired,
            } => {
                if now >= *deadline {
                    *expired = true;
                    return;
                }
                inner.on_time(now, out);
            }
            State::Interval { at, base, done } => {
                if !*done && now >= *at {
                    *done = true;
                    out.push(base.clone());
                }
            }
        }
    }

    /// The next time `on_time` has something to do.
    pub(crate) fn next_deadline(&self) -> Option<i64> {
        let min = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, None) => x,
            (None, y) => y,
        };
        match self {
            State::Filter { .. } => None,
            State::FollowedBy { lhs, rhs, .. } => rhs
                .iter()
                .fold(lhs.next_deadline(), |m, r| min(m, r.next_deadline())),
            State::Or { insts, .. }
            | State::Every { insts, .. }
            | State::EveryDistinct { insts, .. } => {
                insts.iter().fold(None, |m, r| min(m, r.next_deadline()))
            }
            State::Repeat {
                child, until, done, ..
            } => {
                if *done {
                    None
                } else {
                    min(
                        child.as_ref().and_then(|c| c.next_deadline()),
                        until.as_ref().and_then(|u| u.next_deadline()),
                    )
                }
            }
            State::And { parts, .. } => parts
                .iter()
                .filter(|p| p.1.is_none())
                .fold(None, |m, p| min(m, p.0.next_deadline())),
            State::Not { inner, .. } => inner.next_deadline(),
            State::Within {
                inner,
                deadline,
                expired,
            } => {
                if *expired {
                    None
                } else {
                    min(Some(*deadline), inner.next_deadline())
                }
            }
            State::Interval { at, done, .. } => (!*done).then_some(*at),
        }
    }
}

/// One step of `every`: feeds each instance, and starts a new one when an
/// instance turned true or became permanently false (the manual: every
/// restarts its sub-expression when it evaluates to true or false).
fn every_step(
    child: &Arc<PNode>,
    base: &Binding,
    insts: &mut Vec<State>,
    now: i64,
    out: &mut Vec<Binding>,
    feed: &mut dyn FnMut(&mut State, &mut Vec<Binding>),
) {
    let mut restart = false;
    for i in insts.iter_mut() {
        let before = out.len();
        feed(i, out);
        restart |= out.len() > before || i.dead();
    }
    insts.retain(|i| !i.dead());
    if restart {
        insts.push(State::start(child, base.clone(), now));
    }
}

/// `every-distinct`: passes a match only when its distinct values were not
/// seen (within the expiry period, when there is one).
fn distinct_pass(
    node: &PNode,
    seen: &mut HashMap<Vec<Value>, i64>,
    now: i64,
    got: Vec<Binding>,
    out: &mut Vec<Binding>,
) {
    let PNode::EveryDistinct { keys, expiry, .. } = node else {
        return;
    };
    if let Some(ms) = expiry {
        seen.retain(|_, at| now < *at + ms);
    }
    for b in got {
        let key: Vec<Value> = keys.iter().map(|k| k.eval(&Ctx::row(&b))).collect();
        if seen.contains_key(&key) {
            continue;
        }
        seen.insert(key, now);
        out.push(b);
    }
}

impl State {
    /// One step of a match-until: the repeated sub-expression first, then
    /// the until sub-expression.
    fn repeat_step(
        &mut self,
        now: i64,
        out: &mut Vec<Binding>,
        feed: &mut dyn FnMut(&mut State, &mut Vec<Binding>),
    ) {
        let State::Repeat {
            node,
            base,
            child,
            until,
            collected,
            count,
            done,
        } = self
        else {
            return;
        };
        if *done {
            return;
        }
        let PNode::Repeat {
            child: child_node,
            min,
            max,
            repeated,
            ..
        } = node.as_ref()
        else {
            return;
        };
        let finish = |base: &Binding, extra: Option<&Binding>, collected: &[Vec<Arc<Event>>]| {
            let mut b = base.clone();
            if let Some(x) = extra {
                merge(&mut b, x);
            }
            for (k, &slot) in repeated.iter().enumerate() {
                if !collected[k].is_empty() {
                    b[slot] = repeated_event(&collected[k]);
                }
            }
            b
        };
        if let Some(c) = child {
            let mut got = Vec::new();
            feed(c, &mut got);
            if let Some(b) = got.into_iter().next() {
                for (k, &slot) in repeated.iter().enumerate() {
                    if !Arc::ptr_eq(&b[slot], unbound()) {
                        collected[k].push(b[slot].clone());
                    }
                }
                *count += 1;
                if max.is_some_and(|m| *count >= m) {
                    *done = true;
                    out.push(finish(base, None, collected));
                    return;
                }
                **c = State::start(child_node, base.clone(), now);
            } else if c.dead() {
                // The repeated part can never match again: the whole is false.
                *done = true;
                return;
            }
        }
        if let Some(u) = until {
            let mut got = Vec::new();
            feed(u, &mut got);
            if let Some(b) = got.into_iter().next() {
                *done = true;
                if *count >= *min {
                    out.push(finish(base, Some(&b), collected));
                }
            } else if u.dead() {
                *done = true;
            }
        }
    }
}

fn merge(b: &mut Binding, from: &Binding) {
    for (slot, ev) in from.iter().enumerate() {
        if !Arc::ptr_eq(ev, unbound()) {
            b[slot] = ev.clone();
        }
    }
}

fn and_complete(
    parts: &mut [(State, Option<Binding>, bool)],
    base: &Binding,
    done: &mut bool,
    out: &mut Vec<Binding>,
) {
    if parts
        .iter()
        .all(|(_, got, is_not)| *is_not || got.is_some())
    {
        let mut b = base.clone();
        for (_, got, _) in parts.iter() {
            if let Some(g) = got {
                for (slot, ev) in g.iter().enumerate() {
                    if !Arc::ptr_eq(ev, unbound()) {
                        b[slot] = ev.clone();
                    }
                }
            }
        }
        *done = true;
        out.push(b);
    }
}
