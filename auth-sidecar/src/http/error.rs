//! The Matrix error every endpoint answers with: an HTTP status and `{"errcode","error"}` plus a newline,
//! the way Go's `json.Encoder` writes it.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::header::RETRY_AFTER;
use http::{HeaderValue, StatusCode};

use crate::go_json;

/// `M_UNAUTHORIZED`'s text, the same for every authorisation failure so that none leaks why.
pub const UNAUTHORIZED_TEXT: &str = "The request could not be authorised.";

/// A Matrix error response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub error: &'static str,
    /// Only for `M_LIMIT_EXCEEDED`.
    pub retry_after: Option<Duration>,
}

impl MatrixError {
    const fn new(status: StatusCode, errcode: &'static str, error: &'static str) -> Self {
        Self {
            status,
            errcode,
            error,
            retry_after: None,
        }
    }

    /// 400 `M_NOT_JSON`: the body could not be decoded.
    pub const fn not_json() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
            "Error reading request",
        )
    }

    /// 400 `M_BAD_JSON` with one of the reference's validation texts.
    pub const fn bad_json(error: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", error)
    }

    /// 401 `M_UNAUTHORIZED`.
    pub const fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "M_UNAUTHORIZED",
            UNAUTHORIZED_TEXT,
        )
    }

    /// 500 `M_UNKNOWN` with the reference's generic text.
    pub const fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Internal Server Error",
        )
    }

    /// 500 `M_UNKNOWN`: LiveKit's `CreateRoom` failed.
    pub const fn create_room_failed() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Unable to create room on SFU",
        )
    }

    /// 403 `M_FORBIDDEN` (`/delegate_delayed_leave` for a restricted user).
    pub const fn forbidden(error: &'static str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", error)
    }

    /// 503 `M_UNKNOWN`: a delegation arrived while the service shuts down.
    pub const fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_UNKNOWN",
            "Service is shutting down",
        )
    }

    /// 413 `M_TOO_LARGE`: the body is over the limit (the reference reads any size).
    pub const fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "The request body is too large",
        )
    }

    /// 429 `M_LIMIT_EXCEEDED` with `retry_after_ms` (the reference has no rate limits).
    pub fn limit_exceeded(retry_after: Duration) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "M_LIMIT_EXCEEDED",
                "Too many requests",
            )
        }
    }

    /// The JSON body, newline-terminated.
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.errcode.len() + self.error.len());
        out.extend_from_slice(b"{\"errcode\":");
        go_json::push_string(&mut out, self.errcode);
        out.extend_from_slice(b",\"error\":");
        go_json::push_string(&mut out, self.error);
        if let Some(retry_after) = self.retry_after {
            out.extend_from_slice(
                format!(",\"retry_after_ms\":{}", retry_after_ms(retry_after)).as_bytes(),
            );
        }
        out.extend_from_slice(b"}\n");
        out
    }

    /// The response, without the CORS headers (the endpoint adds those it needs).
    pub fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body()));
        *response.status_mut() = self.status;
        if let Some(retry_after) = self.retry_after {
            // Whole seconds, rounded up, so a client that honours the header never comes back early.
            let seconds = retry_after_ms(retry_after).div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Milliseconds rounded up, at least 1: a client told 0 would retry at once.
fn retry_after_ms(retry_after: Duration) -> u64 {
    let ms = retry_after.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_exactly_the_reference_json() {
        assert_eq!(
            String::from_utf8(MatrixError::not_json().body()).unwrap(),
            "{\"errcode\":\"M_NOT_JSON\",\"error\":\"Error reading request\"}\n"
        );
        assert_eq!(
            String::from_utf8(MatrixError::unauthorized().body()).unwrap(),
            "{\"errcode\":\"M_UNAUTHORIZED\",\"error\":\"The request could not be authorised.\"}\n"
        );
        assert_eq!(
            String::from_utf8(MatrixError::bad_json("Missing room parameter").body()).unwrap(),
            "{\"errcode\":\"M_BAD_JSON\",\"error\":\"Missing room parameter\"}\n"
        );
    }

    #[test]
    fn limit_exceeded_carries_retry_after() {
        let error = MatrixError::limit_exceeded(Duration::from_micros(1_500_100));
        assert_eq!(
            String::from_utf8(error.body()).unwrap(),
            "{\"errcode\":\"M_LIMIT_EXCEEDED\",\"error\":\"Too many requests\",\"retry_after_ms\":1501}\n"
        );
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        // Never zero.
        assert!(
            String::from_utf8(MatrixError::limit_exceeded(Duration::ZERO).body())
                .unwrap()
                .contains("\"retry_after_ms\":1}")
        );
    }

    #[test]
    fn statuses() {
        assert_eq!(MatrixError::not_json().status, StatusCode::BAD_REQUEST);
        assert_eq!(
            MatrixError::too_large().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            MatrixError::internal().status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            MatrixError::create_room_failed().into_response().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
