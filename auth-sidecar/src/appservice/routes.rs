//! The AS-mode HTTP surface (as-mode spec §4): the MSC4195 token routes under `v1` and
//! `unstable/io.element.msc4195` as Synapse forwards them, `/_matrix/app/v1/ping`, and a harmless
//! `/_matrix/app/v1/transactions/{txnId}`.
//!
//! Every route runs the same gate first: the method (OPTIONS 200, anything but the route's method 405),
//! then the HS token (before the body is read; compared in constant time), then the body (a JSON object
//! whose known keys have the right types, unknown keys ignored, required strings non-empty).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::any;
use futures::future::BoxFuture;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::RoomTracker;
use super::flows::{self, AsError, Context, Effects, Required, Settings, Success};
use super::homeserver::Homeserver;
use crate::config::appservice::Secret;
use crate::delegation::JobKey;
use crate::http::{AppState, cors, hand_over, limits};

/// How long a request may take in all (Synapse gives up after 30 s).
pub const REQUEST_BUDGET: Duration = Duration::from_secs(25);
/// The header in which Synapse names the user of a C-S request.
pub const USER_HEADER: &str = "x-matrix-user-identifier";
/// The header in which Synapse names the origin of an S-S request.
pub const ORIGIN_HEADER: &str = "x-matrix-origin";
/// Versions Synapse forwards under: MSC4195's stable `v1` and its unstable prefix.
const VERSIONS: [&str; 2] = ["v1", "unstable/io.element.msc4195"];

/// The AS routes' state.
pub struct AppService {
    pub app: Arc<AppState>,
    pub settings: Settings,
    pub hs_token: Secret,
    pub homeserver: Arc<dyn Homeserver>,
    pub tracker: Arc<dyn RoomTracker>,
}

/// The AS routes (no fallback: the standalone router has it).
pub fn router(service: Arc<AppService>) -> Router {
    let mut router = Router::new();
    for version in VERSIONS {
        router = router
            .route(
                &format!("/_matrix/client/{version}/rtc/livekit/get_token"),
                any(cs_get_token),
            )
            .route(
                &format!("/_matrix/client/{version}/rtc/livekit/delegate_delayed_leave"),
                any(delegate_delayed_leave),
            )
            .route(
                &format!("/_matrix/federation/{version}/rtc/livekit/get_token"),
                any(ss_get_token),
            );
    }
    router
        .route("/_matrix/app/v1/ping", any(ping))
        .route("/_matrix/app/v1/transactions/{txn_id}", any(transactions))
        .with_state(service)
}

/// Metric labels of the AS routes.
mod endpoint {
    pub const CS_GET_TOKEN: &str = "as_client_get_token";
    pub const SS_GET_TOKEN: &str = "as_federation_get_token";
    pub const DELEGATE: &str = "as_delegate_delayed_leave";
}

async fn cs_get_token(State(service): State<Arc<AppService>>, request: Request) -> Response {
    let deadline = Instant::now() + REQUEST_BUDGET;
    let result = match gate::<flows::CsGetToken>(&service, request, Method::POST).await {
        Ok((headers, body)) => {
            let user = header(&headers, USER_HEADER);
            flows::cs_get_token(&service.context(deadline), &user, &body)
                .await
                .map_err(Rejected::Error)
        }
        Err(rejected) => Err(rejected),
    };
    with_cors(render(&service, endpoint::CS_GET_TOKEN, result))
}

async fn delegate_delayed_leave(
    State(service): State<Arc<AppService>>,
    request: Request,
) -> Response {
    let deadline = Instant::now() + REQUEST_BUDGET;
    let result = match gate::<flows::Delegate>(&service, request, Method::POST).await {
        Ok((headers, body)) => {
            let user = header(&headers, USER_HEADER);
            flows::delegate(&service.context(deadline), &user, &body)
                .await
                .map_err(Rejected::Error)
        }
        Err(rejected) => Err(rejected),
    };
    with_cors(render(&service, endpoint::DELEGATE, result))
}

async fn ss_get_token(State(service): State<Arc<AppService>>, request: Request) -> Response {
    let deadline = Instant::now() + REQUEST_BUDGET;
    let result = match gate::<flows::SsGetToken>(&service, request, Method::POST).await {
        Ok((headers, body)) => {
            let origin = header(&headers, ORIGIN_HEADER);
            flows::ss_get_token(&service.context(deadline), &origin, &body)
                .await
                .map_err(Rejected::Error)
        }
        Err(rejected) => Err(rejected),
    };
    render(&service, endpoint::SS_GET_TOKEN, result)
}

/// The homeserver checks that it can reach us (and that we accept its token): `{}`.
async fn ping(State(service): State<Arc<AppService>>, request: Request) -> Response {
    let result = gate::<Ignored>(&service, request, Method::POST)
        .await
        .map(|_| Success::Empty);
    json_response(result)
}

/// With a registration `url`, the homeserver pushes events here; we need none, so any transaction is
/// acknowledged (and dropped) once its token checks out.
async fn transactions(State(service): State<Arc<AppService>>, request: Request) -> Response {
    let result = gate::<Ignored>(&service, request, Method::PUT)
        .await
        .map(|_| Success::Empty);
    json_response(result)
}

/// A body whose contents do not matter (it must still be a JSON object).
#[derive(Default, serde::Deserialize)]
struct Ignored {}

impl Required for Ignored {
    fn required(&self) -> Vec<&Option<String>> {
        Vec::new()
    }
}

impl AppService {
    fn context(&self, deadline: Instant) -> Context<'_> {
        Context {
            settings: &self.settings,
            homeserver: self.homeserver.as_ref(),
            effects: self.app.as_ref(),
            tracker: self.tracker.as_ref(),
            keys: &self.app.keys,
            deadline,
        }
    }
}

/// Why a request got no further than the gate, or the flow's error.
#[derive(Debug)]
enum Rejected {
    /// OPTIONS: an empty 200.
    Preflight,
    /// An empty 405.
    WrongMethod,
    Error(AsError),
}

impl From<AsError> for Rejected {
    fn from(error: AsError) -> Self {
        Self::Error(error)
    }
}

/// Method, HS token, body (§4), in that order; the token is checked before the body is read.
async fn gate<T: DeserializeOwned + Default + Required>(
    service: &AppService,
    request: Request,
    method: Method,
) -> Result<(HeaderMap, T), Rejected> {
    let (parts, body) = request.into_parts();
    if parts.method == Method::OPTIONS {
        return Err(Rejected::Preflight);
    }
    if parts.method != method {
        return Err(Rejected::WrongMethod);
    }
    let token = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .filter(|token| !token.is_empty());
    match token {
        None => {
            return Err(Rejected::Error(AsError::new(
                StatusCode::UNAUTHORIZED,
                "M_MISSING_TOKEN",
                "Missing access token",
            )));
        }
        Some(token) if !token_matches(token, &service.hs_token) => {
            return Err(Rejected::Error(AsError::new(
                StatusCode::UNAUTHORIZED,
                "M_UNKNOWN_TOKEN",
                "Invalid access token",
            )));
        }
        Some(_) => {}
    }
    let bytes = limits::read_body(&parts.headers, body)
        .await
        .map_err(|error| AsError::new(error.status, error.errcode, error.error))?;
    let body = decode::<T>(&bytes)?;
    Ok((parts.headers, body))
}

/// §4's body rules: a JSON object (else, or on a wrongly typed known key, 400 `M_NOT_JSON`), every
/// required string non-empty (else 400 `M_BAD_JSON`). Unknown keys are ignored.
pub fn decode<T: DeserializeOwned + Default + Required>(bytes: &[u8]) -> Result<T, AsError> {
    let not_json = || {
        AsError::new(
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
            "Error reading request",
        )
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| not_json())?;
    if !value.is_object() {
        return Err(not_json());
    }
    let body: T = serde_json::from_value(value).map_err(|_| not_json())?;
    if body
        .required()
        .iter()
        .any(|field| field.as_deref().unwrap_or_default().is_empty())
    {
        return Err(AsError::new(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "Missing required field",
        ));
    }
    Ok(body)
}

/// Compares SHA-256 digests without an early exit: neither the length nor any prefix of the expected
/// token shows in the time taken.
fn token_matches(given: &str, expected: &Secret) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let expected = Sha256::digest(expected.expose().as_bytes());
    let difference = given
        .iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Counts and renders an answer.
fn render(
    service: &AppService,
    endpoint: &'static str,
    result: Result<Success, Rejected>,
) -> Response {
    let outcome = match &result {
        Ok(_) => "2xx",
        Err(Rejected::Preflight) => "preflight",
        Err(Rejected::WrongMethod) => "4xx",
        Err(Rejected::Error(error)) => match &error.errcode {
            Cow::Borrowed(errcode) => *errcode,
            // An errcode relayed from another server: not a label we let others choose.
            Cow::Owned(_) => "relayed",
        },
    };
    service.app.metrics.request(endpoint, outcome);
    json_response(result)
}

/// `{"jwt"}`, `{}`, a Matrix error, or an empty 200/405 from the method gate.
fn json_response(result: Result<Success, Rejected>) -> Response {
    let (status, body) = match result {
        Ok(Success::Jwt(jwt)) => {
            let mut body =
                serde_json::to_vec(&serde_json::json!({ "jwt": jwt })).unwrap_or_default();
            body.push(b'\n');
            (StatusCode::OK, body)
        }
        Ok(Success::Empty) => (StatusCode::OK, b"{}\n".to_vec()),
        Err(Rejected::Preflight) => (StatusCode::OK, Vec::new()),
        Err(Rejected::WrongMethod) => (StatusCode::METHOD_NOT_ALLOWED, Vec::new()),
        Err(Rejected::Error(error)) => (error.status, error.body()),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn with_cors(mut response: Response) -> Response {
    cors::apply(response.headers_mut());
    response
}

impl Effects for AppState {
    fn create_room<'a>(&'a self, alias: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.rooms
                .create_room(alias)
                .await
                .map(|_| ())
                .map_err(|error| {
                    self.metrics.create_room_failed();
                    error.to_string()
                })
        })
    }

    fn delegate<'a>(
        &'a self,
        key: JobKey,
        server_name: &'a str,
        user_id: &'a str,
        delay_id: String,
        delay_timeout: Duration,
    ) -> BoxFuture<'a, Result<(), AsError>> {
        Box::pin(async move {
            hand_over::add_job(
                self,
                key,
                server_name,
                Some(user_id),
                delay_id,
                delay_timeout,
            )
            .await
            .map_err(|error| AsError::new(error.status, error.errcode, error.error))
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn token_comparison() {
        let secret = Secret::new("hs-secret".into());
        assert!(token_matches("hs-secret", &secret));
        for wrong in ["hs-secreT", "hs-secret ", "hs", "", "hs-secret-and-more"] {
            assert!(!token_matches(wrong, &secret), "{wrong:?}");
        }
    }

    #[test]
    fn body_rules() {
        let ok = json!({"url": "u", "room_id": "!r:x", "slot_id": "s", "member_id": "m", "unknown": [1]});
        let body = decode::<flows::CsGetToken>(ok.to_string().as_bytes()).unwrap();
        assert_eq!(body.room_id.as_deref(), Some("!r:x"));
        assert_eq!(body.server_name, None);
        for (bytes, errcode) in [
            (&b"[]"[..], "M_NOT_JSON"),
            (b"\"x\"", "M_NOT_JSON"),
            (b"", "M_NOT_JSON"),
            (b"{", "M_NOT_JSON"),
            (
                br#"{"url": 1, "room_id": "!r:x", "slot_id": "s", "member_id": "m"}"#,
                "M_NOT_JSON",
            ),
            (
                br#"{"room_id": "!r:x", "slot_id": "s", "member_id": "m"}"#,
                "M_BAD_JSON",
            ),
            (
                br#"{"url": "", "room_id": "!r:x", "slot_id": "s", "member_id": "m"}"#,
                "M_BAD_JSON",
            ),
            (
                br#"{"url": null, "room_id": "!r:x", "slot_id": "s", "member_id": "m"}"#,
                "M_BAD_JSON",
            ),
        ] {
            let error = decode::<flows::CsGetToken>(bytes).unwrap_err();
            assert_eq!(error.errcode, errcode, "{}", String::from_utf8_lossy(bytes));
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
        }
        let error = decode::<flows::SsGetToken>(ok.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            error.errcode, "M_BAD_JSON",
            "user_id is required over federation"
        );
        assert_eq!(error.error, "Missing required field");
    }
}
