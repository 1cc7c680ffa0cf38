//! The sweep's decisions (as-mode spec §8.2), pure: given what the homeserver and LiveKit answered, what to
//! do with each tracked entry. The rule throughout is fail-open: anything but a definite answer leaves every
//! participant where it is.

use std::collections::{BTreeSet, HashSet};

use time::OffsetDateTime;

use super::entry::{Entry, Key, State};

/// How long a pending participant who never appears in LiveKit is remembered.
pub const PENDING_LIFETIME: time::Duration = time::Duration::hours(1);

/// What `joined_members` said about a Matrix room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembersAnswer {
    /// 200 with a readable `joined` object: these users are joined.
    Joined(HashSet<String>),
    /// 403: no joined member is in the application service's namespace. `server_joined` is what
    /// `/is_joined?server_name=<own>` said then (None: it failed).
    Forbidden { server_joined: Option<bool> },
    /// Anything else: an error status, a timeout, a body that is not a whole answer.
    Unknown,
}

/// What to do in one Matrix room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomPlan {
    /// Connected participants whose user left: `RemoveParticipant`, then revoke.
    pub kick: Vec<Key>,
    /// LiveKit rooms to delete because our server left the Matrix room; every entry of the room is revoked
    /// once its LiveKit room is deleted.
    pub delete_rooms: BTreeSet<String>,
    /// Our server is still in the room but `joined_members` was refused: the registration's namespace does
    /// not cover it (logged as an error, nothing done).
    pub namespace_mismatch: bool,
}

/// Step 3 for one Matrix room: `entries` are its tracked entries (any state).
pub fn plan_room(entries: &[Entry], answer: &MembersAnswer) -> RoomPlan {
    match answer {
        MembersAnswer::Joined(joined) => RoomPlan {
            kick: entries
                .iter()
                .filter(|entry| {
                    entry.state() == State::Connected && !joined.contains(&entry.matrix_user_id)
                })
                .map(|entry| entry.key.clone())
                .collect(),
            ..RoomPlan::default()
        },
        MembersAnswer::Forbidden {
            server_joined: Some(false),
        } => RoomPlan {
            delete_rooms: entries
                .iter()
                .filter(|entry| entry.state() != State::Revoked)
                .map(|entry| entry.key.livekit_room.clone())
                .collect(),
            ..RoomPlan::default()
        },
        MembersAnswer::Forbidden {
            server_joined: Some(true),
        } => RoomPlan {
            namespace_mismatch: true,
            ..RoomPlan::default()
        },
        MembersAnswer::Forbidden {
            server_joined: None,
        }
        | MembersAnswer::Unknown => RoomPlan::default(),
    }
}

/// What LiveKit's `GetParticipant` said about a pending participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Present,
    NotFound,
    Unknown,
}

/// Step 1 for one pending entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingOutcome {
    /// In the LiveKit room: from now on it may be kicked.
    Connected,
    /// Never showed up and its token has had an hour: forgotten.
    Forget,
    /// Nothing changes.
    Keep,
}

/// Step 1: a pending entry after `GetParticipant`.
pub fn pending_outcome(entry: &Entry, presence: Presence, now: OffsetDateTime) -> PendingOutcome {
    match presence {
        Presence::Present => PendingOutcome::Connected,
        Presence::NotFound if entry.registered_at + PENDING_LIFETIME <= now => {
            PendingOutcome::Forget
        }
        Presence::NotFound | Presence::Unknown => PendingOutcome::Keep,
    }
}

/// Revoked entries whose token has expired: a rejoin can no longer happen, so they go.
pub fn expired_revocations(entries: &[Entry], now: OffsetDateTime) -> Vec<Key> {
    entries
        .iter()
        .filter(|entry| entry.state() == State::Revoked && entry.token_expired(now))
        .map(|entry| entry.key.clone())
        .collect()
}

/// What a `participant_joined` webhook means for a revoked entry, once `/is_joined?mxid=<user>` answered
/// (None: it failed): removed again only if the user is definitely not joined (§8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejoinOutcome {
    /// Joined again (or we cannot tell): connected, and the next sweep decides.
    Connected,
    /// Still not in the Matrix room: `RemoveParticipant` again.
    Kick,
}

pub fn rejoin_outcome(user_joined: Option<bool>) -> RejoinOutcome {
    match user_joined {
        Some(false) => RejoinOutcome::Kick,
        Some(true) | None => RejoinOutcome::Connected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-07-23 12:00 UTC);

    fn entry(user: &str, room: &str, state: State) -> Entry {
        let mut entry = Entry::new(
            "!m:hs",
            user,
            Key {
                livekit_room: room.into(),
                livekit_identity: format!("id-{user}"),
            },
            NOW - time::Duration::minutes(5),
        );
        if state != State::Pending {
            entry.connected_at = Some(NOW);
        }
        if state == State::Revoked {
            entry.revoked_at = Some(NOW);
        }
        entry
    }

    fn joined(users: &[&str]) -> MembersAnswer {
        MembersAnswer::Joined(users.iter().map(|user| (*user).to_owned()).collect())
    }

    #[test]
    fn a_connected_user_who_left_is_kicked_and_nobody_else() {
        let entries = [
            entry("@left:hs", "lk", State::Connected),
            entry("@stays:hs", "lk", State::Connected),
            entry("@left-pending:hs", "lk", State::Pending),
            entry("@left-revoked:hs", "lk", State::Revoked),
        ];
        let plan = plan_room(&entries, &joined(&["@stays:hs"]));
        assert_eq!(plan.kick, vec![entries[0].key.clone()]);
        assert!(plan.delete_rooms.is_empty());
        assert!(!plan.namespace_mismatch);
    }

    #[test]
    fn our_server_left_deletes_every_livekit_room_of_it() {
        let entries = [
            entry("@a:hs", "lk1", State::Connected),
            entry("@b:hs", "lk1", State::Pending),
            entry("@c:hs", "lk2", State::Pending),
            entry("@d:hs", "lk3", State::Revoked),
        ];
        let plan = plan_room(
            &entries,
            &MembersAnswer::Forbidden {
                server_joined: Some(false),
            },
        );
        assert_eq!(
            plan.delete_rooms.into_iter().collect::<Vec<_>>(),
            ["lk1", "lk2"]
        );
        assert!(plan.kick.is_empty());
    }

    #[test]
    fn uncertainty_never_kicks() {
        let entries = [entry("@a:hs", "lk", State::Connected)];
        for answer in [
            MembersAnswer::Unknown,
            MembersAnswer::Forbidden {
                server_joined: None,
            },
        ] {
            assert_eq!(
                plan_room(&entries, &answer),
                RoomPlan::default(),
                "{answer:?}"
            );
        }
        let refused = plan_room(
            &entries,
            &MembersAnswer::Forbidden {
                server_joined: Some(true),
            },
        );
        assert!(refused.namespace_mismatch);
        assert!(refused.kick.is_empty() && refused.delete_rooms.is_empty());
    }

    #[test]
    fn pending_entries_connect_wait_or_are_forgotten() {
        let fresh = entry("@a:hs", "lk", State::Pending);
        assert_eq!(
            pending_outcome(&fresh, Presence::Present, NOW),
            PendingOutcome::Connected
        );
        assert_eq!(
            pending_outcome(&fresh, Presence::NotFound, NOW),
            PendingOutcome::Keep
        );
        assert_eq!(
            pending_outcome(&fresh, Presence::Unknown, NOW),
            PendingOutcome::Keep
        );
        let later = NOW + time::Duration::hours(1);
        assert_eq!(
            pending_outcome(&fresh, Presence::NotFound, later),
            PendingOutcome::Forget
        );
        assert_eq!(
            pending_outcome(&fresh, Presence::Unknown, later),
            PendingOutcome::Keep
        );
    }

    #[test]
    fn revocations_expire_with_the_token() {
        let entries = [
            entry("@a:hs", "lk", State::Revoked),
            entry("@b:hs", "lk", State::Connected),
        ];
        assert!(expired_revocations(&entries, NOW).is_empty());
        assert_eq!(
            expired_revocations(&entries, NOW + time::Duration::hours(1)),
            vec![entries[0].key.clone()]
        );
    }

    #[test]
    fn a_rejoin_is_kicked_only_on_a_definite_no() {
        assert_eq!(rejoin_outcome(Some(false)), RejoinOutcome::Kick);
        assert_eq!(rejoin_outcome(Some(true)), RejoinOutcome::Connected);
        assert_eq!(rejoin_outcome(None), RejoinOutcome::Connected);
    }
}
