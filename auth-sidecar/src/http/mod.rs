//! The HTTP surface (spec §1): routing, the rules every token endpoint shares, and the shared state.
//!
//! Routing is by exact path, like Go's `ServeMux` with method-less patterns: each endpoint checks the
//! method itself, and anything else is Go's plain-text 404. The token endpoints run the same gate first
//! (method, per-IP limit, body) and render their answer the same way (CORS and JSON headers on every
//! response, a metric per answer); see [`admit`] and [`answer`].

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

#[cfg(test)]
mod fuzz;
mod issue;
#[cfg(test)]
mod test_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use axum::routing::any;
use futures::future::BoxFuture;
use http::header::{CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, Method, StatusCode};

use self::error::MatrixError;
use self::limits::RateLimits;
use crate::config::FullAccess;
use crate::contract::path;
use crate::delegation::Delegation;
use crate::go_json;
use crate::livekit::keys::KeySet;
use crate::livekit::twirp::RoomService;
use crate::livekit::webhook::WebhookVerifier;
use crate::matrix::client_api::ClientApi;
use crate::matrix::openid::OpenIdVerifier;
use crate::telemetry::Metrics;

/// Verifies an OpenID access token with the homeserver that issued it and returns the user ID it
/// belongs to. The production implementation is [`OpenIdVerifier`]; tests substitute fakes. The error
/// is only logged (it never contains the token).
pub trait OpenIdLookup: Send + Sync {
    fn lookup<'a>(
        &'a self,
        server_name: &'a str,
        access_token: &'a str,
        trusted: bool,
    ) -> BoxFuture<'a, Result<String, String>>;
}

impl OpenIdLookup for OpenIdVerifier {
    fn lookup<'a>(
        &'a self,
        server_name: &'a str,
        access_token: &'a str,
        trusted: bool,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            self.verify(server_name, access_token, trusted)
                .await
                .map_err(|error| error.to_string())
        })
    }
}

/// The body of a successful token response, `{"url":…,"jwt":…}` plus a newline. Everything up to the
/// token is computed once.
#[derive(Debug)]
pub struct TokenResponse {
    prefix: Vec<u8>,
}

impl TokenResponse {
    /// For clients connecting to `livekit_url` (returned verbatim, JSON-escaped as Go does).
    pub fn new(livekit_url: &str) -> Self {
        let mut prefix = b"{\"url\":".to_vec();
        go_json::push_string(&mut prefix, livekit_url);
        prefix.extend_from_slice(b",\"jwt\":\"");
        Self { prefix }
    }

    /// The body carrying `jwt` (a JWT needs no escaping: base64url and dots).
    fn body(&self, jwt: &str) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.prefix.len() + jwt.len() + 3);
        body.extend_from_slice(&self.prefix);
        body.extend_from_slice(jwt.as_bytes());
        body.extend_from_slice(b"\"}\n");
        body
    }
}

/// What every request handler shares.
pub struct AppState {
    pub openid: Arc<dyn OpenIdLookup>,
    pub rooms: RoomService,
    pub keys: Arc<KeySet>,
    pub full_access: FullAccess,
    /// The homeservers the SSRF guard trusts, as named entries (see [`crate::config::Config::ssrf_trusted`]).
    pub ssrf_trusted: FullAccess,
    pub limits: RateLimits,
    pub metrics: Arc<Metrics>,
    pub token_response: TokenResponse,
    /// Delegated delayed leaves.
    pub delegation: Delegation,
    /// Where homeservers' client-server APIs are (checked before a job is accepted).
    pub client_api: Arc<ClientApi>,
    /// Verifies `/sfu_webhook` calls.
    pub webhooks: WebhookVerifier,
    /// The membership monitor (AS mode with a non-zero interval only).
    pub membership: Option<crate::membership::Monitor>,
}

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

/// An empty response with `status`.
fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// A token request that passed the gate.
struct Admitted {
    body: Bytes,
    /// The client's address, as the per-IP limits see it (see [`RateLimits::client_ip`]).
    client: IpAddr,
}

/// The gate of a token endpoint: the method (405, or 200 for a preflight), the per-IP limit, then the
/// body. `Err` is the finished response.
async fn admit(
    state: &AppState,
    endpoint: &'static str,
    request: Request,
) -> Result<Admitted, Response> {
    let (parts, body) = request.into_parts();
    match parts.method {
        Method::POST => {}
        Method::OPTIONS => {
            state.metrics.request(endpoint, "preflight");
            return Err(with_cors(empty(StatusCode::OK)));
        }
        _ => {
            state.metrics.request(endpoint, "4xx");
            return Err(with_cors(empty(StatusCode::METHOD_NOT_ALLOWED)));
        }
    }
    // Without connection info (only in tests that call the router directly) the peer is unknown.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |c| c.0);
    let client = state.limits.client_ip(peer.ip(), &parts.headers);
    let admitted = match state.limits.check_ip(client, &state.metrics) {
        Ok(()) => limits::read_body(&parts.headers, body).await,
        Err(error) => Err(error),
    };
    admitted
        .map(|body| Admitted { body, client })
        .map_err(|error| answer(state, endpoint, Err(error)))
}

/// Renders a token endpoint's result with the CORS and JSON headers, and counts it.
fn answer(
    state: &AppState,
    endpoint: &'static str,
    result: Result<Vec<u8>, MatrixError>,
) -> Response {
    let response = match result {
        Ok(body) => {
            state.metrics.request(endpoint, "2xx");
            Response::new(Body::from(body))
        }
        Err(error) => {
            state.metrics.request(endpoint, error.errcode);
            error.into_response()
        }
    };
    with_cors(response)
}

fn with_cors(mut response: Response) -> Response {
    cors::apply(response.headers_mut());
    response
}
