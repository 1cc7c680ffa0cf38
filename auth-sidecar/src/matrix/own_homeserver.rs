//! Calls to the service's own homeserver as its application service (as-mode spec §1, §5.1, §5.3): the
//! pieces that the AS token flows, the membership monitor and the delegation engine share, so that each
//! exists once.
//!
//! - Every call carries `Authorization: Bearer <as_token>` over a client that never follows redirects, so
//!   the AS token cannot be bounced to another host; it is never logged. These calls skip the SSRF guard:
//!   the operator chose the target.
//! - `/is_joined` with the stable/unstable negotiation of §5.1: the stable
//!   `/_matrix/client/v3/rooms/{roomId}/is_joined` only when `/versions` lists
//!   `io.element.msc4502.stable: true`, else (or when `/versions` fails) the unstable path. The
//!   negotiated path is remembered for an hour; a 404 `M_UNRECOGNIZED` on the stable path drops it and
//!   asks once more. Membership answers themselves are never cached.
//! - MSC4140 `restart`/`send` with AS identity assertion (`?user_id=<mxid>`, §5.3): the call is made as
//!   the user, and as an AS with `rate_limited: false` it escapes Synapse's per-IP limit on
//!   unauthenticated delayed-event management, which every job of this service would otherwise share.
//!
//! Where the client-server API is, is the callers' business (they resolve it like any other); this module
//! takes the base URL.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::header::AUTHORIZATION;
use http::{HeaderValue, StatusCode};
use serde_json::Value;
use url::Url;

use super::client_api::{self, ClientApiError};
use super::delayed_event::{Action, Reply};

/// Per-call timeout of `/is_joined` and `/versions`.
pub const IS_JOINED_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the negotiated `/is_joined` path is remembered.
const PATH_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Largest homeserver answer read by [`get_json`].
const BODY_LIMIT: usize = 256 * 1024;
/// The `/versions` flag that says the stable `/is_joined` is served.
pub const STABLE_FLAG: &str = "io.element.msc4502.stable";

/// Whose membership `/is_joined` asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject<'a> {
    User(&'a str),
    Server(&'a str),
}

/// A call to the homeserver that gave no usable answer. Never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum HomeserverError {
    #[error("no time left in the request budget")]
    OutOfTime,
    #[error("transport: {0}")]
    Transport(String),
    #[error("HTTP status {0}")]
    Status(StatusCode),
    #[error("unexpected answer: {0}")]
    Body(String),
    #[error("the room or delay ID cannot be written as one URL path segment")]
    Unaddressable,
}

/// Which `/is_joined` the homeserver serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JoinedPath {
    Stable,
    Unstable,
}

/// The own homeserver, called with the AS token. One per process, shared, so that the negotiated
/// `/is_joined` path is asked for once.
pub struct OwnHomeserver {
    http: reqwest::Client,
    authorization: HeaderValue,
    server_name: String,
    joined_path: Mutex<Option<(JoinedPath, Instant)>>,
}

impl std::fmt::Debug for OwnHomeserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnHomeserver")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl OwnHomeserver {
    /// `builder` brings the service's TLS and pool settings; redirects are turned off here.
    pub fn new(
        builder: reqwest::ClientBuilder,
        as_token: &str,
        server_name: &str,
    ) -> Result<Self, OwnHomeserverError> {
        let mut authorization = HeaderValue::try_from(format!("Bearer {as_token}"))
            .map_err(|_| OwnHomeserverError::Token)?;
        authorization.set_sensitive(true);
        Ok(Self {
            http: builder
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|error| OwnHomeserverError::Client(error.to_string()))?,
            authorization,
            server_name: server_name.to_owned(),
            joined_path: Mutex::new(None),
        })
    }

    /// `LIVEKIT_HS_SERVER_NAME`.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// A request with the AS token.
    pub fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header(AUTHORIZATION, self.authorization.clone())
    }

    /// `/is_joined` (§5.1): `Ok(true)` only for `{"joined": true}`; `false` or a missing `joined` is not
    /// joined; any other status or body is an error. Both calls fit before `deadline`.
    pub async fn is_joined(
        &self,
        base: &Url,
        room_id: &str,
        subject: Subject<'_>,
        deadline: Instant,
    ) -> Result<bool, HomeserverError> {
        let path = self.joined_path(base, deadline).await;
        let (status, body) = self
            .ask_joined(base, path, room_id, subject, deadline)
            .await?;
        let (status, body) = if path == JoinedPath::Stable && is_unrecognized(status, &body) {
            // The homeserver stopped serving the stable path (e.g. downgraded): ask it again.
            *super::lock(&self.joined_path) = None;
            let path = self.joined_path(base, deadline).await;
            self.ask_joined(base, path, room_id, subject, deadline)
                .await?
        } else {
            (status, body)
        };
        joined_from(status, &body)
    }

    /// One MSC4140 `restart` or `send` of `delay_id` as `user_id` (§5.3), classified like the
    /// unauthenticated calls ([`super::delayed_event::classify`]).
    pub async fn delayed_event_as(
        &self,
        base: &Url,
        delay_id: &str,
        user_id: &str,
        action: Action,
    ) -> Result<Reply, ClientApiError> {
        let mut url = client_api::delayed_event_url(base, delay_id, action)?;
        url.query_pairs_mut().append_pair("user_id", user_id);
        Ok(client_api::post_empty_object(self.request(reqwest::Method::POST, url)).await)
    }

    /// The negotiated path: stable only if `/versions` says so; unstable when it does not or fails.
    async fn joined_path(&self, base: &Url, deadline: Instant) -> JoinedPath {
        if let Some((path, at)) = *super::lock(&self.joined_path)
            && at.elapsed() < PATH_CACHE_TTL
        {
            return path;
        }
        let mut url = base.clone();
        extend(&mut url, &["_matrix", "client", "versions"]);
        let answer = match timeout(IS_JOINED_TIMEOUT, deadline) {
            Ok(limit) => get_json(self.http.get(url).timeout(limit)).await,
            Err(error) => Err(error),
        };
        match answer {
            Ok((status, body)) if status.is_success() => {
                let stable = body
                    .get("unstable_features")
                    .and_then(|features| features.get(STABLE_FLAG))
                    == Some(&Value::Bool(true));
                let path = if stable {
                    JoinedPath::Stable
                } else {
                    JoinedPath::Unstable
                };
                *super::lock(&self.joined_path) = Some((path, Instant::now()));
                path
            }
            // Not remembered: the next request asks again.
            _ => JoinedPath::Unstable,
        }
    }

    async fn ask_joined(
        &self,
        base: &Url,
        path: JoinedPath,
        room_id: &str,
        subject: Subject<'_>,
        deadline: Instant,
    ) -> Result<(StatusCode, Value), HomeserverError> {
        let mut url = base.clone();
        let prefix: &[&str] = match path {
            JoinedPath::Stable => &["_matrix", "client", "v3", "rooms"],
            JoinedPath::Unstable => &[
                "_matrix",
                "client",
                "unstable",
                "io.element.msc4502",
                "rooms",
            ],
        };
        extend(&mut url, prefix);
        push_segment(&mut url, room_id)?;
        extend(&mut url, &["is_joined"]);
        let (key, value) = match subject {
            Subject::User(mxid) => ("mxid", mxid),
            Subject::Server(name) => ("server_name", name),
        };
        url.query_pairs_mut().append_pair(key, value);
        let limit = timeout(IS_JOINED_TIMEOUT, deadline)?;
        get_json(self.request(reqwest::Method::GET, url).timeout(limit)).await
    }
}

/// Why an [`OwnHomeserver`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OwnHomeserverError {
    #[error("the AS token cannot be sent in an HTTP header")]
    Token,
    #[error("HTTP client: {0}")]
    Client(String),
}

/// The smaller of `fixed` and the time left before `deadline`.
pub fn timeout(fixed: Duration, deadline: Instant) -> Result<Duration, HomeserverError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(HomeserverError::OutOfTime);
    }
    Ok(fixed.min(left))
}

/// Appends `segments` (constants) to the URL's path.
pub fn extend(url: &mut Url, segments: &[&str]) {
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
}

/// Adds `segment` as one escaped path segment; `.` and `..` (which URL parsers collapse) are refused.
pub fn push_segment(url: &mut Url, segment: &str) -> Result<(), HomeserverError> {
    if matches!(segment, "" | "." | "..") {
        return Err(HomeserverError::Unaddressable);
    }
    url.path_segments_mut()
        .map_err(|()| HomeserverError::Unaddressable)?
        .pop_if_empty()
        .push(segment);
    Ok(())
}

/// Sends and reads a JSON answer (any status); a body that is not JSON reads as `null`.
pub async fn get_json(
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, Value), HomeserverError> {
    let transport = |error: reqwest::Error| {
        // `without_url`: query strings name users.
        HomeserverError::Transport(super::error_chain(&error.without_url()))
    };
    let mut response = request.send().await.map_err(transport)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        body.extend_from_slice(&chunk);
        if body.len() > BODY_LIMIT {
            return Err(HomeserverError::Body(format!(
                "larger than {BODY_LIMIT} bytes"
            )));
        }
    }
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

/// A 404 `M_UNRECOGNIZED`: the endpoint does not exist.
fn is_unrecognized(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::NOT_FOUND
        && body.get("errcode").and_then(Value::as_str) == Some("M_UNRECOGNIZED")
}

/// `{"joined": true}` is joined; `false` or missing is not; any other status or body is an error.
fn joined_from(status: StatusCode, body: &Value) -> Result<bool, HomeserverError> {
    if status != StatusCode::OK {
        return Err(HomeserverError::Status(status));
    }
    match body {
        Value::Object(map) => match map.get("joined") {
            Some(Value::Bool(joined)) => Ok(*joined),
            None => Ok(false),
            Some(other) => Err(HomeserverError::Body(format!("joined is {other}"))),
        },
        _ => Err(HomeserverError::Body("not a JSON object".into())),
    }
}

#[cfg(test)]
mod tests;
