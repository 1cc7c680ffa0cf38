//! Calls to the service's own homeserver with the AS token (as-mode spec §5): `/is_joined` with
//! stable/unstable negotiation, `fed_proxy`, and the asserted delayed-event lookup.
//!
//! The AS token goes only to the client-server API of `LIVEKIT_HS_SERVER_NAME` (resolved like any
//! client-server API: `LIVEKIT_CS_API_URL_OVERRIDES`, else `.well-known`, cached 4 h), over a client that
//! never follows redirects, so it cannot be bounced to another host. These calls skip the SSRF guard:
//! the operator chose the target. Membership answers are never cached; only which `/is_joined` path the
//! homeserver speaks is (1 h).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use serde_json::Value;
use url::Url;

use crate::config::appservice::Secret;
use crate::matrix::client_api::ClientApi;

/// Per-call timeout of `/is_joined` and `/versions`.
const IS_JOINED_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-call timeout of `fed_proxy` (upstream: 30 s; ours leaves room in the 25 s request budget).
const FED_PROXY_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-call timeout of the delayed-event lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the negotiated `/is_joined` path is remembered.
const PATH_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Largest homeserver answer read.
const BODY_LIMIT: usize = 256 * 1024;
/// The `/versions` flag that says the stable `/is_joined` is served.
const STABLE_FLAG: &str = "io.element.msc4502.stable";

/// Whose membership `/is_joined` asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject<'a> {
    User(&'a str),
    Server(&'a str),
}

/// `fed_proxy`'s 200 answer: the remote server's status and JSON body (`null` when it sent none).
#[derive(Clone, Debug, PartialEq)]
pub struct FedReply {
    pub status: u16,
    pub content: Value,
}

/// What the asserted lookup of a delayed event found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DelayedEvent {
    /// The homeserver knows it for this user.
    Found { room_id: String, delay_ms: i64 },
    /// 404: unknown, or not this user's.
    NotFound,
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

/// The homeserver calls the AS flows make; a trait so that the flows are tested with fakes.
pub trait Homeserver: Send + Sync {
    /// The client-server API base URL of the own server (no call to the homeserver itself).
    fn resolve(&self) -> BoxFuture<'_, Result<Url, String>>;
    /// `/is_joined`: `Ok(true)` only for `{"joined": true}`.
    fn is_joined<'a>(
        &'a self,
        base: &'a Url,
        room_id: &'a str,
        subject: Subject<'a>,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<bool, HomeserverError>>;
    /// `fed_proxy` of an MSC4195 S-S `get_token` to `destination`.
    fn fed_proxy<'a>(
        &'a self,
        base: &'a Url,
        destination: &'a str,
        body: &'a Value,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<FedReply, HomeserverError>>;
    /// The delayed event `delay_id` as `user_id` sees it.
    fn delayed_event<'a>(
        &'a self,
        base: &'a Url,
        delay_id: &'a str,
        user_id: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<DelayedEvent, HomeserverError>>;
}

/// Which `/is_joined` the homeserver serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JoinedPath {
    Stable,
    Unstable,
}

/// Finds a server's client-server API base URL; [`ClientApi`] in production.
pub trait ResolveBase: Send + Sync {
    fn resolve_base<'a>(&'a self, server_name: &'a str) -> BoxFuture<'a, Result<Url, String>>;
}

impl ResolveBase for ClientApi {
    fn resolve_base<'a>(&'a self, server_name: &'a str) -> BoxFuture<'a, Result<Url, String>> {
        Box::pin(async move {
            self.resolve(server_name)
                .await
                .map(|base| base.url)
                .map_err(|error| error.to_string())
        })
    }
}

/// The production [`Homeserver`].
pub struct AsClient {
    http: reqwest::Client,
    authorization: HeaderValue,
    server_name: String,
    client_api: Arc<dyn ResolveBase>,
    joined_path: Mutex<Option<(JoinedPath, Instant)>>,
}

impl AsClient {
    /// `http` must not follow redirects (see the module docs).
    pub fn new(
        http: reqwest::Client,
        as_token: &Secret,
        server_name: String,
        client_api: Arc<dyn ResolveBase>,
    ) -> Result<Self, http::header::InvalidHeaderValue> {
        let mut authorization = HeaderValue::try_from(format!("Bearer {}", as_token.expose()))?;
        authorization.set_sensitive(true);
        Ok(Self {
            http,
            authorization,
            server_name,
            client_api,
            joined_path: Mutex::new(None),
        })
    }

    /// The negotiated path: stable only if `/versions` says so; unstable when it does not or fails.
    async fn joined_path(&self, base: &Url, deadline: Instant) -> JoinedPath {
        if let Some((path, at)) = *crate::matrix::lock(&self.joined_path)
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
                *crate::matrix::lock(&self.joined_path) = Some((path, Instant::now()));
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
        get_json(
            self.http
                .get(url)
                .header(AUTHORIZATION, self.authorization.clone())
                .timeout(limit),
        )
        .await
    }
}

impl Homeserver for AsClient {
    fn resolve(&self) -> BoxFuture<'_, Result<Url, String>> {
        self.client_api.resolve_base(&self.server_name)
    }

    fn is_joined<'a>(
        &'a self,
        base: &'a Url,
        room_id: &'a str,
        subject: Subject<'a>,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<bool, HomeserverError>> {
        Box::pin(async move {
            let path = self.joined_path(base, deadline).await;
            let (status, body) = self
                .ask_joined(base, path, room_id, subject, deadline)
                .await?;
            let (status, body) = if path == JoinedPath::Stable && is_unrecognized(status, &body) {
                // The homeserver stopped serving the stable path (e.g. downgraded): ask it again.
                *crate::matrix::lock(&self.joined_path) = None;
                let path = self.joined_path(base, deadline).await;
                self.ask_joined(base, path, room_id, subject, deadline)
                    .await?
            } else {
                (status, body)
            };
            joined_from(status, &body)
        })
    }

    fn fed_proxy<'a>(
        &'a self,
        base: &'a Url,
        destination: &'a str,
        body: &'a Value,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<FedReply, HomeserverError>> {
        Box::pin(async move {
            let mut url = base.clone();
            extend(
                &mut url,
                &[
                    "_matrix",
                    "client",
                    "unstable",
                    "io.element.msc4512",
                    "appservice",
                    "fed_proxy",
                ],
            );
            let request = serde_json::json!({
                "destination": destination,
                "method": "POST",
                "path": FEDERATION_GET_TOKEN_PATH,
                "body": body,
            });
            let limit = timeout(FED_PROXY_TIMEOUT, deadline)?;
            let (status, answer) = get_json(
                self.http
                    .post(url)
                    .header(AUTHORIZATION, self.authorization.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(request.to_string())
                    .timeout(limit),
            )
            .await?;
            fed_reply_from(status, answer)
        })
    }

    fn delayed_event<'a>(
        &'a self,
        base: &'a Url,
        delay_id: &'a str,
        user_id: &'a str,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<DelayedEvent, HomeserverError>> {
        Box::pin(async move {
            let mut url = base.clone();
            extend(
                &mut url,
                &[
                    "_matrix",
                    "client",
                    "unstable",
                    "org.matrix.msc4140",
                    "delayed_events",
                ],
            );
            push_segment(&mut url, delay_id)?;
            url.query_pairs_mut().append_pair("user_id", user_id);
            let limit = timeout(LOOKUP_TIMEOUT, deadline)?;
            let (status, body) = get_json(
                self.http
                    .get(url)
                    .header(AUTHORIZATION, self.authorization.clone())
                    .timeout(limit),
            )
            .await?;
            delayed_event_from(status, &body)
        })
    }
}

/// Where the relayed request goes on the remote server.
pub const FEDERATION_GET_TOKEN_PATH: &str =
    "/_matrix/federation/unstable/io.element.msc4195/rtc/livekit/get_token";

/// The smaller of `fixed` and the time left before `deadline`.
fn timeout(fixed: Duration, deadline: Instant) -> Result<Duration, HomeserverError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(HomeserverError::OutOfTime);
    }
    Ok(fixed.min(left))
}

fn extend(url: &mut Url, segments: &[&str]) {
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
}

/// Adds `segment` as one escaped path segment; `.` and `..` (which URL parsers collapse) are refused.
fn push_segment(url: &mut Url, segment: &str) -> Result<(), HomeserverError> {
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
async fn get_json(
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, Value), HomeserverError> {
    let transport = |error: reqwest::Error| {
        // `without_url`: query strings name users.
        HomeserverError::Transport(crate::matrix::error_chain(&error.without_url()))
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

/// `fed_proxy`'s own answer: 200 `{"status", "content"}`; anything else is Synapse refusing.
fn fed_reply_from(status: StatusCode, body: Value) -> Result<FedReply, HomeserverError> {
    if status != StatusCode::OK {
        return Err(HomeserverError::Status(status));
    }
    let inner = body
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| HomeserverError::Body("no status".into()))?;
    Ok(FedReply {
        status: inner,
        content: body.get("content").cloned().unwrap_or(Value::Null),
    })
}

fn delayed_event_from(status: StatusCode, body: &Value) -> Result<DelayedEvent, HomeserverError> {
    if status == StatusCode::NOT_FOUND {
        return Ok(DelayedEvent::NotFound);
    }
    if status != StatusCode::OK {
        return Err(HomeserverError::Status(status));
    }
    let room_id = body.get("room_id").and_then(Value::as_str);
    // `delay_ms` in newer MSC4140 revisions, `delay` in older ones (Synapse 1.163 sends both).
    let delay_ms = body
        .get("delay_ms")
        .or_else(|| body.get("delay"))
        .and_then(Value::as_i64);
    match (room_id, delay_ms) {
        (Some(room_id), Some(delay_ms)) => Ok(DelayedEvent::Found {
            room_id: room_id.to_owned(),
            delay_ms,
        }),
        _ => Err(HomeserverError::Body("no room_id or delay".into())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn joined_answers() {
        assert!(joined_from(StatusCode::OK, &json!({"joined": true})).unwrap());
        assert!(!joined_from(StatusCode::OK, &json!({"joined": false})).unwrap());
        assert!(
            !joined_from(StatusCode::OK, &json!({})).unwrap(),
            "missing = not joined"
        );
        for (status, body) in [
            (StatusCode::OK, json!({"joined": "yes"})),
            (StatusCode::OK, Value::Null),
            (StatusCode::FORBIDDEN, json!({"errcode": "M_FORBIDDEN"})),
            (StatusCode::NOT_FOUND, json!({"errcode": "M_UNRECOGNIZED"})),
            (StatusCode::INTERNAL_SERVER_ERROR, json!({"joined": true})),
        ] {
            assert!(joined_from(status, &body).is_err(), "{status} {body}");
        }
    }

    #[test]
    fn fed_proxy_answers() {
        let reply = fed_reply_from(
            StatusCode::OK,
            json!({"status": 403, "content": {"errcode": "X"}}),
        )
        .unwrap();
        assert_eq!(reply.status, 403);
        assert_eq!(reply.content["errcode"], "X");
        let reply = fed_reply_from(StatusCode::OK, json!({"status": 502})).unwrap();
        assert_eq!(reply.content, Value::Null);
        // Synapse's own refusals are never relayed.
        assert!(fed_reply_from(StatusCode::FORBIDDEN, json!({"status": 200})).is_err());
        assert!(fed_reply_from(StatusCode::OK, json!({"content": {}})).is_err());
    }

    #[test]
    fn delayed_event_answers() {
        assert_eq!(
            delayed_event_from(StatusCode::OK, &json!({"room_id": "!r:x", "delay": 5000})).unwrap(),
            DelayedEvent::Found {
                room_id: "!r:x".into(),
                delay_ms: 5000
            }
        );
        assert_eq!(
            delayed_event_from(StatusCode::OK, &json!({"room_id": "!r:x", "delay_ms": 7})).unwrap(),
            DelayedEvent::Found {
                room_id: "!r:x".into(),
                delay_ms: 7
            }
        );
        assert_eq!(
            delayed_event_from(StatusCode::NOT_FOUND, &Value::Null).unwrap(),
            DelayedEvent::NotFound
        );
        assert!(delayed_event_from(StatusCode::BAD_GATEWAY, &Value::Null).is_err());
        assert!(delayed_event_from(StatusCode::OK, &json!({"room_id": "!r:x"})).is_err());
    }

    #[test]
    fn unrecognized_is_only_a_404_with_that_errcode() {
        assert!(is_unrecognized(
            StatusCode::NOT_FOUND,
            &json!({"errcode": "M_UNRECOGNIZED"})
        ));
        assert!(!is_unrecognized(
            StatusCode::NOT_FOUND,
            &json!({"errcode": "M_NOT_FOUND"})
        ));
        assert!(!is_unrecognized(
            StatusCode::BAD_REQUEST,
            &json!({"errcode": "M_UNRECOGNIZED"})
        ));
    }

    #[test]
    fn paths_escape_one_segment() {
        let mut url = Url::parse("http://hs:8008/base/").unwrap();
        extend(&mut url, &["_matrix", "client"]);
        push_segment(&mut url, "!room/x:example.com").unwrap();
        assert_eq!(url.path(), "/base/_matrix/client/!room%2Fx:example.com");
        assert!(push_segment(&mut url, "..").is_err());
    }
}

/// [`AsClient`] against a fake homeserver on loopback: negotiation, headers, redirects.
#[cfg(test)]
mod client_tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::Router;
    use axum::extract::{Request, State};
    use axum::response::{IntoResponse, Response};
    use axum::routing::any;
    use serde_json::json;

    use super::*;

    #[derive(Default)]
    struct FakeHs {
        /// What `/versions` says about the stable `/is_joined`.
        stable: AtomicBool,
        /// Whether the stable path exists.
        serves_stable: AtomicBool,
        /// Whether `/is_joined` answers with a redirect.
        redirect: AtomicBool,
        seen: Mutex<Vec<(String, Option<String>)>>,
    }

    async fn handle(State(fake): State<Arc<FakeHs>>, request: Request) -> Response {
        let target = request.uri().to_string();
        let auth = request
            .headers()
            .get(AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned());
        fake.seen.lock().unwrap().push((target.clone(), auth));
        let path = request.uri().path();
        if path == "/_matrix/client/versions" {
            let stable = fake.stable.load(Ordering::SeqCst);
            return json_answer(
                StatusCode::OK,
                json!({"versions": ["v1.11"], "unstable_features": {STABLE_FLAG: stable}}),
            );
        }
        if fake.redirect.load(Ordering::SeqCst) {
            return (
                StatusCode::FOUND,
                [(http::header::LOCATION, "http://127.0.0.1:1/elsewhere")],
            )
                .into_response();
        }
        if path.starts_with("/_matrix/client/v3/") && !fake.serves_stable.load(Ordering::SeqCst) {
            return json_answer(StatusCode::NOT_FOUND, json!({"errcode": "M_UNRECOGNIZED"}));
        }
        json_answer(
            StatusCode::OK,
            json!({"joined": request.uri().query() == Some("mxid=%40alice%3Ahs")}),
        )
    }

    fn json_answer(status: StatusCode, body: Value) -> Response {
        (
            status,
            [(http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }

    struct Fixed(Url);

    impl ResolveBase for Fixed {
        fn resolve_base<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Url, String>> {
            let url = self.0.clone();
            Box::pin(async move { Ok(url) })
        }
    }

    async fn start() -> (Arc<FakeHs>, AsClient, Url) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fake = Arc::new(FakeHs::default());
        let app = Router::new()
            .fallback(any(handle))
            .with_state(Arc::clone(&fake));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let client = AsClient::new(
            http,
            &Secret::new("as-secret".into()),
            "hs".into(),
            Arc::new(Fixed(base.clone())),
        )
        .unwrap();
        (fake, client, base)
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    fn paths(fake: &FakeHs) -> Vec<String> {
        fake.seen
            .lock()
            .unwrap()
            .drain(..)
            .map(|(path, _)| path)
            .collect()
    }

    #[tokio::test]
    async fn unstable_unless_versions_says_stable_and_the_as_token_goes_along() {
        let (fake, client, base) = start().await;
        assert_eq!(client.resolve().await.unwrap(), base);
        assert!(
            client
                .is_joined(&base, "!r:hs", Subject::User("@alice:hs"), deadline())
                .await
                .unwrap()
        );
        assert!(
            !client
                .is_joined(&base, "!r:hs", Subject::Server("other"), deadline())
                .await
                .unwrap()
        );
        let seen: Vec<_> = fake.seen.lock().unwrap().drain(..).collect();
        assert_eq!(
            seen,
            vec![
                ("/_matrix/client/versions".to_owned(), None),
                (
                    "/_matrix/client/unstable/io.element.msc4502/rooms/!r:hs/is_joined?mxid=%40alice%3Ahs".to_owned(),
                    Some("Bearer as-secret".to_owned())
                ),
                // The negotiated path is remembered; membership is not.
                (
                    "/_matrix/client/unstable/io.element.msc4502/rooms/!r:hs/is_joined?server_name=other".to_owned(),
                    Some("Bearer as-secret".to_owned())
                ),
            ]
        );
    }

    #[tokio::test]
    async fn stable_when_listed_and_renegotiated_on_unrecognized() {
        let (fake, client, base) = start().await;
        fake.stable.store(true, Ordering::SeqCst);
        fake.serves_stable.store(true, Ordering::SeqCst);
        assert!(
            client
                .is_joined(&base, "!r:hs", Subject::User("@alice:hs"), deadline())
                .await
                .unwrap()
        );
        assert_eq!(
            paths(&fake),
            vec![
                "/_matrix/client/versions",
                "/_matrix/client/v3/rooms/!r:hs/is_joined?mxid=%40alice%3Ahs"
            ]
        );
        // The homeserver drops the stable path: one 404 M_UNRECOGNIZED, then /versions again, then unstable.
        fake.stable.store(false, Ordering::SeqCst);
        fake.serves_stable.store(false, Ordering::SeqCst);
        assert!(
            client
                .is_joined(&base, "!r:hs", Subject::User("@alice:hs"), deadline())
                .await
                .unwrap()
        );
        assert_eq!(
            paths(&fake),
            vec![
                "/_matrix/client/v3/rooms/!r:hs/is_joined?mxid=%40alice%3Ahs",
                "/_matrix/client/versions",
                "/_matrix/client/unstable/io.element.msc4502/rooms/!r:hs/is_joined?mxid=%40alice%3Ahs"
            ]
        );
    }

    #[tokio::test]
    async fn redirects_are_not_followed_and_the_budget_is_respected() {
        let (fake, client, base) = start().await;
        fake.redirect.store(true, Ordering::SeqCst);
        let error = client
            .is_joined(&base, "!r:hs", Subject::User("@alice:hs"), deadline())
            .await
            .unwrap_err();
        assert!(
            matches!(error, HomeserverError::Status(StatusCode::FOUND)),
            "{error}"
        );
        let _ = paths(&fake);
        let spent = Instant::now();
        let error = client
            .fed_proxy(&base, "other", &json!({}), spent)
            .await
            .unwrap_err();
        assert!(matches!(error, HomeserverError::OutOfTime), "{error}");
        assert!(paths(&fake).is_empty(), "no call without time left");
    }
}
