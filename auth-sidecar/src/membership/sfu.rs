//! The monitor's LiveKit calls (as-mode spec §8.2): `GetParticipant` for pending entries, and the two
//! actions, `RemoveParticipant` and `DeleteRoom`, where `not_found` counts as done and transient failures
//! are retried with the delegation engine's backoff (spec R§5.3) for at most a minute.
//!
//! The calls themselves are [`RoomService`]'s (hand-built Twirp with the admin grants); this module only
//! says what their failures mean, behind the [`Sfu`] trait so that the sweep is tested against a fake.

use std::time::Duration;

use futures::future::BoxFuture;

use crate::delegation::retry::Backoff;
use crate::livekit::twirp::{RoomService, TwirpError};

/// Why a LiveKit call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SfuError {
    /// Worth trying again: LiveKit unreachable, overloaded or failing (5xx, 429).
    pub transient: bool,
    pub message: String,
}

impl From<TwirpError> for SfuError {
    fn from(error: TwirpError) -> Self {
        let transient = match &error {
            TwirpError::Transport(_) => true,
            TwirpError::Api { status, .. } => *status >= 500 || *status == 429,
            TwirpError::Decode(_) | TwirpError::Token(_) => false,
        };
        Self {
            transient,
            message: error.to_string(),
        }
    }
}

/// LiveKit's RoomService as the monitor uses it.
pub trait Sfu: Send + Sync {
    /// `GetParticipant`: `Ok(false)` when LiveKit says `not_found`.
    fn participant_present<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<bool, SfuError>>;
    /// `RemoveParticipant`; `not_found` is success (they are gone either way).
    fn remove_participant<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>>;
    /// `DeleteRoom`; `not_found` is success.
    fn delete_room<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<(), SfuError>>;
}

/// `not_found` is what the action wanted.
fn done_if_not_found(result: Result<(), TwirpError>) -> Result<(), SfuError> {
    match result {
        Err(error) if !error.is_not_found() => Err(error.into()),
        _ => Ok(()),
    }
}

impl Sfu for RoomService {
    fn participant_present<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<bool, SfuError>> {
        Box::pin(async move {
            self.get_participant(room, identity)
                .await
                .map(|participant| participant.is_some())
                .map_err(SfuError::from)
        })
    }

    fn remove_participant<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move {
            done_if_not_found(RoomService::remove_participant(self, room, identity).await)
        })
    }

    fn delete_room<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async move { done_if_not_found(RoomService::delete_room(self, room).await) })
    }
}

/// How the actions are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First backoff interval (1 s).
    pub initial: Duration,
    /// No new attempt starts after this much time (60 s).
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            budget: Duration::from_secs(60),
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the budget would be exceeded by the next wait.
pub async fn with_retries<F, Fut>(policy: RetryPolicy, mut attempt: F) -> Result<(), SfuError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), SfuError>>,
{
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::new(policy.initial, policy.budget);
    loop {
        match attempt().await {
            Err(error) if error.transient => {
                let wait = backoff.next_interval();
                if started.elapsed() + wait > policy.budget {
                    return Err(error);
                }
                tokio::time::sleep(wait).await;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn failure(transient: bool) -> SfuError {
        SfuError {
            transient,
            message: "x".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_within_the_budget() {
        let calls = AtomicUsize::new(0);
        let result = with_retries(RetryPolicy::default(), || {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move { if call < 3 { Err(failure(true)) } else { Ok(()) } }
        })
        .await;
        assert_eq!((result, calls.load(Ordering::SeqCst)), (Ok(()), 4));

        let calls = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let result = with_retries(RetryPolicy::default(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(failure(true)) }
        })
        .await;
        assert!(result.is_err());
        assert!(
            started.elapsed() <= Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
        assert!(calls.load(Ordering::SeqCst) > 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_is_not_retried() {
        let calls = AtomicUsize::new(0);
        let result = with_retries(RetryPolicy::default(), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(failure(false)) }
        })
        .await;
        assert_eq!(
            (result, calls.load(Ordering::SeqCst)),
            (Err(failure(false)), 1)
        );
    }

    #[test]
    fn twirp_errors_are_classified() {
        let api = |status, code: &str| TwirpError::Api {
            status,
            code: code.into(),
            msg: String::new(),
        };
        assert!(SfuError::from(api(503, "unavailable")).transient);
        assert!(SfuError::from(api(429, "resource_exhausted")).transient);
        assert!(!SfuError::from(api(401, "unauthenticated")).transient);
        assert!(!SfuError::from(TwirpError::Decode("x".into())).transient);
        assert_eq!(done_if_not_found(Err(api(404, "not_found"))), Ok(()));
        assert!(done_if_not_found(Err(api(403, "permission_denied"))).is_err());
    }
}
