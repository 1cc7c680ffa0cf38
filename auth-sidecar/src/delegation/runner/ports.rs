//! The two outside services a job talks to, as traits so that the runner's tests substitute fakes: the
//! homeserver's delayed-event API and LiveKit's participant lookup.

use futures::future::BoxFuture;

use crate::livekit::twirp::RoomService;
use crate::matrix::client_api::{ClientApi, ClientApiError};
use crate::matrix::delayed_event::{Action, Reply};

/// The homeserver's delayed-event API: one attempt of an action.
pub trait DelayedEventApi: Send + Sync {
    /// `Err` means the client-server API of `server_name` could not be found.
    fn attempt<'a>(
        &'a self,
        server_name: &'a str,
        delay_id: &'a str,
        action: Action,
    ) -> BoxFuture<'a, Result<Reply, ClientApiError>>;
}

impl DelayedEventApi for ClientApi {
    fn attempt<'a>(
        &'a self,
        server_name: &'a str,
        delay_id: &'a str,
        action: Action,
    ) -> BoxFuture<'a, Result<Reply, ClientApiError>> {
        Box::pin(self.delayed_event(server_name, delay_id, action))
    }
}

/// A LiveKit participant lookup failed for another reason than "not found".
#[derive(Debug, thiserror::Error)]
#[error("participant lookup failed: {0}")]
pub struct LookupError(pub String);

/// LiveKit's `GetParticipant`.
pub trait ParticipantLookup: Send + Sync {
    /// `Ok(false)` when LiveKit says the participant (or room) is not there.
    fn is_present<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<bool, LookupError>>;
}

impl ParticipantLookup for RoomService {
    fn is_present<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<bool, LookupError>> {
        Box::pin(async move {
            self.get_participant(room, identity)
                .await
                .map(|participant| participant.is_some())
                .map_err(|error| LookupError(error.to_string()))
        })
    }
}
