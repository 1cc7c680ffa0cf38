//! The gate of a token endpoint and how its answer is rendered: every token endpoint checks the method,
//! the per-IP limit and the body first, and answers with CORS and JSON headers and a metric per answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use http::{Method, StatusCode};

use super::cors;
use super::error::MatrixError;
use super::issue::Issued;
use super::limits;
use super::state::AppState;

/// An empty response with `status`.
pub(super) fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// A token request that passed the gate.
pub(super) struct Admitted {
    pub(super) body: Bytes,
    /// The client's address, as the per-IP limits see it (see [`super::limits::RateLimits::client_ip`]).
    pub(super) client: IpAddr,
}

/// The gate of a token endpoint: the method (405, or 200 for a preflight), the per-IP limit, then the
/// body. `Err` is the finished response.
pub(super) async fn admit(
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
pub(super) fn answer(
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

/// [`answer`] for a token endpoint's result, with the [`super::issue::IssuedToken`] as an extension of a success.
pub(super) fn answer_issued(
    state: &AppState,
    endpoint: &'static str,
    result: Result<Issued, MatrixError>,
) -> Response {
    match result {
        Ok(issued) => {
            let mut response = answer(state, endpoint, Ok(issued.body));
            response.extensions_mut().insert(issued.token);
            response
        }
        Err(error) => answer(state, endpoint, Err(error)),
    }
}

fn with_cors(mut response: Response) -> Response {
    cors::apply(response.headers_mut());
    response
}
