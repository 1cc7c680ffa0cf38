//! `/sfu_webhook` (spec §1.6): LiveKit tells us participants joined or left; the delegation engine turns
//! that into restarts and sends. Any method is accepted and the answer is always an empty 200, whatever
//! went wrong (LiveKit would only retry); what went wrong is logged and counted.
//!
//! One exception: a body that does not arrive within [`BODY_READ_TIMEOUT`] is cut off with an empty
//! 408 and the connection closed. The reference has no such bound; LiveKit sends a few kilobytes at
//! once, so only a peer holding a connection open by dripping bytes ever meets it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::StatusCode;
use http::header::{AUTHORIZATION, CONNECTION};

use super::state::AppState;
use crate::delegation::{JobKey, Signal};
use crate::livekit::webhook::{ParticipantChange, WebhookError};
use crate::telemetry::WebhookOutcome;

/// LiveKit's webhook bodies are a few kilobytes; anything far larger is not one.
const BODY_LIMIT: usize = 1 << 20;
/// How long the whole body may take once the headers are in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The route handler.
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(read) =
        tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT)).await
    else {
        tracing::info!("cut off a webhook whose body did not arrive in time");
        state.metrics.webhook(WebhookOutcome::Malformed);
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
        response
            .headers_mut()
            .insert(CONNECTION, http::HeaderValue::from_static("close"));
        return response;
    };
    let outcome = match read {
        Ok(body) => {
            let authorization = parts
                .headers
                .get(AUTHORIZATION)
                .and_then(|value| value.to_str().ok());
            process(&state, authorization, &body).await
        }
        Err(error) => {
            tracing::info!(%error, "could not read a webhook body");
            WebhookOutcome::Malformed
        }
    };
    state.metrics.webhook(outcome);
    Response::new(Body::empty())
}

async fn process(state: &AppState, authorization: Option<&str>, body: &[u8]) -> WebhookOutcome {
    match state.webhooks.verify(authorization, body) {
        Ok(Some(notification)) => {
            if let Some(monitor) = &state.membership {
                monitor.participant_changed(&notification).await;
            }
            let signal = match notification.change {
                ParticipantChange::Joined => Signal::ParticipantConnected,
                ParticipantChange::LeftIntentionally => {
                    Signal::ParticipantDisconnectedIntentionally
                }
                ParticipantChange::LeftAbnormally => Signal::ParticipantConnectionAborted,
            };
            let key = JobKey {
                room: notification.room,
                identity: notification.identity,
            };
            tracing::debug!(room = %key.room, identity = %key.identity, %signal, "webhook");
            state.delegation.notify(&key, signal).await;
            WebhookOutcome::Delivered
        }
        Ok(None) => {
            // The verifier reports participant events only; a finished room matters to the monitor.
            if let Some(monitor) = &state.membership
                && let Some(room) = crate::membership::monitor::finished_room(body)
            {
                monitor.room_finished(&room).await;
            }
            WebhookOutcome::Ignored
        }
        Err(error @ WebhookError::Malformed(_)) => {
            tracing::warn!(%error, "ignoring a signed webhook");
            WebhookOutcome::Malformed
        }
        Err(error) => {
            tracing::warn!(%error, "rejected a webhook that is not from our LiveKit");
            WebhookOutcome::Rejected
        }
    }
}
