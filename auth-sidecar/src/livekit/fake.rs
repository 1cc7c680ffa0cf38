//! A fake LiveKit RoomService on loopback for unit tests: records every call and answers as told.
//!
//! LiveKit is faked at its HTTP (Twirp) API because no LiveKit server binary is available to the tests.
//! Like a real LiveKit it answers in protobuf with LiveKit's published types (`livekit-protocol`), and
//! errors as Twirp JSON. Unlike a real LiveKit it takes only `application/protobuf` (anything else is 400
//! `malformed`), so a client that sent Twirp JSON would fail the tests.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use livekit_protocol::{CreateRoomRequest, ParticipantInfo, Room, RoomParticipantIdentity};
use prost::Message;
use serde_json::json;

const PROTOBUF: &str = "application/protobuf";

/// How the fake answers every call.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    /// 200 with a Room named after the request's `name`.
    Room,
    /// 200 with a Participant echoing the request's `identity`.
    Participant,
    /// 200 with an empty message (`RemoveParticipant`, `DeleteRoom`).
    Empty,
    /// A Twirp error with this HTTP status and code.
    Error(u16, &'static str),
    /// This status, `Content-Type` and body, as they are.
    Raw(u16, &'static str, &'static str),
    /// 200 with a protobuf body larger than any RoomService answer.
    Oversized,
}

/// One recorded call.
#[derive(Clone, Debug)]
pub struct Call {
    pub path: String,
    pub content_type: String,
    pub authorization: String,
    pub body: Bytes,
}

impl Call {
    /// The body as a `CreateRoomRequest`.
    pub fn create_room(&self) -> CreateRoomRequest {
        CreateRoomRequest::decode(&self.body[..]).unwrap()
    }
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
    let content_type = header("content-type");
    calls.lock().unwrap().push(Call {
        path: uri.path().to_owned(),
        content_type: content_type.clone(),
        authorization: header("authorization"),
        body: body.clone(),
    });
    if content_type != PROTOBUF {
        return twirp_error(
            400,
            "malformed",
            "this fake takes application/protobuf only",
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let answer = match reply {
        Reply::Room => Room {
            sid: "RM_fake".into(),
            name: CreateRoomRequest::decode(body).unwrap_or_default().name,
            empty_timeout: 300,
            creation_time: i64::try_from(now).unwrap(),
            ..Room::default()
        }
        .encode_to_vec(),
        Reply::Participant => ParticipantInfo {
            sid: "PA_fake".into(),
            identity: RoomParticipantIdentity::decode(body)
                .unwrap_or_default()
                .identity,
            ..ParticipantInfo::default()
        }
        .encode_to_vec(),
        // An empty message encodes to no bytes at all.
        Reply::Empty => Vec::new(),
        Reply::Error(status, code) => return twirp_error(status, code, "fake error"),
        Reply::Raw(status, content_type, body) => {
            return (
                StatusCode::from_u16(status).unwrap(),
                [(axum::http::header::CONTENT_TYPE, content_type)],
                body,
            )
                .into_response();
        }
        Reply::Oversized => Room {
            metadata: "x".repeat(2 << 20),
            ..Room::default()
        }
        .encode_to_vec(),
    };
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, PROTOBUF)],
        answer,
    )
        .into_response()
}

fn twirp_error(status: u16, code: &str, msg: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json!({"code": code, "msg": msg}).to_string(),
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
