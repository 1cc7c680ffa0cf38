//! The MSC4140 delayed-event calls the service makes on a homeserver (`restart`, `send`) and what one
//! reply to such a call says (spec §5.5), pure. What the delegation engine then does about it (retry,
//! give up) is [`crate::delegation::retry`]'s business.

use std::time::Duration;

use time::OffsetDateTime;
use time::macros::format_description;

/// The two MSC4140 actions the service performs on a delayed event. The name (the call's last path
/// segment and a metrics label) is derived: the variant's name in snake case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Action {
    /// Push the event's timer back by its full delay.
    Restart,
    /// Fire the event now.
    Send,
}

impl Action {
    /// The last path segment of the call, also used as a metrics label.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What one homeserver response said, before the action gives it a meaning. Its metrics label is
/// derived: the variant's name in snake case unless it says otherwise.
#[derive(Clone, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Reply {
    /// 2xx.
    Success,
    /// 404: the delay ID is unknown (already sent, cancelled or never existed).
    NotFound,
    /// 429 with a usable hint of when to come back.
    #[strum(serialize = "rate_limited")]
    RetryAfter(Duration),
    /// Anything else (429 without a hint, 5xx, any other status, or a transport error); the text says which.
    Transient(String),
}

impl Reply {
    /// Metrics label of the reply.
    pub fn label(&self) -> &'static str {
        self.into()
    }
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

    /// Metric label values are what dashboards select on: deriving them must not change them.
    #[test]
    fn labels_are_the_stable_ones() {
        assert_eq!(
            [Action::Restart.as_str(), Action::Send.as_str()],
            ["restart", "send"]
        );
        let replies = [
            Reply::Success,
            Reply::NotFound,
            Reply::RetryAfter(Duration::from_secs(1)),
            Reply::Transient("x".into()),
        ];
        assert_eq!(
            replies.iter().map(Reply::label).collect::<Vec<_>>(),
            ["success", "not_found", "rate_limited", "transient"]
        );
    }

    #[test]
    fn success_statuses() {
        assert_eq!(reply(200, None, "{}"), Reply::Success);
        assert_eq!(reply(204, None, ""), Reply::Success);
    }

    #[test]
    fn not_found_is_its_own_reply() {
        assert_eq!(
            reply(404, None, r#"{"errcode":"M_NOT_FOUND"}"#),
            Reply::NotFound
        );
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
        assert!(matches!(reply(429, None, ""), Reply::Transient(_)));
    }

    #[test]
    fn every_other_status_is_transient() {
        for status in [
            100, 301, 400, 401, 403, 408, 418, 421, 423, 425, 500, 502, 503, 504, 507,
        ] {
            let classified = reply(status, Some("10"), r#"{"retry_after_ms":1000}"#);
            assert!(
                matches!(classified, Reply::Transient(_)),
                "{status}: {classified:?}"
            );
        }
    }
}
