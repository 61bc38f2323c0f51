//! Streams: per-stream learned schema, typed events and bad-input counters.
//!
//! A stream's schema only grows: a field keeps its index forever, so a
//! compiled statement resolves `memutil` to a slot once and events built
//! before a field was learned simply read it as null.

use std::collections::HashMap;
use std::sync::Arc;

use crate::batch::{EventBatch, Symbols};
use crate::value::{Kind, Value};

/// An immutable snapshot of a stream's field names; a new snapshot is made
/// whenever a field is learned, older events keep the (prefix) snapshot they
/// were built with.
#[derive(Debug, Default)]
pub struct Schema {
    /// Field names by index.
    pub names: Vec<Arc<str>>,
}

/// One typed event of a stream.
#[derive(Debug)]
pub struct Event {
    /// Event time in milliseconds since the epoch (or since the manual clock's zero).
    pub ts: i64,
    pub(crate) schema: Arc<Schema>,
    pub(crate) values: Box<[Value]>,
}

static NULL: Value = Value::Null;

impl Event {
    /// An event with no fields: stands for an unbound pattern tag.
    pub(crate) fn empty() -> Arc<Event> {
        Arc::new(Event {
            ts: 0,
            schema: Arc::new(Schema::default()),
            values: Box::new([]),
        })
    }

    /// The value at a field index (null when the event predates the field).
    #[inline]
    pub fn get(&self, idx: usize) -> &Value {
        self.values.get(idx).unwrap_or(&NULL)
    }

    /// The event as a JSON object (null fields left out).
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (name, v) in self.schema.names.iter().zip(self.values.iter()) {
            if !v.is_null() {
                m.insert(name.to_string(), v.to_json());
            }
        }
        serde_json::Value::Object(m)
    }

    /// Field name/value pairs (null fields left out), for `select *`.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&Arc<str>, &Value)> {
        self.schema
            .names
            .iter()
            .zip(self.values.iter())
            .filter(|(_, v)| !v.is_null())
    }
}

/// Why an event was refused or skipped.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct StreamStats {
    /// Events accepted into the stream.
    pub events: u64,
    /// Events refused because a field had another kind than learned/declared.
    pub wrong_type: u64,
    /// Events skipped by at least one statement because a field it reads was missing.
    pub missing_field: u64,
    /// Inputs that were not JSON objects.
    pub not_object: u64,
    /// The last problem seen, for operators.
    pub last_error: Option<String>,
}

/// One stream's learned schema and counters.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) name: Arc<str>,
    pub(crate) schema: Arc<Schema>,
    index: HashMap<Arc<str>, usize>,
    pub(crate) kinds: Vec<Option<Kind>>,
    /// True once `create schema` declared it: kinds are then fixed.
    pub(crate) declared: bool,
    pub(crate) stats: StreamStats,
    /// Interned strings, for batches and kernels.
    pub(crate) symbols: Symbols,
}

impl StreamState {
    pub(crate) fn new(name: &str) -> Self {
        StreamState {
            name: Arc::from(name),
            schema: Arc::new(Schema::default()),
            index: HashMap::new(),
            kinds: Vec::new(),
            declared: false,
            stats: StreamStats::default(),
            symbols: Symbols::default(),
        }
    }

    /// The index of a field, learning it (kind unknown) if new.
    pub(crate) fn field(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.kinds.len();
        let name: Arc<str> = Arc::from(name);
        self.index.insert(name.clone(), i);
        self.kinds.push(None);
        let mut names = self.schema.names.clone();
        names.push(name);
        self.schema = Arc::new(Schema { names });
        i
    }

    pub(crate) fn declare(&mut self, name: &str, kind: Kind) {
        let i = self.field(name);
        self.kinds[i] = Some(kind);
    }

    /// Builds a typed event from a JSON object, learning new fields. Returns an
    /// error message (and counts it) when a field has the wrong kind.
    pub(crate) fn event_from_json(
        &mut self,
        obj: &serde_json::Map<String, serde_json::Value>,
        ts: i64,
    ) -> Result<Arc<Event>, String> {
        let mut values: Vec<Value> = vec![Value::Null; self.kinds.len()];
        for (k, v) in obj {
            let val = Value::from_json(v);
            let i = self.field(k);
            if i >= values.len() {
                values.resize(i + 1, Value::Null);
            }
            if let Some(kind) = val.kind() {
                match self.kinds[i] {
                    None => self.kinds[i] = Some(kind),
                    Some(k0) if k0 == kind => {}
                    Some(k0) => {
                        let msg = format!("field {k} is {kind:?}, expected {k0:?}");
                        self.stats.wrong_type += 1;
                        self.stats.last_error = Some(msg.clone());
                        return Err(msg);
                    }
                }
            }
            values[i] = val;
        }
        self.stats.events += 1;
        Ok(Arc::new(Event {
            ts,
            schema: self.schema.clone(),
            values: values.into_boxed_slice(),
        }))
    }

    /// Builds an event from already-typed columns (insert-into, benchmarks).
    pub(crate) fn event_from_values(
        &mut self,
        cols: &[(Arc<str>, Value)],
        ts: i64,
    ) -> Result<Arc<Event>, String> {
        let mut values: Vec<Value> = vec![Value::Null; self.kinds.len()];
        for (k, v) in cols {
            let i = self.field(k);
            if i >= values.len() {
                values.resize(i + 1, Value::Null);
            }
            if let Some(kind) = v.kind() {
                match self.kinds[i] {
                    None => self.kinds[i] = Some(kind),
                    Some(k0) if k0 == kind => {}
                    Some(k0) => {
                        let msg = format!("field {k} is {kind:?}, expected {k0:?}");
                        self.stats.wrong_type += 1;
                        self.stats.last_error = Some(msg.clone());
                        return Err(msg);
                    }
                }
            }
            values[i] = v.clone();
        }
        self.stats.events += 1;
        Ok(Arc::new(Event {
            ts,
            schema: self.schema.clone(),
            values: values.into_boxed_slice(),
        }))
    }
}

impl StreamState {
    /// Type-checks one JSON object into (field index, value) pairs, learning
    /// new fields; counts and returns the problem when a kind is wrong.
    pub(crate) fn check_json(
        &mut self,
        obj: &serde_json::Map<String, serde_json::Value>,
        row: &mut Vec<(usize, Value)>,
    ) -> Result<(), String> {
        row.clear();
        for (k, v) in obj {
            let val = Value::from_json(v);
            let i = self.field(k);
            if let Some(kind) = val.kind() {
                match self.kinds[i] {
                    None => self.kinds[i] = Some(kind),
                    Some(k0) if k0 == kind => {}
                    Some(k0) => {
                        let msg = format!("field {k} is {kind:?}, expected {k0:?}");
                        self.stats.wrong_type += 1;
                        self.stats.last_error = Some(msg.clone());
                        return Err(msg);
                    }
                }
            }
            row.push((i, val));
        }
        self.stats.events += 1;
        Ok(())
    }

    /// Appends a checked row to a batch of this stream.
    pub(crate) fn append(
        &mut self,
        batch: &mut EventBatch,
        ts: i64,
        row: &mut Vec<(usize, Value)>,
    ) {
        batch.push_row(ts, row, &mut self.symbols);
        batch.schema = self.schema.clone();
    }

    pub(crate) fn has_field(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The names of the fields declared or learned so far.
    pub(crate) fn field_names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(|k| &**k)
    }
}
