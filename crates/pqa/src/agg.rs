//! Aggregation states that support both adding (insert stream) and removing
//! (remove stream, when events leave a window) values.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::expr::CExpr;
use crate::value::Value;

/// Aggregate functions of the language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggFunc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Stddev,
    First,
    Last,
    /// Mean absolute deviation from the mean.
    Avedev,
    /// The middle value (the mean of the two middle ones for an even count).
    Median,
    /// The first value ever seen: leaving a window does not remove it.
    FirstEver,
    /// The most recent value ever seen.
    LastEver,
    /// Values ever seen, never decremented.
    CountEver,
    /// `nth(x, N)`: the value N events before the newest (0 is the newest).
    Nth,
    /// `window(*)`: every event in the window, oldest first.
    Window,
    /// `rate(timestamp)`: events in the window per second, between the newest
    /// event's timestamp and that of the last event to leave the window.
    Rate,
    /// `rate(N)`: events per second over the last N seconds of arrivals.
    RateEver,
}

impl AggFunc {
    pub(crate) fn from_name(name: &str) -> Option<AggFunc> {
        Some(match name.to_ascii_lowercase().as_str() {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "avg" => AggFunc::Avg,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            "stddev" => AggFunc::Stddev,
            "first" => AggFunc::First,
            "last" => AggFunc::Last,
            "avedev" => AggFunc::Avedev,
            "median" => AggFunc::Median,
            "firstever" => AggFunc::FirstEver,
            "lastever" => AggFunc::LastEver,
            "countever" => AggFunc::CountEver,
            "nth" => AggFunc::Nth,
            "window" => AggFunc::Window,
            "rate" => AggFunc::Rate,
            _ => return None,
        })
    }
}

/// One aggregate of a statement: function, argument (None for `count(*)`).
#[derive(Debug, Clone)]
pub(crate) struct AggSpec {
    pub(crate) func: AggFunc,
    pub(crate) arg: Option<CExpr>,
    pub(crate) distinct: bool,
    /// `nth(x, N)`'s N, `rate(N)`'s N seconds in milliseconds; 0 for every
    /// other function.
    pub(crate) nth: usize,
    /// Position-free text, to share one state between `sum(x)` in select and having.
    pub(crate) key: String,
}

/// The running state of one aggregate in one group.
#[derive(Debug, Clone)]
pub(crate) enum AggState {
    Count(i64),
    CountDistinct(HashMap<Value, u32>),
    Sum {
        int: i64,
        float: f64,
        n: i64,
        is_float: bool,
    },
    Avg {
        sum: f64,
        n: i64,
    },
    Stddev {
        n: i64,
        sum: f64,
        sumsq: f64,
    },
    /// A multiset so that removing the current extreme finds the next one.
    MinMax {
        max: bool,
        vals: BTreeMap<Value, u32>,
    },
    /// Values in arrival order; windows expire oldest first, so removal is at the front.
    FirstLast {
        first: bool,
        vals: VecDeque<Value>,
    },
    /// The values in the window, as a multiset, for the statistics that need
    /// every value.
    Spread {
        median: bool,
        vals: BTreeMap<Value, u32>,
        n: u64,
    },
    /// `firstever`/`lastever`.
    Ever {
        first: bool,
        value: Option<Value>,
    },
    CountEver(i64),
    /// `nth` over the window's values in arrival order.
    Nth {
        n: usize,
        /// The newest N+1 values.
        vals: VecDeque<Value>,
        /// Values in the window, kept or not.
        total: usize,
    },
    /// `window(*)`: the window's events in arrival order.
    Window(VecDeque<Value>),
    /// `rate(timestamp)`, as Esper's: null until an event has left the
    /// window, then the events in the window per second between the
    /// timestamp of the last to leave and that of the newest.
    Rate {
        count: i64,
        newest: i64,
        left: Option<i64>,
    },
    /// `rate(N)`: arrival times of the last N seconds; null until one has
    /// fallen out of that period (a full period has been seen).
    RateEver {
        ms: i64,
        points: VecDeque<i64>,
        full: bool,
    },
    /// `sum(distinct x)`, `avg(distinct x)` ...: the inner aggregate sees
    /// each distinct value once, while it is in the window at least once.
    Distinct {
        seen: HashMap<Value, u32>,
        inner: Box<AggState>,
    },
}

impl AggState {
    pub(crate) fn new(spec: &AggSpec) -> AggState {
        match spec.func {
            AggFunc::Count if spec.distinct => AggState::CountDistinct(HashMap::new()),
            // Every value is distinct for these, or they keep no values.
            AggFunc::Min
            | AggFunc::Max
            | AggFunc::FirstEver
            | AggFunc::LastEver
            | AggFunc::Window
            | AggFunc::Rate
            | AggFunc::RateEver
            | AggFunc::Count => Self::plain(spec),
            _ if spec.distinct => AggState::Distinct {
                seen: HashMap::new(),
                inner: Box::new(Self::plain(spec)),
            },
            _ => Self::plain(spec),
        }
    }

    fn plain(spec: &AggSpec) -> AggState {
        match spec.func {
            AggFunc::Count => AggState::Count(0),
            AggFunc::Sum => AggState::Sum {
                int: 0,
                float: 0.0,
                n: 0,
                is_float: false,
            },
            AggFunc::Avg => AggState::Avg { sum: 0.0, n: 0 },
            AggFunc::Stddev => AggState::Stddev {
                n: 0,
                sum: 0.0,
                sumsq: 0.0,
            },
            AggFunc::Min => AggState::MinMax {
                max: false,
                vals: BTreeMap::new(),
            },
            AggFunc::Max => AggState::MinMax {
                max: true,
                vals: BTreeMap::new(),
            },
            AggFunc::First => AggState::FirstLast {
                first: true,
                vals: VecDeque::new(),
            },
            AggFunc::Last => AggState::FirstLast {
                first: false,
                vals: VecDeque::new(),
            },
            AggFunc::Avedev | AggFunc::Median => AggState::Spread {
                median: spec.func == AggFunc::Median,
                vals: BTreeMap::new(),
                n: 0,
            },
            AggFunc::FirstEver | AggFunc::LastEver => AggState::Ever {
                first: spec.func == AggFunc::FirstEver,
                value: None,
            },
            AggFunc::CountEver => AggState::CountEver(0),
            AggFunc::Nth => AggState::Nth {
                n: spec.nth,
                vals: VecDeque::new(),
                total: 0,
            },
            AggFunc::Window => AggState::Window(VecDeque::new()),
            AggFunc::Rate => AggState::Rate {
                count: 0,
                newest: 0,
                left: None,
            },
            AggFunc::RateEver => AggState::RateEver {
                ms: spec.nth as i64,
                points: VecDeque::new(),
                full: false,
            },
        }
    }

    /// Adds a value; nulls are ignored as in SQL.
    #[inline]
    pub(crate) fn add(&mut self, v: Value) {
        if v.is_null() {
            return;
        }
        match self {
            AggState::Count(n) => *n += 1,
            AggState::CountDistinct(m) => *m.entry(v).or_insert(0) += 1,
            AggState::Sum {
                int,
                float,
                n,
                is_float,
            } => {
                match v {
                    Value::Int(i) => {
                        *int = int.wrapping_add(i);
                        *float += i as f64;
                    }
                    Value::Float(f) => {
                        *is_float = true;
                        *float += f;
                    }
                    _ => return,
                }
                *n += 1;
            }
            AggState::Avg { sum, n } => {
                if let Some(f) = v.as_f64() {
                    *sum += f;
                    *n += 1;
                }
            }
            AggState::Stddev { n, sum, sumsq } => {
                if let Some(f) = v.as_f64() {
                    *n += 1;
                    *sum += f;
                    *sumsq += f * f;
                }
            }
            AggState::MinMax { vals, .. } => *vals.entry(v).or_insert(0) += 1,
            AggState::FirstLast { vals, .. } => vals.push_back(v),
            AggState::Spread { vals, n, .. } => {
                if v.as_f64().is_some() {
                    *vals.entry(v).or_insert(0) += 1;
                    *n += 1;
                }
            }
            AggState::Ever { first, value } => {
                if !*first || value.is_none() {
                    *value = Some(v);
                }
            }
            AggState::CountEver(n) => *n += 1,
            AggState::Nth { n, vals, total } => {
                *total += 1;
                vals.push_back(v);
                // Older values than the Nth can never be asked for again:
                // windows only remove their oldest, which is then gone anyway.
                if vals.len() > *n + 1 {
                    vals.pop_front();
                }
            }
            AggState::Window(events) => events.push_back(v),
            AggState::Rate { count, newest, .. } => {
                if let Some(t) = v.as_f64() {
                    *count += 1;
                    *newest = t as i64;
                }
            }
            AggState::RateEver { ms, points, full } => {
                let Some(t) = v.as_f64().map(|t| t as i64) else {
                    return;
                };
                points.push_back(t);
                while points.len() > 1 && points.front().is_some_and(|&p| p < t - *ms) {
                    points.pop_front();
                    *full = true;
                }
            }
            AggState::Distinct { seen, inner } => {
                let c = seen.entry(v.clone()).or_insert(0);
                *c += 1;
                if *c == 1 {
                    inner.add(v);
                }
            }
        }
    }

    /// Removes a value that was added before.
    pub(crate) fn remove(&mut self, v: Value) {
        if v.is_null() {
            return;
        }
        match self {
            AggState::Count(n) => *n -= 1,
            AggState::CountDistinct(m) => {
                if let Some(c) = m.get_mut(&v) {
                    *c -= 1;
                    if *c == 0 {
                        m.remove(&v);
                    }
                }
            }
            AggState::Sum { int, float, n, .. } => {
                match v {
                    Value::Int(i) => {
                        *int = int.wrapping_sub(i);
                        *float -= i as f64;
                    }
                    Value::Float(f) => *float -= f,
                    _ => return,
                }
                *n -= 1;
            }
            AggState::Avg { sum, n } => {
                if let Some(f) = v.as_f64() {
                    *sum -= f;
                    *n -= 1;
                }
            }
            AggState::Stddev { n, sum, sumsq } => {
                if let Some(f) = v.as_f64() {
                    *n -= 1;
                    *sum -= f;
                    *sumsq -= f * f;
                }
            }
            AggState::MinMax { vals, .. } => {
                if let Some(c) = vals.get_mut(&v) {
                    *c -= 1;
                    if *c == 0 {
                        vals.remove(&v);
                    }
                }
            }
            AggState::FirstLast { vals, .. } | AggState::Window(vals) => {
                if let Some(i) = vals.iter().position(|x| *x == v) {
                    vals.remove(i);
                }
            }
            AggState::Spread { vals, n, .. } => {
                if let Some(c) = vals.get_mut(&v) {
                    *c -= 1;
                    *n -= 1;
                    if *c == 0 {
                        vals.remove(&v);
                    }
                }
            }
            AggState::Ever { .. } | AggState::CountEver(_) | AggState::RateEver { .. } => {}
            AggState::Rate { count, left, .. } => {
                if let Some(t) = v.as_f64() {
                    *count -= 1;
                    *left = Some(t as i64);
                }
            }
            AggState::Nth { n, vals, total } => {
                // Windows remove their oldest value: it is still kept only
                // when the window holds no more than the N+1 kept.
                if *total <= *n + 1
                    && let Some(i) = vals.iter().position(|x| *x == v)
                {
                    vals.remove(i);
                }
                *total = total.saturating_sub(1);
            }
            AggState::Distinct { seen, inner } => {
                if let Some(c) = seen.get_mut(&v) {
                    *c -= 1;
                    if *c == 0 {
                        seen.remove(&v);
                        inner.remove(v);
                    }
                }
            }
        }
    }

    /// The current result (null over no values, except counts which are 0).
    pub(crate) fn value(&self) -> Value {
        match self {
            AggState::Count(n) => Value::Int(*n),
            AggState::CountDistinct(m) => Value::Int(m.len() as i64),
            AggState::Sum {
                int,
                float,
                n,
                is_float,
            } => {
                if *n == 0 {
                    Value::Null
                } else if *is_float {
                    Value::Float(*float)
                } else {
                    Value::Int(*int)
                }
            }
            AggState::Avg { sum, n } => {
                if *n == 0 {
                    Value::Null
                } else {
                    Value::Float(*sum / *n as f64)
                }
            }
            AggState::Stddev { n, sum, sumsq } => {
                // Sample standard deviation, as Esper's stddev.
                if *n < 2 {
                    Value::Null
                } else {
                    let nf = *n as f64;
                    let var = ((*sumsq - *sum * *sum / nf) / (nf - 1.0)).max(0.0);
                    Value::Float(var.sqrt())
                }
            }
            AggState::MinMax { max, vals } => {
                let v = if *max {
                    vals.keys().next_back()
                } else {
                    vals.keys().next()
                };
                v.cloned().unwrap_or(Value::Null)
            }
            AggState::FirstLast { first, vals } => {
                let v = if *first { vals.front() } else { vals.back() };
                v.cloned().unwrap_or(Value::Null)
            }
            AggState::Spread { median, vals, n } => spread(*median, vals, *n),
            AggState::Ever { value, .. } => value.clone().unwrap_or(Value::Null),
            AggState::CountEver(n) => Value::Int(*n),
            AggState::Nth { n, vals, .. } => vals
                .len()
                .checked_sub(n + 1)
                .and_then(|i| vals.get(i))
                .cloned()
                .unwrap_or(Value::Null),
            AggState::Window(events) => {
                if events.is_empty() {
                    Value::Null
                } else {
                    let rows = events.iter().map(Value::to_json).collect();
                    Value::Json(std::sync::Arc::new(serde_json::Value::Array(rows)))
                }
            }
            AggState::Distinct { inner, .. } => inner.value(),
            AggState::Rate {
                count,
                newest,
                left,
            } => match left {
                Some(oldest) if newest != oldest => {
                    Value::Float(*count as f64 * 1000.0 / (newest - oldest) as f64)
                }
                _ => Value::Null,
            },
            AggState::RateEver { ms, points, full } => {
                if *full && *ms > 0 {
                    Value::Float(points.len() as f64 * 1000.0 / *ms as f64)
                } else {
                    Value::Null
                }
            }
        }
    }
}

/// `median` or `avedev` over a multiset of numbers (Esper's definitions:
/// the median of an even count is the mean of the middle two; avedev is the
/// mean of the absolute deviations from the mean).
fn spread(median: bool, vals: &BTreeMap<Value, u32>, n: u64) -> Value {
    if n == 0 {
        return Value::Null;
    }
    let numbers = || {
        vals.iter()
            .filter_map(|(v, c)| v.as_f64().map(|f| (f, *c as u64)))
    };
    if median {
        let nth = |k: u64| {
            let mut seen = 0;
            for (f, c) in numbers() {
                seen += c;
                if seen > k {
                    return f;
                }
            }
            f64::NAN
        };
        let m = if n % 2 == 1 {
            nth(n / 2)
        } else {
            (nth(n / 2 - 1) + nth(n / 2)) / 2.0
        };
        return Value::Float(m);
    }
    let mean = numbers().map(|(f, c)| f * c as f64).sum::<f64>() / n as f64;
    let dev = numbers()
        .map(|(f, c)| (f - mean).abs() * c as f64)
        .sum::<f64>();
    Value::Float(dev / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(func: AggFunc) -> AggSpec {
        AggSpec {
            func,
            arg: None,
            distinct: false,
            nth: 0,
            key: String::new(),
        }
    }

    #[test]
    fn add_remove_roundtrip() {
        let mut s = AggState::new(&spec(AggFunc::Max));
        for v in [3, 9, 5] {
            s.add(Value::Int(v));
        }
        assert_eq!(s.value(), Value::Int(9));
        s.remove(Value::Int(9));
        assert_eq!(s.value(), Value::Int(5));
        let mut s = AggState::new(&spec(AggFunc::Stddev));
        for v in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            s.add(Value::Float(v));
        }
        let Value::Float(sd) = s.value() else {
            panic!()
        };
        assert!((sd - 2.138089935299395).abs() < 1e-9, "{sd}");
        let mut s = AggState::new(&spec(AggFunc::Sum));
        s.add(Value::Int(2));
        s.add(Value::Int(3));
        assert_eq!(s.value(), Value::Int(5));
        s.remove(Value::Int(2));
        s.remove(Value::Int(3));
        assert_eq!(s.value(), Value::Null);
    }
}
