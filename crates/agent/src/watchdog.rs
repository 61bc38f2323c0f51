//! The agent's watchdog: a publisher that takes more than its share of the
//! agent per tick is shed, the agent's own memory has a ceiling.
//!
//! osquery's watchdog restarts a worker that passes its memory or CPU limit;
//! the agent instead refuses the rows of the one publisher that misbehaves,
//! so every other publisher and the host collectors keep flowing.
//!
//! Shares are counted per publisher of a table (`X-Fleetsql-Publisher`, or
//! `http`) over windows of one tick: the rows and body bytes it *tried* to
//! publish. Passing either share sheds it: that publish and every later one
//! is answered 429 naming the limit, its previous rows stay (a refused
//! publish keeps them, as every refusal does). It recovers once a whole
//! window passes within its share. While the agent's resident memory is over
//! its ceiling, every publish through the API is refused (503) until it is
//! back under. Each watched publisher (and the memory state) is a row of
//! `fleet_sources`, published by the agent as publisher `watchdog`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::AgentError;

/// The table the watchdog reports in (the integrations' health table).
pub const FLEET_SOURCES: &str = "fleet_sources";
/// The publisher name of the watchdog's rows of [`FLEET_SOURCES`].
pub const WATCHDOG_PUBLISHER: &str = "watchdog";

/// Limits of the agent's watchdog (`[watchdog]` of an agent's config,
/// `--watchdog-*` flags of `fleetsql agent` and `fleetsql demo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchdogConfig {
    /// Off: nothing is counted, shed or reported.
    pub enabled: bool,
    /// Rows one publisher of one table may publish per tick.
    pub rows_per_tick: u64,
    /// Body bytes one publisher of one table may send per tick.
    pub bytes_per_tick: u64,
    /// The agent's resident memory above which publishes are refused
    /// (osquery's watchdog default is 200 MB).
    pub max_rss_bytes: u64,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            enabled: true,
            // Far above a host's own tables (a few hundred `processes`
            // rows): only a runaway publisher meets these.
            rows_per_tick: 100_000,
            bytes_per_tick: 32 * 1024 * 1024,
            max_rss_bytes: 200 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Default)]
struct Source {
    /// Rows and bytes tried in the current window.
    rows: u64,
    bytes: u64,
    /// It went over its share in the current window.
    over: bool,
    /// Why it is shed, while it is.
    shed: Option<String>,
    last_ok_ms: Option<i64>,
    last_refused: Option<(String, i64)>,
    accepted: u64,
    refused: u64,
    consecutive_refused: u64,
    rows_accepted: u64,
    rows_refused: u64,
    /// Windows since it last published (idle ones are forgotten).
    idle_windows: u32,
}

#[derive(Debug)]
struct State {
    config: WatchdogConfig,
    window_start: Instant,
    sources: BTreeMap<(String, String), Source>,
    /// Resident bytes when last over the ceiling.
    over_memory: Option<u64>,
    /// Something was refused since the agent started: only then does the
    /// watchdog add rows to `fleet_sources`, so a fleet where nothing was
    /// ever shed sees only its integrations there.
    ever_refused: bool,
}

/// Counts publishes against the limits; shared by the publish API and the
/// agent's reporting task.
#[derive(Debug)]
pub(crate) struct Watchdog {
    window: Duration,
    state: Mutex<State>,
}

/// Publishers idle this many windows, and not shed, leave `fleet_sources`.
const FORGET_AFTER_WINDOWS: u32 = 60;

impl Watchdog {
    pub(crate) fn new(config: WatchdogConfig, window: Duration) -> Arc<Watchdog> {
        Arc::new(Watchdog {
            window,
            state: Mutex::new(State {
                config,
                window_start: Instant::now(),
                sources: BTreeMap::new(),
                over_memory: None,
                ever_refused: false,
            }),
        })
    }

    pub(crate) fn set_config(&self, config: WatchdogConfig) {
        let mut state = self.state.lock();
        state.config = config;
        if !config.enabled {
            state.sources.clear();
            state.over_memory = None;
            state.ever_refused = false;
        }
    }

    pub(crate) fn config(&self) -> WatchdogConfig {
        self.state.lock().config
    }

    /// Closes the windows that ended by `now`: a shed publisher that kept
    /// within its share for a whole window recovers.
    fn roll(&self, state: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(state.window_start);
        if elapsed < self.window {
            return;
        }
        let windows = (elapsed.as_nanos() / self.window.as_nanos().max(1)) as u32;
        state.window_start += self.window * windows;
        state.sources.retain(|_, s| {
            // Over in the window that just closed: still shed through the
            // next one. Several windows passed: at least one was quiet.
            if !s.over || windows > 1 {
                s.shed = None;
            }
            if s.rows == 0 {
                s.idle_windows = s.idle_windows.saturating_add(windows);
            } else {
                s.idle_windows = 0;
            }
            s.rows = 0;
            s.bytes = 0;
            s.over = false;
            s.shed.is_some() || s.idle_windows < FORGET_AFTER_WINDOWS
        });
    }

    /// Counts one publish of `rows` rows in a `bytes`-byte body; an error
    /// if the publisher is (now) shed or the agent is over its memory.
    pub(crate) fn admit(
        &self,
        table: &str,
        publisher: &str,
        rows: u64,
        bytes: u64,
        now_ms: i64,
    ) -> Result<(), AgentError> {
        let mut state = self.state.lock();
        let config = state.config;
        if !config.enabled {
            return Ok(());
        }
        self.roll(&mut state, Instant::now());
        let over_memory = state.over_memory;
        let source = state
            .sources
            .entry((table.to_string(), publisher.to_string()))
            .or_default();
        source.rows = source.rows.saturating_add(rows);
        source.bytes = source.bytes.saturating_add(bytes);
        let refusal = if let Some(rss) = over_memory {
            Some(AgentError::OverMemory {
                rss,
                max: config.max_rss_bytes,
            })
        } else {
            let over = if source.rows > config.rows_per_tick {
                Some(("rows", source.rows, config.rows_per_tick, "rows_per_tick"))
            } else if source.bytes > config.bytes_per_tick {
                Some((
                    "bytes",
                    source.bytes,
                    config.bytes_per_tick,
                    "bytes_per_tick",
                ))
            } else {
                None
            };
            if let Some((what, used, max, setting)) = over {
                source.over = true;
                source.shed = Some(format!(
                    "{used} {what} this tick is over its share of {max} (watchdog.{setting})"
                ));
            }
            source.shed.as_ref().map(|reason| AgentError::Shed {
                table: table.to_string(),
                publisher: publisher.to_string(),
                reason: reason.clone(),
            })
        };
        match refusal {
            Some(e) => {
                state.ever_refused = true;
                let source = state
                    .sources
                    .get_mut(&(table.to_string(), publisher.to_string()))
                    .expect("inserted above");
                source.refused += 1;
                source.consecutive_refused += 1;
                source.rows_refused = source.rows_refused.saturating_add(rows);
                source.last_refused = Some((e.to_string(), now_ms));
                Err(e)
            }
            None => {
                let source = state
                    .sources
                    .get_mut(&(table.to_string(), publisher.to_string()))
                    .expect("inserted above");
                source.accepted += 1;
                source.consecutive_refused = 0;
                source.rows_accepted = source.rows_accepted.saturating_add(rows);
                source.last_ok_ms = Some(now_ms);
                Ok(())
            }
        }
    }

    /// Compares the agent's resident memory with its ceiling.
    pub(crate) fn check_memory(&self, rss: Option<u64>) {
        let mut state = self.state.lock();
        let max = state.config.max_rss_bytes;
        state.over_memory = match rss {
            Some(rss) if state.config.enabled && rss > max => Some(rss),
            _ => None,
        };
        state.ever_refused |= state.over_memory.is_some();
    }

    /// The watchdog's rows of `fleet_sources` (`None` when it is off or
    /// has never refused anything).
    pub(crate) fn report(&self) -> Option<RecordBatch> {
        let mut state = self.state.lock();
        if !state.config.enabled || !state.ever_refused {
            return None;
        }
        self.roll(&mut state, Instant::now());
        let mut rows: Vec<Row> = Vec::with_capacity(state.sources.len() + 1);
        rows.push(Row {
            name: "agent".to_string(),
            kind: "watchdog",
            status: if state.over_memory.is_some() {
                "over_memory"
            } else {
                "ok"
            },
            last_error: state.over_memory.map(|rss| {
                AgentError::OverMemory {
                    rss,
                    max: state.config.max_rss_bytes,
                }
                .to_string()
            }),
            ..Row::default()
        });
        for ((table, publisher), s) in &state.sources {
            rows.push(Row {
                name: format!("{table}/{publisher}"),
                kind: "publisher",
                status: if s.shed.is_some() { "shed" } else { "ok" },
                last_success: s.last_ok_ms,
                last_error: s.last_refused.as_ref().map(|(e, _)| e.clone()),
                last_error_at: s.last_refused.as_ref().map(|(_, at)| *at),
                successes: s.accepted,
                failures: s.refused,
                consecutive_failures: s.consecutive_refused,
                items: s.rows_accepted,
                bad_items: s.rows_refused,
            });
        }
        Some(batch(&rows))
    }
}

/// The agent's resident memory (`/proc/self/statm`); `None` where there
/// is no procfs.
pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the running system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[derive(Debug, Default)]
struct Row {
    name: String,
    kind: &'static str,
    status: &'static str,
    last_success: Option<i64>,
    last_error: Option<String>,
    last_error_at: Option<i64>,
    successes: u64,
    failures: u64,
    consecutive_failures: u64,
    items: u64,
    bad_items: u64,
}

/// `fleet_sources`' schema, as `fleetsql_integrations::health` publishes it
/// (the store refuses a publisher whose columns conflict, so a drift shows
/// at once in the watchdog's tests).
fn schema() -> Arc<Schema> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("last_success", ts.clone(), true),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("last_error_at", ts, true),
        Field::new("successes", DataType::UInt64, false),
        Field::new("failures", DataType::UInt64, false),
        Field::new("consecutive_failures", DataType::UInt64, false),
        Field::new("items", DataType::UInt64, false),
        Field::new("bad_items", DataType::UInt64, false),
    ]))
}

fn batch(rows: &[Row]) -> RecordBatch {
    let times = |f: fn(&Row) -> Option<i64>| -> ArrayRef {
        Arc::new(
            TimestampMillisecondArray::from(rows.iter().map(f).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    let counts = |f: fn(&Row) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.name))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.kind))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.status))),
        times(|r| r.last_success),
        Arc::new(StringArray::from(
            rows.iter()
                .map(|r| r.last_error.as_deref())
                .collect::<Vec<_>>(),
        )),
        times(|r| r.last_error_at),
        counts(|r| r.successes),
        counts(|r| r.failures),
        counts(|r| r.consecutive_failures),
        counts(|r| r.items),
        counts(|r| r.bad_items),
    ];
    // The columns match the schema by construction.
    RecordBatch::try_new(schema(), columns).unwrap_or_else(|_| RecordBatch::new_empty(schema()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> WatchdogConfig {
        WatchdogConfig {
            rows_per_tick: 100,
            bytes_per_tick: 10_000,
            ..WatchdogConfig::default()
        }
    }

    #[test]
    fn a_publisher_over_its_share_is_shed_and_others_are_not() {
        let dog = Watchdog::new(small(), Duration::from_secs(3600));
        dog.admit("t", "quiet", 10, 100, 1).unwrap();
        dog.admit("t", "noisy", 90, 100, 1).unwrap();
        let err = dog.admit("t", "noisy", 20, 100, 2).unwrap_err();
        assert!(matches!(err, AgentError::Shed { .. }), "{err}");
        assert!(err.to_string().contains("watchdog.rows_per_tick"), "{err}");
        // Shed: even a small publish is refused for the rest of the window.
        assert!(dog.admit("t", "noisy", 1, 10, 3).is_err());
        dog.admit("t", "quiet", 10, 100, 3).unwrap();
        let err = dog.admit("t", "bulky", 1, 20_000, 3).unwrap_err();
        assert!(err.to_string().contains("watchdog.bytes_per_tick"), "{err}");
    }

    #[test]
    fn a_shed_publisher_recovers_after_a_quiet_window() {
        let dog = Watchdog::new(small(), Duration::from_secs(3600));
        assert!(dog.admit("t", "noisy", 500, 1, 1).is_err());
        let mut state = dog.state.lock();
        let start = state.window_start;
        // The next window: still shed (it was over in the last one).
        dog.roll(&mut state, start + Duration::from_secs(3600));
        assert!(state.sources[&("t".into(), "noisy".into())].shed.is_some());
        // A window later, having published nothing: recovered.
        dog.roll(&mut state, start + Duration::from_secs(7200));
        assert!(state.sources[&("t".into(), "noisy".into())].shed.is_none());
        drop(state);
        dog.admit("t", "noisy", 5, 1, 9).unwrap();
    }

    #[test]
    fn over_memory_refuses_every_publish_and_is_reported() {
        let dog = Watchdog::new(small(), Duration::from_secs(3600));
        dog.check_memory(Some(300 * 1024 * 1024));
        let err = dog.admit("t", "quiet", 1, 1, 1).unwrap_err();
        assert!(matches!(err, AgentError::OverMemory { .. }), "{err}");
        let report = dog.report().unwrap();
        let status = report
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(status.value(0), "over_memory");
        dog.check_memory(Some(10 * 1024 * 1024));
        dog.admit("t", "quiet", 1, 1, 2).unwrap();
    }

    #[test]
    fn disabled_counts_nothing() {
        let dog = Watchdog::new(
            WatchdogConfig {
                enabled: false,
                ..small()
            },
            Duration::from_secs(3600),
        );
        dog.admit("t", "noisy", 1_000_000, 1 << 30, 1).unwrap();
        assert!(dog.report().is_none());
    }
}
