//! The part of a token request that both token endpoints share once the user is authenticated: the
//! full-access decision, minting, room creation and delegation.

use std::time::SystemTime;

use super::authenticate::Authenticated;
use super::error::MatrixError;
use super::hand_over::{self, DELEGATION_NOT_ALLOWED};
use super::request::Delegation;
use super::state::AppState;
use super::trace;
use crate::delegation::JobKey;
use crate::livekit::grant;

/// Which LiveKit participant a token endpoint issued a token for. Its 200 response carries it as an
/// extension, so that a layer in front of the endpoint (AS mode's `LIVEKIT_REQUIRE_MEMBERSHIP`, which
/// hands the participant to the membership monitor) learns it without decoding the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub livekit_room: String,
    pub livekit_identity: String,
}

/// A success: the body, and whom it was for.
pub struct Issued {
    pub body: Vec<u8>,
    pub token: IssuedToken,
}

/// What to put in the token, for whom.
pub struct Grant<'a> {
    pub user: &'a Authenticated,
    /// The homeserver that vouched for the user.
    pub server_name: &'a str,
    pub room_alias: String,
    pub identity: String,
    pub delegation: Option<Delegation>,
}

/// Rows 6 to 9: refuses delegation to restricted users, mints the token, creates the room for
/// full-access users, and returns the success body.
pub async fn issue(state: &AppState, grant: Grant<'_>) -> Result<Issued, MatrixError> {
    trace::record_room(&grant.room_alias);
    if grant.delegation.is_some() && !grant.user.full_access {
        tracing::info!("delegation refused: not a full-access user");
        return Err(MatrixError::bad_json(DELEGATION_NOT_ALLOWED));
    }
    let jwt = grant::participant_token(
        &state.keys,
        &grant.identity,
        &grant.room_alias,
        SystemTime::now(),
    )
    .map_err(|error| {
        tracing::error!(%error, "could not mint a participant token");
        MatrixError::internal()
    })?;
    if grant.user.full_access {
        // Boxed: inline, its LiveKit and homeserver calls would make the future of every request in flight
        // larger, restricted users' included (the handler's 3.1 KiB became 1.5 KiB in a release build).
        Box::pin(prepare_room_and_delegation(state, &grant)).await?;
    }
    tracing::debug!(
        full_access = grant.user.full_access,
        "issued a LiveKit token"
    );
    Ok(Issued {
        body: state.token_response.body(&jwt),
        token: IssuedToken {
            livekit_room: grant.room_alias,
            livekit_identity: grant.identity,
        },
    })
}

/// For a full-access user: make sure the LiveKit room exists and, when the request carries a
/// [`Delegation`], hand the client's delayed leave event over to the delegation engine. The order is the
/// reference's (spec §1.2 rows 8a–8d): resolve the client-server API of the user's homeserver first (so
/// an unusable one creates nothing), then create the room, then add and persist the job keyed by
/// (room alias, identity) before the response goes out.
async fn prepare_room_and_delegation(
    state: &AppState,
    grant: &Grant<'_>,
) -> Result<(), MatrixError> {
    if grant.delegation.is_some() {
        hand_over::resolve_client_api(state, grant.server_name).await?;
    }
    create_room(state, &grant.room_alias).await?;
    if let Some(delegation) = &grant.delegation {
        let key = JobKey {
            room: grant.room_alias.clone(),
            identity: grant.identity.clone(),
        };
        hand_over::add_job(
            state,
            key,
            grant.server_name,
            None,
            delegation.delay_id.clone(),
            delegation.delay_timeout,
        )
        .await?;
    }
    Ok(())
}

/// Row 8b: LiveKit `CreateRoom`; an existing room is fine.
async fn create_room(state: &AppState, room_alias: &str) -> Result<(), MatrixError> {
    let asked_at = grant::unix_seconds(SystemTime::now()).unwrap_or_default();
    match state.rooms.create_room(room_alias).await {
        Ok(room) => {
            // LiveKit returns the existing room unchanged, so a creation time before this request means
            // the room was already there.
            let created = u64::try_from(room.creation_time).is_ok_and(|t| t >= asked_at);
            if created {
                tracing::info!(sid = %room.sid, "created LiveKit room");
            } else {
                tracing::debug!(sid = %room.sid, "LiveKit room exists");
            }
            Ok(())
        }
        Err(error) => {
            state.metrics.create_room_failed();
            tracing::warn!(%error, "LiveKit CreateRoom failed");
            Err(MatrixError::create_room_failed())
        }
    }
}
