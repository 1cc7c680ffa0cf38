//! A fake LiveKit server. LiveKit is faked ONLY at its HTTP (Twirp) API, because no LiveKit server binary
//! is available to these tests. That is all the service uses: it never opens the WebSocket signalling
//! connection, it only calls `POST <base>/twirp/livekit.RoomService/<Method>` (plain HTTP on
//! `127.0.0.1:<port>`, `LIVEKIT_URL` = `ws://127.0.0.1:<port>[/prefix]`).
//!
//! Requests are decoded with LiveKit's published protocol types (the `livekit-protocol` crate). The
//! service speaks protobuf, as LiveKit's official server SDKs do; a real LiveKit would also take Twirp
//! JSON, but this fake rejects anything but `application/protobuf` (400 `malformed`), so a client that
//! sent JSON would fail the tests. Errors are Twirp JSON `{"code","msg"}`, as LiveKit sends them whatever
//! the request's encoding.
//!
//! - `CreateRoom`: recorded (path, room name, the timeouts, the bearer token), answered with a `Room`, or
//!   with a Twirp `internal` error when told to fail.
//! - `GetParticipant`: the participants a test added are present, anyone else is Twirp `not_found`;
//!   every lookup is recorded.
//! - `RemoveParticipant`: takes the participant out (Twirp `not_found` if it was not there).
//! - `DeleteRoom`: forgets the room and takes everyone out of it (Twirp `not_found` for a room that was
//!   neither created nor had anyone in it).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use livekit_protocol::{
    CreateRoomRequest, DeleteRoomRequest, DeleteRoomResponse, ParticipantInfo,
    RemoveParticipantResponse, Room, RoomParticipantIdentity, participant_info,
};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The Twirp method path, after any prefix of `LIVEKIT_URL`.
pub const CREATE_ROOM_PATH: &str = "/twirp/livekit.RoomService/CreateRoom";
/// Where the RoomService methods live, after any prefix of `LIVEKIT_URL`.
const ROOM_SERVICE: &str = "/twirp/livekit.RoomService/";
/// The only request encoding this fake takes.
const PROTOBUF: &str = "application/protobuf";

/// One CreateRoom call as the fake decoded it.
#[derive(Clone, Debug, Default)]
pub struct CreateRoomCall {
    /// The full request path, prefix included.
    pub path: String,
    /// The `Authorization` header with `Bearer ` removed (None if absent or not a bearer token).
    pub bearer: Option<String>,
    pub name: Option<String>,
    pub empty_timeout: Option<u64>,
    pub departure_timeout: Option<u64>,
    pub max_participants: Option<u64>,
    /// Whatever was set besides the four above (the spec says nothing else is set): the other fields
    /// of the message, and fields `livekit-protocol` does not know.
    pub other_fields: Vec<String>,
}

#[derive(Default)]
struct State {
    calls: Vec<CreateRoomCall>,
    /// Rooms created and not deleted.
    rooms: HashSet<String>,
    /// (room, identity) of the participants in the rooms.
    participants: HashSet<(String, String)>,
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

    /// Paths of requests that were no RoomService method this fake knows.
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

/// A decoded request with what the handlers need from its headers.
struct Twirp<M> {
    path: String,
    bearer: Option<String>,
    body_len: usize,
    message: M,
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let method = path
        .find(ROOM_SERVICE)
        .map(|at| path[at + ROOM_SERVICE.len()..].to_owned())
        .filter(|_| request.method() == http::Method::POST);
    Ok(match method.as_deref() {
        Some("CreateRoom") => match decode(request).await {
            Ok(call) => create_room(call, &state),
            Err(response) => response,
        },
        Some("GetParticipant") => match decode(request).await {
            Ok(call) => get_participant(call, &state),
            Err(response) => response,
        },
        Some("RemoveParticipant") => match decode(request).await {
            Ok(call) => remove_participant(call, &state),
            Err(response) => response,
        },
        Some("DeleteRoom") => match decode(request).await {
            Ok(call) => delete_room(call, &state),
            Err(response) => response,
        },
        _ => {
            state.lock().expect("state").other_paths.push(path);
            twirp_error(404, "bad_route", "no such method")
        }
    })
}

/// The request as `M`, or the Twirp error a client sending anything but protobuf gets here.
async fn decode<M: Message + Default>(
    request: Request<Incoming>,
) -> Result<Twirp<M>, Response<Full<Bytes>>> {
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
    let path = request.uri().path().to_owned();
    if content_type.as_deref() != Some(PROTOBUF) {
        return Err(twirp_error(
            400,
            "malformed",
            &format!("this fake takes {PROTOBUF} only, not {content_type:?}"),
        ));
    }
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let message = M::decode(body.as_ref())
        .map_err(|error| twirp_error(400, "malformed", &format!("bad protobuf: {error}")))?;
    Ok(Twirp {
        path,
        bearer,
        body_len: body.len(),
        message,
    })
}

fn create_room(call: Twirp<CreateRoomRequest>, state: &Arc<Mutex<State>>) -> Response<Full<Bytes>> {
    let request = call.message;
    let mut other_fields = Vec::new();
    // What is left once the four expected fields are cleared must be the default message ...
    let rest = CreateRoomRequest {
        name: String::new(),
        empty_timeout: 0,
        departure_timeout: 0,
        max_participants: 0,
        ..request.clone()
    };
    if rest != CreateRoomRequest::default() {
        other_fields.push(format!("{rest:?}"));
    }
    // ... and re-encoding must give the same length, or the body held fields the types do not know.
    if request.encoded_len() != call.body_len {
        other_fields.push(format!(
            "<{} bytes of unknown fields>",
            call.body_len.abs_diff(request.encoded_len())
        ));
    }
    let name = request.name.clone();
    let failing = {
        let mut state = state.lock().expect("state");
        if !state.failing {
            state.rooms.insert(request.name.clone());
        }
        state.calls.push(CreateRoomCall {
            path: call.path,
            bearer: call.bearer,
            name: Some(request.name),
            empty_timeout: Some(request.empty_timeout.into()),
            departure_timeout: Some(request.departure_timeout.into()),
            max_participants: Some(request.max_participants.into()),
            other_fields,
        });
        state.failing
    };
    if failing {
        return twirp_error(500, "internal", "fake LiveKit was told to fail");
    }
    let room = Room {
        sid: "RM_fake".to_owned(),
        name,
        empty_timeout: 300,
        departure_timeout: 20,
        creation_time: 1_700_000_000,
        ..Room::default()
    };
    protobuf(&room)
}

/// A `ParticipantInfo` for someone a test added, `not_found` for anyone else.
fn get_participant(
    call: Twirp<RoomParticipantIdentity>,
    state: &Arc<Mutex<State>>,
) -> Response<Full<Bytes>> {
    let wanted = (call.message.room, call.message.identity);
    let present = {
        let mut state = state.lock().expect("state");
        state.participant_lookups.push(wanted.clone());
        state.participants.contains(&wanted)
    };
    if !present {
        return twirp_error(404, "not_found", "participant not found");
    }
    let participant = ParticipantInfo {
        sid: "PA_fake".to_owned(),
        identity: wanted.1,
        state: participant_info::State::Active.into(),
        joined_at: 1_700_000_000,
        ..ParticipantInfo::default()
    };
    protobuf(&participant)
}

fn remove_participant(
    call: Twirp<RoomParticipantIdentity>,
    state: &Arc<Mutex<State>>,
) -> Response<Full<Bytes>> {
    let wanted = (call.message.room, call.message.identity);
    if state.lock().expect("state").participants.remove(&wanted) {
        protobuf(&RemoveParticipantResponse {})
    } else {
        twirp_error(404, "not_found", "participant not found")
    }
}

fn delete_room(call: Twirp<DeleteRoomRequest>, state: &Arc<Mutex<State>>) -> Response<Full<Bytes>> {
    let room = call.message.room;
    let mut state = state.lock().expect("state");
    let created = state.rooms.remove(&room);
    let before = state.participants.len();
    state.participants.retain(|(in_room, _)| *in_room != room);
    if created || state.participants.len() < before {
        protobuf(&DeleteRoomResponse {})
    } else {
        twirp_error(404, "not_found", "room not found")
    }
}

fn protobuf(message: &impl Message) -> Response<Full<Bytes>> {
    response(200, PROTOBUF, message.encode_to_vec())
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
