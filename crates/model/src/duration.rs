//! Durations as people write them in config files and flags: `"5s"`,
//! `"500ms"`, `"2m"`, `"1h"`, or a plain number of seconds. Use with serde as
//! `#[serde(with = "fleetsql_model::duration")]` (or `duration::option`).

use std::time::Duration;

use serde::Deserialize;
use serde::de::{Deserializer, Error};

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Seconds(f64),
    Text(String),
}

pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 5s or 500ms"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`; use ms, s, m, h or d"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// Like [`parse`], refusing zero (an interval, a retention, a time-out).
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    let duration = parse(text)?;
    if duration.is_zero() {
        return Err(format!("`{text}` must be a positive duration"));
    }
    Ok(duration)
}

fn from_raw(raw: Raw) -> Result<Duration, String> {
    match raw {
        Raw::Seconds(s) => Duration::try_from_secs_f64(s).map_err(|e| e.to_string()),
        Raw::Text(t) => parse(&t),
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    from_raw(Raw::deserialize(d)?).map_err(D::Error::custom)
}

pub mod option {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(raw) => from_raw(raw).map(Some).map_err(D::Error::custom),
        }
    }
}
