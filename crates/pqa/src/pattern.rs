//! Pattern matching (`pattern [every a=A -> b=B(b.x > a.x) where timer:within(30 sec)]`).
//!
//! A pattern compiles to a tree of nodes; at run time each node has live
//! *instances* that hold the tags bound so far. Events and clock ticks are
//! fed to the root instance; an instance that turns true hands its bindings
//! up to its parent (`->` starts its right side with them, `every` restarts
//! its child, the root emits a match). Instances that can never turn true
//! again are dropped.

use std::sync::{Arc, OnceLock};

use crate::expr::{CExpr, Ctx};
use crate::stream::Event;

/// Tag slots of one (partial) match; unbound tags hold the shared empty event.
pub(crate) type Binding = Vec<Arc<Event>>;

pub(crate) fn unbound() -> &'static Arc<Event> {
    static EMPTY: OnceLock<Arc<Event>> = OnceLock::new();
    EMPTY.get_or_init(Event::empty)
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
            State::Every { insts, .. } => insts.is_empty(),
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
                let mut restart = false;
                for i in insts.iter_mut() {
                    let before = out.len();
                    i.on_event(stream, ev, now, out);
                    restart |= out.len() > before;
                }
                insts.retain(|i| !i.dead());
                if restart {
                    insts.push(State::start(node, base.clone(), now));
                }
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
                let mut restart = false;
                for i in insts.iter_mut() {
                    let before = out.len();
                    i.on_time(now, out);
                    restart |= out.len() > before;
                }
                insts.retain(|i| !i.dead());
                if restart {
                    insts.push(State::start(node, base.clone(), now));
                }
            }
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
            State::Or { insts, .. } | State::Every { insts, .. } => {
                insts.iter().fold(None, |m, r| min(m, r.next_deadline()))
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
