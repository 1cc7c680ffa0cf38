//! Shared fakes and helpers for the endpoint tests: the router with a fake homeserver lookup and a fake
//! LiveKit, driven in-process.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::limits::RateLimits;
use super::{AppState, OpenIdLookup, TokenResponse, router};
use crate::config::RateLimit;
use crate::contract::env;
use crate::delegation::{self, Delegation, LookupError, ParticipantLookup};
use crate::livekit::fake::{FakeLiveKit, Reply, http_client};
use crate::livekit::keys::KeySet;
use crate::livekit::twirp::RoomService;
use crate::livekit::webhook::WebhookVerifier;
use crate::matrix::client_api::{ClientApi, Reach};
use crate::matrix::full_access::FullAccess;
use crate::matrix::guard::Guard;
use crate::outbound::{Outbound, OutboundSettings};
use crate::telemetry::Metrics;

/// A homeserver that knows two tokens: `good-token` of `@alice:example.com` (full-access) and
/// `remote-token` of `@bob:other.org`. Records every lookup as (server name, trusted).
#[derive(Default)]
pub struct FakeOpenId {
    calls: Mutex<Vec<(String, bool)>>,
}

impl FakeOpenId {
    pub fn calls(&self) -> Vec<(String, bool)> {
        self.calls.lock().unwrap().clone()
    }
}

impl OpenIdLookup for FakeOpenId {
    fn lookup<'a>(
        &'a self,
        server_name: &'a str,
        access_token: &'a str,
        trusted: bool,
    ) -> BoxFuture<'a, Result<String, String>> {
        self.calls
            .lock()
            .unwrap()
            .push((server_name.to_owned(), trusted));
        let result = match (server_name, access_token) {
            ("example.com", "good-token") => Ok("@alice:example.com".to_owned()),
            ("other.org", "remote-token") => Ok("@bob:other.org".to_owned()),
            _ => Err("unknown token".to_owned()),
        };
        Box::pin(async move { result })
    }
}

/// A LiveKit in which nobody is ever present (keeps the delegation engine from calling the fake).
struct NobodyThere;

impl ParticipantLookup for NobodyThere {
    fn is_present<'a>(
        &'a self,
        _room: &'a str,
        _identity: &'a str,
    ) -> BoxFuture<'a, Result<bool, LookupError>> {
        Box::pin(async { Ok(false) })
    }
}

/// Where `example.com`'s client-server API is said to be: nothing listens there, so a job's calls fail
/// quickly; no test here waits for them.
pub const CS_API_URL: &str = "http://127.0.0.1:9";

/// A response, read in full.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The router wired to fakes; `example.com` is the only full-access homeserver.
pub struct Harness {
    pub state: Arc<AppState>,
    pub openid: Arc<FakeOpenId>,
    pub livekit: FakeLiveKit,
    pub livekit_url: String,
}

pub const SECRET: &str = "test-secret";

impl Harness {
    pub async fn start(reply: Reply) -> Self {
        Self::with_limits(reply, None, None).await
    }

    pub async fn with_limits(
        reply: Reply,
        per_ip: Option<&str>,
        per_homeserver: Option<&str>,
    ) -> Self {
        let livekit = FakeLiveKit::start(reply).await;
        let livekit_url = livekit.ws_url("/sfu");
        let keys = Arc::new(KeySet::single("test-key".into(), SECRET.into()).unwrap());
        let openid = Arc::new(FakeOpenId::default());
        let parse = |var, v: Option<&str>| v.map(|v| RateLimit::parse(var, v).unwrap());
        let metrics = Arc::new(Metrics::new());
        let outbound = Outbound::new(&OutboundSettings::default()).unwrap();
        let reach = Reach::new(
            &outbound,
            Arc::new(Guard::default()),
            Arc::clone(&metrics),
            FullAccess::parse("example.com"),
        )
        .unwrap();
        let client_api = Arc::new(ClientApi::new(
            reach,
            [("example.com".to_owned(), CS_API_URL.to_owned())].into(),
            ClientApi::CACHE_TTL,
        ));
        let delegation = Delegation::start(
            delegation::Settings::default(),
            Arc::new(delegation::DelayedEvents::new(
                Arc::clone(&client_api),
                None,
            )),
            Arc::new(NobodyThere),
            Arc::clone(&metrics),
        )
        .await
        .unwrap();
        let state = Arc::new(AppState {
            openid: Arc::clone(&openid) as Arc<dyn OpenIdLookup>,
            rooms: RoomService::new(&livekit_url, Arc::clone(&keys), http_client()).unwrap(),
            webhooks: WebhookVerifier::new(Arc::clone(&keys)),
            keys,
            full_access: FullAccess::parse("example.com"),
            ssrf_trusted: FullAccess::parse("example.com"),
            limits: RateLimits::new(
                parse(env::LIVEKIT_RATE_LIMIT_PER_IP, per_ip),
                parse(env::LIVEKIT_RATE_LIMIT_PER_HOMESERVER, per_homeserver),
                Vec::new(),
            ),
            metrics,
            token_response: TokenResponse::new(&livekit_url),
            delegation,
            client_api,
            own_homeserver: None,
            membership: None,
        });
        Self {
            state,
            openid,
            livekit,
            livekit_url,
        }
    }

    pub fn request(method: Method, path: &str, body: &str) -> Request {
        Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    pub async fn send(&self, request: Request) -> Answer {
        let response = router(Arc::clone(&self.state))
            .oneshot(request)
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    /// The claims of `jwt` after checking its signature.
    pub fn claims(&self, jwt: &Value) -> Value {
        let jwt = jwt.as_str().unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        let claims = jsonwebtoken::decode::<Value>(
            jwt,
            &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
            &validation,
        )
        .unwrap()
        .claims;
        // And the payload is the same seen without verification.
        let payload = URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap(), claims);
        claims
    }

    pub fn assert_cors(headers: &HeaderMap) {
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["access-control-allow-origin"], "*");
        assert_eq!(headers["access-control-allow-methods"], "POST");
        assert_eq!(
            headers["access-control-allow-headers"],
            "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token"
        );
        assert!(headers.get("access-control-max-age").is_none());
        assert!(headers.get("allow").is_none());
    }

    /// Endpoints other than the three POST ones carry no CORS headers.
    pub fn assert_no_cors(headers: &HeaderMap) {
        assert!(headers.get("access-control-allow-origin").is_none());
    }
}

/// A JSON POST.
pub fn post(path: &str, body: &Value) -> Request {
    Harness::request(Method::POST, path, &body.to_string())
}

/// The body as JSON, checking it ends in a newline like Go's encoder output.
pub fn body_json(answer: &Answer) -> Value {
    assert!(answer.body.ends_with(b"\n"), "{:?}", answer.body);
    serde_json::from_slice(&answer.body).unwrap()
}
