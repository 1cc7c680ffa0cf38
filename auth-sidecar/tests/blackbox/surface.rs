//! The HTTP surface (spec §1, §1.1, §1.7): methods, CORS on every POST-endpoint response, `/healthz`, the
//! Go-style 404, the body size limit and `/metrics`.

use http::Method;
use serde_json::json;

use crate::support::body::{self, assert_bad_json, assert_cors};
use crate::support::client::Response;
use crate::support::jwt::SECRET;
use crate::support::{World, bounded};

const POST_ENDPOINTS: [&str; 2] = ["/get_token", "/sfu/get"];

fn assert_no_cors(response: &Response, what: &str) {
    for name in [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
    ] {
        assert_eq!(response.header(name), None, "{what}: no {name}");
    }
}

/// Any method but POST and OPTIONS: 405, empty body, still the CORS and JSON headers.
#[tokio::test]
async fn other_methods_get_405_with_cors_and_empty_body() {
    bounded(async {
        let world = World::start().await;
        let service = world.service().start().await;

        for path in POST_ENDPOINTS {
            for method in [
                Method::GET,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
                Method::HEAD,
            ] {
                let what = format!("{method} {path}");
                let response = service.request(method, path).send().await;
                assert_eq!(response.status, 405, "{what}");
                assert!(response.body.is_empty(), "{what}: empty body");
                assert_cors(&response, &what);
            }
        }
    })
    .await;
}

/// Preflight: 200, empty body, CORS headers, whatever the `Access-Control-Request-*` headers ask.
#[tokio::test]
async fn options_preflight_is_200_with_cors() {
    bounded(async {
        let world = World::start().await;
        let service = world.service().start().await;

        for path in POST_ENDPOINTS {
            for (method, headers) in [("POST", "content-type"), ("DELETE", "x-unusual")] {
                let response = service
                    .request(Method::OPTIONS, path)
                    .header("origin", "https://call.example.org")
                    .header("access-control-request-method", method)
                    .header("access-control-request-headers", headers)
                    .send()
                    .await;
                assert_eq!(response.status, 200, "OPTIONS {path}");
                assert!(response.body.is_empty(), "OPTIONS {path}: empty body");
                assert_cors(&response, &format!("OPTIONS {path}"));
            }
        }
        assert_eq!(world.hs.lookup_count(), 0);
    })
    .await;
}

/// `/healthz`: GET and HEAD give an empty 200, other methods 405; no CORS headers.
#[tokio::test]
async fn healthz_answers_get_and_head() {
    bounded(async {
        let world = World::start().await;
        let service = world.service().start().await;

        for method in [Method::GET, Method::HEAD] {
            let response = service.request(method.clone(), "/healthz").send().await;
            assert_eq!(response.status, 200, "{method}");
            assert!(response.body.is_empty(), "{method}: empty body");
            assert_no_cors(&response, "/healthz");
        }
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let response = service.request(method.clone(), "/healthz").send().await;
            assert_eq!(response.status, 405, "{method} /healthz");
        }
    })
    .await;
}

/// Unknown paths get Go's plain-text 404; paths match exactly.
#[tokio::test]
async fn unknown_paths_get_the_plain_404() {
    bounded(async {
        let world = World::start().await;
        let service = world.service().start().await;

        for (method, path) in [
            (Method::GET, "/"),
            (Method::POST, "/nope"),
            (Method::POST, "/get_token/"),
            (Method::POST, "/sfu/get/extra"),
            (Method::GET, "/livekit/jwt/sfu/get"),
        ] {
            let what = format!("{method} {path}");
            let response = service.request(method, path).send().await;
            assert_eq!(response.status, 404, "{what}");
            assert_eq!(response.text(), "404 page not found\n", "{what}");
            let content_type = response.header("content-type").unwrap_or_default();
            assert!(
                content_type.starts_with("text/plain"),
                "{what}: {content_type}"
            );
            assert_no_cors(&response, &what);
        }
    })
    .await;
}

/// Bodies over 64 KiB are refused with 413 (and the CORS headers) before any lookup; a body just
/// under the limit is read and validated normally.
#[tokio::test]
async fn oversized_bodies_get_413() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;

        for path in POST_ENDPOINTS {
            let mut request = body::get_token(&world.hs.server_name(), "token-alice", &user);
            request["room_id"] = json!("!".repeat(70 * 1024));
            let response = service.post_json(path, &request).await;
            assert_eq!(response.status, 413, "{path}: {}", response.text());
            assert_cors(&response, &format!("413 on {path}"));
        }

        let under = json!({"room_id": "", "slot_id": "x".repeat(60 * 1024)});
        let response = service.post_json("/get_token", &under).await;
        assert_bad_json(
            &response,
            "The request body is missing `room_id` or `slot_id`",
        );
        assert_eq!(world.hs.lookup_count(), 0);
    })
    .await;
}

/// `/metrics` serves Prometheus text with per-endpoint, per-outcome request counters, and no secrets.
#[tokio::test]
async fn metrics_count_requests_by_endpoint_and_outcome() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;
        let server = world.hs.server_name();

        assert_eq!(
            service
                .post_json(
                    "/get_token",
                    &body::get_token(&server, "token-alice", &user)
                )
                .await
                .status,
            200
        );
        for _ in 0..2 {
            assert_eq!(
                service.post_json("/get_token", &json!({})).await.status,
                400
            );
        }
        assert_eq!(
            service
                .post_json("/sfu/get", &body::sfu_get(&server, "unknown", "D"))
                .await
                .status,
            401
        );

        let response = service.get("/metrics").await;
        assert_eq!(response.status, 200);
        let text = response.text();
        let value = |labels: &str| -> f64 {
            let prefix = format!("matrixrtc_auth_requests_total{{{labels}}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no counter {prefix}in\n{text}"))
                .trim()
                .parse()
                .expect("counter value")
        };
        assert_eq!(value(r#"endpoint="/get_token",outcome="2xx""#), 1.0);
        assert_eq!(value(r#"endpoint="/get_token",outcome="M_BAD_JSON""#), 2.0);
        assert_eq!(
            value(r#"endpoint="/sfu/get",outcome="M_UNAUTHORIZED""#),
            1.0
        );
        assert!(!text.contains(SECRET), "no secret in metrics");
        assert!(!text.contains("token-alice"), "no access token in metrics");
    })
    .await;
}
