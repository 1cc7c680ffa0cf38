//! The monitor's questions to its own homeserver, asked as the application service (as-mode spec §1, §8.2):
//! `joined_members` of a room, and MSC4502 `/is_joined` for our server or one user.
//!
//! Every call carries `Authorization: Bearer <as_token>` and no `user_id`: the AS sender asks, and
//! Synapse answers `joined_members` only while a joined member is in the registration's namespace (403
//! otherwise, which the sweep turns into the `/is_joined?server_name=` question). The as_token only ever goes
//! to the client-server API of `LIVEKIT_HS_SERVER_NAME` (an override, or its `.well-known`), never follows a
//! redirect and is never logged; these calls bypass the SSRF guard because the operator chose the target.
//! `/is_joined` goes through [`OwnHomeserver`], the one the token flows use, so the monitor takes the stable
//! path exactly when the token flows do (spec §5.1: `/versions` lists `io.element.msc4502.stable`), and in
//! production both share the negotiated answer.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::IgnoredAny;
use url::Url;

use crate::matrix::client_api::ClientApi;
use crate::matrix::own_homeserver::{self, OwnHomeserver, OwnHomeserverError, Subject};

/// `joined_members` timeout (spec §8.2).
pub const JOINED_MEMBERS_TIMEOUT: Duration = Duration::from_secs(30);
/// `/is_joined` timeout (spec §5.1), for `/versions` and `/is_joined` together.
pub const IS_JOINED_TIMEOUT: Duration = own_homeserver::IS_JOINED_TIMEOUT;
/// A `joined_members` answer above this is not read (about 50,000 members with names and avatars); the room
/// is then unknown, which never kicks.
pub const MEMBERS_BODY_LIMIT: usize = 16 << 20;

/// Why the homeserver gave no usable answer. Never holds the as_token.
#[derive(Debug, thiserror::Error)]
pub enum HomeserverError {
    #[error("the client-server API of our homeserver is unknown: {0}")]
    ClientApi(String),
    #[error("could not reach our homeserver: {0}")]
    Transport(String),
    #[error("our homeserver answered HTTP {0}")]
    Status(u16),
    #[error("our homeserver's answer is not usable: {0}")]
    Body(String),
}

/// What `joined_members` said, when it said something definite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Members {
    /// 200: the joined users.
    Joined(HashSet<String>),
    /// 403: no joined member in our namespace (or no such room).
    Forbidden,
}

/// The homeserver as the monitor uses it; the sweep's tests use a fake.
pub trait Homeserver: Send + Sync {
    /// Step 2 of a sweep: whether our client-server API can be found at all.
    fn resolve(&self) -> BoxFuture<'_, Result<(), HomeserverError>>;
    /// `GET /_matrix/client/v3/rooms/{room_id}/joined_members`.
    fn joined_members<'a>(
        &'a self,
        room_id: &'a str,
    ) -> BoxFuture<'a, Result<Members, HomeserverError>>;
    /// `/is_joined?server_name=<ours>`.
    fn server_joined<'a>(
        &'a self,
        room_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, HomeserverError>>;
    /// `/is_joined?mxid=<user_id>`.
    fn user_joined<'a>(
        &'a self,
        room_id: &'a str,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, HomeserverError>>;
}

/// Where our client-server API is.
#[derive(Clone)]
pub enum CsApi {
    /// Resolved like every other homeserver's (override, cache, `.well-known`).
    Discovered(Arc<ClientApi>),
    /// A fixed base URL (benchmarks and tests).
    Fixed(Url),
}

/// [`Homeserver`] over HTTP with the as_token.
pub struct AsHomeserver {
    own: Arc<OwnHomeserver>,
    cs_api: CsApi,
}

impl std::fmt::Debug for AsHomeserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsHomeserver")
            .field("server_name", &self.own.server_name())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct JoinedMembersBody {
    joined: std::collections::HashMap<String, IgnoredAny>,
}

impl AsHomeserver {
    /// A client of its own (benchmarks and tests): `builder` comes with the service's TLS and pool
    /// settings ([`crate::outbound::Outbound::client_builder`]); redirects are turned off.
    pub fn new(
        builder: reqwest::ClientBuilder,
        cs_api: CsApi,
        server_name: &str,
        as_token: &str,
    ) -> Result<Self, OwnHomeserverError> {
        let own = OwnHomeserver::new(builder, as_token, server_name)?;
        Ok(Self::with_own(Arc::new(own), cs_api))
    }

    /// Over the process's [`OwnHomeserver`], shared with the token flows.
    pub fn with_own(own: Arc<OwnHomeserver>, cs_api: CsApi) -> Self {
        Self { own, cs_api }
    }

    async fn base(&self) -> Result<Url, HomeserverError> {
        match &self.cs_api {
            CsApi::Fixed(url) => Ok(url.clone()),
            CsApi::Discovered(client_api) => client_api
                .resolve(self.own.server_name())
                .await
                .map(|base| base.url)
                .map_err(|error| HomeserverError::ClientApi(error.to_string())),
        }
    }

    /// `<base>/_matrix/client/<path...>` with every segment escaped as one segment.
    async fn url(&self, segments: &[&str]) -> Result<Url, HomeserverError> {
        let mut url = self.base().await?;
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|()| HomeserverError::ClientApi("the base URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(["_matrix", "client"])
            .extend(segments);
        Ok(url)
    }

    /// One GET; the status and up to `limit` bytes of body.
    async fn get(
        &self,
        url: Url,
        timeout: Duration,
        limit: usize,
    ) -> Result<(StatusCode, Vec<u8>), HomeserverError> {
        let transport =
            |error: reqwest::Error| HomeserverError::Transport(error.without_url().to_string());
        let mut response = self
            .own
            .request(reqwest::Method::GET, url)
            .timeout(timeout)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > limit {
                return Err(HomeserverError::Body(format!("more than {limit} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    async fn is_joined(
        &self,
        room_id: &str,
        subject: Subject<'_>,
    ) -> Result<bool, HomeserverError> {
        let base = self.base().await?;
        let deadline = Instant::now() + IS_JOINED_TIMEOUT;
        self.own
            .is_joined(&base, room_id, subject, deadline)
            .await
            .map_err(|error| match error {
                own_homeserver::HomeserverError::Status(status) => {
                    HomeserverError::Status(status.as_u16())
                }
                own_homeserver::HomeserverError::Transport(text) => {
                    HomeserverError::Transport(text)
                }
                other => HomeserverError::Body(other.to_string()),
            })
    }
}

impl Homeserver for AsHomeserver {
    fn resolve(&self) -> BoxFuture<'_, Result<(), HomeserverError>> {
        Box::pin(async move { self.base().await.map(drop) })
    }

    fn joined_members<'a>(
        &'a self,
        room_id: &'a str,
    ) -> BoxFuture<'a, Result<Members, HomeserverError>> {
        Box::pin(async move {
            let url = self
                .url(&["v3", "rooms", room_id, "joined_members"])
                .await?;
            let (status, body) = self
                .get(url, JOINED_MEMBERS_TIMEOUT, MEMBERS_BODY_LIMIT)
                .await?;
            match status {
                StatusCode::OK => serde_json::from_slice::<JoinedMembersBody>(&body)
                    .map(|answer| Members::Joined(answer.joined.into_keys().collect()))
                    .map_err(|error| HomeserverError::Body(error.to_string())),
                StatusCode::FORBIDDEN => Ok(Members::Forbidden),
                other => Err(HomeserverError::Status(other.as_u16())),
            }
        })
    }

    fn server_joined<'a>(
        &'a self,
        room_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, HomeserverError>> {
        Box::pin(self.is_joined(room_id, Subject::Server(self.own.server_name())))
    }

    fn user_joined<'a>(
        &'a self,
        room_id: &'a str,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, HomeserverError>> {
        Box::pin(self.is_joined(room_id, Subject::User(user_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use axum::extract::State;
    use axum::http::header::AUTHORIZATION;
    use axum::http::{HeaderMap, HeaderValue, Uri};
    use axum::response::{IntoResponse, Response};

    type Seen = Arc<Mutex<Vec<(String, String)>>>;

    /// A homeserver answering every request with `status` and `body`, recording path+query and
    /// authorization.
    async fn fake(status: u16, body: &'static str) -> (Url, Seen) {
        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .fallback(
                |State((seen, status, body)): State<(Seen, u16, &'static str)>,
                 uri: Uri,
                 headers: HeaderMap| async move {
                    let authorization = headers
                        .get(AUTHORIZATION)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    seen.lock().unwrap().push((uri.to_string(), authorization));
                    let status = axum::http::StatusCode::from_u16(status).unwrap();
                    let mut response: Response = (status, body).into_response();
                    if status.is_redirection() {
                        response
                            .headers_mut()
                            .insert("location", HeaderValue::from_static("/elsewhere"));
                    }
                    response
                },
            )
            .with_state((Arc::clone(&seen), status, body));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (
            Url::parse(&format!("http://127.0.0.1:{port}/base/")).unwrap(),
            seen,
        )
    }

    fn homeserver(base: Url) -> AsHomeserver {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let builder = reqwest::Client::builder().tls_backend_preconfigured(tls);
        AsHomeserver::new(builder, CsApi::Fixed(base), "hs.example", "the-as-token").unwrap()
    }

    #[tokio::test]
    async fn joined_members_as_the_application_service() {
        let (base, seen) = fake(
            200,
            r#"{"joined":{"@a:hs":{"display_name":"A"},"@b:other":{}}}"#,
        )
        .await;
        let members = homeserver(base).joined_members("!room/x:hs").await.unwrap();
        assert_eq!(
            members,
            Members::Joined(["@a:hs", "@b:other"].map(str::to_owned).into())
        );
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen[0],
            (
                "/base/_matrix/client/v3/rooms/!room%2Fx:hs/joined_members".to_owned(),
                "Bearer the-as-token".to_owned()
            ),
            "no user_id, the room ID one segment"
        );
    }

    #[tokio::test]
    async fn only_a_whole_answer_counts() {
        for (status, body) in [
            (200, r#"{"joined":{"@a:hs":{}}"#),
            (200, r#"{"chunk":[]}"#),
            (200, r#"{"joined":["@a:hs"]}"#),
            (500, "{}"),
            (404, r#"{"errcode":"M_NOT_FOUND"}"#),
            (429, r#"{"errcode":"M_LIMIT_EXCEEDED"}"#),
            (302, ""),
        ] {
            let (base, seen) = fake(status, body).await;
            let answer = homeserver(base).joined_members("!r:hs").await;
            assert!(answer.is_err(), "{status} {body}: {answer:?}");
            assert_eq!(
                seen.lock().unwrap().len(),
                1,
                "{status}: no redirect followed"
            );
        }
        let (base, _) = fake(403, r#"{"errcode":"M_FORBIDDEN"}"#).await;
        assert_eq!(
            homeserver(base).joined_members("!r:hs").await.unwrap(),
            Members::Forbidden
        );
    }

    #[tokio::test]
    async fn is_joined_for_our_server_and_for_a_user() {
        let (base, seen) = fake(200, r#"{"joined":true}"#).await;
        let homeserver = homeserver(base);
        assert!(homeserver.server_joined("!r:hs").await.unwrap());
        assert!(homeserver.user_joined("!r:hs", "@u:hs").await.unwrap());
        let paths: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(path, _)| path.clone())
            .collect();
        assert_eq!(
            paths,
            [
                // No `io.element.msc4502.stable` in this `/versions`: the unstable path, negotiated once.
                "/base/_matrix/client/versions",
                "/base/_matrix/client/unstable/io.element.msc4502/rooms/!r:hs/is_joined?server_name=hs.example",
                "/base/_matrix/client/unstable/io.element.msc4502/rooms/!r:hs/is_joined?mxid=%40u%3Ahs",
            ]
        );
        let (base, _) = fake(200, "{}").await;
        assert!(
            !self::homeserver(base).server_joined("!r:hs").await.unwrap(),
            "missing = not joined"
        );
        let (base, _) = fake(404, r#"{"errcode":"M_UNRECOGNIZED"}"#).await;
        assert!(self::homeserver(base).server_joined("!r:hs").await.is_err());
    }

    /// The monitor negotiates like the token flows: the stable `/is_joined` once `/versions` lists it.
    #[tokio::test]
    async fn the_stable_is_joined_when_the_homeserver_advertises_it() {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let recorder = Arc::clone(&seen);
        let app = axum::Router::new().fallback(move |uri: Uri| {
            let recorder = Arc::clone(&recorder);
            async move {
                recorder.lock().unwrap().push(uri.to_string());
                if uri.path().ends_with("/versions") {
                    r#"{"versions":["v1.11"],"unstable_features":{"io.element.msc4502.stable":true}}"#
                } else {
                    r#"{"joined":true}"#
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let homeserver = homeserver(Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap());
        assert!(homeserver.server_joined("!r:hs").await.unwrap());
        assert!(homeserver.user_joined("!r:hs", "@u:hs").await.unwrap());
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "/_matrix/client/versions",
                "/_matrix/client/v3/rooms/!r:hs/is_joined?server_name=hs.example",
                "/_matrix/client/v3/rooms/!r:hs/is_joined?mxid=%40u%3Ahs",
            ]
        );
    }
}
