//! The HTTP surface (spec §1): routing, and one module per endpoint.
//!
//! Routing is by exact path, like Go's `ServeMux` with method-less patterns: each endpoint checks the
//! method itself, and anything else is Go's plain-text 404. The token endpoints run the same gate first
//! (method, per-IP limit, body) and render their answer the same way (CORS and JSON headers on every
//! response, a metric per answer); see `gate`. Every request runs inside a tracing span naming its
//! route (see `trace`).
//!
//! Layering inside: the endpoints (`get_token`, `sfu_get`, `delegate`, `webhook`, `health`, `metrics`)
//! use the shared steps (`issue`, `authenticate`, `hand_over`), which use the gate, the request types,
//! the errors, the limits, the request span and the shared [`AppState`]; nothing below an endpoint
//! names one, and this module only routes.

pub mod cors;
pub mod delegate;
pub mod error;
pub mod get_token;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod request;
pub mod sfu_get;
pub mod webhook;

mod authenticate;
#[cfg(test)]
mod fuzz;
mod gate;
pub(crate) mod hand_over;
mod issue;
mod state;
#[cfg(test)]
mod test_support;
mod trace;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::any;
use http::header::{CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, StatusCode};

pub use self::issue::IssuedToken;
pub use self::state::{AppState, OpenIdLookup, TokenResponse};
use crate::contract::path;

/// The service's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(path::GET_TOKEN, any(get_token::handle))
        .route(path::SFU_GET, any(sfu_get::handle))
        .route(path::DELEGATE_DELAYED_LEAVE, any(delegate::handle))
        .route(path::SFU_WEBHOOK, any(webhook::handle))
        .route(path::HEALTHZ, any(health::handle))
        .route(path::METRICS, any(metrics::handle))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(trace::request_span))
        .with_state(state)
}

/// Go's `http.NotFound`.
async fn not_found() -> Response {
    let mut response = Response::new(Body::from("404 page not found\n"));
    *response.status_mut() = StatusCode::NOT_FOUND;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
