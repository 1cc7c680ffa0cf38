//! Shared fakes and helpers of the black-box tests: a TLS fake homeserver, a fake LiveKit Twirp API, the
//! service as a child process, a tiny HTTP client, and the spec's expected bodies and hashes.

pub mod body;
pub mod client;
pub mod client_server;
pub mod homeserver;
pub mod jwt;
pub mod livekit;
pub mod redis;
pub mod service;
pub mod tls;
pub mod webhook;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use self::client::Response;
use self::homeserver::FakeHomeserver;
use self::livekit::FakeLiveKit;
use self::service::ServiceConfig;
use self::tls::TestPki;

/// Upper bound of any one test; a hang fails the test instead of stalling the run.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs a test body under [`TEST_TIMEOUT`].
pub async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {TEST_TIMEOUT:?}"));
}

/// A CA, a fake homeserver serving a certificate from it, and a fake LiveKit.
pub struct World {
    pub pki: TestPki,
    pub hs: FakeHomeserver,
    pub livekit: FakeLiveKit,
}

impl World {
    pub async fn start() -> Self {
        let pki = TestPki::generate();
        let hs = FakeHomeserver::start(&pki).await;
        let livekit = FakeLiveKit::start().await;
        Self { pki, hs, livekit }
    }

    /// The usual service: LIVEKIT_URL = the fake LiveKit, the fake homeserver full-access, and the test
    /// CA trusted through `SSL_CERT_FILE` (TLS verified, not skipped).
    pub fn service(&self) -> ServiceConfig {
        self.restricted_service()
            .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", &self.hs.server_name())
    }

    /// Like [`World::service`], but only an unrelated homeserver is full-access.
    pub fn restricted_service(&self) -> ServiceConfig {
        ServiceConfig::new()
            .set("LIVEKIT_URL", &self.livekit.ws_url())
            .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", "other.example.org")
            .set("SSL_CERT_FILE", &self.pki.ca_file().display().to_string())
    }
}

/// Checks a 200 token response byte for byte (`{"url":…,"jwt":…}` and a newline, url first, CORS
/// headers) and every claim of spec §3.3; returns the claims.
pub fn assert_token_response(
    response: &Response,
    livekit_url: &str,
    identity: &str,
    room: &str,
) -> Value {
    assert_eq!(response.status, 200, "body: {}", response.text());
    body::assert_cors(response, "token response");
    let parsed = response.json();
    let jwt = parsed["jwt"].as_str().expect("jwt is a string");
    let expected = format!(
        "{{\"url\":{},\"jwt\":{}}}\n",
        serde_json::to_string(livekit_url).expect("JSON"),
        serde_json::to_string(jwt).expect("JSON")
    );
    assert_eq!(response.text(), expected, "body is url then jwt, then \\n");

    let token = jwt::verify(jwt, jwt::KEY, jwt::SECRET, &["exp", "nbf", "iss", "sub"]);
    assert_eq!(
        token.header,
        serde_json::json!({"alg": "HS256", "typ": "JWT"}),
        "JWT header"
    );
    let claims = token.claims;
    let keys: Vec<&str> = claims
        .as_object()
        .expect("claims object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["exp", "iss", "nbf", "sub", "video"],
        "exactly these claims: {claims}"
    );
    assert_eq!(claims["iss"], jwt::KEY);
    assert_eq!(claims["sub"], identity, "identity");
    let nbf = claims["nbf"].as_i64().expect("nbf is an integer");
    let exp = claims["exp"].as_i64().expect("exp is an integer");
    assert!((nbf - jwt::now()).abs() <= 5, "nbf is now: {nbf}");
    assert_eq!(exp - nbf, 3600, "exp = nbf + 3600");
    assert_eq!(
        claims["video"],
        serde_json::json!({
            "room": room,
            "roomJoin": true,
            "canPublish": true,
            "canSubscribe": true,
            "canUpdateOwnMetadata": true,
        }),
        "video grant (no roomCreate)"
    );
    claims
}

/// A directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "matrixrtc-auth-blackbox-{}-{label}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
