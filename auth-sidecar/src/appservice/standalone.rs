//! `LIVEKIT_REQUIRE_MEMBERSHIP=true` (as-mode spec §2, our choice of semantics): the standalone
//! `/get_token` and `/sfu/get` also require the verified user to be joined to the room, as the AS's own
//! homeserver sees it.
//!
//! It is a layer in front of the standalone handlers rather than a step inside them, so those handlers
//! stay unaware of AS mode: the layer verifies the OpenID token itself (a verified token is cached, so
//! the handler's own check then costs no second lookup unless `LIVEKIT_OPENID_CACHE_SECONDS=0`), asks
//! `/is_joined?mxid=<user>`, and only then hands the request on. Anything it cannot judge (a bad body, a
//! refused token) goes on unchanged, so the handler gives its usual answer.
//!
//! A token the handler then issues is tracked by the membership monitor (spec §8.1: standalone tokens
//! only with `LIVEKIT_REQUIRE_MEMBERSHIP=true`, since only then do we know the user was in the room as
//! our server sees it). The handler names the participant in an [`IssuedToken`] response extension.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{Method, StatusCode};
use serde_json::Value;

use super::flows::{MEMBERSHIP_UNKNOWN, NOT_A_MEMBER};
use super::homeserver::{Homeserver, Subject};
use super::routes::REQUEST_BUDGET;
use super::{RoomTracker, TrackedToken};
use crate::contract::path;
use crate::go_json;
use crate::http::{AppState, IssuedToken, cors, limits};

/// What the layer needs.
pub struct Membership {
    pub app: Arc<AppState>,
    pub homeserver: Arc<dyn Homeserver>,
    /// Told about every token issued behind the layer.
    pub tracker: Arc<dyn RoomTracker>,
}

/// The room and OpenID token of a standalone token request, if the body has them.
fn room_and_token(path: &str, body: &[u8]) -> Option<(String, String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let room_key = if path == path::SFU_GET {
        "room"
    } else {
        "room_id"
    };
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let openid = value.get("openid_token")?;
    Some((
        text(value.get(room_key))?,
        text(openid.get("matrix_server_name"))?,
        text(openid.get("access_token"))?,
    ))
}

/// The middleware (see the module docs).
pub async fn require_membership(
    State(membership): State<Arc<Membership>>,
    request: Request,
    next: Next,
) -> Response {
    let checked = request.method() == Method::POST
        && matches!(request.uri().path(), path::GET_TOKEN | path::SFU_GET);
    if !checked {
        return next.run(request).await;
    }
    let deadline = Instant::now() + REQUEST_BUDGET;
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    let bytes = match limits::read_body(&parts.headers, body).await {
        Ok(bytes) => bytes,
        Err(error) => return with_cors(error.into_response()),
    };
    let rebuilt = |bytes| Request::from_parts(parts, Body::from(bytes));
    let Some((room_id, server_name, access_token)) = room_and_token(&path, &bytes) else {
        return next.run(rebuilt(bytes)).await;
    };
    let app = &membership.app;
    let trusted = app.ssrf_trusted.names(&server_name);
    let Ok(user_id) = app
        .openid
        .lookup(&server_name, &access_token, trusted)
        .await
    else {
        return next.run(rebuilt(bytes)).await;
    };
    let answer = match membership.homeserver.resolve().await {
        Ok(base) => membership
            .homeserver
            .is_joined(&base, &room_id, Subject::User(&user_id), deadline)
            .await
            .map_err(|error| error.to_string()),
        Err(error) => Err(error),
    };
    match answer {
        Ok(true) => {
            let response = next.run(rebuilt(bytes)).await;
            if response.status() == StatusCode::OK
                && let Some(issued) = response.extensions().get::<IssuedToken>()
            {
                membership
                    .tracker
                    .track(TrackedToken {
                        matrix_room_id: &room_id,
                        matrix_user_id: &user_id,
                        livekit_room: &issued.livekit_room,
                        livekit_identity: &issued.livekit_identity,
                    })
                    .await;
            }
            response
        }
        Ok(false) => {
            tracing::info!(%user_id, %room_id, "standalone token refused: not a member of the room");
            error(StatusCode::FORBIDDEN, "M_FORBIDDEN", NOT_A_MEMBER)
        }
        Err(reason) => {
            tracing::warn!(%user_id, %room_id, %reason, "standalone membership check failed");
            error(StatusCode::BAD_GATEWAY, "M_UNKNOWN", MEMBERSHIP_UNKNOWN)
        }
    }
}

fn error(status: StatusCode, errcode: &str, text: &str) -> Response {
    let mut body = b"{\"errcode\":".to_vec();
    go_json::push_string(&mut body, errcode);
    body.extend_from_slice(b",\"error\":");
    go_json::push_string(&mut body, text);
    body.extend_from_slice(b"}\n");
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    with_cors(response)
}

fn with_cors(mut response: Response) -> Response {
    cors::apply(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_room_and_token_of_both_endpoints() {
        let get_token = br#"{"room_id":"!r:x","slot_id":"s","openid_token":{"access_token":"t","matrix_server_name":"x"}}"#;
        assert_eq!(
            room_and_token(path::GET_TOKEN, get_token),
            Some(("!r:x".into(), "x".into(), "t".into()))
        );
        let sfu_get =
            br#"{"room":"!r:x","openid_token":{"access_token":"t","matrix_server_name":"x"}}"#;
        assert_eq!(
            room_and_token(path::SFU_GET, sfu_get),
            Some(("!r:x".into(), "x".into(), "t".into()))
        );
        assert_eq!(room_and_token(path::GET_TOKEN, sfu_get), None);
        assert_eq!(room_and_token(path::GET_TOKEN, b"not json"), None);
        assert_eq!(
            room_and_token(
                path::SFU_GET,
                br#"{"room":"!r:x","openid_token":{"access_token":""}}"#
            ),
            None
        );
    }
}
