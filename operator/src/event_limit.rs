//! Per-object rate limit of Events: a token bucket per regarded object, so one flapping transport cannot
//! flood the API server with Events, and cannot use up a budget the other transports need either (a
//! process-wide limit would silence every object because of one).
//!
//! kube's `Recorder` has no rate limit of its own (it only folds repeats into a series); client-go's event
//! recorder does this per source and object with a burst of 25 and one more token every 5 minutes, and the
//! defaults here are the same.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Events an object may publish at once.
pub const BURST: u32 = 25;
/// Time for one more Event to be allowed.
pub const REFILL: Duration = Duration::from_secs(300);
/// Above this many tracked objects, buckets that are full again are forgotten.
const TRACKED_LIMIT: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    /// When `tokens` was last brought up to date.
    since: Instant,
}

/// Token buckets by object key (`namespace/name`).
pub struct EventLimiter {
    burst: u32,
    refill: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Default for EventLimiter {
    fn default() -> Self {
        Self::new(BURST, REFILL)
    }
}

impl EventLimiter {
    pub fn new(burst: u32, refill: Duration) -> Self {
        Self {
            burst,
            refill,
            buckets: Mutex::default(),
        }
    }

    /// Whether `key` may publish an Event at `now` (and if so, takes a token).
    pub fn allow(&self, key: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= TRACKED_LIMIT && !buckets.contains_key(key) {
            let (burst, refill) = (self.burst, self.refill);
            buckets.retain(|_, b| refilled(b, burst, refill, now).tokens < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            since: now,
        });
        *bucket = refilled(bucket, self.burst, self.refill, now);
        if bucket.tokens == 0 {
            return false;
        }
        bucket.tokens -= 1;
        true
    }
}

/// `bucket` with the tokens earned since it was last updated.
fn refilled(bucket: &Bucket, burst: u32, refill: Duration, now: Instant) -> Bucket {
    let elapsed = now.saturating_duration_since(bucket.since);
    let earned = if refill.is_zero() {
        u128::from(burst)
    } else {
        elapsed.as_nanos() / refill.as_nanos()
    };
    let earned = u32::try_from(earned).unwrap_or(u32::MAX);
    let tokens = bucket.tokens.saturating_add(earned).min(burst);
    let since = if tokens == burst {
        now
    } else {
        // Keep the part of a period not yet earned.
        bucket.since + refill * earned
    };
    Bucket { tokens, since }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_object_has_its_own_burst_and_refill() {
        let limiter = EventLimiter::new(3, Duration::from_secs(10));
        let start = Instant::now();
        let allowed = (0..5).filter(|_| limiter.allow("ns/flappy", start)).count();
        assert_eq!(allowed, 3, "the burst, then nothing");
        assert!(
            limiter.allow("ns/quiet", start),
            "another object is not affected"
        );
        assert!(!limiter.allow("ns/flappy", start + Duration::from_secs(9)));
        assert!(limiter.allow("ns/flappy", start + Duration::from_secs(10)));
        assert!(!limiter.allow("ns/flappy", start + Duration::from_secs(15)));
        assert!(limiter.allow("ns/flappy", start + Duration::from_secs(20)));
        // A long pause refills up to the burst only.
        let later = start + Duration::from_secs(1000);
        let allowed = (0..5).filter(|_| limiter.allow("ns/flappy", later)).count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn forgotten_buckets_are_only_full_ones() {
        let limiter = EventLimiter::new(2, Duration::from_secs(10));
        let start = Instant::now();
        assert!(limiter.allow("ns/busy", start));
        assert!(limiter.allow("ns/busy", start));
        for i in 0..TRACKED_LIMIT {
            limiter.allow(&format!("ns/other-{i}"), start);
        }
        assert!(
            !limiter.allow("ns/busy", start),
            "an empty bucket is not forgotten"
        );
    }
}
