//! A tracing span around every request: `request{route, id}`, and once known the verified `user_id` and
//! the LiveKit `room`, so that the log lines inside need not repeat them.
//!
//! The id is a per-process sequence number: concurrent requests' lines can be told apart, and it
//! carries nothing a client sent. No span field ever holds a token, an OpenID access token, a delay ID
//! or a key: only names that are logged anyway.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing::field::Empty;

/// The next request's id.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The middleware: runs the rest of the request inside its span. Routing is by exact path, so the
/// path of a routed request is its route (an unrouted one logs nothing).
pub async fn request_span(request: Request, next: Next) -> Response {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!(
        "request",
        route = request.uri().path(),
        id,
        user_id = Empty,
        room = Empty,
    );
    next.run(request).instrument(span).await
}

/// Adds the user the homeserver vouched for to the current request's span.
pub fn record_user(user_id: &str) {
    tracing::Span::current().record("user_id", user_id);
}

/// Adds the LiveKit room (alias) the request is about to the current request's span.
pub fn record_room(room: &str) {
    tracing::Span::current().record("room", room);
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::{Value, json};

    use super::super::test_support::{Harness, post};
    use crate::livekit::fake::Reply;
    use crate::telemetry::capture_logs;

    fn token_request(access_token: &str) -> Value {
        json!({
            "room_id": "!room:example.com",
            "slot_id": "m.call#ROOM",
            "openid_token": {"access_token": access_token, "matrix_server_name": "example.com"},
            "member": {"id": "m", "claimed_user_id": "@alice:example.com", "claimed_device_id": "D"}
        })
    }

    /// The log lines written while `message` was logged, as JSON.
    fn lines_with(logs: &str, message: &str) -> Vec<Value> {
        logs.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["message"] == message)
            .collect()
    }

    #[tokio::test]
    async fn lines_inside_a_request_carry_its_route_id_user_and_room() {
        let logs = capture_logs();
        let harness = Harness::start(Reply::Room).await;
        for _ in 0..2 {
            let response = harness
                .send(post("/get_token", &token_request("good-token")))
                .await;
            assert_eq!(response.status, 200);
        }
        let rejected = harness
            .send(Harness::request(Method::GET, "/get_token", ""))
            .await;
        assert_eq!(rejected.status, 405);

        let text = logs.text();
        let issued = lines_with(&text, "issued a LiveKit token");
        assert_eq!(issued.len(), 2, "{text}");
        let span = &issued[0]["span"];
        assert_eq!(span["name"], "request", "{text}");
        assert_eq!(span["route"], "/get_token");
        assert_eq!(span["user_id"], "@alice:example.com");
        assert!(
            span["room"].as_str().is_some_and(|room| !room.is_empty()),
            "{text}"
        );
        assert!(
            issued[0].get("user_id").is_none(),
            "not repeated on the line: {text}"
        );
        assert_ne!(
            issued[0]["span"]["id"], issued[1]["span"]["id"],
            "one id per request"
        );
        assert!(
            !text.contains("good-token"),
            "no access token in the logs: {text}"
        );
    }
}
