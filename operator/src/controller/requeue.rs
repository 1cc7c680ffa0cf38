//! When a transport is reconciled again without a watch event: after a failure, with per-object
//! exponential [`backoff`]; after a success, a read-only resync about every [`RESYNC`] as a safety net
//! behind the watches, each transport at its own offset ([`resync_after`]) so that many transports started
//! together do not resync together.

use std::time::Duration;

/// Read-only resync of a healthy transport (a safety net behind the watches).
pub const RESYNC: Duration = Duration::from_secs(600);
/// First retry after a failure; doubles per consecutive failure up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// When to resync a healthy transport: [`RESYNC`] give or take a quarter, at a fixed offset per object (a
/// hash of `key`), so transports created or restarted together spread their resyncs over half a period
/// instead of all requeueing at once.
pub fn resync_after(key: &str) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    let spread = RESYNC / 2;
    let offset = u128::from(hasher.finish()) * spread.as_millis() / (u128::from(u64::MAX) + 1);
    RESYNC - RESYNC / 4 + Duration::from_millis(u64::try_from(offset).unwrap_or_default())
}

/// Delay before retry number `failures` (1-based): 5 s, 10 s, 20 s, ... capped at 5 min.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BASE_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(7), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn resyncs_of_many_transports_are_spread_over_half_a_period() {
        let delays: Vec<Duration> = (0..1000)
            .map(|i| resync_after(&format!("tenant-{i}/rtc")))
            .collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= RESYNC * 3 / 4 && *d < RESYNC * 5 / 4),
            "out of range"
        );
        // Ten buckets of 30 s each: none empty and none holding more than a quarter of the transports.
        let mut buckets = [0usize; 10];
        for d in &delays {
            let index = (d.as_secs() - (RESYNC * 3 / 4).as_secs()) / 30;
            buckets[usize::try_from(index).unwrap().min(9)] += 1;
        }
        assert!(buckets.iter().all(|&b| b > 0 && b < 250), "{buckets:?}");
        assert_eq!(
            resync_after("a/b"),
            resync_after("a/b"),
            "stable per object"
        );
    }
}
