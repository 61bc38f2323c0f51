//! Output rate limiting: `output [all|first|last] every N events | <period>`.

use crate::parser::ast::{OutputClause, OutputEvery, OutputKind};
use crate::processor::Row;

#[derive(Debug)]
pub(crate) struct OutputLimiter {
    clause: Option<OutputClause>,
    buf: Vec<Row>,
    next_at: Option<i64>,
}

impl OutputLimiter {
    pub(crate) fn new(clause: Option<OutputClause>, now: i64) -> Self {
        let next_at = match clause {
            Some(OutputClause {
                every: OutputEvery::Time(ms),
                ..
            }) => Some(now + ms),
            _ => None,
        };
        OutputLimiter {
            clause,
            buf: Vec::new(),
            next_at,
        }
    }

    fn release(&mut self, kind: OutputKind) -> Vec<Row> {
        let mut rows = std::mem::take(&mut self.buf);
        match kind {
            OutputKind::All => rows,
            OutputKind::First => {
                rows.truncate(1);
                rows
            }
            OutputKind::Last => rows.pop().into_iter().collect(),
        }
    }

    /// Rows produced by an update; returns what is output now.
    pub(crate) fn offer(&mut self, rows: &mut Vec<Row>) -> Vec<Row> {
        let Some(c) = self.clause else {
            return std::mem::take(rows);
        };
        self.buf.append(rows);
        match c.every {
            OutputEvery::Events(n) if self.buf.len() as u64 >= n => self.release(c.kind),
            _ => Vec::new(),
        }
    }

    /// The clock reached `now`.
    pub(crate) fn on_time(&mut self, now: i64) -> Vec<Row> {
        let (Some(c), Some(at)) = (self.clause, self.next_at) else {
            return Vec::new();
        };
        if now < at {
            return Vec::new();
        }
        if let OutputEvery::Time(ms) = c.every {
            let mut next = at;
            while next <= now {
                next += ms;
            }
            self.next_at = Some(next);
        }
        self.release(c.kind)
    }

    pub(crate) fn next_deadline(&self) -> Option<i64> {
        self.next_at
    }
}
