//! Data windows: what a stream retains, and which events enter (insert
//! stream) and leave (remove stream) on each arrival or clock tick. One file
//! per window kind.

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
use crate::parser::ast::{View, ViewArg};
use crate::stream::Event;

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

/// What the compiler needs to build a window: the view and, for
/// `std:unique`, the compiled key expressions.
pub(crate) fn build(view: Option<&View>, unique_keys: Vec<CExpr>) -> Result<Box<dyn Window>> {
    let Some(view) = view else {
        return Ok(Box::new(NoWindow));
    };
    let name = view.name.name.to_ascii_lowercase();
    let pos = view.name.pos;
    let bad = |m: String| PqaError::Semantic { pos, message: m };
    let period = |args: &[ViewArg]| -> Result<i64> {
        match args {
            [ViewArg::Period(ms, _)] => Ok(*ms),
            [ViewArg::Expr(crate::parser::ast::Expr::Lit(v, _))] => match v.as_f64() {
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
            [ViewArg::Expr(crate::parser::ast::Expr::Lit(crate::value::Value::Int(n), _))]
                if *n > 0 =>
            {
                Ok(*n as usize)
            }
            _ => Err(bad(format!(
                "{name} needs one positive whole number of events"
            ))),
        }
    };
    let ns = view.namespace.as_str();
    Ok(match (ns, name.as_str()) {
        ("win" | "#", "time") => Box::new(Time::new(period(&view.args)?)),
        ("win" | "#", "length") => Box::new(Length::new(count(&view.args)?)),
        ("win" | "#", "time_batch") => Box::new(TimeBatch::new(period(&view.args)?)),
        ("win" | "#", "length_batch") => Box::new(LengthBatch::new(count(&view.args)?)),
        ("win" | "#", "keepall") => Box::new(KeepAll::default()),
        ("std" | "#", "lastevent") => Box::new(LastEvent::default()),
        ("std" | "#", "unique") => {
            if unique_keys.is_empty() {
                return Err(bad("unique needs at least one field".into()));
            }
            Box::new(Unique::new(unique_keys))
        }
        _ => {
            return Err(bad(format!(
                "unknown view {}:{} (supported: win:time, win:length, win:time_batch, win:length_batch, win:keepall, std:lastevent, std:unique, #time, #length...)",
                view.namespace, view.name.name
            )));
        }
    })
}
