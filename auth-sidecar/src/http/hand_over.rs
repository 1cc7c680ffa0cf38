//! Handing a client's delayed leave event over to the delegation engine, the step
//! `/delegate_delayed_leave` and the token endpoints share (spec §1.2 rows 6, 8a, 8c, 8d).

use std::time::Duration;

use super::error::MatrixError;
use super::state::AppState;
use crate::delegation::{AddJobError, JobKey, JobParams};

/// Refused delegation for a restricted user (row 6): 400 on the token endpoints, 403 on
/// `/delegate_delayed_leave`.
pub const DELEGATION_NOT_ALLOWED: &str =
    "Delegation of delayed events is only supported for full access users";

/// 8d: a timeout the job store cannot hold (only reachable with absurdly large values).
pub const INVALID_DELAY_TIMEOUT: &str = "The delay timeout is out of range";

/// 8a's text.
pub const UNRESOLVABLE_CLIENT_API: &str = "Unable to resolve client-server API";

/// Rows 8a/7: the homeserver's client-server API must be known before anything is created. Primes the
/// cache the job's calls use.
pub async fn resolve_client_api(state: &AppState, server_name: &str) -> Result<(), MatrixError> {
    match state.client_api.resolve(server_name).await {
        Ok(_) => Ok(()),
        Err(error) => {
            tracing::info!(%server_name, %error, "cannot delegate: client-server API unknown");
            Err(MatrixError::bad_json(UNRESOLVABLE_CLIENT_API))
        }
    }
}

/// Rows 8c/8d: adds (and, with Redis, stores) the job before the response goes out. `as_user` is the
/// asserted user of an AS-mode delegation (as-mode spec §5.3), `None` for the standalone endpoints.
pub async fn add_job(
    state: &AppState,
    key: JobKey,
    server_name: &str,
    as_user: Option<&str>,
    delay_id: String,
    delay_timeout: Duration,
) -> Result<(), MatrixError> {
    let params =
        JobParams::new(key, server_name.to_owned(), delay_id, delay_timeout).map_err(|error| {
            tracing::info!(%error, "delegation job rejected");
            MatrixError::bad_json(INVALID_DELAY_TIMEOUT)
        })?;
    let params = match as_user {
        Some(user_id) => params.asserted_as(user_id),
        None => params,
    };
    state
        .delegation
        .add(params)
        .await
        .map_err(|error| match error {
            AddJobError::ShuttingDown => MatrixError::shutting_down(),
        })
}
