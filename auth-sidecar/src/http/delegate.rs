//! `POST /delegate_delayed_leave` (spec §1.4): hand a client's delayed leave event over to the
//! delegation engine.
//!
//! The body is `/get_token`'s, with `delay_id` and `delay_timeout` required; the answer is `{}`. No room
//! is created and no token issued. Restricted users get 403 here (400 on the token endpoints).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;

use super::authenticate::authenticate;
use super::error::MatrixError;
use super::gate::{Admitted, admit, answer};
use super::hand_over::{DELEGATION_NOT_ALLOWED, add_job, resolve_client_api};
use super::request::{self, GetTokenBody, MISSING_DELAY_PAIR, MISSING_ROOM_OR_SLOT, OpenId};
use super::state::AppState;
use super::trace;
use crate::contract::path;
use crate::delegation::JobKey;
use crate::livekit::grant::{participant_identity, room_alias};

/// 3b here: unlike `/get_token`'s text, without "a".
pub const MISSING_MEMBER_FIELD: &str =
    "The request body `member` is missing `id`, `claimed_user_id` or `claimed_device_id`";
/// 3c here: unlike `/get_token`'s text, without "a".
pub const MISSING_OPENID_FIELD: &str =
    "The request body `openid_token` is missing `access_token` or `matrix_server_name`";
/// The route handler.
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match admit(&state, path::DELEGATE_DELAYED_LEAVE, request).await {
        Ok(admitted) => answer(
            &state,
            path::DELEGATE_DELAYED_LEAVE,
            delegate_delayed_leave(&state, &admitted).await,
        ),
        Err(response) => response,
    }
}

/// A `/delegate_delayed_leave` request that passed validation.
struct DelegateRequest {
    room_id: String,
    slot_id: String,
    openid: OpenId,
    member_id: String,
    claimed_user_id: String,
    claimed_device_id: String,
    delay_id: String,
    delay_timeout: std::time::Duration,
}

/// Rows 3a–3d, in order, with this endpoint's texts.
fn validate(body: GetTokenBody) -> Result<DelegateRequest, MatrixError> {
    if body.room_id.is_empty() || body.slot_id.is_empty() {
        return Err(MatrixError::bad_json(MISSING_ROOM_OR_SLOT));
    }
    let member = body.member;
    if member.id.is_empty()
        || member.claimed_user_id.is_empty()
        || member.claimed_device_id.is_empty()
    {
        return Err(MatrixError::bad_json(MISSING_MEMBER_FIELD));
    }
    let token = body.openid_token;
    if token.access_token.is_empty() || token.matrix_server_name.is_empty() {
        return Err(MatrixError::bad_json(MISSING_OPENID_FIELD));
    }
    let delay_timeout = u64::try_from(body.delay_timeout)
        .ok()
        .filter(|ms| *ms > 0)
        .map(std::time::Duration::from_millis);
    let (Some(delay_timeout), false) = (delay_timeout, body.delay_id.is_empty()) else {
        return Err(MatrixError::bad_json(MISSING_DELAY_PAIR));
    };
    Ok(DelegateRequest {
        room_id: body.room_id,
        slot_id: body.slot_id,
        openid: OpenId {
            access_token: token.access_token,
            server_name: token.matrix_server_name,
        },
        member_id: member.id,
        claimed_user_id: member.claimed_user_id,
        claimed_device_id: member.claimed_device_id,
        delay_id: body.delay_id,
        delay_timeout,
    })
}

async fn delegate_delayed_leave(
    state: &AppState,
    admitted: &Admitted,
) -> Result<Vec<u8>, MatrixError> {
    let request = validate(request::decode::<GetTokenBody>(&admitted.body)?)?;
    let user = authenticate(state, admitted.client, &request.openid).await?;
    if request.claimed_user_id != user.user_id {
        tracing::info!(
            claimed_user_id = %request.claimed_user_id,
            "claimed user does not match the OpenID token"
        );
        return Err(MatrixError::unauthorized());
    }
    if !user.full_access {
        tracing::info!("delegation refused: not a full-access user");
        return Err(MatrixError::forbidden(DELEGATION_NOT_ALLOWED));
    }
    let server_name = &request.openid.server_name;
    resolve_client_api(state, server_name).await?;
    let key = JobKey {
        room: room_alias(&request.room_id, &request.slot_id),
        identity: participant_identity(
            &user.user_id,
            &request.claimed_device_id,
            &request.member_id,
        ),
    };
    trace::record_room(&key.room);
    add_job(
        state,
        key,
        server_name,
        None,
        request.delay_id,
        request.delay_timeout,
    )
    .await?;
    Ok(b"{}\n".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn body() -> Value {
        json!({
            "room_id": "!room:example.com",
            "slot_id": "m.call#ROOM",
            "openid_token": {"access_token": "t", "matrix_server_name": "example.com"},
            "member": {"id": "m", "claimed_user_id": "@u:example.com", "claimed_device_id": "D"},
            "delay_id": "syd_x",
            "delay_timeout": 10000,
            "delay_cs_api_url": "https://ignored.example"
        })
    }

    fn check(body: &Value) -> Result<DelegateRequest, MatrixError> {
        validate(request::decode::<GetTokenBody>(
            body.to_string().as_bytes(),
        )?)
    }

    #[test]
    fn a_valid_request() {
        let request = check(&body()).expect("valid");
        assert_eq!(request.delay_id, "syd_x");
        assert_eq!(request.delay_timeout, std::time::Duration::from_secs(10));
        let mut without_url = body();
        without_url
            .as_object_mut()
            .expect("object")
            .remove("delay_cs_api_url");
        assert!(check(&without_url).is_ok(), "delay_cs_api_url is optional");
    }

    #[test]
    fn each_missing_field_has_its_text() {
        let cases: [(&str, &str, Value, &str); 10] = [
            ("", "room_id", json!(""), MISSING_ROOM_OR_SLOT),
            ("", "slot_id", json!(""), MISSING_ROOM_OR_SLOT),
            ("member", "id", json!(""), MISSING_MEMBER_FIELD),
            ("member", "claimed_user_id", json!(""), MISSING_MEMBER_FIELD),
            (
                "member",
                "claimed_device_id",
                json!(""),
                MISSING_MEMBER_FIELD,
            ),
            (
                "openid_token",
                "access_token",
                json!(""),
                MISSING_OPENID_FIELD,
            ),
            (
                "openid_token",
                "matrix_server_name",
                json!(""),
                MISSING_OPENID_FIELD,
            ),
            ("", "delay_id", json!(""), MISSING_DELAY_PAIR),
            ("", "delay_timeout", json!(0), MISSING_DELAY_PAIR),
            ("", "delay_timeout", json!(-5), MISSING_DELAY_PAIR),
        ];
        for (parent, field, value, text) in cases {
            let mut request = body();
            let target = if parent.is_empty() {
                &mut request
            } else {
                &mut request[parent]
            };
            target[field] = value;
            let error = check(&request).err().expect("invalid");
            assert_eq!(error, MatrixError::bad_json(text), "{parent}.{field}");
        }
        assert_eq!(
            check(&json!({})).err(),
            Some(MatrixError::bad_json(MISSING_ROOM_OR_SLOT))
        );
    }

    mod endpoint {
        use super::body;
        use crate::http::test_support::{Harness, body_json, post};
        use crate::livekit::fake::Reply;
        use http::{Method, StatusCode};
        use serde_json::json;

        const PATH: &str = "/delegate_delayed_leave";

        fn full_access_body() -> serde_json::Value {
            let mut request = body();
            request["openid_token"]["access_token"] = json!("good-token");
            request["member"]["claimed_user_id"] = json!("@alice:example.com");
            request
        }

        #[tokio::test]
        async fn success_is_an_empty_object_and_adds_a_job_without_a_room() {
            let harness = Harness::start(Reply::Room).await;
            let response = harness.send(post(PATH, &full_access_body())).await;
            assert_eq!(response.status, StatusCode::OK);
            assert_eq!(&response.body[..], b"{}\n");
            Harness::assert_cors(&response.headers);
            assert!(harness.livekit.calls().is_empty(), "no room, no token");
            assert_eq!(harness.state.delegation.local_jobs(), 1);
        }

        #[tokio::test]
        async fn restricted_users_are_forbidden() {
            let harness = Harness::start(Reply::Room).await;
            let mut request = full_access_body();
            request["openid_token"] =
                json!({"access_token": "remote-token", "matrix_server_name": "other.org"});
            request["member"]["claimed_user_id"] = json!("@bob:other.org");
            let response = harness.send(post(PATH, &request)).await;
            assert_eq!(response.status, StatusCode::FORBIDDEN);
            assert_eq!(
                body_json(&response),
                json!({"errcode": "M_FORBIDDEN", "error": "Delegation of delayed events is only supported for full access users"})
            );
            Harness::assert_cors(&response.headers);
            assert_eq!(harness.state.delegation.local_jobs(), 0);
        }

        #[tokio::test]
        async fn a_claimed_user_mismatch_is_unauthorised() {
            let harness = Harness::start(Reply::Room).await;
            let mut request = full_access_body();
            request["member"]["claimed_user_id"] = json!("@mallory:example.com");
            let response = harness.send(post(PATH, &request)).await;
            assert_eq!(response.status, StatusCode::UNAUTHORIZED);
            assert_eq!(body_json(&response)["errcode"], "M_UNAUTHORIZED");
        }

        #[tokio::test]
        async fn validation_comes_before_any_lookup() {
            let harness = Harness::start(Reply::Room).await;
            let response = harness.send(post(PATH, &json!({}))).await;
            assert_eq!(response.status, StatusCode::BAD_REQUEST);
            assert_eq!(
                body_json(&response)["error"],
                "The request body is missing `room_id` or `slot_id`"
            );
            let response = harness
                .send(Harness::request(Method::POST, PATH, "nope"))
                .await;
            assert_eq!(body_json(&response)["errcode"], "M_NOT_JSON");
            for method in [Method::GET, Method::PUT] {
                let response = harness.send(Harness::request(method, PATH, "")).await;
                assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
                Harness::assert_cors(&response.headers);
            }
            let response = harness
                .send(Harness::request(Method::OPTIONS, PATH, ""))
                .await;
            assert_eq!(response.status, StatusCode::OK);
            assert!(harness.openid.calls().is_empty());
        }

        #[tokio::test]
        async fn after_shutdown_delegation_is_503_on_every_endpoint() {
            let harness = Harness::start(Reply::Room).await;
            harness.state.delegation.shutdown().await;
            let expected = json!({"errcode": "M_UNKNOWN", "error": "Service is shutting down"});
            let response = harness.send(post(PATH, &full_access_body())).await;
            assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body_json(&response), expected);
            let mut token_request = full_access_body();
            token_request["slot_id"] = json!("m.call#ROOM");
            let response = harness.send(post("/get_token", &token_request)).await;
            assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body_json(&response), expected);
            // Without delay fields a token is still issued.
            let mut plain = token_request.clone();
            plain
                .as_object_mut()
                .expect("object")
                .retain(|k, _| !k.starts_with("delay_"));
            let response = harness.send(post("/get_token", &plain)).await;
            assert_eq!(response.status, StatusCode::OK);
        }

        #[tokio::test]
        async fn token_endpoints_add_a_job_after_creating_the_room() {
            let harness = Harness::start(Reply::Room).await;
            let response = harness.send(post("/get_token", &full_access_body())).await;
            assert_eq!(response.status, StatusCode::OK);
            assert_eq!(harness.livekit.calls().len(), 1);
            assert_eq!(harness.state.delegation.local_jobs(), 1);
            let legacy = json!({
                "room": "!room:example.com",
                "openid_token": {"access_token": "good-token", "matrix_server_name": "example.com"},
                "device_id": "D",
                "delay_id": "syd_y",
                "delay_timeout": 10000,
            });
            let response = harness.send(post("/sfu/get", &legacy)).await;
            assert_eq!(response.status, StatusCode::OK);
            assert_eq!(harness.state.delegation.local_jobs(), 2);
        }

        #[tokio::test]
        async fn a_failed_room_creation_adds_no_job() {
            let harness = Harness::start(Reply::Error(500, "internal")).await;
            let response = harness.send(post("/get_token", &full_access_body())).await;
            assert_eq!(response.status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(harness.state.delegation.local_jobs(), 0);
        }

        #[tokio::test]
        async fn webhooks_always_get_an_empty_200_and_failures_are_counted() {
            let harness = Harness::start(Reply::Room).await;
            for (method, body) in [(Method::POST, "{}"), (Method::GET, ""), (Method::PUT, "x")] {
                let response = harness
                    .send(Harness::request(method, "/sfu_webhook", body))
                    .await;
                assert_eq!(response.status, StatusCode::OK);
                assert!(response.body.is_empty());
                Harness::assert_no_cors(&response.headers);
            }
            let metrics = harness.state.metrics.encode();
            assert!(
                metrics.contains(r#"matrixrtc_auth_webhooks_total{outcome="rejected"} 3"#),
                "{metrics}"
            );
        }
    }
}
