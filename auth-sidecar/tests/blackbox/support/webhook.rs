//! LiveKit webhooks as LiveKit sends them: a protobuf-JSON `WebhookEvent` body, and in `Authorization` a
//! raw (no `Bearer `) HS256 API token whose `sha256` claim is the padded standard base64 SHA-256 of the
//! body, valid for a few minutes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::client::Response;
use super::jwt::{KEY, SECRET, now};
use super::service::Service;

/// The webhook path.
pub const PATH: &str = "/sfu_webhook";

/// A participant event for `room` (alias) and `identity`, with `reason` as `participant.disconnectReason`.
pub fn participant_event(event: &str, room: &str, identity: &str, reason: &str) -> Value {
    json!({
        "event": event,
        "room": {"sid": "RM_test", "name": room, "emptyTimeout": 300, "departureTimeout": 20},
        "participant": {
            "sid": "PA_test",
            "identity": identity,
            "state": "DISCONNECTED",
            "disconnectReason": reason,
            "joinedAt": "1700000000",
        },
        "id": "EV_test",
        "createdAt": now().to_string(),
    })
}

/// The `Authorization` value LiveKit would send for `body`, signed with `key` and `secret`.
pub fn token_for(body: &[u8], key: &str, secret: &str) -> String {
    let claims = json!({
        "iss": key,
        "nbf": now() - 1,
        "exp": now() + 300,
        "sha256": STANDARD.encode(Sha256::digest(body)),
        "video": {},
    });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign webhook token")
}

/// Posts `event` signed with the service's key, and checks the answer is the empty 200 it always is.
pub async fn send(service: &Service, event: &Value) {
    let body = event.to_string();
    let token = token_for(body.as_bytes(), KEY, SECRET);
    let response = post_raw(service, Some(&token), body).await;
    assert_empty_ok(&response);
}

/// Posts `body` with the given `Authorization` (if any).
pub async fn post_raw(service: &Service, authorization: Option<&str>, body: String) -> Response {
    let mut request = service
        .request(Method::POST, PATH)
        .header("content-type", "application/webhook+json");
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    request.body(body).send().await
}

/// The webhook's one answer: 200 with an empty body.
pub fn assert_empty_ok(response: &Response) {
    assert_eq!(response.status, 200, "webhook answer: {}", response.text());
    assert!(
        response.text().is_empty(),
        "webhook body: {}",
        response.text()
    );
}
