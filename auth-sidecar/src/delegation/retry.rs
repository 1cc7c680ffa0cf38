//! Retries of homeserver calls (spec §5.3, §5.5): what a reply to a delayed-event `restart` or `send`
//! means for the job, how long to wait before the next attempt, and how long a `send` may keep trying.
//!
//! Everything here is pure; the runner supplies the clock and the randomness.

use std::time::Duration;

use crate::matrix::delayed_event::{Action, Reply};

/// What the caller does after a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The action achieved its purpose.
    Done,
    /// Retrying cannot help: the delayed event is gone (only `restart` ends like this).
    Gone,
    /// Try again, after the given hint or, without one, after the next backoff interval.
    RetryIn(Option<Duration>),
}

/// The meaning of a reply for an action: a 404 ends a `send` successfully (the event already fired or was
/// cancelled) but makes a `restart` pointless.
pub fn verdict(action: Action, reply: &Reply) -> Verdict {
    match (reply, action) {
        (Reply::Success, _) | (Reply::NotFound, Action::Send) => Verdict::Done,
        (Reply::NotFound, Action::Restart) => Verdict::Gone,
        (Reply::RetryAfter(hint), _) => Verdict::RetryIn(Some(*hint)),
        (Reply::Transient(_), _) => Verdict::RetryIn(None),
    }
}

/// How long a `send` may keep retrying: the time left before the homeserver fires the event on its own,
/// clamped to `[floor, ceiling]`. A job that never restarted has no deadline and gets the floor.
pub fn send_window(time_left: Option<Duration>, floor: Duration, ceiling: Duration) -> Duration {
    time_left.unwrap_or(Duration::ZERO).clamp(floor, ceiling)
}

/// Exponential backoff: starts at `initial`, grows ×1.5 per attempt up to `max`, and each interval is
/// randomised by ±50 %, like the reference's backoff library.
#[derive(Clone, Debug)]
pub struct Backoff {
    current: Duration,
    max: Duration,
}

/// Growth of the interval per attempt.
const MULTIPLIER: f64 = 1.5;
/// Each interval is drawn from `current × [1 − R, 1 + R]`.
const RANDOMISATION: f64 = 0.5;

impl Backoff {
    /// A fresh backoff whose first interval is about `initial`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            current: initial.min(max),
            max,
        }
    }

    /// The next interval, given `unit` in `[0, 1)` (a random draw; the caller supplies it so that tests
    /// can fix it). Then grows the base interval.
    pub fn next_with(&mut self, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        let factor = 1.0 - RANDOMISATION + 2.0 * RANDOMISATION * unit;
        let interval = self.current.mul_f64(factor);
        self.current = self.current.mul_f64(MULTIPLIER).min(self.max);
        interval
    }

    /// The next interval with a random draw.
    pub fn next_interval(&mut self) -> Duration {
        self.next_with(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_ends_send_but_makes_restart_pointless() {
        assert_eq!(verdict(Action::Send, &Reply::NotFound), Verdict::Done);
        assert_eq!(verdict(Action::Restart, &Reply::NotFound), Verdict::Gone);
        assert_eq!(verdict(Action::Restart, &Reply::Success), Verdict::Done);
    }

    #[test]
    fn a_hint_is_followed_and_anything_transient_backs_off() {
        let transient = Reply::Transient("HTTP status 502".into());
        for action in [Action::Restart, Action::Send] {
            assert_eq!(verdict(action, &transient), Verdict::RetryIn(None));
            assert_eq!(
                verdict(action, &Reply::RetryAfter(Duration::from_secs(4))),
                Verdict::RetryIn(Some(Duration::from_secs(4)))
            );
        }
    }

    #[test]
    fn backoff_grows_by_half_and_caps() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mid: Vec<Duration> = (0..12).map(|_| backoff.next_with(0.5)).collect();
        assert_eq!(mid[0], Duration::from_secs(1));
        assert_eq!(mid[1], Duration::from_millis(1500));
        assert_eq!(mid[2], Duration::from_millis(2250));
        assert_eq!(*mid.last().expect("12 values"), Duration::from_secs(60));
        assert!(mid.windows(2).all(|pair| pair[0] <= pair[1]));
    }

    #[test]
    fn backoff_randomises_by_half_either_way() {
        let low = Backoff::new(Duration::from_secs(2), Duration::from_secs(60)).next_with(0.0);
        let high = Backoff::new(Duration::from_secs(2), Duration::from_secs(60)).next_with(1.0);
        assert_eq!(low, Duration::from_secs(1));
        assert_eq!(high, Duration::from_secs(3));
        let mut random = Backoff::new(Duration::from_secs(2), Duration::from_secs(60));
        let drawn = random.next_interval();
        assert!((low..=high).contains(&drawn), "{drawn:?}");
    }

    #[test]
    fn send_window_is_clamped() {
        let (floor, ceiling) = (Duration::from_secs(1), Duration::from_secs(3600));
        assert_eq!(send_window(None, floor, ceiling), floor);
        assert_eq!(send_window(Some(Duration::ZERO), floor, ceiling), floor);
        assert_eq!(
            send_window(Some(Duration::from_secs(90)), floor, ceiling),
            Duration::from_secs(90)
        );
        assert_eq!(
            send_window(Some(Duration::from_secs(86_400)), floor, ceiling),
            ceiling
        );
    }
}
