//! A fake LiveKit server. LiveKit is faked ONLY at its HTTP (Twirp) API: the service never opens the
//! WebSocket signalling connection, it only calls `POST <base>/twirp/livekit.RoomService/CreateRoom`, so
//! that endpoint is all this fake implements (plain HTTP on `127.0.0.1:<port>`, `LIVEKIT_URL` =
//! `ws://127.0.0.1:<port>[/prefix]`).
//!
//! It accepts the request as Twirp JSON or as protobuf, records what matters (path, room name, the
//! timeouts, the bearer token) and answers with a room, or with a Twirp error when told to fail.
//!
//! For the delegation tests it also answers `GetParticipant` (Twirp JSON): the participants a test
//! added are present, anyone else is Twirp `not_found`; every lookup is recorded.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The Twirp method path, after any prefix of `LIVEKIT_URL`.
pub const CREATE_ROOM_PATH: &str = "/twirp/livekit.RoomService/CreateRoom";
/// The Twirp method path of participant lookups.
pub const GET_PARTICIPANT_PATH: &str = "/twirp/livekit.RoomService/GetParticipant";

/// One CreateRoom call as the fake decoded it.
#[derive(Clone, Debug, Default)]
pub struct CreateRoomCall {
    /// The full request path, prefix included.
    pub path: String,
    pub content_type: Option<String>,
    /// The `Authorization` header with `Bearer ` removed (None if absent or not a bearer token).
    pub bearer: Option<String>,
    pub name: Option<String>,
    pub empty_timeout: Option<u64>,
    pub departure_timeout: Option<u64>,
    pub max_participants: Option<u64>,
    /// Protobuf field numbers or JSON keys set besides the four above (the spec says nothing else is set).
    pub other_fields: Vec<String>,
}

#[derive(Default)]
struct State {
    calls: Vec<CreateRoomCall>,
    /// (room, identity) of the participants in the rooms.
    participants: std::collections::HashSet<(String, String)>,
    /// (room, identity) of every GetParticipant call.
    participant_lookups: Vec<(String, String)>,
    other_paths: Vec<String>,
    failing: bool,
}

/// The running fake; stops when dropped.
pub struct FakeLiveKit {
    port: u16,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeLiveKit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeLiveKit {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake LiveKit");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Self { port, state, task }
    }

    /// `ws://127.0.0.1:<port>`.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Makes every following CreateRoom answer 500 with a Twirp `internal` error.
    pub fn fail(&self) {
        self.lock().failing = true;
    }

    pub fn calls(&self) -> Vec<CreateRoomCall> {
        self.lock().calls.clone()
    }

    /// Puts `identity` into `room` (GetParticipant finds it from now on).
    pub fn add_participant(&self, room: &str, identity: &str) {
        self.lock()
            .participants
            .insert((room.to_owned(), identity.to_owned()));
    }

    /// Takes `identity` out of `room`.
    pub fn remove_participant(&self, room: &str, identity: &str) {
        self.lock()
            .participants
            .remove(&(room.to_owned(), identity.to_owned()));
    }

    /// (room, identity) of every GetParticipant call so far.
    pub fn participant_lookups(&self) -> Vec<(String, String)> {
        self.lock().participant_lookups.clone()
    }

    /// Paths of requests that were not CreateRoom.
    pub fn other_paths(&self) -> Vec<String> {
        self.lock().other_paths.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake LiveKit state")
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    if request.method() == http::Method::POST && path.ends_with(GET_PARTICIPANT_PATH) {
        return Ok(get_participant(request, &state).await);
    }
    if request.method() != http::Method::POST || !path.ends_with(CREATE_ROOM_PATH) {
        state.lock().expect("state").other_paths.push(path);
        return Ok(twirp_error(404, "bad_route", "no such method"));
    }
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let bearer =
        header("authorization").and_then(|value| value.strip_prefix("Bearer ").map(str::to_owned));
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let is_json = content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("application/json"));
    let mut call = if is_json {
        decode_json(&body)
    } else {
        decode_protobuf(&body)
    };
    call.path = path;
    call.content_type = content_type;
    call.bearer = bearer;

    let name = call.name.clone().unwrap_or_default();
    let failing = {
        let mut state = state.lock().expect("state");
        state.calls.push(call);
        state.failing
    };
    if failing {
        return Ok(twirp_error(
            500,
            "internal",
            "fake LiveKit was told to fail",
        ));
    }
    Ok(if is_json {
        let room = serde_json::json!({
            "sid": "RM_fake",
            "name": name,
            "empty_timeout": 300,
            "departure_timeout": 20,
            "creation_time": "1700000000",
        });
        response(
            200,
            "application/json",
            serde_json::to_vec(&room).expect("JSON"),
        )
    } else {
        response(200, "application/protobuf", encode_room(&name))
    })
}

/// `GetParticipant` in Twirp JSON: `{"room","identity"}` in, a `ParticipantInfo` or `not_found` out.
async fn get_participant(
    request: Request<Incoming>,
    state: &Arc<Mutex<State>>,
) -> Response<Full<Bytes>> {
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let field = |name: &str| parsed[name].as_str().unwrap_or_default().to_owned();
    let wanted = (field("room"), field("identity"));
    let present = {
        let mut state = state.lock().expect("state");
        state.participant_lookups.push(wanted.clone());
        state.participants.contains(&wanted)
    };
    if !present {
        return twirp_error(404, "not_found", "participant not found");
    }
    let participant = serde_json::json!({
        "sid": "PA_fake",
        "identity": wanted.1,
        "state": "ACTIVE",
        "joined_at": "1700000000",
    });
    response(
        200,
        "application/json",
        serde_json::to_vec(&participant).expect("JSON"),
    )
}

fn decode_json(body: &[u8]) -> CreateRoomCall {
    let mut call = CreateRoomCall::default();
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        call.other_fields
            .push("<body is not a JSON object>".to_owned());
        return call;
    };
    // Twirp JSON accepts both the proto field names and their lowerCamelCase JSON names; protojson
    // writes 64-bit integers as strings, 32-bit ones as numbers.
    let number = |value: &serde_json::Value| match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    };
    for (key, value) in map {
        match key.as_str() {
            "name" => call.name = value.as_str().map(str::to_owned),
            "empty_timeout" | "emptyTimeout" => call.empty_timeout = number(&value),
            "departure_timeout" | "departureTimeout" => call.departure_timeout = number(&value),
            "max_participants" | "maxParticipants" => call.max_participants = number(&value),
            _ => call.other_fields.push(key),
        }
    }
    call
}

/// Decodes the `CreateRoomRequest` fields we care about: 1 name, 2 empty_timeout, 3 max_participants,
/// 10 departure_timeout (field numbers from livekit_room.proto).
fn decode_protobuf(mut body: &[u8]) -> CreateRoomCall {
    let mut call = CreateRoomCall::default();
    while !body.is_empty() {
        let Some(key) = read_varint(&mut body) else {
            call.other_fields.push("<truncated protobuf>".to_owned());
            break;
        };
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                let Some(value) = read_varint(&mut body) else {
                    call.other_fields.push("<truncated protobuf>".to_owned());
                    break;
                };
                match field {
                    2 => call.empty_timeout = Some(value),
                    3 => call.max_participants = Some(value),
                    10 => call.departure_timeout = Some(value),
                    other => call.other_fields.push(other.to_string()),
                }
            }
            2 => {
                let Some(len) = read_varint(&mut body) else {
                    break;
                };
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len > body.len() {
                    call.other_fields.push("<truncated protobuf>".to_owned());
                    break;
                }
                let (bytes, rest) = body.split_at(len);
                body = rest;
                if field == 1 {
                    call.name = Some(String::from_utf8_lossy(bytes).into_owned());
                } else {
                    call.other_fields.push(field.to_string());
                }
            }
            _ => {
                call.other_fields
                    .push(format!("<unexpected wire type {wire_type}>"));
                break;
            }
        }
    }
    call
}

fn read_varint(body: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = body.split_first()?;
        *body = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A `livekit.Room` with sid (1), name (2) and creation_time (5).
fn encode_room(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, text) in [(1u8, "RM_fake"), (2u8, name)] {
        out.push(field << 3 | 2);
        write_varint(&mut out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }
    out.push(5 << 3);
    write_varint(&mut out, 1_700_000_000);
    out
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn twirp_error(status: u16, code: &str, msg: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "code": code, "msg": msg });
    response(
        status,
        "application/json",
        serde_json::to_vec(&body).expect("JSON"),
    )
}

fn response(status: u16, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).expect("status code");
    response.headers_mut().insert(
        "content-type",
        content_type.parse().expect("content type header"),
    );
    response
}
