//! Row 4 of every endpoint that names a Matrix user: the OpenID check, with the limits around it.

use std::net::IpAddr;

use super::error::MatrixError;
use super::request::OpenId;
use super::state::AppState;
use super::trace;

/// A user the homeserver vouched for.
pub struct Authenticated {
    /// The verified Matrix user ID (`sub`).
    pub user_id: String,
    /// Whether the user's homeserver is in `LIVEKIT_FULL_ACCESS_HOMESERVERS`.
    pub full_access: bool,
}

/// Row 4: asks the homeserver whose token this is. Around it, the limits (see [`super::limits`]): a
/// `client` whose failed verifications are spent is refused before the lookup, a failure is counted
/// against the client, and only a verified token counts against its homeserver.
pub async fn authenticate(
    state: &AppState,
    client: IpAddr,
    openid: &OpenId,
) -> Result<Authenticated, MatrixError> {
    state.limits.check_failures(client, &state.metrics)?;
    let full_access = state.full_access.allows(&openid.server_name);
    let trusted = state.ssrf_trusted.names(&openid.server_name);
    match state
        .openid
        .lookup(&openid.server_name, &openid.access_token, trusted)
        .await
    {
        Ok(user_id) => {
            trace::record_user(&user_id);
            state
                .limits
                .check_homeserver(&openid.server_name, &state.metrics)?;
            Ok(Authenticated {
                user_id,
                full_access,
            })
        }
        Err(reason) => {
            state.limits.record_failure(client);
            tracing::info!(
                server_name = %openid.server_name,
                %reason,
                "OpenID token not accepted"
            );
            Err(MatrixError::unauthorized())
        }
    }
}
