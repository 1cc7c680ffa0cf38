//! `GET /healthz`: 200 with an empty body while the process serves requests (`HEAD` too); any other
//! method is 405. No CORS headers. Logged at debug only: probes call it every few seconds.

use axum::extract::Request;
use axum::response::Response;
use http::{Method, StatusCode};

use super::gate::empty;

/// The route handler.
pub async fn handle(request: Request) -> Response {
    match *request.method() {
        Method::GET | Method::HEAD => {
            tracing::debug!("health check");
            empty(StatusCode::OK)
        }
        _ => empty(StatusCode::METHOD_NOT_ALLOWED),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::Harness;
    use crate::livekit::fake::Reply;
    use http::{Method, StatusCode};

    #[tokio::test]
    async fn get_and_head_are_200_others_405() {
        let harness = Harness::start(Reply::Room).await;
        for (method, status) in [
            (Method::GET, StatusCode::OK),
            (Method::HEAD, StatusCode::OK),
            (Method::POST, StatusCode::METHOD_NOT_ALLOWED),
            (Method::OPTIONS, StatusCode::METHOD_NOT_ALLOWED),
            (Method::DELETE, StatusCode::METHOD_NOT_ALLOWED),
        ] {
            let response = harness
                .send(Harness::request(method.clone(), "/healthz", ""))
                .await;
            assert_eq!(response.status, status, "{method}");
            assert!(response.body.is_empty());
            Harness::assert_no_cors(&response.headers);
        }
    }

    #[tokio::test]
    async fn unknown_paths_are_go_404s() {
        let harness = Harness::start(Reply::Room).await;
        for path in [
            "/",
            "/get_token/",
            "/delegate_delayed_leave/",
            "/sfu_webhook/x",
            "/healthz/x",
            "/GET_TOKEN",
        ] {
            let response = harness.send(Harness::request(Method::POST, path, "")).await;
            assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(&response.body[..], b"404 page not found\n");
            assert_eq!(
                response.headers["content-type"],
                "text/plain; charset=utf-8"
            );
            Harness::assert_no_cors(&response.headers);
        }
    }
}
