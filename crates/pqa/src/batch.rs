//! Typed columnar batches of events of one stream.
//!
//! A batch is what [`crate::Engine::prepare_batch`] makes of many JSON
//! objects (or typed rows) at once: one typed column per field, strings
//! interned into the stream's symbol table. Statements compiled to a
//! [`crate::kernel`] read a row straight from the columns, so pushing a batch
//! allocates nothing per event; other statements get an [`Event`] built
//! from the row, once, when the first of them needs it.

use std::sync::Arc;

use crate::stream::{Event, Schema};
use crate::value::Value;

/// Interned strings of one stream. Symbols are only an accelerator: when
/// the table is full, strings stay plain values.
#[derive(Debug, Default)]
pub(crate) struct Symbols {
    ids: std::collections::HashMap<Arc<str>, u32, ahash::RandomState>,
    strs: Vec<Arc<str>>,
}

/// Beyond this many distinct strings a stream stops interning (a field of
/// unique ids must not grow the table without bound).
const MAX_SYMBOLS: usize = 1 << 20;

impl Symbols {
    /// The symbol of `s`, interning it if there is room.
    pub(crate) fn intern(&mut self, s: &str) -> Option<u32> {
        if let Some(&id) = self.ids.get(s) {
            return Some(id);
        }
        if self.strs.len() >= MAX_SYMBOLS {
            return None;
        }
        let id = self.strs.len() as u32;
        let s: Arc<str> = Arc::from(s);
        self.strs.push(s.clone());
        self.ids.insert(s, id);
        Some(id)
    }

    pub(crate) fn get(&self, id: u32) -> &Arc<str> {
        &self.strs[id as usize]
    }
}

/// A column's values; `valid` of [`Column`] marks nulls in the typed ones.
#[derive(Debug)]
pub(crate) enum ColData {
    /// Every row null (the field is absent in the whole batch).
    Null,
    Int(Vec<i64>),
    Float(Vec<f64>),
    /// Symbols of the stream's [`Symbols`].
    Sym(Vec<u32>),
    /// Anything else (mixed ints and floats, booleans, JSON, un-interned strings).
    Val(Vec<Value>),
}

#[derive(Debug)]
pub(crate) struct Column {
    pub(crate) data: ColData,
    /// `None` when every row has a value.
    pub(crate) valid: Option<Vec<bool>>,
}

impl Column {
    fn null() -> Column {
        Column {
            data: ColData::Null,
            valid: None,
        }
    }

    fn len(&self) -> usize {
        match &self.data {
            ColData::Null => self.valid.as_ref().map_or(0, Vec::len),
            ColData::Int(v) => v.len(),
            ColData::Float(v) => v.len(),
            ColData::Sym(v) => v.len(),
            ColData::Val(v) => v.len(),
        }
    }

    /// Appends a value at row `row` (padding with nulls up to it).
    fn push(&mut self, row: usize, v: Value, symbols: &mut Symbols) {
        self.pad(row);
        if let ColData::Null = self.data {
            // The first value decides the column's type.
            let n = row;
            self.data = match &v {
                Value::Int(_) => ColData::Int(vec![0; n]),
                Value::Float(_) => ColData::Float(vec![0.0; n]),
                Value::Str(_) => ColData::Sym(vec![u32::MAX; n]),
                _ => ColData::Val(vec![Value::Null; n]),
            };
            if n > 0 {
                self.valid = Some(vec![false; n]);
            }
        }
        let fits = match (&mut self.data, &v) {
            (ColData::Int(c), Value::Int(i)) => {
                c.push(*i);
                true
            }
            (ColData::Float(c), Value::Float(f)) => {
                c.push(*f);
                true
            }
            (ColData::Sym(c), Value::Str(s)) => match symbols.intern(s) {
                Some(id) => {
                    c.push(id);
                    true
                }
                None => false,
            },
            (ColData::Val(c), _) => {
                c.push(v.clone());
                true
            }
            _ => false,
        };
        if !fits {
            self.widen_to_values(symbols);
            if let ColData::Val(c) = &mut self.data {
                c.push(v);
            }
        }
        if let Some(valid) = &mut self.valid {
            valid.push(true);
        }
    }

    /// Pads with nulls so that the next push lands at row `row`.
    fn pad(&mut self, row: usize) {
        let len = self.len();
        if len >= row {
            return;
        }
        let missing = row - len;
        let valid = self.valid.get_or_insert_with(|| vec![true; len]);
        valid.resize(row, false);
        match &mut self.data {
            ColData::Null => {}
            ColData::Int(c) => c.resize(c.len() + missing, 0),
            ColData::Float(c) => c.resize(c.len() + missing, 0.0),
            ColData::Sym(c) => c.resize(c.len() + missing, u32::MAX),
            ColData::Val(c) => c.resize(c.len() + missing, Value::Null),
        }
    }

    /// Turns a typed column into plain values (on a type change within the batch).
    fn widen_to_values(&mut self, symbols: &Symbols) {
        let n = self.len();
        let vals: Vec<Value> = (0..n).map(|i| self.value(i, symbols)).collect();
        self.data = ColData::Val(vals);
        self.valid = None;
    }

    #[inline]
    pub(crate) fn is_valid(&self, row: usize) -> bool {
        match &self.valid {
            Some(v) => v.get(row).copied().unwrap_or(false),
            None => !matches!(self.data, ColData::Null) && row < self.len(),
        }
    }

    pub(crate) fn value(&self, row: usize, symbols: &Symbols) -> Value {
        if !self.is_valid(row) {
            return Value::Null;
        }
        match &self.data {
            ColData::Null => Value::Null,
            ColData::Int(c) => Value::Int(c[row]),
            ColData::Float(c) => Value::Float(c[row]),
            ColData::Sym(c) => Value::Str(symbols.get(c[row]).clone()),
            ColData::Val(c) => c[row].clone(),
        }
    }
}

/// Events of one stream in typed columns. Build with
/// [`crate::Engine::prepare_batch`]; push with [`crate::Engine::push_batch`].
#[derive(Debug)]
pub struct EventBatch {
    pub(crate) stream: usize,
    pub(crate) ts: Vec<i64>,
    pub(crate) cols: Vec<Column>,
    pub(crate) schema: Arc<Schema>,
}

impl EventBatch {
    pub(crate) fn new(stream: usize) -> Self {
        EventBatch {
            stream,
            ts: Vec::new(),
            cols: Vec::new(),
            schema: Arc::new(Schema::default()),
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// True when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Appends one event given as (field index, value) pairs already type-checked.
    pub(crate) fn push_row(
        &mut self,
        ts: i64,
        row: &mut Vec<(usize, Value)>,
        symbols: &mut Symbols,
    ) {
        let r = self.ts.len();
        self.ts.push(ts);
        for (idx, v) in row.drain(..) {
            if v.is_null() {
                continue;
            }
            if self.cols.len() <= idx {
                self.cols.resize_with(idx + 1, Column::null);
            }
            self.cols[idx].push(r, v, symbols);
        }
    }

    #[inline]
    pub(crate) fn col(&self, idx: usize) -> Option<&Column> {
        self.cols.get(idx)
    }

    /// Row `row` as an event (for statements without a kernel).
    pub(crate) fn event(&self, row: usize, symbols: &Symbols) -> Arc<Event> {
        let n = self.schema.names.len();
        let values: Box<[Value]> = (0..n)
            .map(|i| match self.cols.get(i) {
                Some(c) => c.value(row, symbols),
                None => Value::Null,
            })
            .collect();
        Arc::new(Event {
            ts: self.ts[row],
            schema: self.schema.clone(),
            values,
        })
    }
}
