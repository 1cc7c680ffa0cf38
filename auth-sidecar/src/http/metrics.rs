//! `GET /metrics`: the Prometheus registry in the OpenMetrics text format. Meant for in-cluster scraping;
//! the public Ingress does not route it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, StatusCode};

use super::gate::empty;
use super::state::AppState;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route handler.
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match *request.method() {
        Method::GET | Method::HEAD => {
            let mut response = Response::new(Body::from(state.metrics.encode()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            response
        }
        _ => empty(StatusCode::METHOD_NOT_ALLOWED),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{Harness, post};
    use crate::livekit::fake::Reply;
    use http::{Method, StatusCode};
    use serde_json::json;

    #[tokio::test]
    async fn serves_counts_by_endpoint_and_outcome() {
        let harness = Harness::start(Reply::Room).await;
        harness.send(post("/get_token", &json!({}))).await;
        harness
            .send(Harness::request(Method::GET, "/sfu/get", ""))
            .await;
        let response = harness
            .send(Harness::request(Method::GET, "/metrics", ""))
            .await;
        assert_eq!(response.status, StatusCode::OK);
        assert!(
            response.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let text = String::from_utf8(response.body.to_vec()).unwrap();
        assert!(
            text.contains(
                r#"matrixrtc_auth_requests_total{endpoint="/get_token",outcome="M_BAD_JSON"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"matrixrtc_auth_requests_total{endpoint="/sfu/get",outcome="4xx"} 1"#),
            "{text}"
        );
        let response = harness
            .send(Harness::request(Method::POST, "/metrics", ""))
            .await;
        assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
    }
}
