//! How the delegation engine is set up: Redis, sanity checks, this replica's name and its own intervals.

use std::time::Duration;

/// Hidden, test-only: multiplies the service's own delegation intervals (the 1 h waiting cap, the
/// backoff's 1 s start and 60 s cap, the send window's bounds, lease and scan periods) so that black-box
/// tests finish in seconds. Timeouts that come from requests are never scaled. Not part of the contract.
pub const TIME_SCALE_ENV: &str = "MATRIXRTC_AUTH_TIME_SCALE";

/// The delegation engine's own intervals.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// Longest wait for a participant who never shows up (1 h).
    pub waiting_cap: Duration,
    /// First retry interval of homeserver calls and LiveKit lookups (1 s).
    pub backoff_initial: Duration,
    /// Largest base retry interval (60 s).
    pub backoff_max: Duration,
    /// Shortest time a `send` keeps retrying (1 s).
    pub send_window_floor: Duration,
    /// Longest time a `send` keeps retrying (1 h).
    pub send_window_ceiling: Duration,
    /// Lifetime of a job lease in Redis (15 s); renewed every third of it.
    pub lease_ttl: Duration,
    /// How often a replica looks for jobs nobody (alive) holds (1 s, randomised by ±20 %).
    pub orphan_scan: Duration,
    /// Lifetime of a replica's heartbeat key (3 s, never scaled below 1 s); refreshed every third of it.
    /// A replica whose heartbeat lapsed counts as gone and its jobs are adopted.
    pub heartbeat_ttl: Duration,
    /// How long a forwarded signal waits for its replica before its inbox expires (60 s).
    pub inbox_ttl: Duration,
    /// How long one blocking read of the inbox waits (1 s); bounds how quickly the reader sees shutdown.
    pub inbox_wait: Duration,
    /// How long shutdown waits for `send`s already under way (5 s; not scaled).
    pub shutdown_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            waiting_cap: Duration::from_secs(3600),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            send_window_floor: Duration::from_secs(1),
            send_window_ceiling: Duration::from_secs(3600),
            lease_ttl: Duration::from_secs(15),
            orphan_scan: Duration::from_secs(1),
            heartbeat_ttl: Duration::from_secs(3),
            inbox_ttl: Duration::from_secs(60),
            inbox_wait: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl Timing {
    /// The default intervals multiplied by `factor` (shutdown grace excepted). Factors that are not a
    /// positive finite number give the defaults.
    pub fn scaled(factor: f64) -> Self {
        let base = Self::default();
        if !(factor.is_finite() && factor > 0.0) {
            return base;
        }
        // Keeps every interval positive (a zero lease TTL or blocking-pop timeout means something else).
        let scale = |duration: Duration| duration.mul_f64(factor).max(Duration::from_millis(10));
        Self {
            waiting_cap: scale(base.waiting_cap),
            backoff_initial: scale(base.backoff_initial),
            backoff_max: scale(base.backoff_max),
            send_window_floor: scale(base.send_window_floor),
            send_window_ceiling: scale(base.send_window_ceiling),
            lease_ttl: scale(base.lease_ttl),
            orphan_scan: scale(base.orphan_scan),
            // A busy test machine must not make live replicas look dead.
            heartbeat_ttl: scale(base.heartbeat_ttl).max(Duration::from_secs(1)),
            inbox_ttl: scale(base.inbox_ttl),
            inbox_wait: scale(base.inbox_wait),
            shutdown_grace: base.shutdown_grace,
        }
    }

    /// The defaults, scaled by [`TIME_SCALE_ENV`] when it is set to a positive number.
    pub fn from_env() -> Self {
        std::env::var(TIME_SCALE_ENV)
            .ok()
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map_or_else(Self::default, Self::scaled)
    }

    /// How often a driver renews its lease.
    pub fn lease_renewal(&self) -> Duration {
        self.lease_ttl / 3
    }

    /// How often a replica refreshes its heartbeat.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_ttl / 3
    }
}

/// How the engine is set up.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `LIVEKIT_REDIS_URL`; without it jobs live in memory only (as in the reference).
    pub redis_url: Option<String>,
    /// `LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS` when positive.
    pub sanity_check_interval: Option<Duration>,
    pub timing: Timing,
    /// `LIVEKIT_REPLICA_ID`: this replica's stable name in Redis; None picks a random one.
    pub replica_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_shrinks_everything_but_the_grace() {
        let scaled = Timing::scaled(0.01);
        assert_eq!(scaled.waiting_cap, Duration::from_secs(36));
        assert_eq!(scaled.backoff_initial, Duration::from_millis(10));
        assert_eq!(scaled.backoff_max, Duration::from_millis(600));
        assert_eq!(scaled.lease_ttl, Duration::from_millis(150));
        assert_eq!(scaled.lease_renewal(), Duration::from_millis(50));
        assert_eq!(scaled.shutdown_grace, Timing::default().shutdown_grace);
        assert_eq!(scaled.heartbeat_ttl, Duration::from_secs(1), "floored");
        assert_eq!(
            Timing::scaled(0.000_001).inbox_wait,
            Duration::from_millis(10),
            "never below 10 ms"
        );
        for nonsense in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Timing::scaled(nonsense), Timing::default());
        }
    }
}
