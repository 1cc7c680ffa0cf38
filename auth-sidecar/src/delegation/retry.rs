//! Retries of homeserver calls (spec §5.3, §5.5): what one response to a delayed-event `restart` or `send`
//! means, how long to wait before the next attempt, and how long a `send` may keep trying.
//!
//! Everything here is pure; the runner supplies the clock and the randomness.

use std::time::Duration;

use time::OffsetDateTime;
use time::macros::format_description;

/// The two MSC4140 actions the service performs on a delayed event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Push the event's timer back by its full delay.
    Restart,
    /// Fire the event now.
    Send,
}

impl Action {
    /// The last path segment of the call, also used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::Send => "send",
        }
    }
}

/// What one homeserver response said, before the action gives it a meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// 2xx.
    Success,
    /// 404: the delay ID is unknown (already sent, cancelled or never existed).
    NotFound,
    /// 429 with a usable hint of when to come back.
    RetryAfter(Duration),
    /// Anything else (429 without a hint, 5xx, any other status, or a transport error); the text says which.
    Transient(String),
}

impl Reply {
    /// Metrics label of the reply.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::NotFound => "not_found",
            Self::RetryAfter(_) => "rate_limited",
            Self::Transient(_) => "transient",
        }
    }
}

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

/// Classifies a response from its status, its `Retry-After` header and its body (spec §5.5).
///
/// For 429 the header wins over the Matrix body's `retry_after_ms`; a hint that is unusable (unparseable
/// header, or `retry_after_ms` zero, negative or not an integer) falls through to "transient".
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8], now: OffsetDateTime) -> Reply {
    match status {
        200..=299 => Reply::Success,
        404 => Reply::NotFound,
        429 => retry_after
            .and_then(|value| parse_retry_after(value, now))
            .or_else(|| retry_after_ms(body))
            .map_or_else(
                || Reply::Transient("429 without a retry hint".into()),
                Reply::RetryAfter,
            ),
        other => Reply::Transient(format!("HTTP status {other}")),
    }
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

/// `Retry-After` as delay-seconds (negative counts as zero) or as an IMF-fixdate HTTP-date (a date in the
/// past counts as zero). The obsolete RFC 850 and asctime date forms are not accepted.
fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<i64>() {
        return Some(Duration::from_secs(seconds.max(0).unsigned_abs()));
    }
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let date = time::PrimitiveDateTime::parse(value, format)
        .ok()?
        .assume_utc();
    Some(Duration::try_from(date - now).unwrap_or(Duration::ZERO))
}

/// The Matrix error body's `retry_after_ms`, rounded up to whole seconds; only a positive integer counts.
fn retry_after_ms(body: &[u8]) -> Option<Duration> {
    let parsed: serde_json::Value = serde_json::from_slice(body).ok()?;
    let millis = parsed.get("retry_after_ms")?.as_i64()?;
    let millis = u64::try_from(millis).ok().filter(|ms| *ms > 0)?;
    Some(Duration::from_secs(millis.div_ceil(1000)))
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

    fn now() -> OffsetDateTime {
        // Sun, 06 Nov 1994 08:49:37 GMT, the RFC 9110 example date.
        OffsetDateTime::from_unix_timestamp(784_111_777).expect("valid timestamp")
    }

    fn reply(status: u16, header: Option<&str>, body: &str) -> Reply {
        classify(status, header, body.as_bytes(), now())
    }

    #[test]
    fn success_statuses() {
        assert_eq!(reply(200, None, "{}"), Reply::Success);
        assert_eq!(reply(204, None, ""), Reply::Success);
    }

    #[test]
    fn not_found_ends_send_but_makes_restart_pointless() {
        let not_found = reply(404, None, r#"{"errcode":"M_NOT_FOUND"}"#);
        assert_eq!(not_found, Reply::NotFound);
        assert_eq!(verdict(Action::Send, &not_found), Verdict::Done);
        assert_eq!(verdict(Action::Restart, &not_found), Verdict::Gone);
        assert_eq!(verdict(Action::Restart, &Reply::Success), Verdict::Done);
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        assert_eq!(
            reply(429, Some("3"), ""),
            Reply::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            reply(429, Some(" -5 "), ""),
            Reply::RetryAfter(Duration::ZERO),
            "negative counts as zero"
        );
        assert_eq!(
            reply(429, Some("Sun, 06 Nov 1994 08:50:07 GMT"), ""),
            Reply::RetryAfter(Duration::from_secs(30))
        );
        assert_eq!(
            reply(429, Some("Sun, 06 Nov 1994 08:00:00 GMT"), ""),
            Reply::RetryAfter(Duration::ZERO),
            "a date in the past counts as zero"
        );
    }

    #[test]
    fn retry_after_ms_in_the_body_rounds_up_and_loses_to_the_header() {
        let body = |ms: &str| format!(r#"{{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":{ms}}}"#);
        assert_eq!(
            reply(429, None, &body("2000")),
            Reply::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            reply(429, None, &body("500")),
            Reply::RetryAfter(Duration::from_secs(1))
        );
        assert_eq!(
            reply(429, Some("7"), &body("2000")),
            Reply::RetryAfter(Duration::from_secs(7)),
            "header beats body"
        );
        assert_eq!(
            reply(429, Some("soon"), &body("2000")),
            Reply::RetryAfter(Duration::from_secs(2)),
            "an unparseable header falls back to the body"
        );
        for unusable in ["0", "-100", "1.5", "\"2000\""] {
            assert!(
                matches!(reply(429, None, &body(unusable)), Reply::Transient(_)),
                "retry_after_ms {unusable} is no hint"
            );
        }
    }

    #[test]
    fn rate_limit_without_a_hint_is_transient() {
        let plain = reply(429, None, "");
        assert!(matches!(plain, Reply::Transient(_)));
        assert_eq!(verdict(Action::Send, &plain), Verdict::RetryIn(None));
        assert_eq!(
            verdict(Action::Restart, &Reply::RetryAfter(Duration::from_secs(4))),
            Verdict::RetryIn(Some(Duration::from_secs(4)))
        );
    }

    #[test]
    fn every_other_status_is_transient_for_both_actions() {
        for status in [
            100, 301, 400, 401, 403, 408, 418, 421, 423, 425, 500, 502, 503, 504, 507,
        ] {
            let classified = reply(status, Some("10"), r#"{"retry_after_ms":1000}"#);
            assert!(
                matches!(classified, Reply::Transient(_)),
                "{status}: {classified:?}"
            );
            for action in [Action::Restart, Action::Send] {
                assert_eq!(verdict(action, &classified), Verdict::RetryIn(None));
            }
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
