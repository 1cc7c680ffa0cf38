//! Rate limits (ours; MSC4195 says SHOULD): 429 `M_LIMIT_EXCEEDED` with `retry_after_ms`, per client IP
//! (`X-Forwarded-For` only from trusted proxies), per homeserver for verified tokens and per client IP
//! for failed verifications, in the `N/s|N/m|N/h` format.

use std::time::Duration;

use http::Method;

use crate::support::body::{self, assert_cors};
use crate::support::client::Response;
use crate::support::{World, bounded};

const PATH: &str = "/get_token";

/// Asserts a 429 with `M_LIMIT_EXCEEDED`, a message, and a `retry_after_ms` in `1..=max_ms`.
fn assert_limited(response: &Response, max_ms: u64) {
    assert_eq!(response.status, 429, "{}", response.text());
    assert_cors(response, "429");
    assert!(response.text().ends_with('\n'), "body ends with a newline");
    let body = response.json();
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|text| !text.is_empty()),
        "{body}"
    );
    let retry = body["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("retry_after_ms is a positive integer: {body}"));
    assert!((1..=max_ms).contains(&retry), "retry_after_ms {retry}");
}

/// `N/m` per IP: the third request from the same address within the minute is refused before the
/// homeserver is asked; health checks are not limited.
#[tokio::test]
async fn per_ip_limit_refuses_excess_requests() {
    bounded(async {
        let world = World::start().await;
        let service = world
            .service()
            .set("LIVEKIT_RATE_LIMIT_PER_IP", "2/m")
            .start()
            .await;
        let server = world.hs.server_name();
        let requests: Vec<_> = (0..3)
            .map(|i| {
                let token = format!("token-{i}");
                let user = world.hs.add_user(&token, "alice");
                body::get_token(&server, &token, &user)
            })
            .collect();

        assert_eq!(service.post_json(PATH, &requests[0]).await.status, 200);
        assert_eq!(service.post_json(PATH, &requests[1]).await.status, 200);
        assert_limited(&service.post_json(PATH, &requests[2]).await, 60_000);
        assert_eq!(
            world.hs.lookup_count(),
            2,
            "a refused request makes no lookup"
        );
        for _ in 0..5 {
            assert_eq!(service.get("/healthz").await.status, 200);
        }
    })
    .await;
}

/// `N/s`: after the hinted wait the client may try again.
#[tokio::test]
async fn per_second_limit_recovers_after_retry_after() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world
            .service()
            .set("LIVEKIT_RATE_LIMIT_PER_IP", "1/s")
            .start()
            .await;
        let request = body::get_token(&world.hs.server_name(), "token-alice", &user);

        assert_eq!(service.post_json(PATH, &request).await.status, 200);
        let refused = service.post_json(PATH, &request).await;
        assert_limited(&refused, 1000);
        let wait = refused.json()["retry_after_ms"].as_u64().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(wait + 100)).await;
        assert_eq!(service.post_json(PATH, &request).await.status, 200);
    })
    .await;
}

/// Without trusted proxies, `X-Forwarded-For` is ignored: a client cannot dodge the limit by
/// inventing addresses.
#[tokio::test]
async fn forwarded_for_from_untrusted_peer_is_ignored() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world
            .service()
            .set("LIVEKIT_RATE_LIMIT_PER_IP", "2/h")
            .start()
            .await;
        let request = body::get_token(&world.hs.server_name(), "token-alice", &user);

        let mut statuses = Vec::new();
        for i in 1..=3 {
            let response = service
                .request(Method::POST, PATH)
                .header("x-forwarded-for", &format!("198.51.100.{i}"))
                .json(&request)
                .send()
                .await;
            statuses.push(response.status);
        }
        assert_eq!(statuses, [200, 200, 429]);
    })
    .await;
}

/// Behind a trusted proxy, the forwarded client address is what is limited.
#[tokio::test]
async fn forwarded_for_from_trusted_proxy_names_the_client() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world
            .service()
            .set("LIVEKIT_RATE_LIMIT_PER_IP", "1/h")
            .set("LIVEKIT_TRUSTED_PROXIES", "127.0.0.0/8")
            .start()
            .await;
        let request = body::get_token(&world.hs.server_name(), "token-alice", &user);
        let from = |client: &'static str| {
            service
                .request(Method::POST, PATH)
                .header("x-forwarded-for", client)
                .json(&request)
                .send()
        };

        assert_eq!(from("198.51.100.1").await.status, 200);
        assert_eq!(from("198.51.100.2").await.status, 200, "another client");
        assert_limited(&from("198.51.100.1").await, 3_600_000);
    })
    .await;
}

/// Per homeserver: all users of one `matrix_server_name` share one budget.
#[tokio::test]
async fn per_homeserver_limit_is_shared_by_its_users() {
    bounded(async {
        let world = World::start().await;
        let alice = world.hs.add_user("token-alice", "alice");
        let bob = world.hs.add_user("token-bob", "bob");
        let service = world
            .service()
            .set("LIVEKIT_RATE_LIMIT_PER_HOMESERVER", "1/m")
            .start()
            .await;
        let server = world.hs.server_name();

        let first = service
            .post_json(PATH, &body::get_token(&server, "token-alice", &alice))
            .await;
        assert_eq!(first.status, 200);
        let second = service
            .post_json(PATH, &body::get_token(&server, "token-bob", &bob))
            .await;
        assert_limited(&second, 60_000);
    })
    .await;
}

/// Made-up tokens naming a homeserver spend their sender's budget, not the homeserver's: once the
/// sender's failures are spent it is refused before any further lookup, and the homeserver's real
/// user, from another address, still gets a token.
#[tokio::test]
async fn made_up_tokens_do_not_lock_out_the_homeservers_users() {
    bounded(async {
        let world = World::start().await;
        let alice = world.hs.add_user("token-alice", "alice");
        let service = world
            .service()
            .set("LIVEKIT_RATE_LIMIT_PER_HOMESERVER", "2/h")
            .set("LIVEKIT_TRUSTED_PROXIES", "127.0.0.0/8")
            .start()
            .await;
        let server = world.hs.server_name();
        let from = |client: &'static str, request: serde_json::Value| {
            let response = service
                .request(Method::POST, PATH)
                .header("x-forwarded-for", client)
                .json(&request)
                .send();
            async move { response.await.status }
        };

        let mut statuses = Vec::new();
        for i in 0..4 {
            let made_up = body::get_token(&server, &format!("made-up-{i}"), &alice);
            statuses.push(from("203.0.113.66", made_up).await);
        }
        assert_eq!(statuses, [401, 401, 429, 429]);
        assert_eq!(
            world.hs.lookup_count(),
            2,
            "a client whose failures are spent is refused before the lookup"
        );

        let real = body::get_token(&server, "token-alice", &alice);
        assert_eq!(from("198.51.100.1", real.clone()).await, 200);
        // The attacker's address stays refused even with a real token.
        assert_eq!(from("203.0.113.66", real).await, 429);
    })
    .await;
}
