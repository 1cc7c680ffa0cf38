//! `/sfu_webhook` (spec §1.6): LiveKit tells us participants joined or left; the delegation engine turns
//! that into restarts and sends. Any method is accepted and the answer is always an empty 200, whatever
//! went wrong (LiveKit would only retry); what went wrong is logged and counted.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::header::AUTHORIZATION;

use super::AppState;
use crate::delegation::{JobKey, Signal};
use crate::livekit::webhook::{ParticipantChange, WebhookError};
use crate::telemetry::WebhookOutcome;

/// LiveKit's webhook bodies are a few kilobytes; anything far larger is not one.
const BODY_LIMIT: usize = 1 << 20;

/// The route handler.
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let outcome = match axum::body::to_bytes(body, BODY_LIMIT).await {
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
        Ok(None) => WebhookOutcome::Ignored,
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
