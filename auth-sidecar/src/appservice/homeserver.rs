//! Calls to the service's own homeserver with the AS token (as-mode spec §5), as the token flows need
//! them: `/is_joined` (its stable/unstable negotiation is [`OwnHomeserver`]'s, shared with the membership
//! monitor), `fed_proxy`, and the asserted delayed-event lookup.
//!
//! The AS token goes only to the client-server API of `LIVEKIT_HS_SERVER_NAME` (resolved like any
//! client-server API: `LIVEKIT_CS_API_URL_OVERRIDES`, else `.well-known`, cached 4 h), over a client that
//! never follows redirects, so it cannot be bounced to another host. These calls skip the SSRF guard:
//! the operator chose the target. Membership answers are never cached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use serde_json::Value;
use url::Url;

use crate::matrix::client_api::ClientApi;
pub use crate::matrix::own_homeserver::{HomeserverError, Subject};
use crate::matrix::own_homeserver::{OwnHomeserver, extend, get_json, push_segment, timeout};

/// Per-call timeout of `fed_proxy` (upstream: 30 s; ours leaves room in the 25 s request budget).
const FED_PROXY_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-call timeout of the delayed-event lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

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
    own: Arc<OwnHomeserver>,
    client_api: Arc<dyn ResolveBase>,
}

impl AsClient {
    /// `own` is shared with the membership monitor (one `/is_joined` negotiation per process).
    pub fn new(own: Arc<OwnHomeserver>, client_api: Arc<dyn ResolveBase>) -> Self {
        Self { own, client_api }
    }
}

impl Homeserver for AsClient {
    fn resolve(&self) -> BoxFuture<'_, Result<Url, String>> {
        self.client_api.resolve_base(self.own.server_name())
    }

    fn is_joined<'a>(
        &'a self,
        base: &'a Url,
        room_id: &'a str,
        subject: Subject<'a>,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<bool, HomeserverError>> {
        Box::pin(self.own.is_joined(base, room_id, subject, deadline))
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
                self.own
                    .request(reqwest::Method::POST, url)
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
            let (status, body) =
                get_json(self.own.request(reqwest::Method::GET, url).timeout(limit)).await?;
            delayed_event_from(status, &body)
        })
    }
}

/// Where the relayed request goes on the remote server.
pub const FEDERATION_GET_TOKEN_PATH: &str =
    "/_matrix/federation/unstable/io.element.msc4195/rtc/livekit/get_token";

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
}

/// [`AsClient`] against a fake homeserver on loopback: what it asks, with which token, within the budget.
/// The `/is_joined` negotiation itself is tested with [`OwnHomeserver`].
#[cfg(test)]
mod client_tests {
    use std::sync::Mutex;

    use axum::Router;
    use axum::extract::{Request, State};
    use axum::response::{IntoResponse, Response};
    use axum::routing::any;
    use http::header::AUTHORIZATION;
    use serde_json::json;

    use super::*;

    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

    async fn handle(State(seen): State<Seen>, request: Request) -> Response {
        let auth = request
            .headers()
            .get(AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned());
        seen.lock().unwrap().push((request.uri().to_string(), auth));
        let body = if request.uri().path().ends_with("/fed_proxy") {
            json!({"status": 200, "content": {"jwt": "remote"}})
        } else {
            json!({"room_id": "!r:hs", "delay": 60000})
        };
        (
            StatusCode::OK,
            [(http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }

    struct Fixed(Url);

    impl ResolveBase for Fixed {
        fn resolve_base<'a>(&'a self, server_name: &'a str) -> BoxFuture<'a, Result<Url, String>> {
            assert_eq!(server_name, "hs", "only the own server is resolved");
            let url = self.0.clone();
            Box::pin(async move { Ok(url) })
        }
    }

    async fn start() -> (Seen, AsClient, Url) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let seen = Seen::default();
        let app = Router::new()
            .fallback(any(handle))
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let own = OwnHomeserver::new(reqwest::Client::builder(), "as-secret", "hs").unwrap();
        let client = AsClient::new(Arc::new(own), Arc::new(Fixed(base.clone())));
        (seen, client, base)
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn fed_proxy_and_the_lookup_carry_the_as_token() {
        let (seen, client, base) = start().await;
        assert_eq!(client.resolve().await.unwrap(), base);
        let reply = client
            .fed_proxy(&base, "other", &json!({}), deadline())
            .await
            .unwrap();
        assert_eq!(reply.content["jwt"], "remote");
        let found = client
            .delayed_event(&base, "syd", "@alice:hs", deadline())
            .await
            .unwrap();
        assert_eq!(
            found,
            DelayedEvent::Found {
                room_id: "!r:hs".into(),
                delay_ms: 60000
            }
        );
        let token = Some("Bearer as-secret".to_owned());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (
                    "/_matrix/client/unstable/io.element.msc4512/appservice/fed_proxy".to_owned(),
                    token.clone()
                ),
                (
                    "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/syd?user_id=%40alice%3Ahs"
                        .to_owned(),
                    token
                ),
            ]
        );
    }

    #[tokio::test]
    async fn no_call_without_time_left() {
        let (seen, client, base) = start().await;
        let spent = Instant::now();
        let error = client
            .fed_proxy(&base, "other", &json!({}), spent)
            .await
            .unwrap_err();
        assert!(matches!(error, HomeserverError::OutOfTime), "{error}");
        assert!(seen.lock().unwrap().is_empty());
    }
}
