//! Timestamps and times in text format as Postgres prints them.
//!
//! The protocol layer writes every fractional second with six digits
//! (`2024-01-02 03:04:05.000000+00`); Postgres drops trailing zeros and
//! a fraction that is all zeros (`2024-01-02 03:04:05+00`,
//! `... 03:04:05.401+00`). psql users compare what they see with what
//! Postgres prints, and scripts parse it, so every text-format answer of a
//! timestamp, timestamptz, time or timetz column (and their arrays) has
//! its fractions trimmed here, on both protocols and in COPY. Binary
//! values are untouched.

use bytes::{BufMut, BytesMut};
use datafusion_postgres::pgwire;
use futures::StreamExt;
use pgwire::api::Type;
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response};
use pgwire::messages::data::DataRow;

/// Whether a column's text needs its fractions trimmed.
fn is_time_text(field: &FieldInfo) -> bool {
    field.format() == FieldFormat::Text
        && matches!(
            *field.datatype(),
            Type::TIMESTAMP
                | Type::TIMESTAMPTZ
                | Type::TIME
                | Type::TIMETZ
                | Type::TIMESTAMP_ARRAY
                | Type::TIMESTAMPTZ_ARRAY
                | Type::TIME_ARRAY
                | Type::TIMETZ_ARRAY
        )
}

/// `response` with its time columns' text as Postgres prints it.
pub(crate) fn in_response(response: Response) -> Response {
    match response {
        Response::Query(query) => Response::Query(in_query(query)),
        other => other,
    }
}

/// [`in_response`] for one answer's rows.
pub(crate) fn in_query(mut query: QueryResponse) -> QueryResponse {
    let columns: Vec<bool> = query.row_schema.iter().map(is_time_text).collect();
    if !columns.contains(&true) {
        return query;
    }
    let rows = std::mem::replace(&mut query.data_rows, Box::pin(futures::stream::empty()));
    query.data_rows = Box::pin(rows.map(move |row| row.map(|row| trim_row(row, &columns))));
    query
}

/// A data row with the values of the `columns` marked true rewritten. A
/// row that does not parse as the protocol lays it out (it always does)
/// goes out as it came.
fn trim_row(mut row: DataRow, columns: &[bool]) -> DataRow {
    let mut out = BytesMut::with_capacity(row.data.len());
    let mut rest: &[u8] = &row.data;
    for column in 0..usize::try_from(row.field_count).unwrap_or(0) {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return row;
        };
        let len = i32::from_be_bytes(*len);
        // -1: NULL, no bytes follow.
        let Ok(n) = usize::try_from(len) else {
            out.put_i32(len);
            rest = tail;
            continue;
        };
        let Some((value, tail)) = tail.split_at_checked(n) else {
            return row;
        };
        rest = tail;
        if columns.get(column).copied().unwrap_or(false) {
            let trimmed = trim_fractions(value);
            let Ok(trimmed_len) = i32::try_from(trimmed.len()) else {
                return row;
            };
            out.put_i32(trimmed_len);
            out.put_slice(&trimmed);
        } else {
            out.put_i32(len);
            out.put_slice(value);
        }
    }
    if !rest.is_empty() {
        return row;
    }
    row.data = out;
    row
}

/// `text` with the trailing zeros of every fraction of a second (digits
/// after `HH:MM:SS.`) removed, and the point too when nothing is left.
fn trim_fractions(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let byte = text[i];
        i += 1;
        if byte != b'.' || !ends_with_clock(&out) {
            out.push(byte);
            continue;
        }
        let start = i;
        while i < text.len() && text[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &text[start..i];
        let kept = digits.len() - digits.iter().rev().take_while(|d| **d == b'0').count();
        if kept > 0 {
            out.push(b'.');
            out.extend_from_slice(&digits[..kept]);
        }
    }
    out
}

/// Whether `text` ends with `HH:MM:SS`.
fn ends_with_clock(text: &[u8]) -> bool {
    let Some(clock) = text.len().checked_sub(8).map(|start| &text[start..]) else {
        return false;
    };
    clock.iter().enumerate().all(|(i, b)| match i {
        2 | 5 => *b == b':',
        _ => b.is_ascii_digit(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trimmed(text: &str) -> String {
        String::from_utf8(trim_fractions(text.as_bytes())).unwrap()
    }

    #[test]
    fn fractions_are_printed_as_postgres_prints_them() {
        for (sent, printed) in [
            ("2024-01-02 03:04:05.000000+00", "2024-01-02 03:04:05+00"),
            (
                "2026-12-07 14:58:54.401000+00",
                "2026-12-07 14:58:54.401+00",
            ),
            ("2024-01-02 03:04:05.000000", "2024-01-02 03:04:05"),
            ("2024-01-02 03:04:05.123456", "2024-01-02 03:04:05.123456"),
            ("03:04:05.500000", "03:04:05.5"),
            (
                "Tue Jan 02 03:04:05.000000 2024",
                "Tue Jan 02 03:04:05 2024",
            ),
            (
                "{\"2024-01-02 03:04:05.000000\",\"2024-01-02 03:04:06.100000\"}",
                "{\"2024-01-02 03:04:05\",\"2024-01-02 03:04:06.1\"}",
            ),
            // Not after a clock: left alone.
            ("1.500000", "1.500000"),
        ] {
            assert_eq!(trimmed(sent), printed, "{sent}");
        }
    }

    #[test]
    fn only_the_marked_columns_of_a_row_change() {
        let mut data = BytesMut::new();
        for value in [
            Some("1.000000"),
            None,
            Some("2024-01-02 03:04:05.000000+00"),
        ] {
            match value {
                Some(v) => {
                    data.put_i32(v.len() as i32);
                    data.put_slice(v.as_bytes());
                }
                None => data.put_i32(-1),
            }
        }
        let row = trim_row(DataRow::new(data, 3), &[false, true, true]);
        let mut expected = BytesMut::new();
        expected.put_i32(8);
        expected.put_slice(b"1.000000");
        expected.put_i32(-1);
        expected.put_i32(22);
        expected.put_slice(b"2024-01-02 03:04:05+00");
        assert_eq!(row.data, expected);
        assert_eq!(row.field_count, 3);
    }
}
