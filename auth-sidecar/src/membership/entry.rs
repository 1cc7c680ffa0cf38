//! What the monitor tracks about one issued token, and how it is stored (as-mode spec §8.1), pure.
//!
//! Upstream's layout, so that a deployment can switch images and keep its tracking: HASH
//! `lk-jwt:participants`, field the compact JSON array `[livekit_room, livekit_identity]`, value
//! `{"matrix_room_id","matrix_user_id","livekit_room","livekit_identity","registered_at"}` with an RFC 3339
//! time. Ours on top, ignored by upstream's reader: `connected_at` (the participant was seen in the LiveKit
//! room, so every replica knows it may be kicked) and `revoked_at` (the monitor removed the participant;
//! the entry stays until the token expires so that a rejoin with the same token is checked again, §8.3).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Upstream's hash of tracked participants.
pub const PARTICIPANTS_KEY: &str = "lk-jwt:participants";

/// How long a token issued for an entry is valid (the grant's `exp - nbf`, spec §7): after this, a
/// participant who is not in the room can no longer join with it, so its entry can go.
pub const TOKEN_LIFETIME: time::Duration = time::Duration::hours(1);

/// A LiveKit participant: the hash field.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub livekit_room: String,
    pub livekit_identity: String,
}

impl Key {
    /// The hash field: `["<room>","<identity>"]`, compact JSON.
    pub fn field(&self) -> String {
        // Serialising two strings cannot fail.
        serde_json::to_string(&[&self.livekit_room, &self.livekit_identity]).unwrap_or_default()
    }

    /// The key a field names (any JSON spelling of a two-string array).
    pub fn parse(field: &str) -> Option<Self> {
        let [livekit_room, livekit_identity]: [String; 2] = serde_json::from_str(field).ok()?;
        Some(Self {
            livekit_room,
            livekit_identity,
        })
    }
}

/// Where a tracked participant stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// A token was issued; the participant has not been seen in the LiveKit room (or left it again).
    /// Pending participants are never kicked.
    Pending,
    /// Seen in the LiveKit room: removed if its user leaves the Matrix room.
    Connected,
    /// Removed by the monitor (or its room deleted); kept until the token expires.
    Revoked,
}

impl State {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Connected => "connected",
            Self::Revoked => "revoked",
        }
    }
}

/// One tracked participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub matrix_room_id: String,
    pub matrix_user_id: String,
    pub key: Key,
    pub registered_at: OffsetDateTime,
    pub connected_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// The stored JSON (member order as upstream's struct, ours after).
#[derive(Serialize, Deserialize)]
struct Stored {
    matrix_room_id: String,
    matrix_user_id: String,
    livekit_room: String,
    livekit_identity: String,
    registered_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connected_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked_at: Option<String>,
}

/// A stored entry this service cannot use (it is skipped, as upstream skips what it cannot parse).
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("the field is not a [room, identity] JSON array")]
    Field,
    #[error("the value is not a tracked participant: {0}")]
    Value(#[from] serde_json::Error),
    #[error("a time is not RFC 3339: {0}")]
    Time(#[from] time::error::Parse),
    #[error("the value names another participant than its field")]
    Mismatch,
}

fn format_time(at: OffsetDateTime) -> String {
    // Formatting a UTC time as RFC 3339 fails only for years outside 0..=9999, which `now` never is.
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

impl Entry {
    /// A fresh, pending entry.
    pub fn new(matrix_room_id: &str, matrix_user_id: &str, key: Key, now: OffsetDateTime) -> Self {
        Self {
            matrix_room_id: matrix_room_id.to_owned(),
            matrix_user_id: matrix_user_id.to_owned(),
            key,
            registered_at: now,
            connected_at: None,
            revoked_at: None,
        }
    }

    pub fn state(&self) -> State {
        if self.revoked_at.is_some() {
            State::Revoked
        } else if self.connected_at.is_some() {
            State::Connected
        } else {
            State::Pending
        }
    }

    /// Whether the token issued for it has expired (`registered_at` is its issue time).
    pub fn token_expired(&self, now: OffsetDateTime) -> bool {
        self.registered_at + TOKEN_LIFETIME <= now
    }

    /// A new token for the same participant: the Matrix side and the time are the new token's; a pending or
    /// connected entry keeps its state (spec §8.1), a revoked one starts over as pending (the token was
    /// issued after a fresh membership check).
    pub fn reregistered(&self, newer: &Self) -> Self {
        Self {
            connected_at: if self.revoked_at.is_some() {
                None
            } else {
                self.connected_at
            },
            revoked_at: None,
            ..newer.clone()
        }
    }

    /// The stored value.
    pub fn to_json(&self) -> String {
        let stored = Stored {
            matrix_room_id: self.matrix_room_id.clone(),
            matrix_user_id: self.matrix_user_id.clone(),
            livekit_room: self.key.livekit_room.clone(),
            livekit_identity: self.key.livekit_identity.clone(),
            registered_at: format_time(self.registered_at),
            connected_at: self.connected_at.map(format_time),
            revoked_at: self.revoked_at.map(format_time),
        };
        // Strings only: cannot fail.
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Reads a stored entry.
    pub fn parse(field: &str, value: &str) -> Result<Self, EntryError> {
        let key = Key::parse(field).ok_or(EntryError::Field)?;
        let stored: Stored = serde_json::from_str(value)?;
        if stored.livekit_room != key.livekit_room
            || stored.livekit_identity != key.livekit_identity
        {
            return Err(EntryError::Mismatch);
        }
        let time = |text: &str| OffsetDateTime::parse(text, &Rfc3339);
        Ok(Self {
            matrix_room_id: stored.matrix_room_id,
            matrix_user_id: stored.matrix_user_id,
            key,
            registered_at: time(&stored.registered_at)?,
            connected_at: stored.connected_at.as_deref().map(time).transpose()?,
            revoked_at: stored.revoked_at.as_deref().map(time).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn key(room: &str, identity: &str) -> Key {
        Key {
            livekit_room: room.into(),
            livekit_identity: identity.into(),
        }
    }

    fn entry() -> Entry {
        Entry::new(
            "!room:example.com",
            "@alice:example.com",
            key(
                "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc",
                "M3VnsLXrkbx&<",
            ),
            datetime!(2026-07-23 10:11:12.5 UTC),
        )
    }

    #[test]
    fn upstream_layout() {
        assert_eq!(
            entry().key.field(),
            r#"["O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc","M3VnsLXrkbx&<"]"#
        );
        assert_eq!(
            entry().to_json(),
            r#"{"matrix_room_id":"!room:example.com","matrix_user_id":"@alice:example.com","livekit_room":"O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc","livekit_identity":"M3VnsLXrkbx&<","registered_at":"2026-07-23T10:11:12.5Z"}"#
        );
    }

    #[test]
    fn round_trips_with_our_members() {
        let mut connected = entry();
        connected.connected_at = Some(datetime!(2026-07-23 10:12:00 UTC));
        assert_eq!(connected.state(), State::Connected);
        let json = connected.to_json();
        assert!(
            json.ends_with(r#","connected_at":"2026-07-23T10:12:00Z"}"#),
            "{json}"
        );
        assert_eq!(
            Entry::parse(&connected.key.field(), &json).unwrap(),
            connected
        );
        let mut revoked = connected.clone();
        revoked.revoked_at = Some(datetime!(2026-07-23 10:13:00 UTC));
        assert_eq!(revoked.state(), State::Revoked);
        assert_eq!(
            Entry::parse(&revoked.key.field(), &revoked.to_json()).unwrap(),
            revoked
        );
    }

    #[test]
    fn reads_upstream_entries_and_skips_garbage() {
        let value = r#"{"matrix_room_id":"!r:hs","matrix_user_id":"@u:hs","livekit_room":"a","livekit_identity":"b","registered_at":"2026-01-01T00:00:00+01:00","extra":1}"#;
        let parsed = Entry::parse(r#"[ "a", "b" ]"#, value).unwrap();
        assert_eq!(parsed.registered_at, datetime!(2025-12-31 23:00 UTC));
        assert_eq!(parsed.state(), State::Pending);
        for (field, value) in [
            ("nope", value),
            (r#"["a","c"]"#, value),
            (r#"["a","b"]"#, "{}"),
            (
                r#"["a","b"]"#,
                &value.replace("2026-01-01T00:00:00+01:00", "yesterday"),
            ),
        ] {
            assert!(Entry::parse(field, value).is_err(), "{field} {value}");
        }
    }

    #[test]
    fn reregistering_keeps_the_state_but_restarts_a_revoked_entry() {
        let later = datetime!(2026-07-23 10:40:00 UTC);
        let newer = Entry::new(
            "!room:example.com",
            "@alice:example.com",
            entry().key,
            later,
        );
        let mut connected = entry();
        connected.connected_at = Some(datetime!(2026-07-23 10:12:00 UTC));
        let renewed = connected.reregistered(&newer);
        assert_eq!(
            (renewed.state(), renewed.registered_at),
            (State::Connected, later)
        );
        assert_eq!(entry().reregistered(&newer).state(), State::Pending);
        let mut revoked = connected;
        revoked.revoked_at = Some(later);
        assert_eq!(revoked.reregistered(&newer), newer);
    }

    #[test]
    fn tokens_expire_after_an_hour() {
        let at = entry().registered_at;
        assert!(!entry().token_expired(at + time::Duration::minutes(59)));
        assert!(entry().token_expired(at + time::Duration::hours(1)));
    }

    #[test]
    fn the_tracked_gauge_labels_are_the_state_labels() {
        assert_eq!(
            crate::telemetry::membership::TRACKED_STATES,
            [State::Pending, State::Connected, State::Revoked].map(State::label)
        );
    }
}
