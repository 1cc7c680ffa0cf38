//! The monitor's variables (as-mode spec §2): `LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS` (the reference's)
//! and `LIVEKIT_MEMBERSHIP_CHECK_CONCURRENCY` (ours, §8.3).
//!
//! Parsed here and called from `config.rs`, so that the monitor's rules live next to the monitor. Whether the
//! monitor runs at all also depends on AS mode, which `config.rs` decides: a non-zero interval without AS mode
//! only warns (spec §2), which is the caller's to say.

use std::num::NonZeroUsize;
use std::time::Duration;

use super::go_quote;

/// Seconds between sweeps; `0` disables the monitor.
pub const LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS: &str =
    "LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS";
/// How many rooms, and how many LiveKit calls, one replica has in flight during a sweep (ours).
pub const LIVEKIT_MEMBERSHIP_CHECK_CONCURRENCY: &str = "LIVEKIT_MEMBERSHIP_CHECK_CONCURRENCY";

/// The reference's default period.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Our default bound on rooms and LiveKit calls in flight.
pub const DEFAULT_CONCURRENCY: NonZeroUsize = NonZeroUsize::new(8).expect("8 is not zero");

/// A monitor variable that does not parse. The texts are the spec's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MembershipConfigError {
    #[error("LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS must be a non-negative integer, got {}", go_quote(.0))]
    Interval(String),
    #[error("LIVEKIT_MEMBERSHIP_CHECK_CONCURRENCY must be a positive integer, got {}", go_quote(.0))]
    Concurrency(String),
}

/// The monitor's settings from the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipConfig {
    /// Zero: the monitor is off.
    pub interval: Duration,
    pub concurrency: NonZeroUsize,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl MembershipConfig {
    /// Reads both variables through `lookup` (None or empty: unset, as everywhere in the configuration).
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, MembershipConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let interval = match get(LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS) {
            None => DEFAULT_INTERVAL,
            // Go's Atoi, as for LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS: an optional sign, digits only.
            Some(raw) => match raw.parse::<i64>() {
                Ok(secs) if secs >= 0 => Duration::from_secs(secs.unsigned_abs()),
                _ => return Err(MembershipConfigError::Interval(raw)),
            },
        };
        let concurrency = match get(LIVEKIT_MEMBERSHIP_CHECK_CONCURRENCY) {
            None => DEFAULT_CONCURRENCY,
            Some(raw) => raw
                .trim()
                .parse::<NonZeroUsize>()
                .map_err(|_| MembershipConfigError::Concurrency(raw.clone()))?,
        };
        Ok(Self {
            interval,
            concurrency,
        })
    }

    /// Whether the interval asks for a monitor (it runs only in AS mode).
    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<MembershipConfig, MembershipConfigError> {
        MembershipConfig::from_lookup(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn defaults_are_thirty_seconds_and_eight() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.interval, Duration::from_secs(30));
        assert_eq!(config.concurrency.get(), 8);
        assert!(config.enabled());
        assert_eq!(
            parse(&[(LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS, "")]).unwrap(),
            config
        );
    }

    #[test]
    fn zero_disables_and_go_atoi_spellings_are_accepted() {
        assert!(
            !parse(&[(LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS, "0")])
                .unwrap()
                .enabled()
        );
        assert_eq!(
            parse(&[(LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS, "+5")])
                .unwrap()
                .interval,
            Duration::from_secs(5)
        );
        assert!(
            !parse(&[(LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS, "-0")])
                .unwrap()
                .enabled()
        );
        assert_eq!(
            parse(&[(LIVEKIT_MEMBERSHIP_CHECK_CONCURRENCY, "64")])
                .unwrap()
                .concurrency
                .get(),
            64
        );
    }

    #[test]
    fn bad_values_have_the_spec_texts() {
        for bad in ["-1", "1.5", " 5", "abc", "30s"] {
            assert_eq!(
                parse(&[(LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS, bad)])
                    .unwrap_err()
                    .to_string(),
                format!(
                    "LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS must be a non-negative integer, got {}",
                    go_quote(bad)
                )
            );
        }
        for bad in ["0", "-3", "x"] {
            assert_eq!(
                parse(&[(LIVEKIT_MEMBERSHIP_CHECK_CONCURRENCY, bad)])
                    .unwrap_err()
                    .to_string(),
                format!(
                    "LIVEKIT_MEMBERSHIP_CHECK_CONCURRENCY must be a positive integer, got \"{bad}\""
                )
            );
        }
    }
}
