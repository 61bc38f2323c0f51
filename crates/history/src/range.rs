//! Which kept files a query's filters can need: bounds on
//! `_generation_time` and `_generation` taken from the predicates
//! DataFusion pushes into the scan. Anything not understood leaves the
//! range open (the filter is still applied to the rows read).

use arrow::datatypes::DataType;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;

pub(crate) const GENERATION: &str = "_generation";
pub(crate) const GENERATION_TIME: &str = "_generation_time";

/// Inclusive bounds; `None` is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Range {
    /// `_generation_time` bounds in ns since the epoch (exact for any
    /// timestamp unit a literal comes in).
    pub time_min_ns: Option<i128>,
    pub time_max_ns: Option<i128>,
    pub generation_min: Option<u64>,
    pub generation_max: Option<u64>,
}

impl Range {
    /// The range every one of `filters` (ANDed) allows.
    pub fn of(filters: &[Expr]) -> Range {
        let mut range = Range::default();
        for filter in filters {
            range.narrow(filter);
        }
        range
    }

    pub fn contains(&self, time_ms: i64, generation: u64) -> bool {
        let ns = i128::from(time_ms) * 1_000_000;
        self.time_min_ns.is_none_or(|m| ns >= m)
            && self.time_max_ns.is_none_or(|m| ns <= m)
            && self.generation_min.is_none_or(|m| generation >= m)
            && self.generation_max.is_none_or(|m| generation <= m)
    }

    fn narrow(&mut self, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if *op == Operator::And {
                    self.narrow(left);
                    self.narrow(right);
                    return;
                }
                if let (Some(column), Some(value)) = (column_of(left), literal_of(right)) {
                    self.bound(column, *op, value);
                } else if let (Some(value), Some(column)) = (literal_of(left), column_of(right))
                    && let Some(op) = op.swap()
                {
                    self.bound(column, op, value);
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                if let (Some(column), Some(low), Some(high)) =
                    (column_of(expr), literal_of(low), literal_of(high))
                {
                    self.bound(column, Operator::GtEq, low);
                    self.bound(column, Operator::LtEq, high);
                }
            }
            _ => {}
        }
    }

    fn bound(&mut self, column: Column, op: Operator, value: i128) {
        let (min, max) = match op {
            Operator::Eq => (Some(value), Some(value)),
            Operator::Gt => (Some(value + 1), None),
            Operator::GtEq => (Some(value), None),
            Operator::Lt => (None, Some(value - 1)),
            Operator::LtEq => (None, Some(value)),
            _ => (None, None),
        };
        match column {
            Column::Time => {
                if let Some(min) = min {
                    self.time_min_ns = Some(self.time_min_ns.map_or(min, |m| m.max(min)));
                }
                if let Some(max) = max {
                    self.time_max_ns = Some(self.time_max_ns.map_or(max, |m| m.min(max)));
                }
            }
            Column::Generation => {
                let clamp = |v: i128| u64::try_from(v.max(0)).unwrap_or(u64::MAX);
                if let Some(min) = min {
                    let min = clamp(min);
                    self.generation_min = Some(self.generation_min.map_or(min, |m| m.max(min)));
                }
                if let Some(max) = max {
                    if max < 0 {
                        // Nothing matches: an empty range.
                        self.generation_min = Some(1);
                        self.generation_max = Some(0);
                        return;
                    }
                    let max = clamp(max);
                    self.generation_max = Some(self.generation_max.map_or(max, |m| m.min(max)));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Column {
    Time,
    Generation,
}

/// The column an expression is, through casts that keep its order and
/// value (to another timestamp unit or zone, to a wider integer).
fn column_of(expr: &Expr) -> Option<Column> {
    match expr {
        Expr::Column(c) if c.name == GENERATION_TIME => Some(Column::Time),
        Expr::Column(c) if c.name == GENERATION => Some(Column::Generation),
        Expr::Cast(cast) if value_preserving(cast.field.data_type()) => column_of(&cast.expr),
        Expr::TryCast(cast) if value_preserving(cast.field.data_type()) => column_of(&cast.expr),
        _ => None,
    }
}

fn value_preserving(to: &DataType) -> bool {
    matches!(
        to,
        DataType::Timestamp(_, _) | DataType::UInt64 | DataType::Int64 | DataType::Decimal128(_, _)
    )
}

/// A literal timestamp as ns since the epoch, or an integer as itself.
fn literal_of(expr: &Expr) -> Option<i128> {
    match expr {
        Expr::Literal(value, _) => scalar(value),
        Expr::Cast(cast) => literal_of(&cast.expr),
        _ => None,
    }
}

fn scalar(value: &ScalarValue) -> Option<i128> {
    Some(match value {
        ScalarValue::TimestampSecond(Some(v), _) => i128::from(*v) * 1_000_000_000,
        ScalarValue::TimestampMillisecond(Some(v), _) => i128::from(*v) * 1_000_000,
        ScalarValue::TimestampMicrosecond(Some(v), _) => i128::from(*v) * 1000,
        ScalarValue::TimestampNanosecond(Some(v), _) => i128::from(*v),
        ScalarValue::Int64(Some(v)) => i128::from(*v),
        ScalarValue::Int32(Some(v)) => i128::from(*v),
        ScalarValue::UInt64(Some(v)) => i128::from(*v),
        ScalarValue::UInt32(Some(v)) => i128::from(*v),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    fn ts_ms(ms: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(ms),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn time_and_generation_bounds() {
        let range = Range::of(&[
            col(GENERATION_TIME).gt_eq(ts_ms(1000)),
            col(GENERATION_TIME).lt(lit(ScalarValue::TimestampNanosecond(
                Some(5_000_000_000),
                None,
            ))),
            col("ip").eq(lit("10.0.0.1")),
        ]);
        assert!(!range.contains(999, 1));
        assert!(range.contains(1000, 1));
        assert!(range.contains(4999, 1));
        assert!(!range.contains(5000, 1));

        let range = Range::of(&[col(GENERATION).eq(lit(7u64))]);
        assert!(range.contains(0, 7));
        assert!(!range.contains(0, 8));

        let range = Range::of(&[lit(10i64)
            .lt(col(GENERATION))
            .and(col(GENERATION).lt_eq(lit(12i64)))]);
        assert!(!range.contains(0, 10) && range.contains(0, 11) && range.contains(0, 12));

        let range = Range::of(&[col(GENERATION_TIME).between(ts_ms(10), ts_ms(20))]);
        assert!(range.contains(10, 0) && range.contains(20, 0) && !range.contains(21, 0));
        // Not understood: open.
        assert_eq!(
            Range::of(&[col(GENERATION_TIME).gt(ts_ms(1)).or(col("x").eq(lit(1)))]),
            Range::default()
        );
    }
}
