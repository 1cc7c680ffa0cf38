//! `POST /sfu/get`, the legacy token endpoint (spec §1.3, deprecated but still used as a fallback).
//!
//! Differences from `/get_token`: no `member`, so no claimed-user check; the identity is
//! `<sub>:<device_id>` unhashed; the room is `H([room, "m.call#ROOM"])`; its own validation texts.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;

use super::authenticate::authenticate;
use super::error::MatrixError;
use super::gate::{Admitted, admit, answer_issued};
use super::issue::{self, Grant, Issued};
use super::request::{self, SfuGetBody};
use super::state::AppState;
use crate::contract::path;
use crate::livekit::grant::{LEGACY_SLOT_ID, room_alias};

/// The route handler.
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match admit(&state, path::SFU_GET, request).await {
        Ok(admitted) => answer_issued(&state, path::SFU_GET, sfu_get(&state, &admitted).await),
        Err(response) => response,
    }
}

async fn sfu_get(state: &AppState, admitted: &Admitted) -> Result<Issued, MatrixError> {
    let request = request::decode::<SfuGetBody>(&admitted.body)?.validate()?;
    let user = authenticate(state, admitted.client, &request.openid).await?;
    let grant = Grant {
        room_alias: room_alias(&request.room, LEGACY_SLOT_ID),
        identity: format!("{}:{}", user.user_id, request.device_id),
        server_name: &request.openid.server_name,
        delegation: request.delegation,
        user: &user,
    };
    issue::issue(state, grant).await
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Harness, body_json, post};
    use crate::livekit::fake::Reply;
    use http::{Method, StatusCode};
    use serde_json::{Value, json};

    const PATH: &str = "/sfu/get";

    fn body() -> Value {
        json!({
            "room": "!room:example.com",
            "openid_token": {"access_token": "good-token", "token_type": "Bearer", "matrix_server_name": "example.com", "expires_in": 3600},
            "device_id": "testDevice"
        })
    }

    #[tokio::test]
    async fn success_uses_the_unhashed_identity_and_the_legacy_slot() {
        let harness = Harness::start(Reply::Room).await;
        let response = harness.send(post(PATH, &body())).await;
        assert_eq!(response.status, StatusCode::OK);
        Harness::assert_cors(&response.headers);
        let json = body_json(&response);
        assert_eq!(json["url"], harness.livekit_url);
        let claims = harness.claims(&json["jwt"]);
        assert_eq!(claims["sub"], "@alice:example.com:testDevice");
        assert_eq!(
            claims["video"]["room"],
            "krj2dgxw2K6EOm9he4GfQJ6JsSVWfJ8a7BkyjZcSmxs"
        );
        assert_eq!(harness.livekit.calls().len(), 1);
    }

    #[tokio::test]
    async fn empty_device_id_is_allowed() {
        let harness = Harness::start(Reply::Room).await;
        let mut request_body = body();
        request_body["device_id"] = json!("");
        let response = harness.send(post(PATH, &request_body)).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(
            harness.claims(&body_json(&response)["jwt"])["sub"],
            "@alice:example.com:"
        );
    }

    #[tokio::test]
    async fn validation_texts_and_no_lookup() {
        let harness = Harness::start(Reply::Room).await;
        for (request_body, text) in [
            (json!({}), "Missing room parameter"),
            (json!({"room": ""}), "Missing room parameter"),
            (
                json!({"room": "!r:x", "openid_token": {"access_token": "t"}}),
                "Missing OpenID token parameters",
            ),
        ] {
            let response = harness.send(post(PATH, &request_body)).await;
            assert_eq!(response.status, StatusCode::BAD_REQUEST);
            assert_eq!(
                body_json(&response),
                json!({"errcode": "M_BAD_JSON", "error": text})
            );
            Harness::assert_cors(&response.headers);
        }
        // The /get_token shape is not accepted here.
        let new_shape = json!({"room_id": "!r:x", "slot_id": "s"});
        let response = harness.send(post(PATH, &new_shape)).await;
        assert_eq!(body_json(&response)["errcode"], "M_NOT_JSON");
        assert!(harness.openid.calls().is_empty());
    }

    #[tokio::test]
    async fn no_claimed_user_check_but_lookup_failure_is_401() {
        let harness = Harness::start(Reply::Room).await;
        let mut request_body = body();
        request_body["openid_token"]["access_token"] = json!("bad-token");
        let response = harness.send(post(PATH, &request_body)).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
        assert_eq!(body_json(&response)["errcode"], "M_UNAUTHORIZED");
    }

    #[tokio::test]
    async fn restricted_delegation_refused_and_405() {
        let harness = Harness::start(Reply::Room).await;
        let mut request_body = body();
        request_body["openid_token"]["matrix_server_name"] = json!("other.org");
        request_body["openid_token"]["access_token"] = json!("remote-token");
        request_body["delay_id"] = json!("d");
        request_body["delay_timeout"] = json!(1000);
        let response = harness.send(post(PATH, &request_body)).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body_json(&response)["error"],
            "Delegation of delayed events is only supported for full access users"
        );
        let response = harness.send(Harness::request(Method::GET, PATH, "")).await;
        assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
        Harness::assert_cors(&response.headers);
        assert!(harness.livekit.calls().is_empty());
    }

    #[tokio::test]
    async fn create_room_failure() {
        let harness = Harness::start(Reply::Error(503, "unavailable")).await;
        let response = harness.send(post(PATH, &body())).await;
        assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body_json(&response)["error"],
            "Unable to create room on SFU"
        );
    }
}
