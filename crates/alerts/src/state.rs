//! The fire/clear state machine of one alert, after the seed: each
//! iteration's rows are compared with the previous ones; a row present
//! `fire_after` iterations in a row fires, an active instance absent for
//! `clear_after` clears. Pure: time and rows come in, events go out.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

/// An instance's columns: `*_key` columns identify it, the rest are details.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub key: Map<String, Value>,
    pub details: Map<String, Value>,
}

impl Row {
    /// Splits `columns`/`values` into key and detail columns.
    pub fn from_values(columns: &[String], values: Vec<Value>) -> Row {
        let mut row = Row::default();
        for (name, value) in columns.iter().zip(values) {
            if name.ends_with("_key") {
                row.key.insert(name.clone(), value);
            } else {
                row.details.insert(name.clone(), value);
            }
        }
        row
    }

    /// The instance's identity as text (stable: keys are sorted).
    pub fn key_text(&self) -> String {
        key_text(&self.key)
    }
}

pub fn key_text(key: &Map<String, Value>) -> String {
    // serde_json's map is sorted unless a crate turns on its
    // `preserve_order`; sort only then.
    if key.keys().is_sorted() {
        return serde_json::to_string(key).unwrap_or_default();
    }
    let sorted: BTreeMap<&String, &Value> = key.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present, but not yet `fire_after` iterations in a row.
    Pending,
    Active,
    /// Kept for a while so `alert_instances` shows recent history.
    Cleared,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Active => "active",
            Status::Cleared => "cleared",
        }
    }

    pub fn parse(text: &str) -> Status {
        match text {
            "active" => Status::Active,
            "cleared" => Status::Cleared,
            _ => Status::Pending,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Instance {
    pub key: Map<String, Value>,
    pub details: Map<String, Value>,
    pub status: Status,
    /// Iterations in a row it has been present.
    pub present_count: u32,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub fired_at_ms: Option<i64>,
    pub cleared_at_ms: Option<i64>,
    /// When an active instance was first missing from the rows.
    pub absent_since_ms: Option<i64>,
    /// Active, but its alert's tables had no (or too little) data lately.
    pub stale: bool,
    pub acked_at_ms: Option<i64>,
    pub acked_by: Option<String>,
}

/// What an iteration saw.
#[derive(Debug, Clone)]
pub enum Observation {
    Rows(Vec<Row>),
    /// The alert's tables are missing or too incomplete: nothing fires or
    /// clears, active instances are marked stale.
    NoData(String),
    /// The query failed: nothing fires or clears; the error is reported.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Fired,
    Cleared,
    NoData,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Fired => "fired",
            EventKind::Cleared => "cleared",
            EventKind::NoData => "nodata",
        }
    }
}

/// A notification-worthy change of one instance (or, for `NoData`, of the
/// alert as a whole).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub kind: EventKind,
    pub alert: String,
    pub key: Map<String, Value>,
    pub details: Map<String, Value>,
    pub at_ms: i64,
    pub iteration: u64,
    /// Why there was no data (for `NoData`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the instance fired (a clear names the firing it ends, which
    /// Alertmanager's `startsAt` needs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fired_at_ms: Option<i64>,
}

/// When instances fire and clear.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub fire_after: u32,
    pub clear_after: Duration,
}

/// One iteration's effect, for persistence and notification.
#[derive(Debug, Default, Clone)]
pub struct StepOutcome {
    pub events: Vec<Event>,
    /// Instances (by key text) whose durable state changed: new, fired,
    /// cleared, stale or absent since, or a pending instance's count. They
    /// are written with this iteration. Changes that only refresh a
    /// present instance (`last_seen_ms`, details, an active instance's
    /// count) go to [`AlertState::unsaved`] and are written at checkpoints.
    pub changed: BTreeSet<String>,
    /// Instances dropped (pending ones that vanished, old cleared ones).
    pub removed: BTreeSet<String>,
}

/// Everything the alert system remembers about one alert.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct AlertState {
    pub name: String,
    /// Iterations run so far (continues across restarts).
    pub iteration: u64,
    pub last_run_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Generation the last iteration read.
    pub last_generation: Option<u64>,
    /// The last iteration found no (or too little) data.
    pub nodata: bool,
    pub instances: BTreeMap<String, Instance>,
    /// Instances refreshed since they were last written (see
    /// [`StepOutcome::changed`]); in memory only.
    #[serde(skip)]
    pub unsaved: BTreeSet<String>,
    /// When the unsaved refreshes were last written (in memory only).
    #[serde(skip)]
    pub checkpointed_ms: Option<i64>,
}

impl AlertState {
    pub fn new(name: &str) -> Self {
        AlertState {
            name: name.to_string(),
            ..Default::default()
        }
    }

    pub fn active(&self) -> impl Iterator<Item = &Instance> {
        self.instances
            .values()
            .filter(|i| i.status == Status::Active)
    }

    fn event(&self, kind: EventKind, instance: &Instance, at_ms: i64) -> Event {
        Event {
            kind,
            alert: self.name.clone(),
            key: instance.key.clone(),
            details: instance.details.clone(),
            at_ms,
            iteration: self.iteration,
            reason: None,
            fired_at_ms: instance.fired_at_ms,
        }
    }

    /// Runs one iteration at `now_ms` over what the query saw.
    pub fn step(&mut self, timing: Timing, now_ms: i64, observation: Observation) -> StepOutcome {
        self.step_shared(timing, now_ms, &observation)
    }

    /// [`AlertState::step`] over an answer other alerts with the same SQL
    /// share: rows are copied only into new instances and changed details.
    pub fn step_shared(
        &mut self,
        timing: Timing,
        now_ms: i64,
        observation: &Observation,
    ) -> StepOutcome {
        self.iteration += 1;
        self.last_run_ms = Some(now_ms);
        let mut outcome = StepOutcome::default();
        match observation {
            Observation::Failed(reason) => {
                self.last_error = Some(reason.clone());
            }
            Observation::NoData(reason) => {
                self.last_error = Some(format!("no data: {reason}"));
                for (key, instance) in self.instances.iter_mut() {
                    if instance.status == Status::Active && !instance.stale {
                        instance.stale = true;
                        outcome.changed.insert(key.clone());
                    }
                }
                if !self.nodata {
                    self.nodata = true;
                    outcome.events.push(Event {
                        kind: EventKind::NoData,
                        alert: self.name.clone(),
                        key: Map::new(),
                        details: Map::new(),
                        at_ms: now_ms,
                        iteration: self.iteration,
                        reason: Some(reason.clone()),
                        fired_at_ms: None,
                    });
                }
            }
            Observation::Rows(rows) => {
                self.last_error = None;
                self.nodata = false;
                let keys: Vec<String> = rows.iter().map(Row::key_text).collect();
                // Keys share long prefixes (`{"ip_key":"10.`): hashing them
                // beats the many comparisons of an ordered set.
                let mut seen: HashSet<&str> = HashSet::with_capacity(keys.len());
                for (row, key) in rows.iter().zip(&keys) {
                    if !seen.insert(key) {
                        // Duplicate key in one answer: counted once, last
                        // row's details win.
                        if let Some(instance) = self.instances.get_mut(key) {
                            instance.details.clone_from(&row.details);
                        }
                        continue;
                    }
                    let mut durable = false;
                    let instance = match self.instances.get_mut(key) {
                        Some(i) if i.status != Status::Cleared => i,
                        _ => {
                            durable = true;
                            self.instances.insert(
                                key.clone(),
                                Instance {
                                    key: row.key.clone(),
                                    details: row.details.clone(),
                                    status: Status::Pending,
                                    present_count: 0,
                                    first_seen_ms: now_ms,
                                    last_seen_ms: now_ms,
                                    fired_at_ms: None,
                                    cleared_at_ms: None,
                                    absent_since_ms: None,
                                    stale: false,
                                    acked_at_ms: None,
                                    acked_by: None,
                                },
                            );
                            self.instances.get_mut(key).expect("just inserted")
                        }
                    };
                    instance.present_count = instance.present_count.saturating_add(1);
                    instance.last_seen_ms = now_ms;
                    if instance.details != row.details {
                        instance.details.clone_from(&row.details);
                    }
                    // A pending count decides when it fires: it must
                    // survive a restart exactly, so it is written each time.
                    durable |= instance.status == Status::Pending
                        || instance.absent_since_ms.is_some()
                        || instance.stale;
                    instance.absent_since_ms = None;
                    instance.stale = false;
                    let fires = instance.status == Status::Pending
                        && instance.present_count >= timing.fire_after;
                    if fires {
                        instance.status = Status::Active;
                        instance.fired_at_ms = Some(now_ms);
                    }
                    if durable {
                        self.unsaved.remove(key);
                        outcome.changed.insert(key.clone());
                    } else if !self.unsaved.contains(key) {
                        self.unsaved.insert(key.clone());
                    }
                    if fires {
                        let event = self.event(EventKind::Fired, &self.instances[key], now_ms);
                        outcome.events.push(event);
                    }
                }
                // Every key seen is now a live (not cleared) instance; when
                // there are no others, nothing went absent.
                let live = self
                    .instances
                    .values()
                    .filter(|i| i.status != Status::Cleared)
                    .count();
                let absent: Vec<String> = if live == seen.len() {
                    Vec::new()
                } else {
                    self.instances
                        .iter()
                        .filter(|(k, i)| !seen.contains(k.as_str()) && i.status != Status::Cleared)
                        .map(|(k, _)| k.clone())
                        .collect()
                };
                for key in absent {
                    let Some(instance) = self.instances.get_mut(&key) else {
                        continue;
                    };
                    match instance.status {
                        Status::Pending => {
                            // Not present in a row: the count starts over.
                            self.instances.remove(&key);
                            self.unsaved.remove(&key);
                            outcome.removed.insert(key);
                        }
                        Status::Active => {
                            if instance.absent_since_ms.is_none() || instance.stale {
                                outcome.changed.insert(key.clone());
                            }
                            let since = *instance.absent_since_ms.get_or_insert(now_ms);
                            instance.stale = false;
                            let absent_for = now_ms.saturating_sub(since).max(0) as u128;
                            if absent_for >= timing.clear_after.as_millis() {
                                instance.status = Status::Cleared;
                                instance.cleared_at_ms = Some(now_ms);
                                instance.present_count = 0;
                                outcome.changed.insert(key.clone());
                                let event =
                                    self.event(EventKind::Cleared, &self.instances[&key], now_ms);
                                outcome.events.push(event);
                            }
                        }
                        Status::Cleared => {}
                    }
                }
            }
        }
        outcome
    }

    /// Forgets cleared instances older than `retention`.
    pub fn prune(&mut self, now_ms: i64, retention: Duration) -> BTreeSet<String> {
        let cutoff = now_ms - retention.as_millis() as i64;
        let old: BTreeSet<String> = self
            .instances
            .iter()
            .filter(|(_, i)| i.status == Status::Cleared && i.cleared_at_ms.unwrap_or(0) < cutoff)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &old {
            self.instances.remove(key);
            self.unsaved.remove(key);
        }
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(ip: &str, mnt: &str, pct: i64) -> Row {
        Row::from_values(
            &["ip_key".into(), "mnt_key".into(), "pct".into()],
            vec![json!(ip), json!(mnt), json!(pct)],
        )
    }

    fn timing(fire_after: u32, clear_after_s: u64) -> Timing {
        Timing {
            fire_after,
            clear_after: Duration::from_secs(clear_after_s),
        }
    }

    fn kinds(outcome: &StepOutcome) -> Vec<(EventKind, String)> {
        outcome
            .events
            .iter()
            .map(|e| (e.kind, key_text(&e.key)))
            .collect()
    }

    #[test]
    fn seed_disk_alert_fires_on_new_rows_and_clears_when_they_go() {
        let mut state = AlertState::new("disk");
        let t = timing(1, 0);
        let first = state.step(
            t,
            1_000,
            Observation::Rows(vec![row("10.123.123.1", "/var", 2)]),
        );
        assert_eq!(first.events.len(), 1);
        assert_eq!(first.events[0].kind, EventKind::Fired);
        assert_eq!(first.events[0].key["ip_key"], json!("10.123.123.1"));
        assert_eq!(first.events[0].details["pct"], json!(2));

        // Same row again, details change: no new event, details updated.
        let second = state.step(
            t,
            2_000,
            Observation::Rows(vec![
                row("10.123.123.1", "/var", 1),
                row("10.123.123.7", "/var", 1),
            ]),
        );
        assert_eq!(kinds(&second).len(), 1, "only the new row fires");
        assert_eq!(
            second.events[0].key["ip_key"],
            json!("10.123.123.7"),
            "new instance"
        );
        let key = row("10.123.123.1", "/var", 0).key_text();
        assert_eq!(state.instances[&key].details["pct"], json!(1));
        assert_eq!(state.instances[&key].fired_at_ms, Some(1_000));

        // First row gone: it clears; the other stays active.
        let third = state.step(
            t,
            3_000,
            Observation::Rows(vec![row("10.123.123.7", "/var", 1)]),
        );
        assert_eq!(third.events.len(), 1);
        assert_eq!(third.events[0].kind, EventKind::Cleared);
        assert_eq!(state.instances[&key].status, Status::Cleared);
        assert_eq!(state.instances[&key].cleared_at_ms, Some(3_000));
        assert_eq!(state.active().count(), 1);
        assert_eq!(state.iteration, 3);
    }

    #[test]
    fn chronic_cpu_fires_only_after_fifteen_iterations_in_a_row() {
        let mut state = AlertState::new("cpu");
        let t = timing(15, 0);
        let hot = || {
            Observation::Rows(vec![Row::from_values(
                &["ip_key".into(), "cpu".into()],
                vec![json!("10.0.0.1"), json!(99)],
            )])
        };
        // A spike of 14 iterations, then one iteration below the limit.
        for i in 0..14 {
            assert!(state.step(t, i * 120_000, hot()).events.is_empty());
        }
        let dip = state.step(t, 14 * 120_000, Observation::Rows(vec![]));
        assert!(dip.events.is_empty(), "a pending instance clears silently");
        assert!(state.instances.is_empty());
        // Now 15 in a row: fires on the fifteenth, not before.
        for i in 0..14 {
            assert!(state.step(t, (15 + i) * 120_000, hot()).events.is_empty());
        }
        let fired = state.step(t, 29 * 120_000, hot());
        assert_eq!(fired.events.len(), 1);
        assert_eq!(fired.events[0].kind, EventKind::Fired);
        // Still hot: no second notification.
        assert!(state.step(t, 30 * 120_000, hot()).events.is_empty());
    }

    #[test]
    fn scsi_errors_stay_active_for_clear_after_once_rows_vanish() {
        let mut state = AlertState::new("scsi");
        let t = timing(1, 30 * 60);
        let errors = Observation::Rows(vec![Row::from_values(
            &["ip_key".into(), "disk_key".into(), "errors".into()],
            vec![json!("10.0.0.9"), json!("sdb"), json!(3)],
        )]);
        assert_eq!(state.step(t, 0, errors.clone()).events.len(), 1);
        // The errors do not repeat: the rows vanish, the instance stays.
        let minute = 60_000;
        for m in 1..30 {
            let out = state.step(t, m * minute, Observation::Rows(vec![]));
            assert!(out.events.is_empty(), "cleared after {m} min");
            assert_eq!(state.active().count(), 1);
        }
        let cleared = state.step(t, 31 * minute, Observation::Rows(vec![]));
        assert_eq!(cleared.events.len(), 1);
        assert_eq!(cleared.events[0].kind, EventKind::Cleared);
    }

    #[test]
    fn reappearing_within_clear_after_resets_the_absence() {
        let mut state = AlertState::new("scsi");
        let t = timing(1, 100);
        state.step(t, 0, Observation::Rows(vec![row("a", "/", 1)]));
        state.step(t, 50_000, Observation::Rows(vec![]));
        state.step(t, 90_000, Observation::Rows(vec![row("a", "/", 1)]));
        let out = state.step(t, 160_000, Observation::Rows(vec![]));
        assert!(out.events.is_empty(), "absence restarted at 160 s");
        let out = state.step(t, 260_000, Observation::Rows(vec![]));
        assert_eq!(out.events[0].kind, EventKind::Cleared);
    }

    #[test]
    fn failures_and_no_data_neither_fire_nor_clear() {
        let mut state = AlertState::new("disk");
        let t = timing(2, 0);
        state.step(t, 0, Observation::Rows(vec![row("a", "/", 1)]));
        state.step(
            t,
            1,
            Observation::Rows(vec![row("a", "/", 1), row("b", "/", 1)]),
        );
        assert_eq!(state.active().count(), 1);

        let failed = state.step(t, 2, Observation::Failed("syntax".into()));
        assert!(failed.events.is_empty());
        assert_eq!(state.last_error.as_deref(), Some("syntax"));
        assert_eq!(state.active().count(), 1);

        let nodata = state.step(t, 3, Observation::NoData("filesystem missing".into()));
        assert_eq!(kinds(&nodata), vec![(EventKind::NoData, "{}".to_string())]);
        let active: Vec<_> = state.active().collect();
        assert_eq!(active.len(), 1);
        assert!(active[0].stale);
        // A second no-data iteration does not notify again.
        assert!(
            state
                .step(t, 4, Observation::NoData("x".into()))
                .events
                .is_empty()
        );

        // Data back: b was pending before and is still counted (failed and
        // no-data iterations neither advance nor reset the count).
        let back = state.step(
            t,
            5,
            Observation::Rows(vec![row("a", "/", 1), row("b", "/", 1)]),
        );
        assert_eq!(back.events.len(), 1);
        assert_eq!(back.events[0].key["ip_key"], json!("b"));
        assert!(state.active().all(|i| !i.stale));
        assert!(!state.nodata);
        assert_eq!(state.last_error, None);
    }

    #[test]
    fn keyless_rows_are_one_instance_and_cleared_ones_refire() {
        let mut state = AlertState::new("few machines");
        let t = timing(1, 0);
        let one = || {
            Observation::Rows(vec![Row::from_values(
                &["machines_seen".into()],
                vec![json!(3)],
            )])
        };
        assert_eq!(state.step(t, 0, one()).events.len(), 1);
        assert_eq!(state.step(t, 1, Observation::Rows(vec![])).events.len(), 1);
        let again = state.step(t, 2, one());
        assert_eq!(again.events[0].kind, EventKind::Fired);
        assert_eq!(state.instances.len(), 1);
        assert_eq!(state.prune(10_000_000, Duration::from_secs(1)).len(), 0);
        state.step(t, 3, Observation::Rows(vec![]));
        assert_eq!(state.prune(10_000_000, Duration::from_secs(1)).len(), 1);
    }
}
