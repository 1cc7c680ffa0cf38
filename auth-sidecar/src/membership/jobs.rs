//! The delegated leaves of the participants the monitor removes (as-mode spec §8.2 step 4): revoking an
//! entry deletes its delegation job without sending, since its user is no longer in the Matrix room.
//!
//! A trait so that the sweep's tests record what is discarded; [`Delegation`] in production.

use futures::future::BoxFuture;

use crate::delegation::{Delegation, JobKey};

/// Ends delegated-leave jobs without sending their delayed events.
pub trait Jobs: Send + Sync {
    /// The job of the participant `livekit_identity` in `livekit_room`, if there is one, wherever it runs.
    fn discard<'a>(&'a self, livekit_room: &'a str, livekit_identity: &'a str)
    -> BoxFuture<'a, ()>;
}

impl Jobs for Delegation {
    fn discard<'a>(
        &'a self,
        livekit_room: &'a str,
        livekit_identity: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let key = JobKey {
                room: livekit_room.to_owned(),
                identity: livekit_identity.to_owned(),
            };
            Delegation::discard(self, &key).await;
        })
    }
}
