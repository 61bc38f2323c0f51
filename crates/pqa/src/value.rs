//! The typed value every event field and expression result is made of.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// One typed value. JSON numbers become `Int` when they are integers that fit
/// an i64, else `Float`; nested objects and arrays are kept as JSON.
#[derive(Debug, Clone, Default)]
pub enum Value {
    /// Absent or JSON null.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Float(f64),
    /// A string.
    Str(Arc<str>),
    /// A nested JSON object or array (or a whole event under `select *` in a join).
    Json(Arc<serde_json::Value>),
}

/// The kind a stream's field was learned (or declared) with. `Int` and `Float`
/// are one kind so that `1` and `1.5` in the same field are not a type error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// true/false.
    Bool,
    /// Any number.
    Number,
    /// A string.
    String,
    /// An object or array.
    Json,
}

impl Value {
    /// The kind of this value, `None` for null.
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Value::Null => None,
            Value::Bool(_) => Some(Kind::Bool),
            Value::Int(_) | Value::Float(_) => Some(Kind::Number),
            Value::Str(_) => Some(Kind::String),
            Value::Json(_) => Some(Kind::Json),
        }
    }

    /// True for null.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Numeric view (ints widen to f64).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// SQL truthiness: only `true` is true (null and non-booleans are not).
    pub fn is_true(&self) -> bool {
        matches!(self, Value::Bool(true))
    }

    /// Converts a JSON value.
    pub fn from_json(v: &serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(Arc::from(s.as_str())),
            other => Value::Json(Arc::new(other.clone())),
        }
    }

    /// Converts to JSON (non-finite floats become null, as JSON has no NaN).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::Json(j) => (**j).clone(),
        }
    }

    /// SQL comparison: `None` when either side is null or the kinds differ.
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                self.as_f64()?.partial_cmp(&other.as_f64()?)
            }
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Json(a), Value::Json(b)) => (a == b).then_some(Ordering::Equal),
            _ => None,
        }
    }

    /// A total order used for sorting and min/max bookkeeping: nulls first,
    /// then booleans, numbers, strings, JSON.
    pub fn total_cmp(&self, other: &Value) -> Ordering {
        fn rank(v: &Value) -> u8 {
            match v {
                Value::Null => 0,
                Value::Bool(_) => 1,
                Value::Int(_) | Value::Float(_) => 2,
                Value::Str(_) => 3,
                Value::Json(_) => 4,
            }
        }
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                let (a, b) = (self.as_f64().unwrap_or(0.0), other.as_f64().unwrap_or(0.0));
                a.total_cmp(&b)
            }
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Json(a), Value::Json(b)) => a.to_string().cmp(&b.to_string()),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

/// Equality as used for group keys, `distinct` and `unique` windows:
/// `1` equals `1.0`, null equals null.
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.total_cmp(other) == Ordering::Equal
    }
}
impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => 0u8.hash(state),
            Value::Bool(b) => {
                1u8.hash(state);
                b.hash(state)
            }
            Value::Int(i) => {
                2u8.hash(state);
                i.hash(state)
            }
            Value::Float(f) => {
                2u8.hash(state);
                // Integral floats hash like the equal Int so 1 == 1.0 holds for keys.
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    (*f as i64).hash(state)
                } else {
                    f.to_bits().hash(state)
                }
            }
            Value::Str(s) => {
                3u8.hash(state);
                s.hash(state)
            }
            Value::Json(j) => {
                4u8.hash(state);
                j.to_string().hash(state)
            }
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(Arc::from(s))
    }
}
