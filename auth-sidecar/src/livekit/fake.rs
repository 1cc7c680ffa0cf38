//! A fake LiveKit RoomService on loopback for unit tests: records every call and answers as told.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// How the fake answers every call.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    /// 200 with a Room named after the request's `name`.
    Room,
    /// 200 with a Participant echoing the request's `identity`.
    Participant,
    /// 200 with an empty message (`RemoveParticipant`, `DeleteRoom`).
    Empty,
    /// 200 with this body, as it is.
    Text(&'static str),
    /// A Twirp error with this HTTP status and code.
    Error(u16, &'static str),
}

/// One recorded call.
#[derive(Clone, Debug)]
pub struct Call {
    pub path: String,
    pub content_type: String,
    pub authorization: String,
    pub body: Bytes,
}

/// A running fake; the server stops when the test's runtime ends.
pub struct FakeLiveKit {
    port: u16,
    calls: Arc<Mutex<Vec<Call>>>,
}

type Shared = (Reply, Arc<Mutex<Vec<Call>>>);

impl FakeLiveKit {
    /// Starts a fake answering with `reply`.
    pub async fn start(reply: Reply) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state((reply, Arc::clone(&calls)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { port, calls }
    }

    /// The `ws://` URL of the fake with `path` appended (as `LIVEKIT_URL` would hold it).
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// Calls received so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

async fn handle(
    State((reply, calls)): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    calls.lock().unwrap().push(Call {
        path: uri.path().to_owned(),
        content_type: header("content-type"),
        authorization: header("authorization"),
        body: body.clone(),
    });
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, body) = match reply {
        Reply::Room => (
            StatusCode::OK,
            json!({
                "sid": "RM_fake",
                "name": request["name"],
                "empty_timeout": 300,
                "creation_time": now.to_string(),
            }),
        ),
        Reply::Participant => (
            StatusCode::OK,
            json!({"sid": "PA_fake", "identity": request["identity"], "state": "ACTIVE"}),
        ),
        Reply::Empty => (StatusCode::OK, json!({})),
        Reply::Text(text) => return (StatusCode::OK, text).into_response(),
        Reply::Error(status, code) => (
            StatusCode::from_u16(status).unwrap(),
            json!({"code": code, "msg": "fake error"}),
        ),
    };
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// An HTTP client for tests (plain HTTP to loopback; reqwest needs a TLS provider even so).
pub fn http_client() -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}
