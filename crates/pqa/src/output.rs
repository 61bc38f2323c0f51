//! Output rate limiting: `output [after ...] [all|first|last|snapshot]
//! every N events | <period> | at (<crontab>) | when <expr> | when terminated`,
//! as Esper defines it.
//!
//! - A time interval starts with the first update that reaches the result
//!   set processor, not with the statement: Esper starts its output timer
//!   then (only statements over tables start it at creation). Output is due
//!   at that time plus each multiple of the period, whether or not rows came.
//! - No keyword: every row of the interval, in order. `all` is the same,
//!   except for a fully aggregated grouped statement, which outputs each
//!   group once: the last row of every group updated in the interval (its
//!   remove-stream row the group's first one), and the current row of every
//!   other group as both insert and remove row.
//! - `last`: the last row (per group when grouped); a fully aggregated
//!   statement's remove-stream row is the first of the interval (the value
//!   the interval started from).
//! - `first`: the first row (per group when grouped) goes out at once; the
//!   rest of the interval is suppressed.
//! - `snapshot`: the whole current result at each interval end.
//! - `after`: nothing goes out until the period since the statement started
//!   has passed, or until more than N events arrived.
//! - `when <expr>`: after every update the trigger expression is evaluated
//!   over Esper's built-in properties: `count_insert` / `count_remove`
//!   (rows entering / leaving since the last output), `count_insert_total` /
//!   `count_remove_total` (since the statement started) and
//!   `last_output_timestamp` (the last output's time, at first the
//!   statement's start). When it is true the held rows go out and the two
//!   interval counts restart at 0. It is not evaluated on clock ticks (Esper
//!   re-evaluates then only for variables, which this engine does not have).
//!
//! - `at (minutes, hours, days of month, months, days of week [, seconds])`:
//!   like a time interval, the schedule starts with the first update; output
//!   is due at the first time after it that the crontab matches, then at each
//!   next match after the last output (Esper's crontab output condition
//!   reschedules itself after each output, rows or not).
//! - `when terminated [and <expr>]` / `... and when terminated`: output when
//!   the statement's context partition ends. Esper outputs then only when a
//!   context partition ends, never when the statement is stopped or
//!   destroyed; this engine has no `create context`, so a statement's single
//!   partition never ends: `output when terminated` never outputs (its rows
//!   are dropped rather than held forever) and `... and when terminated`
//!   leaves the other condition as it is. The `and` expression is checked
//!   at registration as Esper checks it (built-in properties only, and only
//!   after `output when` or a bare `when terminated`).
//!
//! Distinct, order by and limit apply to each batch that goes out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::{PqaError, Result};
use crate::expr::{CExpr, Compiler, Ctx, Slot, Streams};
use crate::parser::ast::{Expr, OutputClause, OutputEvery, OutputKind};
use crate::pattern::next_occurrence;
use crate::processor::{OutRow, Processor, Row, Update};
use crate::stream::{Event, Schema};
use crate::value::{Kind, Value};

/// The built-in properties of an output trigger expression, in field order.
const TRIGGER_PROPS: [&str; 5] = [
    "count_insert",
    "count_remove",
    "count_insert_total",
    "count_remove_total",
    "last_output_timestamp",
];

/// A compiled `output when` trigger and its counters.
#[derive(Debug)]
struct Trigger {
    expr: CExpr,
    schema: Arc<Schema>,
    count_insert: i64,
    count_remove: i64,
    count_insert_total: i64,
    count_remove_total: i64,
    last_output: i64,
}

impl Trigger {
    fn compile(e: &Expr, now: i64) -> Result<Trigger> {
        let mut unknown = None;
        e.walk(&mut |x| {
            if let Expr::Field { qualifier, name } = x
                && (qualifier.is_some() || !TRIGGER_PROPS.contains(&name.name.as_str()))
                && unknown.is_none()
            {
                unknown = Some((x.pos(), x.to_string()));
            }
        });
        if let Some((pos, name)) = unknown {
            return Err(PqaError::Semantic {
                pos,
                message: format!(
                    "output when: unknown property '{name}'; the trigger expression may use {}",
                    TRIGGER_PROPS.join(", ")
                ),
            });
        }
        let mut streams = Streams::default();
        let id = streams.id("output");
        for name in TRIGGER_PROPS {
            streams.list[id].declare(name, Kind::Number);
        }
        streams.list[id].declared = true;
        let schema = streams.list[id].schema.clone();
        let mut c = Compiler::new(
            &mut streams,
            vec![Slot {
                names: vec!["output".into()],
                stream: id,
                repeated: false,
            }],
        );
        let expr = c.compile(e)?;
        Ok(Trigger {
            expr,
            schema,
            count_insert: 0,
            count_remove: 0,
            count_insert_total: 0,
            count_remove_total: 0,
            last_output: now,
        })
    }

    /// Counts an update and says whether the trigger fires.
    fn fires(&mut self, fed_new: u64, fed_old: u64) -> bool {
        self.count_insert += fed_new as i64;
        self.count_remove += fed_old as i64;
        self.count_insert_total += fed_new as i64;
        self.count_remove_total += fed_old as i64;
        let ev = Arc::new(Event {
            ts: self.last_output,
            schema: self.schema.clone(),
            values: Box::new([
                Value::Int(self.count_insert),
                Value::Int(self.count_remove),
                Value::Int(self.count_insert_total),
                Value::Int(self.count_remove_total),
                Value::Int(self.last_output),
            ]),
        });
        self.expr.test(&Ctx::row(std::slice::from_ref(&ev)))
    }

    fn reset(&mut self, now: i64) {
        self.count_insert = 0;
        self.count_remove = 0;
        self.last_output = now;
    }
}

type Key = Box<[Value]>;

/// The last insert row and first remove row of one group in an interval.
#[derive(Debug, Default)]
struct Held {
    new: Option<OutRow>,
    old: Option<OutRow>,
}

#[derive(Debug)]
pub(crate) struct OutputLimiter {
    clause: OutputClause,
    trigger: Option<Trigger>,
    /// A bare `output when terminated`: nothing ever goes out (see above).
    never: bool,
    /// Rows carry group keys: first/last/all work per group.
    grouped: bool,
    /// Fully aggregated: `all` outputs every group, `last` keeps the first remove row.
    per_group_rows: bool,
    started_at: i64,
    after_open: bool,
    after_seen: u64,
    /// The interval or schedule started (with the first update).
    started: bool,
    next_at: Option<i64>,
    counted: u64,
    new: Vec<OutRow>,
    old: Vec<OutRow>,
    first_done: bool,
    first_groups: HashSet<Key>,
    held: Vec<(Key, Held)>,
    held_at: HashMap<Key, usize>,
}

/// Where the statement's current result comes from (for `snapshot`, and
/// the untouched groups of a grouped `all`).
pub(crate) type Snapshot<'a> = &'a mut dyn FnMut(&mut Vec<OutRow>);

impl OutputLimiter {
    pub(crate) fn new(clause: OutputClause, p: &Processor, now: i64) -> Result<Self> {
        let trigger = clause
            .when
            .as_deref()
            .map(|e| Trigger::compile(e, now))
            .transpose()?;
        if let Some(e) = clause.terminated_and.as_deref() {
            if clause.every.is_some() {
                return Err(PqaError::Semantic {
                    pos: e.pos(),
                    message: "output: a 'when terminated and' expression needs 'output when' (not 'every' or 'at')".into(),
                });
            }
            // Checked as the trigger expression is, then never evaluated:
            // no partition ends (see above).
            Trigger::compile(e, now)?;
        }
        Ok(OutputLimiter {
            trigger,
            never: clause.terminated && clause.every.is_none() && clause.when.is_none(),
            after_open: clause.after.is_none(),
            clause,
            grouped: p.grouped(),
            per_group_rows: p.aggregated_per_group(),
            started_at: now,
            after_seen: 0,
            started: false,
            next_at: None,
            counted: 0,
            new: Vec::new(),
            old: Vec::new(),
            first_done: false,
            first_groups: HashSet::new(),
            held: Vec::new(),
            held_at: HashMap::new(),
        })
    }

    /// Whether rows must carry group keys.
    pub(crate) fn needs_groups(clause: &OutputClause) -> bool {
        matches!(
            clause.kind,
            OutputKind::First | OutputKind::Last | OutputKind::All
        )
    }

    /// The rows of one update; what goes out now is appended to `new`/`old`.
    pub(crate) fn offer(
        &mut self,
        up: &mut Update,
        now: i64,
        p: &Processor,
        new: &mut Vec<Row>,
        old: &mut Vec<Row>,
        snap: Snapshot<'_>,
    ) {
        let (fed_new, fed_old) = (up.fed_new, up.fed_old);
        if fed_new + fed_old == 0 && up.new.is_empty() && up.old.is_empty() {
            return;
        }
        if self.never {
            up.clear();
            return;
        }
        if !self.after_open {
            let open = match self.clause.after {
                Some(OutputEvery::Time(ms)) => now >= self.started_at + ms,
                Some(OutputEvery::Events(n)) => {
                    self.after_seen += fed_new;
                    self.after_seen > n
                }
                // `after` takes a period or a count, never a schedule.
                None | Some(OutputEvery::At(_)) => true,
            };
            if !open {
                up.clear();
                return;
            }
            self.after_open = true;
        }
        let Some(every) = self
            .clause
            .every
            .or(self.trigger.as_ref().map(|_| OutputEvery::Events(0)))
        else {
            // A bare `output after`: once open, rows go out as they come.
            self.emit(p, &mut up.new, &mut up.old, new, old);
            up.clear();
            return;
        };
        if !self.started {
            self.started = true;
            match every {
                OutputEvery::Time(ms) => self.next_at = Some(now + ms),
                // `None` for a schedule that never matches (February 30th):
                // the rows are held, as Esper holds them.
                OutputEvery::At(spec) => self.next_at = next_occurrence(&spec, now),
                OutputEvery::Events(_) => {}
            }
        }
        match self.clause.kind {
            OutputKind::First => self.first(up, p, new, old),
            OutputKind::Snapshot => up.clear(),
            OutputKind::Last | OutputKind::All if self.grouped => self.hold_per_group(up),
            OutputKind::Last => {
                if let Some(r) = up.new.pop() {
                    self.new.clear();
                    self.new.push(r);
                }
                if self.per_group_rows {
                    if self.old.is_empty() && !up.old.is_empty() {
                        self.old.push(up.old.swap_remove(0));
                    }
                } else if let Some(r) = up.old.pop() {
                    self.old.clear();
                    self.old.push(r);
                }
                up.clear();
            }
            OutputKind::Default | OutputKind::All => {
                self.new.append(&mut up.new);
                self.old.append(&mut up.old);
            }
        }
        if let Some(t) = &mut self.trigger {
            if t.fires(fed_new, fed_old) {
                t.reset(now);
                self.release(p, new, old, snap);
            }
        } else if let OutputEvery::Events(n) = every {
            // Counted before the rows were taken: `last` empties `up`.
            self.counted += fed_new;
            if self.counted >= n {
                self.counted = 0;
                self.release(p, new, old, snap);
            }
        }
        up.clear();
    }

    fn first(&mut self, up: &mut Update, p: &Processor, new: &mut Vec<Row>, old: &mut Vec<Row>) {
        if !self.grouped {
            let has_rows = !up.new.is_empty() || !up.old.is_empty();
            if !self.first_done && has_rows {
                self.first_done = true;
                self.emit(p, &mut up.new, &mut up.old, new, old);
            }
            return;
        }
        let mut out_new = Vec::new();
        let mut released: HashSet<Key> = HashSet::new();
        for r in up.new.drain(..) {
            let Some(g) = &r.group else { continue };
            if !self.first_groups.contains(g) {
                self.first_groups.insert(g.clone());
                released.insert(g.clone());
                out_new.push(r);
            }
        }
        let mut out_old: Vec<OutRow> = up
            .old
            .drain(..)
            .filter(|r| r.group.as_ref().is_some_and(|g| released.contains(g)))
            .collect();
        self.emit(p, &mut out_new, &mut out_old, new, old);
    }

    fn hold_per_group(&mut self, up: &mut Update) {
        for r in up.old.drain(..) {
            let Some(g) = r.group.clone() else { continue };
            let h = self.held_entry(g);
            if h.old.is_none() {
                h.old = Some(r);
            }
        }
        for r in up.new.drain(..) {
            let Some(g) = r.group.clone() else { continue };
            self.held_entry(g).new = Some(r);
        }
    }

    fn held_entry(&mut self, g: Key) -> &mut Held {
        let i = match self.held_at.get(&g) {
            Some(&i) => i,
            None => {
                self.held.push((g.clone(), Held::default()));
                self.held_at.insert(g, self.held.len() - 1);
                self.held.len() - 1
            }
        };
        &mut self.held[i].1
    }

    fn emit(
        &self,
        p: &Processor,
        rows_new: &mut Vec<OutRow>,
        rows_old: &mut Vec<OutRow>,
        new: &mut Vec<Row>,
        old: &mut Vec<Row>,
    ) {
        if !rows_new.is_empty() {
            p.finalize(rows_new, new);
        }
        if !rows_old.is_empty() {
            p.finalize(rows_old, old);
        }
    }

    /// Every group's held rows, in the order the groups were first seen.
    fn drain_held(&mut self, rows_new: &mut Vec<OutRow>, rows_old: &mut Vec<OutRow>) {
        for (_, h) in self.held.drain(..) {
            rows_new.extend(h.new);
            rows_old.extend(h.old);
        }
        self.held_at.clear();
    }

    /// The interval ends: output what it holds.
    fn release(
        &mut self,
        p: &Processor,
        new: &mut Vec<Row>,
        old: &mut Vec<Row>,
        snap: Snapshot<'_>,
    ) {
        match self.clause.kind {
            OutputKind::First => {
                self.first_done = false;
                self.first_groups.clear();
                return;
            }
            OutputKind::Snapshot => {
                let mut rows = Vec::new();
                snap(&mut rows);
                self.emit(p, &mut rows, &mut Vec::new(), new, old);
                return;
            }
            OutputKind::All if self.grouped && self.per_group_rows => {
                let mut current = Vec::new();
                snap(&mut current);
                let mut rows_new = Vec::new();
                let mut rows_old = Vec::new();
                for r in current {
                    let Some(g) = &r.group else { continue };
                    if let Some(&i) = self.held_at.get(g) {
                        let h = std::mem::take(&mut self.held[i].1);
                        rows_new.extend(h.new);
                        rows_old.extend(h.old);
                    } else {
                        // Not updated this interval: the group stands as it was.
                        rows_old.push(OutRow {
                            row: r.row.clone(),
                            sort: r.sort.clone(),
                            group: None,
                        });
                        rows_new.push(r);
                    }
                }
                // Groups updated and then emptied are reported once more.
                self.drain_held(&mut rows_new, &mut rows_old);
                self.emit(p, &mut rows_new, &mut rows_old, new, old);
                return;
            }
            OutputKind::Last | OutputKind::All if self.grouped => {
                let mut rows_new = Vec::new();
                let mut rows_old = Vec::new();
                self.drain_held(&mut rows_new, &mut rows_old);
                self.emit(p, &mut rows_new, &mut rows_old, new, old);
                return;
            }
            _ => {}
        }
        let (mut n, mut o) = (std::mem::take(&mut self.new), std::mem::take(&mut self.old));
        self.emit(p, &mut n, &mut o, new, old);
        // Keep the buffers' memory for the next interval.
        self.new = n;
        self.old = o;
    }

    /// The clock reached `now`.
    pub(crate) fn on_time(
        &mut self,
        now: i64,
        p: &Processor,
        new: &mut Vec<Row>,
        old: &mut Vec<Row>,
        snap: Snapshot<'_>,
    ) {
        let Some(at) = self.next_at else {
            return;
        };
        if now < at {
            return;
        }
        self.next_at = match self.clause.every {
            Some(OutputEvery::Time(ms)) => {
                let mut next = at;
                while next <= now {
                    next += ms;
                }
                Some(next)
            }
            Some(OutputEvery::At(spec)) => next_occurrence(&spec, now),
            _ => return,
        };
        self.release(p, new, old, snap);
    }

    pub(crate) fn next_deadline(&self) -> Option<i64> {
        self.next_at
    }
}
