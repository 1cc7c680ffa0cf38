//! LiveKit's RoomService over Twirp, in protobuf, with LiveKit's published message types.
//!
//! LiveKit's SDKs either drop a path prefix in `LIVEKIT_URL` or do not map `ws`/`wss` to `http`/`https`;
//! the reference's Go SDK does both, so we do too: `wss://h/livekit/sfu` serves the API at
//! `https://h/livekit/sfu/twirp/livekit.RoomService/<Method>`. `LIVEKIT_API_URL`, when set, takes the
//! place of `LIVEKIT_URL` as that base (same mapping), so the calls can stay inside a cluster while
//! clients still get `LIVEKIT_URL`.
//!
//! ## Encoding
//! Requests are protobuf (`Content-Type: application/protobuf`), as every official server SDK and the
//! reference send them; a successful answer is protobuf too (and must say so in its `Content-Type`). A
//! Twirp error is JSON `{"code","msg"}` whatever the request's encoding, so errors are read as JSON.
//! There is no JSON fallback: every LiveKit release speaks protobuf Twirp, and JSON would only add a second
//! way to get the field names or 64-bit integers wrong.
//!
//! ## Message types
//! The messages are LiveKit's own, from the `livekit-protocol` crate (LiveKit's Rust SDK generates it
//! from the published `.proto` files with prost), not hand-written ones, so field numbers and types
//! cannot drift from what LiveKit decodes. The price, measured when it was added (dev profile, the
//! workspace's opt-level 1 for dependencies, on the 2-core build machine):
//! - 17 more packages in `Cargo.lock` (prost and its derive, prost-build, pbjson and its build helper,
//!   petgraph, itertools, ...); the crate has no features to turn off. prost-build is only a build
//!   dependency of `pbjson-types` and needs no `protoc` there (it compiles a descriptor set that ships).
//! - `livekit-protocol` itself is 114k lines (84k of them the JSON `serde` impls we do not use):
//!   about 70 s of CPU for that one crate (`ps`). Everything added took 1,230 s of wall time in
//!   `cargo --timings` while about eight builds shared the 2 cores, which is about 3.5 min of CPU at
//!   the ratio measured for `livekit-protocol` (70 s of CPU in 397 s): a cold build gets that much
//!   longer (about 2 min of wall time on 2 idle cores); an incremental one does not.
//!
//! The alternatives: prost with messages generated from the same `.proto` files needs `protoc` at build
//! time (not on the build machines or in the image build) or `protox` (a pure-Rust compiler, a build
//! dependency about as heavy as prost-build), or generated code committed here, a second copy of
//! LiveKit's types to keep in step by hand; messages written by hand are what this module replaced.
//!
//! ## Tokens
//! The service token for `CreateRoom` and `DeleteRoom` (`video.roomCreate`, valid 6 h like the SDK's
//! default) is minted once and reused until an hour before it expires. Tokens for room-scoped calls
//! (`GetParticipant` and `RemoveParticipant` need `roomAdmin` for that room) are minted per call.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use livekit_protocol::{
    CreateRoomRequest, DeleteRoomRequest, DeleteRoomResponse, RemoveParticipantResponse,
    RoomParticipantIdentity,
};
pub use livekit_protocol::{ParticipantInfo, Room};
use prost::Message;
use serde::Deserialize;

use super::grant::{self, GrantError, VideoGrant};
use super::keys::KeySet;

/// Seconds an empty room lives before LiveKit closes it (the reference's value).
pub const EMPTY_TIMEOUT_SECONDS: u32 = 300;
/// Seconds a room lives after its last participant left (the reference's value).
pub const DEPARTURE_TIMEOUT_SECONDS: u32 = 20;
/// Unlimited participants.
pub const MAX_PARTICIPANTS: u32 = 0;

/// Validity of the cached `CreateRoom` token (the Go SDK's default).
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);
/// The cached token is replaced once less than this is left.
const SERVICE_TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(3600);
/// LiveKit's answers are small; anything bigger is not a RoomService answer.
const MAX_RESPONSE_BYTES: usize = 1 << 20;
/// Twirp's protobuf encoding, of requests and successful answers.
const PROTOBUF: &str = "application/protobuf";

/// Why `LIVEKIT_URL` cannot serve as the RoomService base. The reference does not check this at
/// startup, but with such a URL every full-access token request would fail with 500; we refuse to start.
/// (A bad `LIVEKIT_API_URL` is refused earlier, by the configuration.)
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("LIVEKIT_URL must start with ws://, wss://, http:// or https://, got {0:?}")]
pub struct BaseUrlError(pub String);

/// Why a RoomService call failed.
#[derive(Debug, thiserror::Error)]
pub enum TwirpError {
    #[error("could not reach LiveKit: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("LiveKit answered HTTP {status} ({code}): {msg}")]
    Api {
        status: u16,
        /// The Twirp error code (`not_found`, `unauthenticated`, ...); empty if the body had none.
        code: String,
        msg: String,
    },
    #[error("LiveKit's answer is not the expected protobuf message: {0}")]
    Decode(String),
    #[error(transparent)]
    Token(#[from] GrantError),
}

impl TwirpError {
    /// Twirp `not_found`: the room or participant does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { code, .. } if code == "not_found")
    }
}

/// A Twirp error body (JSON for every request encoding).
#[derive(Deserialize)]
struct TwirpErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    msg: String,
}

struct CachedToken {
    header: HeaderValue,
    renew_at: SystemTime,
}

/// A RoomService client for one LiveKit deployment.
pub struct RoomService {
    http: reqwest::Client,
    /// `<http base>/twirp/livekit.RoomService/`.
    method_prefix: String,
    keys: Arc<KeySet>,
    create_token: Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for RoomService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomService")
            .field("method_prefix", &self.method_prefix)
            .finish_non_exhaustive()
    }
}

/// The HTTP base of the Twirp API: `ws` becomes `http`, `wss` becomes `https`, the path is kept.
pub fn http_base(livekit_url: &str) -> Result<String, BaseUrlError> {
    let base = if let Some(rest) = livekit_url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = livekit_url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if livekit_url.starts_with("http://") || livekit_url.starts_with("https://") {
        livekit_url.to_owned()
    } else {
        return Err(BaseUrlError(livekit_url.to_owned()));
    };
    // Must parse as a URL with a host, or every call would fail at request time.
    match reqwest::Url::parse(&base) {
        Ok(url) if url.host_str().is_some_and(|h| !h.is_empty()) => {
            Ok(base.trim_end_matches('/').to_owned())
        }
        _ => Err(BaseUrlError(livekit_url.to_owned())),
    }
}

impl RoomService {
    /// A client for the LiveKit API at `api_url` (`LIVEKIT_API_URL`, or else `LIVEKIT_URL`), signing
    /// with `keys`.
    pub fn new(
        api_url: &str,
        keys: Arc<KeySet>,
        http: reqwest::Client,
    ) -> Result<Self, BaseUrlError> {
        Ok(Self {
            http,
            method_prefix: format!("{}/twirp/livekit.RoomService/", http_base(api_url)?),
            keys,
            create_token: Mutex::new(None),
        })
    }

    /// `CreateRoom` with the reference's settings. Creating a room that exists returns that room.
    pub async fn create_room(&self, name: &str) -> Result<Room, TwirpError> {
        let body = CreateRoomRequest {
            name: name.to_owned(),
            empty_timeout: EMPTY_TIMEOUT_SECONDS,
            departure_timeout: DEPARTURE_TIMEOUT_SECONDS,
            max_participants: MAX_PARTICIPANTS,
            ..CreateRoomRequest::default()
        };
        let token = self.create_token()?;
        self.call("CreateRoom", token, &body).await
    }

    /// `GetParticipant`: `Ok(None)` when LiveKit says `not_found`.
    pub async fn get_participant(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<Option<ParticipantInfo>, TwirpError> {
        let token = self.room_admin_token(room)?;
        match self
            .call("GetParticipant", token, &identify(room, identity))
            .await
        {
            Ok(participant) => Ok(Some(participant)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `RemoveParticipant`: disconnects `identity` from `room`. A participant or room that is not
    /// there is an error for which [`TwirpError::is_not_found`] holds.
    pub async fn remove_participant(&self, room: &str, identity: &str) -> Result<(), TwirpError> {
        let token = self.room_admin_token(room)?;
        let RemoveParticipantResponse {} = self
            .call("RemoveParticipant", token, &identify(room, identity))
            .await?;
        Ok(())
    }

    /// `DeleteRoom`: closes `room` and disconnects everyone in it. A room that is not there is an
    /// error for which [`TwirpError::is_not_found`] holds.
    pub async fn delete_room(&self, room: &str) -> Result<(), TwirpError> {
        // Like `CreateRoom`, `DeleteRoom` needs `roomCreate`, not a room-scoped grant.
        let token = self.create_token()?;
        let request = DeleteRoomRequest {
            room: room.to_owned(),
        };
        let DeleteRoomResponse {} = self.call("DeleteRoom", token, &request).await?;
        Ok(())
    }

    /// A per-call token with `roomAdmin` for `room`.
    fn room_admin_token(&self, room: &str) -> Result<HeaderValue, TwirpError> {
        let video = VideoGrant {
            room: Some(room),
            room_admin: true,
            ..VideoGrant::default()
        };
        self.bearer(&video, SystemTime::now())
    }

    /// The cached `roomCreate` token, re-minted when close to expiry.
    fn create_token(&self) -> Result<HeaderValue, TwirpError> {
        let now = SystemTime::now();
        // The lock is never held across an await; a poisoned lock only means another thread panicked
        // while replacing the token, and the value is still a whole token or none.
        let mut cached = self
            .create_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = cached.as_ref().filter(|t| now < t.renew_at) {
            return Ok(token.header.clone());
        }
        let video = VideoGrant {
            room_create: true,
            ..VideoGrant::default()
        };
        let header = self.bearer(&video, now)?;
        *cached = Some(CachedToken {
            header: header.clone(),
            renew_at: now + (SERVICE_TOKEN_TTL - SERVICE_TOKEN_RENEW_BEFORE),
        });
        Ok(header)
    }

    fn bearer(&self, video: &VideoGrant<'_>, now: SystemTime) -> Result<HeaderValue, TwirpError> {
        let token = grant::mint(&self.keys, None, video, now, SERVICE_TOKEN_TTL)?;
        let mut value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|e| GrantError::Sign(e.to_string()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    async fn call<T: Message + Default>(
        &self,
        method: &str,
        token: HeaderValue,
        request: &impl Message,
    ) -> Result<T, TwirpError> {
        let mut response = self
            .http
            .post(format!("{}{method}", self.method_prefix))
            .header(CONTENT_TYPE, HeaderValue::from_static(PROTOBUF))
            .header(AUTHORIZATION, token)
            .body(request.encode_to_vec())
            .send()
            .await?;
        let status = response.status();
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        let mut body = Vec::new();
        // Read at most the limit: the answer's length is known only once it has been read.
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(TwirpError::Decode(format!(
                    "more than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            // A 200 that is not protobuf (a proxy's page, say) must not decode into an empty message.
            if content_type.as_ref().and_then(|v| v.to_str().ok()) != Some(PROTOBUF) {
                return Err(TwirpError::Decode(format!(
                    "HTTP {status} with Content-Type {content_type:?}, not {PROTOBUF}"
                )));
            }
            return T::decode(body.as_slice()).map_err(|e| TwirpError::Decode(e.to_string()));
        }
        let (code, msg) = match serde_json::from_slice::<TwirpErrorBody>(&body) {
            Ok(TwirpErrorBody { code, msg }) => (code, msg),
            // Not a Twirp error (a proxy's error page, say): keep a short, printable excerpt.
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            ),
        };
        Err(TwirpError::Api {
            status: status.as_u16(),
            code,
            msg,
        })
    }
}

/// The `RoomParticipantIdentity` of `GetParticipant` and `RemoveParticipant`. `revoke_token_ts` stays
/// unset: LiveKit then revokes tokens issued up to a minute from now, as the SDKs leave it.
fn identify(room: &str, identity: &str) -> RoomParticipantIdentity {
    RoomParticipantIdentity {
        room: room.to_owned(),
        identity: identity.to_owned(),
        ..RoomParticipantIdentity::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::livekit::fake::{FakeLiveKit, Reply, http_client};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};

    fn keys() -> Arc<KeySet> {
        Arc::new(KeySet::single("apikey".into(), "apisecret".into()).unwrap())
    }

    fn claims(authorization: &str) -> Value {
        let token = authorization.strip_prefix("Bearer ").unwrap();
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    fn identity(body: &[u8]) -> RoomParticipantIdentity {
        RoomParticipantIdentity::decode(body).unwrap()
    }

    #[test]
    fn base_url_mapping() {
        assert_eq!(http_base("ws://h:7880").unwrap(), "http://h:7880");
        assert_eq!(
            http_base("wss://h/livekit/sfu").unwrap(),
            "https://h/livekit/sfu"
        );
        assert_eq!(
            http_base("wss://h/livekit/sfu/").unwrap(),
            "https://h/livekit/sfu"
        );
        assert_eq!(http_base("https://h").unwrap(), "https://h");
        assert_eq!(
            http_base("http://10.0.0.1:7880").unwrap(),
            "http://10.0.0.1:7880"
        );
        for bad in ["h:7880", "ftp://h", "wss://", "WSS://h", ""] {
            assert_eq!(http_base(bad), Err(BaseUrlError(bad.into())), "{bad}");
        }
    }

    #[tokio::test]
    async fn create_room_sends_the_reference_request() {
        let fake = FakeLiveKit::start(Reply::Room).await;
        let service =
            RoomService::new(&fake.ws_url("/livekit/sfu"), keys(), http_client()).unwrap();
        let room = service.create_room("the-alias").await.unwrap();
        assert_eq!(room.name, "the-alias");
        assert_eq!(room.sid, "RM_fake");
        assert!(room.creation_time > 0);

        let calls = fake.calls();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(
            call.path,
            "/livekit/sfu/twirp/livekit.RoomService/CreateRoom"
        );
        assert_eq!(call.content_type, "application/protobuf");
        // Exactly these four fields, and nothing else on the wire.
        let expected = CreateRoomRequest {
            name: "the-alias".into(),
            empty_timeout: 300,
            departure_timeout: 20,
            max_participants: 0,
            ..CreateRoomRequest::default()
        };
        assert_eq!(CreateRoomRequest::decode(&call.body[..]).unwrap(), expected);
        assert_eq!(call.body, expected.encode_to_vec());
        let claims = claims(&call.authorization);
        assert_eq!(claims["iss"], "apikey");
        assert_eq!(claims["video"], json!({"roomCreate": true}));
        assert!(claims.get("sub").is_none());
        let exp = claims["exp"].as_u64().unwrap();
        assert_eq!(exp - claims["nbf"].as_u64().unwrap(), 6 * 3600);
        // The signature checks out with the API secret.
        let token = call.authorization.strip_prefix("Bearer ").unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(b"apisecret"),
            &validation,
        )
        .unwrap();
    }

    #[tokio::test]
    async fn service_token_is_reused() {
        let fake = FakeLiveKit::start(Reply::Room).await;
        let service = RoomService::new(&fake.ws_url(""), keys(), http_client()).unwrap();
        service.create_room("a").await.unwrap();
        service.create_room("b").await.unwrap();
        let calls = fake.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].authorization, calls[1].authorization);
        assert_eq!(calls[1].path, "/twirp/livekit.RoomService/CreateRoom");
    }

    #[tokio::test]
    async fn twirp_errors_are_parsed() {
        let fake = FakeLiveKit::start(Reply::Error(401, "unauthenticated")).await;
        let service = RoomService::new(&fake.ws_url(""), keys(), http_client()).unwrap();
        let error = service.create_room("a").await.unwrap_err();
        match &error {
            TwirpError::Api { status, code, msg } => {
                assert_eq!((*status, code.as_str()), (401, "unauthenticated"));
                assert_eq!(msg, "fake error");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!error.is_not_found());
    }

    #[tokio::test]
    async fn an_error_that_is_not_twirp_keeps_an_excerpt() {
        let fake = FakeLiveKit::start(Reply::Raw(502, "text/html", "<h1>Bad Gateway</h1>")).await;
        let service = RoomService::new(&fake.ws_url(""), keys(), http_client()).unwrap();
        match service.create_room("a").await.unwrap_err() {
            TwirpError::Api { status, code, msg } => {
                assert_eq!((status, code.as_str()), (502, ""));
                assert_eq!(msg, "<h1>Bad Gateway</h1>");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn unreachable_livekit_is_a_transport_error() {
        // Port 1 on loopback: nothing listens there.
        let service = RoomService::new("ws://127.0.0.1:1", keys(), http_client()).unwrap();
        assert!(matches!(
            service.create_room("a").await,
            Err(TwirpError::Transport(_))
        ));
    }

    #[tokio::test]
    async fn get_participant_maps_not_found_to_none() {
        let fake = FakeLiveKit::start(Reply::Error(404, "not_found")).await;
        let service = RoomService::new(&fake.ws_url(""), keys(), http_client()).unwrap();
        assert!(
            service
                .get_participant("room", "who")
                .await
                .unwrap()
                .is_none()
        );
        let call = &fake.calls()[0];
        assert_eq!(call.path, "/twirp/livekit.RoomService/GetParticipant");
        assert_eq!(call.content_type, "application/protobuf");
        let sent = identity(&call.body);
        assert_eq!(
            (sent.room.as_str(), sent.identity.as_str()),
            ("room", "who")
        );
        assert_eq!(sent.revoke_token_ts, 0);
        assert_eq!(
            claims(&call.authorization)["video"],
            json!({"room": "room", "roomAdmin": true})
        );
    }

    #[tokio::test]
    async fn get_participant_found() {
        let fake = FakeLiveKit::start(Reply::Participant).await;
        let service = RoomService::new(&fake.ws_url(""), keys(), http_client()).unwrap();
        let participant = service
            .get_participant("room", "who")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(participant.identity, "who");
        assert_eq!(participant.sid, "PA_fake");
    }

    #[tokio::test]
    async fn remove_participant_sends_room_and_identity_with_room_admin() {
        let fake = FakeLiveKit::start(Reply::Empty).await;
        let service = RoomService::new(&fake.ws_url("/sfu"), keys(), http_client()).unwrap();
        service.remove_participant("room", "who").await.unwrap();
        let calls = fake.calls();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(
            call.path,
            "/sfu/twirp/livekit.RoomService/RemoveParticipant"
        );
        assert_eq!(call.content_type, "application/protobuf");
        let sent = identity(&call.body);
        assert_eq!(
            (sent.room.as_str(), sent.identity.as_str()),
            ("room", "who")
        );
        assert_eq!(
            claims(&call.authorization)["video"],
            json!({"room": "room", "roomAdmin": true})
        );
    }

    #[tokio::test]
    async fn remove_participant_not_found_is_distinguishable() {
        let fake = FakeLiveKit::start(Reply::Error(404, "not_found")).await;
        let service = RoomService::new(&fake.ws_url(""), keys(), http_client()).unwrap();
        let error = service.remove_participant("room", "who").await.unwrap_err();
        assert!(error.is_not_found(), "{error:?}");

        let fake = FakeLiveKit::start(Reply::Error(500, "internal")).await;
        let service = RoomService::new(&fake.ws_url(""), keys(), http_client()).unwrap();
        let error = service.remove_participant("room", "who").await.unwrap_err();
        assert!(!error.is_not_found(), "{error:?}");
    }

    #[tokio::test]
    async fn delete_room_sends_the_room_with_room_create() {
        let fake = FakeLiveKit::start(Reply::Empty).await;
        let service = RoomService::new(&fake.ws_url(""), keys(), http_client()).unwrap();
        service.delete_room("the-alias").await.unwrap();
        let calls = fake.calls();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(call.path, "/twirp/livekit.RoomService/DeleteRoom");
        assert_eq!(call.content_type, "application/protobuf");
        assert_eq!(
            DeleteRoomRequest::decode(&call.body[..]).unwrap().room,
            "the-alias"
        );
        assert_eq!(
            claims(&call.authorization)["video"],
            json!({"roomCreate": true})
        );
    }

    #[tokio::test]
    async fn delete_room_not_found_is_distinguishable() {
        let fake = FakeLiveKit::start(Reply::Error(404, "not_found")).await;
        let service = RoomService::new(&fake.ws_url(""), keys(), http_client()).unwrap();
        let error = service.delete_room("gone").await.unwrap_err();
        assert!(error.is_not_found(), "{error:?}");
    }

    #[tokio::test]
    async fn a_success_that_is_not_protobuf_is_a_decode_error() {
        // A 200 that is no Twirp protobuf answer (a proxy's page, say) is not taken for success, even
        // where the answer is an empty message that any body would decode to.
        let fake = FakeLiveKit::start(Reply::Raw(200, "text/html", "<html></html>")).await;
        let service = RoomService::new(&fake.ws_url(""), keys(), http_client()).unwrap();
        assert!(matches!(
            service.remove_participant("room", "who").await,
            Err(TwirpError::Decode(_))
        ));
    }

    #[tokio::test]
    async fn a_protobuf_answer_that_does_not_decode_is_a_decode_error() {
        // Field 1 (Room.sid) as a string of 5 bytes, but only 2 follow.
        let fake = FakeLiveKit::start(Reply::Raw(200, "application/protobuf", "\x0a\x05ab")).await;
        let service = RoomService::new(&fake.ws_url(""), keys(), http_client()).unwrap();
        assert!(matches!(
            service.create_room("a").await,
            Err(TwirpError::Decode(_))
        ));
    }

    #[tokio::test]
    async fn an_oversized_answer_is_refused() {
        let fake = FakeLiveKit::start(Reply::Oversized).await;
        let service = RoomService::new(&fake.ws_url(""), keys(), http_client()).unwrap();
        assert!(matches!(
            service.create_room("a").await,
            Err(TwirpError::Decode(_))
        ));
    }
}
