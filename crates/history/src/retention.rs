//! The retention ladder as a pure function of the kept times and a clock.

use crate::config::{Every, KeepRule};

/// Which of `times` (each a kept generation's `_generation_time`, ms,
/// sorted ascending) the ladder drops at `now_ms`, as indexes into `times`.
///
/// A generation falls in the first rung whose `for` exceeds its age; past
/// the last rung it goes. In a rung of `every = d` it stays when it is the
/// oldest kept generation of its wall-clock interval of length `d`
/// (`time / d`); a younger one of the same interval goes. Since each
/// rung's interval is a multiple of the one before, the generation that
/// survives an interval in one rung is the one that survives it in the
/// next: thinning never needs one it already deleted.
pub fn to_delete(times: &[i64], rules: &[KeepRule], now_ms: i64) -> Vec<usize> {
    let mut delete = Vec::new();
    for (i, &time) in times.iter().enumerate() {
        let age = now_ms.saturating_sub(time).max(0) as u128;
        let Some(rule) = rules.iter().find(|r| age < r.keep_for.as_millis()) else {
            delete.push(i);
            continue;
        };
        if let Every::Interval(every) = rule.every {
            let every = every.as_millis().max(1) as i64;
            let bucket = time.div_euclid(every);
            if i > 0 && times[i - 1].div_euclid(every) == bucket {
                delete.push(i);
            }
        }
    }
    delete
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::default_keep;

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;

    /// Applies the ladder as the store does: the survivors of one pass
    /// are the input of the next.
    fn apply(times: &mut Vec<i64>, rules: &[KeepRule], now: i64) {
        let gone = to_delete(times, rules, now);
        let mut i = 0;
        times.retain(|_| {
            let keep = !gone.contains(&i);
            i += 1;
            keep
        });
    }

    #[test]
    fn every_generation_then_one_a_minute_then_every_ten_then_gone() {
        let rules = default_keep();
        // A generation every 5 s for 3 hours, thinned after each one as the
        // writer does.
        let mut times = Vec::new();
        let mut now = 0;
        while now <= 3 * HOUR {
            times.push(now);
            apply(&mut times, &rules, now);
            now += 5000;
        }
        let now = 3 * HOUR;
        let young: Vec<i64> = times
            .iter()
            .copied()
            .filter(|t| now - t < 2 * HOUR)
            .collect();
        let old: Vec<i64> = times
            .iter()
            .copied()
            .filter(|t| now - t >= 2 * HOUR)
            .collect();
        // The last two hours: every generation (12 a minute).
        assert_eq!(young.len(), (2 * HOUR / 5000) as usize);
        // The hour before: one a minute, the first of each minute.
        assert_eq!(old.len(), 61);
        assert!(old.iter().all(|t| t % MIN == 0), "{old:?}");

        // Three days later: one per 10 minutes, none older than 60 days.
        let later = 3 * DAY;
        apply(&mut times, &rules, later);
        assert_eq!(times.len(), 19, "{times:?}");
        assert!(times.iter().all(|t| t % (10 * MIN) == 0), "{times:?}");
        apply(&mut times, &rules, 61 * DAY + 3 * HOUR + 1);
        assert!(times.is_empty(), "{times:?}");
    }

    #[test]
    fn a_rung_keeps_the_oldest_of_each_interval() {
        let rules = [KeepRule {
            every: Every::Interval(Duration::from_secs(60)),
            keep_for: Duration::from_secs(3600),
        }];
        let times = [0, 10_000, 59_999, MIN, MIN + 1, 3 * MIN + 5];
        assert_eq!(to_delete(&times, &rules, 10 * MIN), vec![1, 2, 4]);
        // Older than the last rung: everything goes.
        assert_eq!(
            to_delete(&[0, 30 * MIN], &rules, HOUR + 30 * MIN),
            vec![0, 1]
        );
        // A time in the future (clock skew between nodes) is young.
        assert!(to_delete(&[HOUR], &rules, 0).is_empty());
    }
}
