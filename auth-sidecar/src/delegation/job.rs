//! One delegated leave: what identifies it, what it carries, and its lifecycle (spec §5.1–5.3) as a pure
//! transition function `(state, signal) -> (state, effects)`.
//!
//! The runner feeds signals in (webhooks, LiveKit lookups, timers, outcomes of homeserver calls) and
//! performs the effects that come out; nothing in this module does I/O or reads a clock.

use std::time::Duration;

/// The key of a job: at most one job exists per (LiveKit room alias, LiveKit identity).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    /// The LiveKit room name (the hashed alias, or the legacy alias for `/sfu/get`).
    pub room: String,
    /// The LiveKit participant identity.
    pub identity: String,
}

/// What a job needs to act on the homeserver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobParams {
    pub key: JobKey,
    /// The user's homeserver (`openid_token.matrix_server_name`); its client-server API gets the calls.
    pub server_name: String,
    /// The MSC4140 delay ID, which is also the capability to restart or send the event.
    pub delay_id: String,
    /// The delayed event's timeout.
    pub delay_timeout: Duration,
    /// AS mode (as-mode spec §5.3): the user the delayed event belongs to. `restart` and `send` then go
    /// to our own homeserver with the AS token and `?user_id=` (identity assertion); `None` for
    /// standalone jobs, whose calls carry no credentials.
    pub as_user: Option<String>,
}

/// A delay timeout the job model cannot represent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid delay timeout {0:?}: it must be positive and below 292 years")]
pub struct InvalidDelayTimeout(pub Duration);

impl JobParams {
    /// Checks the timeout: the store keeps it as signed 64-bit nanoseconds (Go's `time.Duration`), so
    /// that is the upper bound, and the reference rejects a timeout that is not positive after its
    /// millisecond-to-nanosecond conversion.
    pub fn new(
        key: JobKey,
        server_name: String,
        delay_id: String,
        delay_timeout: Duration,
    ) -> Result<Self, InvalidDelayTimeout> {
        let nanos = delay_timeout.as_nanos();
        if nanos == 0 || nanos > i64::MAX.unsigned_abs().into() {
            return Err(InvalidDelayTimeout(delay_timeout));
        }
        Ok(Self {
            key,
            server_name,
            delay_id,
            delay_timeout,
            as_user: None,
        })
    }

    /// The job of an AS-mode delegation: its calls are made as `user_id` (see [`JobParams::as_user`]).
    pub fn asserted_as(self, user_id: &str) -> Self {
        Self {
            as_user: Some(user_id.to_owned()),
            ..self
        }
    }
}

/// Where a job is in its life.
///
/// Its lower-case name (logs, the `state` label of the job metrics) is derived: the variant's name in
/// snake case unless it says otherwise.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum State {
    /// Created; the participant has not been seen in the room yet.
    #[strum(serialize = "waiting")]
    WaitingForInitialConnect,
    /// The participant is in the room; the delayed event is kept from firing.
    Connected,
    /// The participant left: the leave event is sent (terminal).
    Disconnected,
    /// Nothing more to do and nothing to send (terminal).
    Aborted,
    /// A newer job took the key over (terminal; that job now owns the stored entry).
    Replaced,
}

impl State {
    /// True once the job has nothing left to react to.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Disconnected | Self::Aborted | Self::Replaced)
    }

    /// Lower-case name used in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Something that happened to a job.
///
/// Its name (logs, and the messages that carry it between replicas) is derived: the variant's name in
/// snake case.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum Signal {
    /// Webhook `participant_joined`.
    ParticipantConnected,
    /// The LiveKit lookup (phase 1) found the participant.
    ParticipantLookupSuccessful,
    /// Webhook `participant_left`/`participant_connection_aborted` for any reason but the client's own.
    ParticipantConnectionAborted,
    /// Webhook `participant_left`/`participant_connection_aborted` with reason `CLIENT_INITIATED`.
    ParticipantDisconnectedIntentionally,
    /// The sanity check (phase 2) found the participant gone.
    SfuParticipantGone,
    /// The participant did not show up within min(1 h, delay timeout).
    WaitingStateTimedOut,
    /// Time to restart the delayed event (80 % of its timeout after the last restart).
    DelayedEventReset,
    /// `restart` answered 404.
    DelayedEventNotFound,
    /// `restart` kept failing until the event's deadline.
    DelayedEventTimedOut,
    /// The homeserver's client-server API could not be resolved before a `restart`.
    CsApiUrlNotFound,
    /// A newer job for the same key exists (locally, or on another replica).
    JobReplaced,
    /// The membership monitor removed the participant (as-mode spec §8.2 step 4): the job ends without
    /// sending, since its user is no longer in the Matrix room.
    Discarded,
}

impl Signal {
    /// Stable name used when a signal travels between replicas and in logs.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The inverse of [`Signal::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        name.parse().ok()
    }
}

/// What the runner must do when a transition happens, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Set the restart deadline to now + delay timeout (entering `Connected`).
    ArmRestartDeadline,
    /// Call `restart`, retrying until the deadline. Success persists the restart time, moves the deadline
    /// to now + delay timeout and schedules the next [`Signal::DelayedEventReset`] at 80 % of the timeout;
    /// a 404, the deadline or an unresolvable client-server API come back as signals.
    Restart,
    /// Call `send`, retrying within the send window; a 404 counts as sent.
    Send,
    /// Remove the job from the store and from memory (after any `Send` before it has finished).
    Forget,
}

/// The result of a signal a state reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub next: State,
    pub effects: &'static [Effect],
}

const ENTER_CONNECTED: &[Effect] = &[Effect::ArmRestartDeadline, Effect::Restart];
const RESTART: &[Effect] = &[Effect::Restart];
const SEND_AND_FORGET: &[Effect] = &[Effect::Send, Effect::Forget];
const FORGET: &[Effect] = &[Effect::Forget];
/// A replaced job stops silently: the stored entry belongs to the newer job now.
const NOTHING: &[Effect] = &[];

/// The transition table of spec §5.2. `None` means the state ignores the signal. Terminal states ignore
/// everything: a `send` already under way is not taken back, and the runner's ownership check stops it
/// from making further attempts once a newer job exists.
pub fn step(state: State, signal: Signal) -> Option<Transition> {
    use Signal as S;
    use State::*;
    let (next, effects) = match (state, signal) {
        (WaitingForInitialConnect, S::ParticipantConnected | S::ParticipantLookupSuccessful) => {
            (Connected, ENTER_CONNECTED)
        }
        // A join that fails before it ever connected says nothing about the call: nothing is sent.
        (WaitingForInitialConnect, S::ParticipantConnectionAborted) => (Aborted, FORGET),
        (WaitingForInitialConnect, S::WaitingStateTimedOut) => (Disconnected, SEND_AND_FORGET),
        (Connected, S::DelayedEventReset) => (Connected, RESTART),
        (
            Connected,
            S::ParticipantDisconnectedIntentionally
            | S::ParticipantConnectionAborted
            | S::SfuParticipantGone,
        ) => (Disconnected, SEND_AND_FORGET),
        (Connected, S::DelayedEventNotFound | S::DelayedEventTimedOut | S::CsApiUrlNotFound) => {
            (Aborted, FORGET)
        }
        (WaitingForInitialConnect | Connected, S::JobReplaced) => (Replaced, NOTHING),
        (WaitingForInitialConnect | Connected, S::Discarded) => (Aborted, FORGET),
        _ => return None,
    };
    Some(Transition { next, effects })
}

/// When the next restart is due after a successful one: at 80 % of the timeout.
pub fn reset_interval(delay_timeout: Duration) -> Duration {
    delay_timeout.mul_f64(0.8)
}

/// How long a job waits for its participant to show up: the timeout, but at most `cap` (1 h unscaled).
pub fn waiting_timeout(delay_timeout: Duration, cap: Duration) -> Duration {
    delay_timeout.min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Effect::*;
    use Signal as S;
    use State::*;
    use strum::VariantArray;

    /// The table of spec §5.2, written out independently of `step`.
    fn expected(state: State, signal: Signal) -> Option<(State, Vec<Effect>)> {
        let row = |next, effects: &[Effect]| Some((next, effects.to_vec()));
        match (state, signal) {
            (WaitingForInitialConnect, S::ParticipantConnected) => {
                row(Connected, &[ArmRestartDeadline, Restart])
            }
            (WaitingForInitialConnect, S::ParticipantLookupSuccessful) => {
                row(Connected, &[ArmRestartDeadline, Restart])
            }
            (WaitingForInitialConnect, S::ParticipantConnectionAborted) => row(Aborted, &[Forget]),
            (WaitingForInitialConnect, S::WaitingStateTimedOut) => {
                row(Disconnected, &[Send, Forget])
            }
            (WaitingForInitialConnect, S::JobReplaced) => row(Replaced, &[]),
            (Connected, S::DelayedEventReset) => row(Connected, &[Restart]),
            (Connected, S::ParticipantDisconnectedIntentionally) => {
                row(Disconnected, &[Send, Forget])
            }
            (Connected, S::ParticipantConnectionAborted) => row(Disconnected, &[Send, Forget]),
            (Connected, S::SfuParticipantGone) => row(Disconnected, &[Send, Forget]),
            (Connected, S::DelayedEventNotFound) => row(Aborted, &[Forget]),
            (Connected, S::DelayedEventTimedOut) => row(Aborted, &[Forget]),
            (Connected, S::CsApiUrlNotFound) => row(Aborted, &[Forget]),
            (Connected, S::JobReplaced) => row(Replaced, &[]),
            (WaitingForInitialConnect, S::Discarded) => row(Aborted, &[Forget]),
            (Connected, S::Discarded) => row(Aborted, &[Forget]),
            _ => None,
        }
    }

    #[test]
    fn every_pair_follows_the_table_and_unlisted_pairs_are_ignored() {
        let mut listed = 0;
        for &state in State::VARIANTS {
            for &signal in Signal::VARIANTS {
                let actual = step(state, signal).map(|t| (t.next, t.effects.to_vec()));
                assert_eq!(actual, expected(state, signal), "{state} + {signal}");
                listed += usize::from(actual.is_some());
            }
        }
        assert_eq!(listed, 15, "the table has 15 rows");
    }

    #[test]
    fn waiting_ignores_an_intentional_disconnect() {
        assert_eq!(
            step(
                WaitingForInitialConnect,
                S::ParticipantDisconnectedIntentionally
            ),
            None
        );
    }

    #[test]
    fn terminal_states_ignore_everything() {
        for state in [Disconnected, Aborted, Replaced] {
            assert!(state.is_terminal());
            for &signal in Signal::VARIANTS {
                assert_eq!(step(state, signal), None, "{state} + {signal}");
            }
        }
        assert!(!WaitingForInitialConnect.is_terminal());
        assert!(!Connected.is_terminal());
    }

    #[test]
    fn only_leaving_after_a_connection_or_a_wait_sends() {
        for &state in State::VARIANTS {
            for &signal in Signal::VARIANTS {
                let sends = step(state, signal).is_some_and(|t| t.effects.contains(&Send));
                let should = matches!(
                    (state, signal),
                    (WaitingForInitialConnect, S::WaitingStateTimedOut)
                        | (
                            Connected,
                            S::ParticipantDisconnectedIntentionally
                                | S::ParticipantConnectionAborted
                                | S::SfuParticipantGone
                        )
                );
                assert_eq!(sends, should, "{state} + {signal}");
            }
        }
    }

    /// The names are a wire format (replicas of other versions read them from Redis) and metric labels:
    /// deriving them must not change them.
    #[test]
    fn names_are_the_stable_ones() {
        let signals: Vec<&str> = Signal::VARIANTS.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            signals,
            [
                "participant_connected",
                "participant_lookup_successful",
                "participant_connection_aborted",
                "participant_disconnected_intentionally",
                "sfu_participant_gone",
                "waiting_state_timed_out",
                "delayed_event_reset",
                "delayed_event_not_found",
                "delayed_event_timed_out",
                "cs_api_url_not_found",
                "job_replaced",
                "discarded",
            ]
        );
        let states: Vec<String> = State::VARIANTS.iter().map(ToString::to_string).collect();
        assert_eq!(
            states,
            [
                "waiting",
                "connected",
                "disconnected",
                "aborted",
                "replaced"
            ]
        );
    }

    #[test]
    fn signal_names_round_trip() {
        for &signal in Signal::VARIANTS {
            assert_eq!(Signal::from_name(signal.as_str()), Some(signal));
        }
        assert_eq!(Signal::from_name("bogus"), None);
    }

    #[test]
    fn delay_timeout_bounds() {
        let key = JobKey {
            room: "r".into(),
            identity: "i".into(),
        };
        let params = |timeout| JobParams::new(key.clone(), "hs".into(), "d".into(), timeout);
        let two = Duration::from_secs(2);
        assert_eq!(params(two).map(|p| p.delay_timeout), Ok(two));
        assert_eq!(
            params(Duration::ZERO),
            Err(InvalidDelayTimeout(Duration::ZERO))
        );
        let largest = Duration::from_nanos(i64::MAX.unsigned_abs());
        assert!(params(largest).is_ok());
        let too_large = largest + Duration::from_nanos(1);
        assert_eq!(params(too_large), Err(InvalidDelayTimeout(too_large)));
        assert!(params(Duration::from_millis(u64::MAX)).is_err());
    }

    #[test]
    fn timers() {
        assert_eq!(
            reset_interval(Duration::from_secs(10)),
            Duration::from_secs(8)
        );
        let hour = Duration::from_secs(3600);
        assert_eq!(
            waiting_timeout(Duration::from_secs(30), hour),
            Duration::from_secs(30)
        );
        assert_eq!(waiting_timeout(Duration::from_secs(7200), hour), hour);
    }
}
