//! A delegated-leave job as stored in the reference's hash `lk-jwt:jobs` (spec §5.6): the field that
//! names it and the JSON value, byte for byte what lk-jwt-service writes and reads, plus our
//! `"Generation"` and `"Connected"` members, and `Params."AsUserId"` for AS-mode jobs (as-mode spec
//! §5.3), which its reader ignores. Pure; Redis itself is
//! [`super::store`]'s.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::job::{JobKey, JobParams};

/// A stored entry that is not a job this service can run.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the field is not a [room, identity] JSON array")]
    Field,
    #[error("the value is not a job: {0}")]
    Value(#[from] serde_json::Error),
    #[error("RestartedAt is not an RFC 3339 time: {0}")]
    RestartedAt(#[from] time::error::Parse),
    #[error("DelayTimeout is not positive")]
    DelayTimeout,
}

/// The hash field of a job: `["<room>","<identity>"]` exactly as Go's `json.Marshal` writes it, so that
/// a job the reference stored is replaced, not duplicated, by a newer one for the same key.
pub fn field_of(key: &JobKey) -> String {
    let mut field = Vec::with_capacity(key.room.len() + key.identity.len() + 7);
    field.push(b'[');
    crate::go_json::push_string(&mut field, &key.room);
    field.push(b',');
    crate::go_json::push_string(&mut field, &key.identity);
    field.push(b']');
    // Escaping valid UTF-8 only ever inserts ASCII, so the bytes are still UTF-8.
    String::from_utf8(field).unwrap_or_default()
}

/// The key a hash field names (any JSON spelling of the two-string array is accepted).
pub fn key_of(field: &str) -> Result<JobKey, RecordError> {
    let [room, identity]: [String; 2] =
        serde_json::from_str(field).map_err(|_| RecordError::Field)?;
    Ok(JobKey { room, identity })
}

/// A job as stored: its parameters, when its delayed event was last restarted (or the job created), and
/// which incarnation of the key it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    pub params: JobParams,
    pub restarted_at: OffsetDateTime,
    /// Random per job; "" for entries the reference wrote.
    pub generation: String,
    /// The participant was seen in the room (the job was Connected when last written).
    pub connected: bool,
}

/// The stored JSON. Member names are the reference's Go field names (its struct has no JSON tags).
#[derive(Serialize, Deserialize)]
struct StoredJob {
    #[serde(rename = "Params")]
    params: StoredParams,
    #[serde(rename = "RestartedAt")]
    restarted_at: String,
    #[serde(
        rename = "Generation",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    generation: String,
    #[serde(rename = "Connected", default, skip_serializing_if = "is_false")]
    connected: bool,
}

// Serde's `skip_serializing_if` takes a function of a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(value: &bool) -> bool {
    !*value
}

#[derive(Serialize, Deserialize)]
struct StoredParams {
    #[serde(rename = "DelayId", default)]
    delay_id: String,
    /// Nanoseconds (Go `time.Duration`).
    #[serde(rename = "DelayTimeout", default)]
    delay_timeout: i64,
    #[serde(rename = "ServerName", default)]
    server_name: String,
    #[serde(rename = "LiveKitRoom", default)]
    livekit_room: String,
    #[serde(rename = "LiveKitIdentity", default)]
    livekit_identity: String,
    /// The asserted user of an AS-mode job; absent for standalone jobs.
    #[serde(rename = "AsUserId", default, skip_serializing_if = "String::is_empty")]
    as_user_id: String,
}

impl JobRecord {
    /// The stored value.
    pub fn to_json(&self) -> String {
        let stored = StoredJob {
            params: StoredParams {
                delay_id: self.params.delay_id.clone(),
                // JobParams only holds timeouts that came from i64 nanoseconds.
                delay_timeout: i64::try_from(self.params.delay_timeout.as_nanos())
                    .unwrap_or(i64::MAX),
                server_name: self.params.server_name.clone(),
                livekit_room: self.params.key.room.clone(),
                livekit_identity: self.params.key.identity.clone(),
                as_user_id: self.params.as_user.clone().unwrap_or_default(),
            },
            restarted_at: format_go_time(self.restarted_at),
            generation: self.generation.clone(),
            connected: self.connected,
        };
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Reads a stored entry. The key comes from the field (it is what the entry is filed under).
    pub fn parse(field: &str, value: &str) -> Result<Self, RecordError> {
        let key = key_of(field)?;
        let stored: StoredJob = serde_json::from_str(value)?;
        let restarted_at = OffsetDateTime::parse(&stored.restarted_at, &Rfc3339)?;
        let nanos = u64::try_from(stored.params.delay_timeout)
            .ok()
            .filter(|nanos| *nanos > 0)
            .ok_or(RecordError::DelayTimeout)?;
        Ok(Self {
            params: JobParams {
                key,
                server_name: stored.params.server_name,
                delay_id: stored.params.delay_id,
                delay_timeout: Duration::from_nanos(nanos),
                as_user: Some(stored.params.as_user_id).filter(|user| !user.is_empty()),
            },
            restarted_at,
            generation: stored.generation,
            connected: stored.connected,
        })
    }

    /// True once the homeserver has fired (or dropped) the event on its own: restarted at + timeout ≤ now.
    /// A time so far off that the sum is not a date (a corrupt entry: RFC 3339 allows year 9999 and the
    /// timeout may be 292 years) counts as expired: such a job is purged without any call (the
    /// homeserver fires or drops the event on its own), never a panic.
    pub fn expired(&self, now: OffsetDateTime) -> bool {
        let timeout = time::Duration::try_from(self.params.delay_timeout).ok();
        timeout
            .and_then(|timeout| self.restarted_at.checked_add(timeout))
            .is_none_or(|expiry| expiry <= now)
    }
}

/// RFC 3339 in UTC with as many fractional digits as needed, as Go's `time.RFC3339Nano` writes it.
fn format_go_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let mut text = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    if at.nanosecond() > 0 {
        let fraction = format!("{:09}", at.nanosecond());
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn key(room: &str, identity: &str) -> JobKey {
        JobKey {
            room: room.into(),
            identity: identity.into(),
        }
    }

    #[test]
    fn field_is_what_go_writes() {
        assert_eq!(
            field_of(&key(
                "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc",
                "J+T45/x"
            )),
            r#"["O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc","J+T45/x"]"#
        );
        assert_eq!(
            field_of(&key("a<b>&c", "@u:hs:DEV\"\\\n\t\u{8}\u{c}\u{1}\u{2028}é")),
            r#"["a\u003cb\u003e\u0026c","@u:hs:DEV\"\\\n\t\b\f\u0001\u2028é"]"#
        );
    }

    #[test]
    fn field_round_trips() {
        for (room, identity) in [("r", "i"), ("a&<>", "\u{2029}\"\\\u{1}x")] {
            assert_eq!(
                key_of(&field_of(&key(room, identity))).expect("parses"),
                key(room, identity)
            );
        }
        for bad in [
            "",
            "[]",
            r#"["only"]"#,
            r#"["a","b","c"]"#,
            r#"{"a":1}"#,
            "[1,2]",
        ] {
            assert!(key_of(bad).is_err(), "{bad}");
        }
    }

    fn record() -> JobRecord {
        JobRecord {
            params: JobParams {
                key: key("room", "identity"),
                server_name: "example.com".into(),
                delay_id: "syd_abc".into(),
                delay_timeout: Duration::from_secs(30),
                as_user: None,
            },
            restarted_at: datetime!(2026-07-23 10:11:12.5 UTC),
            generation: "0123abcd".into(),
            connected: false,
        }
    }

    #[test]
    fn value_has_the_reference_shape() {
        let json: serde_json::Value =
            serde_json::from_str(&record().to_json()).expect("JSON value");
        assert_eq!(
            json,
            serde_json::json!({
                "Params": {
                    "DelayId": "syd_abc",
                    "DelayTimeout": 30_000_000_000_i64,
                    "ServerName": "example.com",
                    "LiveKitRoom": "room",
                    "LiveKitIdentity": "identity",
                },
                "RestartedAt": "2026-07-23T10:11:12.5Z",
                "Generation": "0123abcd",
            })
        );
        assert!(
            record().to_json().starts_with(r#"{"Params":{"DelayId":"#),
            "member order follows the Go struct"
        );
    }

    #[test]
    fn reads_what_the_reference_wrote() {
        let value = r#"{"Params":{"DelayId":"syd_x","DelayTimeout":7200000000000,"ServerName":"hs.example","LiveKitRoom":"r","LiveKitIdentity":"i"},"RestartedAt":"2026-07-23T12:34:56.123456789+02:00"}"#;
        let parsed = JobRecord::parse(r#"["r","i"]"#, value).expect("parses");
        assert_eq!(parsed.params.delay_timeout, Duration::from_secs(7200));
        assert_eq!(parsed.params.delay_id, "syd_x");
        assert_eq!(parsed.params.server_name, "hs.example");
        assert_eq!(parsed.params.key, key("r", "i"));
        assert_eq!(
            parsed.restarted_at,
            datetime!(2026-07-23 10:34:56.123456789 UTC)
        );
        assert_eq!(
            parsed.generation, "",
            "no generation in the reference's entries"
        );
        // And what we write reads back the same.
        assert_eq!(
            JobRecord::parse(r#"["room","identity"]"#, &record().to_json()).expect("parses"),
            record()
        );
    }

    #[test]
    fn skips_what_is_not_a_job() {
        let ok_params = r#""Params":{"DelayId":"d","DelayTimeout":1000,"ServerName":"s","LiveKitRoom":"r","LiveKitIdentity":"i"}"#;
        let cases = [
            (
                "not a field",
                format!(r#"{{{ok_params},"RestartedAt":"2026-01-01T00:00:00Z"}}"#),
            ),
            (r#"["r","i"]"#, "garbage".to_owned()),
            (
                r#"["r","i"]"#,
                format!(r#"{{{ok_params},"RestartedAt":"yesterday"}}"#),
            ),
            (
                r#"["r","i"]"#,
                r#"{"Params":{"DelayTimeout":0},"RestartedAt":"2026-01-01T00:00:00Z"}"#.to_owned(),
            ),
        ];
        for (field, value) in cases {
            assert!(JobRecord::parse(field, &value).is_err(), "{field} {value}");
        }
    }

    #[test]
    fn expiry() {
        let record = record();
        let at = record.restarted_at;
        assert!(!record.expired(at + Duration::from_secs(29)));
        assert!(record.expired(at + Duration::from_secs(30)));
    }

    #[test]
    fn a_time_at_the_end_of_the_calendar_counts_as_expired_instead_of_panicking() {
        // Both parse: RFC 3339 allows year 9999, and a timeout up to i64 nanoseconds (292 years).
        for (restarted_at, timeout_ns) in [
            ("9999-12-31T23:59:59.999999999Z", i64::MAX),
            ("9999-12-31T23:59:59Z", 1_000_000_000),
        ] {
            let value = format!(
                r#"{{"Params":{{"DelayId":"d","DelayTimeout":{timeout_ns},"ServerName":"s","LiveKitRoom":"r","LiveKitIdentity":"i"}},"RestartedAt":"{restarted_at}"}}"#
            );
            let record = JobRecord::parse(r#"["r","i"]"#, &value).expect("parses");
            assert!(
                record.expired(OffsetDateTime::now_utc()),
                "{restarted_at} + {timeout_ns} ns"
            );
        }
    }

    #[test]
    fn the_connected_mark_round_trips_and_is_absent_until_set() {
        assert!(!record().to_json().contains("Connected"));
        let connected = JobRecord {
            connected: true,
            ..record()
        };
        assert!(connected.to_json().ends_with(r#","Connected":true}"#));
        assert_eq!(
            JobRecord::parse(r#"["room","identity"]"#, &connected.to_json()).expect("parses"),
            connected
        );
    }

    #[test]
    fn an_as_job_names_its_asserted_user() {
        assert!(!record().to_json().contains("AsUserId"), "standalone jobs");
        let asserted = JobRecord {
            params: record().params.asserted_as("@alice:example.com"),
            ..record()
        };
        let json: serde_json::Value = serde_json::from_str(&asserted.to_json()).expect("JSON");
        assert_eq!(json["Params"]["AsUserId"], "@alice:example.com");
        assert_eq!(
            JobRecord::parse(r#"["room","identity"]"#, &asserted.to_json()).expect("parses"),
            asserted
        );
    }

    #[test]
    fn go_time_format() {
        assert_eq!(
            format_go_time(datetime!(2026-01-02 03:04:05 UTC)),
            "2026-01-02T03:04:05Z"
        );
        assert_eq!(
            format_go_time(datetime!(2026-01-02 03:04:05.000000120 +01:00)),
            "2026-01-02T02:04:05.00000012Z"
        );
    }
}
