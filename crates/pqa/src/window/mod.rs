//! Data windows: what a stream retains, and which events enter (insert
//! stream) and leave (remove stream) on each arrival or clock tick. One file
//! per window kind.

mod expr;
mod expr_batch;
mod ext_timed;
mod first;
mod groupwin;
mod keepall;
mod lastevent;
mod length;
mod length_batch;
mod none;
mod time;
mod time_batch;
mod unique;

use std::sync::Arc;

use crate::error::{PqaError, Result};
use crate::expr::CExpr;
use crate::parser::ast::{Expr, View, ViewArg};
use crate::stream::Event;

pub(crate) use expr::{BUILTINS as EXPR_BUILTINS, ExprWindow};
pub(crate) use expr_batch::ExprBatch;
pub(crate) use ext_timed::ExtTimed;
pub(crate) use first::{FirstLength, FirstTime, FirstUnique};
pub(crate) use groupwin::GroupWin;
pub(crate) use keepall::KeepAll;
pub(crate) use lastevent::LastEvent;
pub(crate) use length::Length;
pub(crate) use length_batch::LengthBatch;
pub(crate) use none::NoWindow;
pub(crate) use time::Time;
pub(crate) use time_batch::TimeBatch;
pub(crate) use unique::Unique;

/// Events entering and leaving a window in one update.
#[derive(Debug, Default)]
pub(crate) struct Delta {
    pub(crate) new: Vec<Arc<Event>>,
    pub(crate) old: Vec<Arc<Event>>,
}

impl Delta {
    pub(crate) fn clear(&mut self) {
        self.new.clear();
        self.old.clear();
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.new.is_empty() && self.old.is_empty()
    }
}

/// What a kernel needs to know of a window (see `crate::kernel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    None,
    Length(usize),
    Time(i64),
    /// A window kernels do not reproduce.
    Other,
}

/// A data window.
pub(crate) trait Window: Send + std::fmt::Debug {
    /// The window's kind and size, for kernels.
    fn shape(&self) -> Shape {
        Shape::Other
    }
    /// An event arrives at `now` (the clock was already advanced to `now`).
    fn insert(&mut self, ev: Arc<Event>, now: i64, out: &mut Delta);
    /// The clock reaches `now`: expire or release what is due.
    fn advance(&mut self, _now: i64, _out: &mut Delta) {}
    /// When `advance` next has something to do.
    fn next_deadline(&self) -> Option<i64> {
        None
    }
    /// The retained events, for joins.
    fn for_each(&self, f: &mut dyn FnMut(&Arc<Event>));
}

/// A compiled view chain, instantiated once per statement input or, under
/// `std:groupwin`, once per group.
#[derive(Debug, Clone)]
pub(crate) enum WindowSpec {
    None,
    Time(i64),
    Length(usize),
    TimeBatch(i64),
    LengthBatch(usize),
    KeepAll,
    LastEvent,
    Unique(Vec<CExpr>),
    FirstUnique(Vec<CExpr>),
    FirstLength(usize),
    FirstTime {
        until: i64,
    },
    ExtTimed {
        timestamp: CExpr,
        ms: i64,
    },
    GroupWin {
        keys: Vec<CExpr>,
        inner: Box<WindowSpec>,
    },
    Expr(CExpr),
    /// `win:expr_batch(expr, include_triggering_event)`.
    ExprBatch(CExpr, bool),
}

/// How a view's expression argument is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArgKind {
    /// Against the stream's event.
    Plain,
    /// `win:expr`'s expiry expression: event slots `oldest_event` (also the
    /// unqualified names) and `newest_event`, and [`EXPR_BUILTINS`] read as
    /// the group keys of the evaluation context.
    Expiry,
    /// `win:expr_batch`'s expression: the arriving event (the unqualified
    /// names), `oldest_event`, `newest_event` and [`EXPR_BUILTINS`].
    BatchExpiry,
}

impl WindowSpec {
    pub(crate) fn instantiate(&self) -> Box<dyn Window> {
        match self {
            WindowSpec::None => Box::new(NoWindow),
            WindowSpec::Time(ms) => Box::new(Time::new(*ms)),
            WindowSpec::Length(n) => Box::new(Length::new(*n)),
            WindowSpec::TimeBatch(ms) => Box::new(TimeBatch::new(*ms)),
            WindowSpec::LengthBatch(n) => Box::new(LengthBatch::new(*n)),
            WindowSpec::KeepAll => Box::new(KeepAll::default()),
            WindowSpec::LastEvent => Box::new(LastEvent::default()),
            WindowSpec::Unique(keys) => Box::new(Unique::new(keys.clone())),
            WindowSpec::FirstUnique(keys) => Box::new(FirstUnique::new(keys.clone())),
            WindowSpec::FirstLength(n) => Box::new(FirstLength::new(*n)),
            WindowSpec::FirstTime { until } => Box::new(FirstTime::new(*until)),
            WindowSpec::ExtTimed { timestamp, ms } => {
                Box::new(ExtTimed::new(timestamp.clone(), *ms))
            }
            WindowSpec::GroupWin { keys, inner } => {
                Box::new(GroupWin::new(keys.clone(), (**inner).clone()))
            }
            WindowSpec::Expr(e) => Box::new(ExprWindow::new(e.clone())),
            WindowSpec::ExprBatch(e, include) => Box::new(ExprBatch::new(e.clone(), *include)),
        }
    }
}

const SUPPORTED: &str = "supported: win:time, win:length, win:time_batch, win:length_batch, \
     win:keepall, win:firstlength, win:firsttime, win:ext_timed, win:expr, win:expr_batch, std:lastevent, std:unique, \
     std:firstunique, std:groupwin followed by one of those; each also as #name";

/// Compiles a stream's views (`std:groupwin(sym).win:length(3)`, `#time(10)`)
/// into a [`WindowSpec`]. `compile` compiles an expression argument against
/// the stream's events; `now` is the statement's start, where
/// `win:firsttime` begins.
pub(crate) fn compile(
    views: &[View],
    now: i64,
    compile: &mut dyn FnMut(&Expr, ArgKind) -> Result<CExpr>,
) -> Result<WindowSpec> {
    let Some((view, rest)) = views.split_first() else {
        return Ok(WindowSpec::None);
    };
    let name = view.name.name.to_ascii_lowercase();
    let pos = view.name.pos;
    let bad = |m: String| PqaError::Semantic { pos, message: m };
    let ns = view.namespace.as_str();
    let known = |std_ns: &str| ns == std_ns || ns == "#";
    if name == "groupwin" && known("std") {
        if rest.is_empty() {
            return Err(bad(
                "std:groupwin needs a data window after it, such as std:groupwin(sym).win:length(3)"
                    .into(),
            ));
        }
        if rest[0].name.name.eq_ignore_ascii_case("groupwin") {
            return Err(PqaError::Semantic {
                pos: rest[0].name.pos,
                message: "list every grouping field in one std:groupwin(a, b)".into(),
            });
        }
        let keys = fields(&name, &view.args, compile)?;
        let inner = compile_one(&rest[0], now, compile)?;
        if let Some(extra) = rest.get(1) {
            return Err(chained(extra));
        }
        return Ok(WindowSpec::GroupWin {
            keys,
            inner: Box::new(inner),
        });
    }
    if let Some(extra) = rest.first() {
        return Err(chained(extra));
    }
    compile_one(view, now, compile)
}

fn chained(extra: &View) -> PqaError {
    PqaError::Semantic {
        pos: extra.name.pos,
        message: format!(
            "{}:{} cannot follow another data window: only std:groupwin(...) may come before a data window",
            extra.namespace, extra.name.name
        ),
    }
}

fn fields(
    name: &str,
    args: &[ViewArg],
    compile: &mut dyn FnMut(&Expr, ArgKind) -> Result<CExpr>,
) -> Result<Vec<CExpr>> {
    let mut keys = Vec::with_capacity(args.len());
    for a in args {
        match a {
            ViewArg::Expr(e) => keys.push(compile(e, ArgKind::Plain)?),
            ViewArg::Period(_, p) => {
                return Err(PqaError::Semantic {
                    pos: *p,
                    message: format!("{name} takes field names, not a time period"),
                });
            }
        }
    }
    Ok(keys)
}

fn compile_one(
    view: &View,
    now: i64,
    compile: &mut dyn FnMut(&Expr, ArgKind) -> Result<CExpr>,
) -> Result<WindowSpec> {
    let name = view.name.name.to_ascii_lowercase();
    let pos = view.name.pos;
    let bad = |m: String| PqaError::Semantic { pos, message: m };
    let period = |args: &[ViewArg]| -> Result<i64> {
        match args {
            [ViewArg::Period(ms, _)] => Ok(*ms),
            [ViewArg::Expr(Expr::Lit(v, _))] => match v.as_f64() {
                // A bare number of seconds, as Esper allows.
                Some(s) if s > 0.0 => Ok((s * 1000.0).round() as i64),
                _ => Err(bad(format!(
                    "{name} needs a positive time period such as 20 sec"
                ))),
            },
            _ => Err(bad(format!("{name} needs one time period such as 20 sec"))),
        }
    };
    let count = |args: &[ViewArg]| -> Result<usize> {
        match args {
            [ViewArg::Expr(Expr::Lit(crate::value::Value::Int(n), _))] if *n > 0 => Ok(*n as usize),
            _ => Err(bad(format!(
                "{name} needs one positive whole number of events"
            ))),
        }
    };
    let ns = view.namespace.as_str();
    let win = ns == "win" || ns == "#";
    let std = ns == "std" || ns == "#";
    Ok(match name.as_str() {
        "time" if win => WindowSpec::Time(period(&view.args)?),
        "length" if win => WindowSpec::Length(count(&view.args)?),
        "time_batch" if win => WindowSpec::TimeBatch(period(&view.args)?),
        "length_batch" if win => WindowSpec::LengthBatch(count(&view.args)?),
        "keepall" if win => WindowSpec::KeepAll,
        "firstlength" if win => WindowSpec::FirstLength(count(&view.args)?),
        "firsttime" if win => WindowSpec::FirstTime {
            until: now.saturating_add(period(&view.args)?),
        },
        "ext_timed" | "exttimed" if win => match view.args.as_slice() {
            [ViewArg::Expr(timestamp), rest @ ..] if rest.len() == 1 => WindowSpec::ExtTimed {
                timestamp: compile(timestamp, ArgKind::Plain)?,
                ms: period(rest)?,
            },
            _ => {
                return Err(bad(
                    "ext_timed needs a timestamp field and a time period, such as win:ext_timed(ts, 10 sec)"
                        .into(),
                ));
            }
        },
        "expr" if win => match view.args.as_slice() {
            [ViewArg::Expr(e)] => WindowSpec::Expr(compile(e, ArgKind::Expiry)?),
            _ => {
                return Err(bad(format!(
                    "expr needs one expiry expression, such as win:expr(oldest_timestamp > newest_timestamp - 2000); it may use the event's properties, oldest_event.x, newest_event.x and {}",
                    EXPR_BUILTINS.join(", ")
                )));
            }
        },
        "expr_batch" if win => {
            let (e, include) = match view.args.as_slice() {
                [ViewArg::Expr(e)] => (e, true),
                [
                    ViewArg::Expr(e),
                    ViewArg::Expr(Expr::Lit(crate::value::Value::Bool(b), _)),
                ] => (e, *b),
                _ => {
                    return Err(bad(format!(
                        "expr_batch needs an expression and optionally include_triggering_event (true or false), such as win:expr_batch(current_count >= 3); it may use the event's properties, oldest_event.x, newest_event.x and {}",
                        EXPR_BUILTINS.join(", ")
                    )));
                }
            };
            WindowSpec::ExprBatch(compile(e, ArgKind::BatchExpiry)?, include)
        }
        "lastevent" if std => WindowSpec::LastEvent,
        "unique" | "firstunique" if std => {
            if view.args.is_empty() {
                return Err(bad(format!("{name} needs at least one field")));
            }
            let keys = fields(&name, &view.args, compile)?;
            if name == "unique" {
                WindowSpec::Unique(keys)
            } else {
                WindowSpec::FirstUnique(keys)
            }
        }
        _ => {
            return Err(bad(format!(
                "unknown view {}:{} ({SUPPORTED})",
                view.namespace, view.name.name
            )));
        }
    })
}
