//! Failed log-ins slow a guesser down: each client address may fail a few
//! times in a row, then one more time per interval. Shared by every front
//! end through the node's [`AuditLog`](crate::AuditLog), so a guesser
//! cannot switch from pg to HTTP to Flight SQL for more tries.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How many failed log-ins a client address may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures allowed in a row before the address must wait.
    pub burst: u32,
    /// After the burst, one more failure allowed per this interval.
    pub refill: Duration,
    /// Addresses tracked at once; beyond it the ones with the fewest
    /// recent failures are forgotten first.
    pub max_addresses: usize,
}

impl Default for ThrottleConfig {
    /// Ten wrong passwords in a row, then one per six seconds: a person
    /// who mistypes is never stopped, a guesser gets ten a minute.
    fn default() -> ThrottleConfig {
        ThrottleConfig {
            burst: 10,
            refill: Duration::from_secs(6),
            max_addresses: 65_536,
        }
    }
}

/// A refused attempt: the address failed too often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttled {
    pub(crate) retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures still allowed at `at`, in units of one failure.
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub(crate) struct LoginThrottle {
    config: ThrottleConfig,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl LoginThrottle {
    pub(crate) fn new(config: ThrottleConfig) -> LoginThrottle {
        LoginThrottle {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let per_second = 1.0 / self.config.refill.as_secs_f64().max(1e-3);
        let gained = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        (bucket.tokens + gained).min(f64::from(self.config.burst))
    }

    /// Whether `peer` may try to log in at `now`.
    pub(crate) fn check(&self, peer: IpAddr, now: Instant) -> Result<(), Throttled> {
        let buckets = self.buckets.lock();
        let Some(bucket) = buckets.get(&peer) else {
            return Ok(());
        };
        let tokens = self.refilled(*bucket, now);
        if tokens >= 1.0 {
            return Ok(());
        }
        let missing = 1.0 - tokens;
        Err(Throttled {
            retry_after: self
                .config
                .refill
                .mul_f64(missing)
                .max(Duration::from_secs(1)),
        })
    }

    /// Counts one failed log-in of `peer`.
    pub(crate) fn failed(&self, peer: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= self.config.max_addresses && !buckets.contains_key(&peer) {
            // Forget the addresses that have fully recovered; if every
            // one is still guessing, forget them all rather than grow
            // without bound (the log still shows each refusal).
            let full = f64::from(self.config.burst);
            buckets.retain(|_, b| self.refilled(*b, now) < full);
            if buckets.len() >= self.config.max_addresses {
                tracing::warn!(
                    addresses = buckets.len(),
                    "too many addresses failing to log in; their failure counts were reset"
                );
                buckets.clear();
            }
        }
        let start = Bucket {
            tokens: f64::from(self.config.burst),
            at: now,
        };
        let bucket = buckets.entry(peer).or_insert(start);
        let tokens = self.refilled(*bucket, now);
        *bucket = Bucket {
            tokens: (tokens - 1.0).max(0.0),
            at: now,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(burst: u32, max_addresses: usize) -> LoginThrottle {
        LoginThrottle::new(ThrottleConfig {
            burst,
            refill: Duration::from_secs(6),
            max_addresses,
        })
    }

    #[test]
    fn an_address_may_fail_a_burst_then_one_per_interval() {
        let t = throttle(3, 10);
        let guesser: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.check(guesser, now), Ok(()));
            t.failed(guesser, now);
        }
        let refused = t.check(guesser, now).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(6));
        assert_eq!(t.check(other, now), Ok(()), "others are not held up");
        assert!(t.check(guesser, now + Duration::from_secs(3)).is_err());
        assert_eq!(t.check(guesser, now + Duration::from_secs(6)), Ok(()));
        t.failed(guesser, now + Duration::from_secs(6));
        assert!(t.check(guesser, now + Duration::from_secs(7)).is_err());
        assert_eq!(t.check(guesser, now + Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn the_table_of_addresses_stays_bounded() {
        let t = throttle(2, 4);
        let now = Instant::now();
        for i in 0..100u8 {
            t.failed(IpAddr::from([10, 0, 0, i]), now);
            assert!(t.buckets.lock().len() <= 4);
        }
    }
}
