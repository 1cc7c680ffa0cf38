//! `POST /get_token` (MSC4195): a LiveKit token for a MatrixRTC member (spec §1.2).
//!
//! The identity is `H([sub, claimed_device_id, member.id])` and the room `H([room_id, slot_id])`; the
//! client's `claimed_user_id` must be exactly the user its homeserver vouched for.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;

use super::authenticate::authenticate;
use super::error::MatrixError;
use super::gate::{Admitted, admit, answer_issued};
use super::issue::{self, Grant, Issued};
use super::request::{self, GetTokenBody};
use super::state::AppState;
use crate::contract::path;
use crate::livekit::grant::{participant_identity, room_alias};

/// The route handler.
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match admit(&state, path::GET_TOKEN, request).await {
        Ok(admitted) => answer_issued(&state, path::GET_TOKEN, get_token(&state, &admitted).await),
        Err(response) => response,
    }
}

async fn get_token(state: &AppState, admitted: &Admitted) -> Result<Issued, MatrixError> {
    let request = request::decode::<GetTokenBody>(&admitted.body)?.validate()?;
    let user = authenticate(state, admitted.client, &request.openid).await?;
    if request.claimed_user_id != user.user_id {
        tracing::info!(
            claimed_user_id = %request.claimed_user_id,
            "claimed user does not match the OpenID token"
        );
        return Err(MatrixError::unauthorized());
    }
    let grant = Grant {
        room_alias: room_alias(&request.room_id, &request.slot_id),
        identity: participant_identity(
            &user.user_id,
            &request.claimed_device_id,
            &request.member_id,
        ),
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
    use crate::livekit::grant::{participant_identity, room_alias};
    use http::{Method, StatusCode};
    use serde_json::{Value, json};

    const PATH: &str = "/get_token";

    fn body() -> Value {
        json!({
            "room_id": "!roomid:example.com",
            "slot_id": "slot1234",
            "openid_token": {
                "access_token": "good-token",
                "token_type": "Bearer",
                "matrix_server_name": "example.com",
                "expires_in": 3600
            },
            "member": {"id": "memberABC", "claimed_user_id": "@alice:example.com", "claimed_device_id": "DEVICE123"}
        })
    }

    fn restricted_body() -> Value {
        let mut body = body();
        body["openid_token"]["matrix_server_name"] = json!("other.org");
        body["openid_token"]["access_token"] = json!("remote-token");
        body["member"]["claimed_user_id"] = json!("@bob:other.org");
        body
    }

    /// A request's future stays small (every request in flight holds one): the LiveKit and homeserver
    /// calls of full-access users are boxed (the OpenID lookup is a boxed trait call already). Inline
    /// they made it 3.1 KiB in a release build instead of 1.5 KiB.
    #[tokio::test]
    async fn a_request_in_flight_is_a_small_future() {
        let harness = Harness::start(Reply::Room).await;
        let request = post(PATH, &body());
        let handling = super::handle(axum::extract::State(harness.state.clone()), request);
        let size = std::mem::size_of_val(&handling);
        // 1.2 KiB in a debug build; 2.8 KiB with those calls inline.
        assert!(size <= 1536, "{size} bytes");
    }

    #[tokio::test]
    async fn full_access_success_creates_the_room_and_returns_url_then_jwt() {
        let harness = Harness::start(Reply::Room).await;
        let response = harness.send(post(PATH, &body())).await;
        assert_eq!(response.status, StatusCode::OK);
        Harness::assert_cors(&response.headers);
        let text = String::from_utf8(response.body.to_vec()).unwrap();
        assert!(
            text.starts_with(&format!("{{\"url\":\"{}\",\"jwt\":\"", harness.livekit_url)),
            "{text}"
        );
        assert!(text.ends_with("\"}\n"));
        let claims = harness.claims(&body_json(&response)["jwt"]);
        assert_eq!(claims["sub"], "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU");
        assert_eq!(
            claims["video"]["room"],
            "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc"
        );
        assert_eq!(claims["video"]["canUpdateOwnMetadata"], true);
        assert!(claims["video"].get("roomCreate").is_none());
        let calls = harness.livekit.calls();
        assert_eq!(calls.len(), 1);
        assert!(
            calls[0]
                .path
                .ends_with("/twirp/livekit.RoomService/CreateRoom")
        );
        assert_eq!(
            calls[0].create_room().name,
            "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc"
        );
        assert_eq!(
            harness.openid.calls(),
            vec![("example.com".to_owned(), true)]
        );
    }

    #[tokio::test]
    async fn restricted_user_gets_the_same_grants_but_no_room() {
        let harness = Harness::start(Reply::Room).await;
        let response = harness.send(post(PATH, &restricted_body())).await;
        assert_eq!(response.status, StatusCode::OK);
        let claims = harness.claims(&body_json(&response)["jwt"]);
        assert_eq!(
            claims["sub"],
            participant_identity("@bob:other.org", "DEVICE123", "memberABC")
        );
        assert_eq!(claims["video"]["canPublish"], true);
        assert!(harness.livekit.calls().is_empty());
        // The lookup was untrusted (the SSRF guard applies).
        assert_eq!(
            harness.openid.calls(),
            vec![("other.org".to_owned(), false)]
        );
    }

    #[tokio::test]
    async fn method_and_preflight() {
        let harness = Harness::start(Reply::Room).await;
        for method in [
            Method::GET,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::HEAD,
        ] {
            let response = harness
                .send(Harness::request(method.clone(), PATH, ""))
                .await;
            assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert!(response.body.is_empty());
            Harness::assert_cors(&response.headers);
        }
        let response = harness
            .send(Harness::request(Method::OPTIONS, PATH, ""))
            .await;
        assert_eq!(response.status, StatusCode::OK);
        assert!(response.body.is_empty());
        Harness::assert_cors(&response.headers);
        assert!(harness.openid.calls().is_empty());
    }

    #[tokio::test]
    async fn errors_carry_cors_and_make_no_outbound_call_before_validation() {
        let harness = Harness::start(Reply::Room).await;
        let mut missing_member = body();
        missing_member["member"]["id"] = json!("");
        for (request, status, errcode) in [
            (
                Harness::request(Method::POST, PATH, "not json"),
                400,
                "M_NOT_JSON",
            ),
            (Harness::request(Method::POST, PATH, ""), 400, "M_NOT_JSON"),
            (post(PATH, &missing_member), 400, "M_BAD_JSON"),
        ] {
            let response = harness.send(request).await;
            assert_eq!(response.status.as_u16(), status);
            assert_eq!(body_json(&response)["errcode"], errcode);
            Harness::assert_cors(&response.headers);
        }
        assert!(harness.openid.calls().is_empty());
        assert!(harness.livekit.calls().is_empty());
    }

    #[tokio::test]
    async fn unauthorised_cases() {
        let harness = Harness::start(Reply::Room).await;
        // The homeserver refuses the token.
        let mut bad_token = body();
        bad_token["openid_token"]["access_token"] = json!("bad-token");
        // The homeserver vouches for someone else.
        let mut other_user = body();
        other_user["member"]["claimed_user_id"] = json!("@mallory:example.com");
        // Case matters.
        let mut case = body();
        case["member"]["claimed_user_id"] = json!("@Alice:example.com");
        for request_body in [bad_token, other_user, case] {
            let response = harness.send(post(PATH, &request_body)).await;
            assert_eq!(response.status, StatusCode::UNAUTHORIZED);
            assert_eq!(
                body_json(&response),
                json!({"errcode": "M_UNAUTHORIZED", "error": "The request could not be authorised."})
            );
        }
        assert!(harness.livekit.calls().is_empty());
    }

    #[tokio::test]
    async fn restricted_user_with_delegation_is_refused() {
        let harness = Harness::start(Reply::Room).await;
        let mut request_body = restricted_body();
        request_body["delay_id"] = json!("syd_abc");
        request_body["delay_timeout"] = json!(10000);
        let response = harness.send(post(PATH, &request_body)).await;
        assert_eq!(response.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body_json(&response),
            json!({"errcode": "M_BAD_JSON", "error": "Delegation of delayed events is only supported for full access users"})
        );
        assert!(harness.livekit.calls().is_empty());
    }

    #[tokio::test]
    async fn full_access_delegation_still_gets_a_token() {
        let harness = Harness::start(Reply::Room).await;
        let mut request_body = body();
        request_body["delay_id"] = json!("syd_abc");
        request_body["delay_timeout"] = json!(10000);
        request_body["delay_cs_api_url"] = json!("https://ignored.example");
        let response = harness.send(post(PATH, &request_body)).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(harness.livekit.calls().len(), 1);
    }

    #[tokio::test]
    async fn create_room_failure_is_500_and_counted() {
        let harness = Harness::start(Reply::Error(500, "internal")).await;
        let response = harness.send(post(PATH, &body())).await;
        assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body_json(&response),
            json!({"errcode": "M_UNKNOWN", "error": "Unable to create room on SFU"})
        );
        Harness::assert_cors(&response.headers);
        let metrics = harness.state.metrics.encode();
        assert!(
            metrics.contains("matrixrtc_auth_create_room_failures_total 1"),
            "{metrics}"
        );
        assert!(metrics.contains(
            r#"matrixrtc_auth_requests_total{endpoint="/get_token",outcome="M_UNKNOWN"} 1"#
        ));
    }

    #[tokio::test]
    async fn per_homeserver_limit_counts_only_verified_tokens() {
        // Two per hour; all requests come from one client, whose failures share the rate.
        let harness = Harness::with_limits(Reply::Room, None, Some("2/h")).await;
        // Neither invalid bodies nor made-up tokens spend the homeserver's budget.
        let mut invalid = body();
        invalid["room_id"] = json!("");
        assert_eq!(
            harness.send(post(PATH, &invalid)).await.status,
            StatusCode::BAD_REQUEST
        );
        let mut made_up = body();
        made_up["openid_token"]["access_token"] = json!("made-up");
        assert_eq!(
            harness.send(post(PATH, &made_up)).await.status,
            StatusCode::UNAUTHORIZED
        );
        for _ in 0..2 {
            assert_eq!(
                harness.send(post(PATH, &body())).await.status,
                StatusCode::OK
            );
        }
        let limited = harness.send(post(PATH, &body())).await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        let json = body_json(&limited);
        assert_eq!(json["errcode"], "M_LIMIT_EXCEEDED");
        assert!(json["retry_after_ms"].as_u64().unwrap() > 0);
        Harness::assert_cors(&limited.headers);
        // Nothing was created for the refused request.
        assert_eq!(harness.livekit.calls().len(), 2);
        // Another homeserver has its own budget.
        assert_eq!(
            harness.send(post(PATH, &restricted_body())).await.status,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn spent_failures_are_refused_before_the_lookup() {
        let harness = Harness::with_limits(Reply::Room, None, Some("1/h")).await;
        let mut made_up = body();
        made_up["openid_token"]["access_token"] = json!("made-up");
        assert_eq!(
            harness.send(post(PATH, &made_up)).await.status,
            StatusCode::UNAUTHORIZED
        );
        // The same client is now refused, whatever it sends, without asking the homeserver.
        for request_body in [made_up, body()] {
            let limited = harness.send(post(PATH, &request_body)).await;
            assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(body_json(&limited)["errcode"], "M_LIMIT_EXCEEDED");
        }
        assert_eq!(harness.openid.calls().len(), 1);
    }

    #[tokio::test]
    async fn per_ip_limit_comes_before_decoding() {
        let harness = Harness::with_limits(Reply::Room, Some("2/h"), None).await;
        for _ in 0..2 {
            let response = harness
                .send(Harness::request(Method::POST, PATH, "garbage"))
                .await;
            assert_eq!(response.status, StatusCode::BAD_REQUEST);
        }
        let response = harness.send(post(PATH, &body())).await;
        assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(harness.openid.calls().is_empty());
        // Preflights are not limited.
        let response = harness
            .send(Harness::request(Method::OPTIONS, PATH, ""))
            .await;
        assert_eq!(response.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn oversized_body_is_413() {
        let harness = Harness::start(Reply::Room).await;
        let big = format!("{{\"room_id\":\"{}\"}}", "x".repeat(70 * 1024));
        let response = harness
            .send(Harness::request(Method::POST, PATH, &big))
            .await;
        assert_eq!(response.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body_json(&response)["errcode"], "M_TOO_LARGE");
        Harness::assert_cors(&response.headers);
    }

    #[tokio::test]
    async fn html_characters_in_the_room_hash_like_go() {
        let harness = Harness::start(Reply::Room).await;
        let mut request_body = body();
        request_body["room_id"] = json!("!a&b:example.com");
        request_body["slot_id"] = json!("m.call#ROOM");
        let response = harness.send(post(PATH, &request_body)).await;
        let claims = harness.claims(&body_json(&response)["jwt"]);
        assert_eq!(
            claims["video"]["room"],
            "BlPHg/JCOxLQr20ttEizBQLd7Bhh5m+r3M8rO3ejvzo"
        );
        assert_eq!(
            claims["video"]["room"],
            room_alias("!a&b:example.com", "m.call#ROOM")
        );
    }
}
