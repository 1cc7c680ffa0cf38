//! OpenID token validation through `GET /_matrix/federation/v1/openid/userinfo` (spec §2).
//!
//! The token is sent, URL-encoded, in the query string of a federation request to the server named by
//! the client (see [`super::federation`] for how it is reached). Success is a 2xx JSON body whose `sub`
//! has, after its first `:`, exactly the server name asked (port included). A success is remembered for
//! `openid_cache_ttl` under a digest of (server name, token), so a repeated token costs no round trip.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{StatusCode, Uri};

use super::federation::{FederationClient, FederationError};
use super::guard::Guard;
use super::server_name::{ServerName, ServerNameError};
use super::token_cache::{Key, TokenCache};
use crate::outbound::{Outbound, OutboundError, OutboundSettings};
use crate::telemetry::Metrics;

const USERINFO_PATH: &str = "/_matrix/federation/v1/openid/userinfo?access_token=";
/// Verified tokens remembered at most. An entry costs about 280 bytes (measured), so a full cache is about
/// 3 MiB: anyone whose homeserver mints tokens can fill it, so it must stay small.
const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// Why a userinfo lookup failed. Every variant answers 401 `M_UNAUTHORIZED`; the text is only logged,
/// and never contains the access token.
#[derive(Debug, thiserror::Error)]
pub enum OpenIdError {
    #[error("invalid server name {name:?}: {error}")]
    InvalidServerName {
        name: String,
        error: ServerNameError,
    },
    #[error("the access token cannot be put in a URL")]
    BadToken,
    #[error(transparent)]
    Federation(#[from] FederationError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the homeserver answered HTTP {0}")]
    Status(StatusCode),
    #[error("the userinfo response is not a JSON object")]
    NotAnObject,
    #[error("the userinfo response is not JSON with a string sub: {0}")]
    BadJson(serde_json::Error),
    #[error("the homeserver vouched for {sub:?}, which is not a user of {server_name:?}")]
    ServerMismatch { sub: String, server_name: String },
}

#[derive(serde::Deserialize)]
struct UserInfo<'a> {
    #[serde(borrow)]
    sub: Cow<'a, str>,
}

/// Verifies OpenID tokens against the homeserver that issued them.
pub struct OpenIdVerifier {
    outbound: Arc<Outbound>,
    federation: FederationClient,
    tokens: Option<TokenCache>,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

impl std::fmt::Debug for OpenIdVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenIdVerifier")
            .field("outbound", &self.outbound)
            .finish_non_exhaustive()
    }
}

impl OpenIdVerifier {
    /// A verifier with its own outbound setup (system CA roots and DNS).
    pub fn new(settings: &OutboundSettings, metrics: Arc<Metrics>) -> Result<Self, OutboundError> {
        Self::with_outbound(Arc::new(Outbound::new(settings)?), metrics)
    }

    /// A verifier sharing `outbound` (and so its TLS configuration and DNS cache) with other clients.
    pub fn with_outbound(
        outbound: Arc<Outbound>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, OutboundError> {
        let settings = outbound.settings();
        let guard = Arc::new(Guard::new(settings.allowed_ranges.clone()));
        let tokens = (!settings.openid_cache_ttl.is_zero())
            .then(|| TokenCache::new(settings.openid_cache_ttl, TOKEN_CACHE_CAPACITY));
        Ok(Self {
            federation: FederationClient::new(&outbound, guard, Arc::clone(&metrics))?,
            tokens,
            metrics,
            timeout: settings.request_timeout,
            outbound,
        })
    }

    /// The outbound setup, whose [`Outbound::http`] client serves the other outbound calls.
    pub fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
    }

    #[cfg(test)]
    pub(crate) fn federation_mut(&mut self) -> &mut FederationClient {
        &mut self.federation
    }

    /// Returns the verified Matrix user ID (`sub`), whose server part equals `server_name` exactly.
    /// `trusted` is true for full-access homeservers, which the SSRF guard lets through.
    pub async fn verify(
        &self,
        server_name: &str,
        access_token: &str,
        trusted: bool,
    ) -> Result<String, OpenIdError> {
        let cache = self
            .tokens
            .as_ref()
            .map(|tokens| (tokens, Key::new(server_name, access_token)));
        if let Some((tokens, key)) = &cache {
            let cached = tokens.get(key, Instant::now());
            self.metrics.openid_cache(cached.is_some());
            if let Some(sub) = cached {
                return Ok(sub);
            }
        }
        let name =
            ServerName::parse(server_name).map_err(|error| OpenIdError::InvalidServerName {
                name: server_name.to_owned(),
                error,
            })?;
        let started = Instant::now();
        let result =
            tokio::time::timeout(self.timeout, self.userinfo(&name, access_token, trusted))
                .await
                .unwrap_or(Err(OpenIdError::Timeout(self.timeout)));
        self.metrics
            .observe_openid_lookup(started.elapsed().as_secs_f64(), result.is_ok());
        let sub = result?;
        if let Some((tokens, key)) = cache {
            tokens.insert(key, &sub, Instant::now());
        }
        Ok(sub)
    }

    async fn userinfo(
        &self,
        name: &ServerName<'_>,
        access_token: &str,
        trusted: bool,
    ) -> Result<String, OpenIdError> {
        let mut path = String::with_capacity(USERINFO_PATH.len() + access_token.len() * 3);
        path.push_str(USERINFO_PATH);
        path.extend(url::form_urlencoded::byte_serialize(
            access_token.as_bytes(),
        ));
        let uri = Uri::try_from(path).map_err(|_| OpenIdError::BadToken)?;
        let (status, body) = self.federation.get(name, trusted, &uri).await?;
        if !status.is_success() {
            return Err(OpenIdError::Status(status));
        }
        verified_sub(&body, name.as_str())
    }
}

/// The `sub` of a userinfo body, if it belongs to `server_name` (the text after its first `:`).
fn verified_sub(body: &[u8], server_name: &str) -> Result<String, OpenIdError> {
    // serde would also read a struct from a JSON array (`["@u:hs"]`); userinfo is an object.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(OpenIdError::NotAnObject);
    }
    let info: UserInfo<'_> = serde_json::from_slice(body).map_err(OpenIdError::BadJson)?;
    match info.sub.split_once(':') {
        Some((_, server)) if server == server_name => Ok(info.sub.into_owned()),
        _ => Err(OpenIdError::ServerMismatch {
            sub: info.sub.into_owned(),
            server_name: server_name.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::matrix::test_support::{
        Answer, FakeDns, Seen, TestServer, bounded, outbound, settings, unrelated_roots,
    };
    use crate::outbound::Roots;

    const TRICKY_TOKEN: &str = "tok en/&=+?%ü";

    /// A lookup's future stays small (every request in flight holds one): discovery and connecting,
    /// rare next to a cached route and a pooled connection, are boxed. Inline they made it 3.5 KiB in a
    /// release build instead of 1.1 KiB.
    #[test]
    fn a_lookup_in_flight_is_a_small_future() {
        let (verifier, _) = new_verifier(&settings(), FakeDns::default());
        let lookup = verifier.verify("hs.test", "token", false);
        let size = std::mem::size_of_val(&lookup);
        // 1.0 KiB in a debug build; 3.5 KiB with those calls inline.
        assert!(size <= 1536, "{size} bytes");
    }

    fn verifier_with(outbound: Outbound) -> (OpenIdVerifier, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let verifier =
            OpenIdVerifier::with_outbound(Arc::new(outbound), Arc::clone(&metrics)).unwrap();
        (verifier, metrics)
    }

    fn new_verifier(settings: &OutboundSettings, dns: FakeDns) -> (OpenIdVerifier, Arc<Metrics>) {
        verifier_with(outbound(settings, Arc::new(dns)))
    }

    /// The access token a userinfo request carried.
    fn token_of(seen: &Seen) -> Option<String> {
        let (_, query) = seen.path_and_query.split_once('?')?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "access_token")
            .map(|(_, value)| value.into_owned())
    }

    /// A homeserver whose userinfo answers `@<token>:<server name>` for tokens starting with `tok`;
    /// `server_name` makes the server name from the port.
    async fn homeserver(server_name: impl Fn(u16) -> String + Send + Sync + 'static) -> TestServer {
        TestServer::start(move |seen| {
            if !seen.path_and_query.starts_with("/_matrix/federation/v1/openid/userinfo?") {
                return Answer::json(http::StatusCode::NOT_FOUND, "{}");
            }
            match token_of(seen) {
                Some(token) if token.starts_with("tok") => Answer::json(
                    http::StatusCode::OK,
                    serde_json::json!({ "sub": format!("@{token}:{}", server_name(seen.port)), "extra": true })
                        .to_string(),
                ),
                _ => Answer::json(
                    http::StatusCode::UNAUTHORIZED,
                    r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown token"}"#,
                ),
            }
        })
        .await
    }

    async fn loopback_homeserver() -> (TestServer, String) {
        let server = homeserver(|port| format!("127.0.0.1:{port}")).await;
        let name = format!("127.0.0.1:{}", server.port());
        (server, name)
    }

    /// A server that answers userinfo with `answer`, whatever the token.
    async fn answering(
        answer: impl Fn() -> Answer + Send + Sync + 'static,
    ) -> (TestServer, String) {
        let server = TestServer::start(move |_| answer()).await;
        let name = format!("127.0.0.1:{}", server.port());
        (server, name)
    }

    #[tokio::test]
    async fn verifies_a_token_with_its_homeserver() {
        bounded(async {
            let (server, name) = loopback_homeserver().await;
            let (verifier, metrics) = new_verifier(&settings(), FakeDns::default());
            let sub = verifier.verify(&name, TRICKY_TOKEN, true).await.unwrap();
            assert_eq!(sub, format!("@{TRICKY_TOKEN}:{name}"));
            let seen = server.seen();
            assert_eq!(seen.len(), 1);
            assert!(
                seen[0]
                    .path_and_query
                    .starts_with("/_matrix/federation/v1/openid/userinfo?access_token=")
            );
            assert_eq!(
                token_of(&seen[0]).as_deref(),
                Some(TRICKY_TOKEN),
                "token URL-encoded"
            );
            assert_eq!(
                seen[0].host.as_deref(),
                Some(name.as_str()),
                "Host is the server name"
            );
            let text = metrics.encode();
            assert!(
                text.contains(r#"openid_lookup_duration_seconds_count{result="ok"} 1"#),
                "{text}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_loopback_homeserver_is_refused_unless_trusted_or_allowlisted() {
        bounded(async {
            let (server, name) = loopback_homeserver().await;
            let (verifier, metrics) = new_verifier(&settings(), FakeDns::default());
            let error = verifier.verify(&name, "tok1", false).await.unwrap_err();
            assert!(
                matches!(error, OpenIdError::Federation(FederationError::Refused(_))),
                "{error}"
            );
            assert!(
                error
                    .to_string()
                    .contains("127.0.0.1 is a loopback address"),
                "{error}"
            );
            assert_eq!(server.connections(), 0);
            let text = metrics.encode();
            assert!(
                text.contains("matrixrtc_auth_outbound_refused_total 1"),
                "{text}"
            );
            assert!(
                text.contains(r#"openid_lookup_duration_seconds_count{result="error"} 1"#),
                "{text}"
            );

            let allowing = OutboundSettings {
                allowed_ranges: vec!["127.0.0.0/8".parse().unwrap()],
                ..settings()
            };
            let (verifier, _) = new_verifier(&allowing, FakeDns::default());
            assert!(verifier.verify(&name, "tok1", false).await.is_ok());
            assert_eq!(server.seen().len(), 1);
        })
        .await;
    }

    #[tokio::test]
    async fn refused_dns_answers_are_skipped_for_untrusted_homeservers() {
        bounded(async {
            let server = homeserver(|port| format!("hs.test:{port}")).await;
            let name = format!("hs.test:{}", server.port());
            // The first answer is private and not allowlisted; the second is loopback and allowlisted.
            let dns = || {
                FakeDns::default()
                    .ip("hs.test", "10.0.0.1")
                    .ip("hs.test", "127.0.0.1")
            };
            let allowing = OutboundSettings {
                allowed_ranges: vec!["127.0.0.0/8".parse().unwrap()],
                ..settings()
            };
            let (verifier, metrics) = new_verifier(&allowing, dns());
            assert_eq!(
                verifier.verify(&name, "tok", false).await.unwrap(),
                format!("@tok:{name}")
            );
            assert!(
                metrics
                    .encode()
                    .contains("matrixrtc_auth_outbound_refused_total 1")
            );

            let (verifier, _) = new_verifier(&settings(), dns());
            let error = verifier.verify(&name, "tok", false).await.unwrap_err();
            let text = error.to_string();
            assert!(text.contains("10.0.0.1 is a private address"), "{text}");
            assert_eq!(server.seen().len(), 1, "the refused lookup sent nothing");
        })
        .await;
    }

    #[tokio::test]
    async fn the_sub_must_belong_to_exactly_the_server_name() {
        bounded(async {
            // `{name}` stands for the server name, `127.0.0.1:<port>`.
            for template in [
                "@alice:127.0.0.1",
                "@alice:evil.example",
                "alice",
                "@alice:x:{name}",
                "@alice:{name}:1",
            ] {
                let server = TestServer::start(move |seen| {
                    let name = format!("127.0.0.1:{}", seen.port);
                    Answer::json(
                        http::StatusCode::OK,
                        serde_json::json!({ "sub": template.replace("{name}", &name) }).to_string(),
                    )
                })
                .await;
                let name = format!("127.0.0.1:{}", server.port());
                let (verifier, _) = new_verifier(&settings(), FakeDns::default());
                let error = verifier.verify(&name, "tok", true).await.unwrap_err();
                assert!(
                    matches!(error, OpenIdError::ServerMismatch { .. }),
                    "{template}: {error}"
                );
                assert_eq!(server.seen().len(), 1);
            }
        })
        .await;
    }

    #[tokio::test]
    async fn the_port_is_part_of_the_server_name_comparison() {
        bounded(async {
            // Server name with a port, sub without: `@u:example.com` vs `example.com:443` fails.
            let server = homeserver(|_| "hs.test".to_owned()).await;
            let name = format!("hs.test:{}", server.port());
            let (verifier, _) =
                new_verifier(&settings(), FakeDns::default().ip("hs.test", "127.0.0.1"));
            let error = verifier.verify(&name, "tok", true).await.unwrap_err();
            assert!(
                matches!(error, OpenIdError::ServerMismatch { .. }),
                "{error}"
            );
            assert_eq!(server.seen()[0].host.as_deref(), Some(name.as_str()));

            // Server name without a port, reached through SRV, sub with one.
            let server = homeserver(|port| format!("hs.test:{port}")).await;
            let dns = FakeDns::default().ip("hs.test", "127.0.0.1").srv(
                "_matrix-fed._tcp.hs.test",
                &[(0, 0, server.port(), "hs.test")],
            );
            let (mut verifier, _) = new_verifier(&settings(), dns);
            // Nothing listens on port 1: no .well-known, so SRV is used.
            verifier
                .federation_mut()
                .discovery_mut()
                .set_well_known_port(1);
            let error = verifier.verify("hs.test", "tok", true).await.unwrap_err();
            assert!(
                matches!(error, OpenIdError::ServerMismatch { .. }),
                "{error}"
            );
            assert_eq!(
                server.seen()[0].host.as_deref(),
                Some("hs.test"),
                "Host without port"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn error_statuses_and_bad_bodies_are_refused() {
        bounded(async {
            let (_server, name) = loopback_homeserver().await;
            let (verifier, _) = new_verifier(&settings(), FakeDns::default());
            let error = verifier.verify(&name, "not-a-tok", true).await.unwrap_err();
            assert!(
                matches!(error, OpenIdError::Status(status) if status == http::StatusCode::UNAUTHORIZED),
                "{error}"
            );

            for body in ["not json", r#"{"sub":5}"#, "{}", r#"["@a:b"]"#] {
                let (_server, name) = answering(move || Answer::json(http::StatusCode::OK, body)).await;
                let error = verifier.verify(&name, "tok", true).await.unwrap_err();
                assert!(
                    matches!(error, OpenIdError::BadJson(_) | OpenIdError::NotAnObject),
                    "{body}: {error}"
                );
            }

            let huge = format!(r#"{{"sub":"@a:{name}","pad":"{}"}}"#, "x".repeat(100 * 1024));
            let (_server, big_name) = answering(move || Answer::json(http::StatusCode::OK, huge.clone())).await;
            let error = verifier.verify(&big_name, "tok", true).await.unwrap_err();
            assert!(
                matches!(error, OpenIdError::Federation(FederationError::TooLarge)),
                "{error}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn invalid_server_names_fail_before_any_request() {
        bounded(async {
            let dns = FakeDns::default();
            let (verifier, metrics) = new_verifier(&settings(), dns);
            for name in ["", "bad name", "example.com:0", "::1"] {
                let error = verifier.verify(name, "tok", true).await.unwrap_err();
                assert!(
                    matches!(error, OpenIdError::InvalidServerName { .. }),
                    "{name}: {error}"
                );
            }
            let text = metrics.encode();
            assert!(
                text.contains(r#"openid_lookup_duration_seconds_count{result="error"} 0"#),
                "{text}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn tls_needs_a_trusted_certificate_unless_verification_is_skipped() {
        bounded(async {
            let (server, name) = loopback_homeserver().await;
            let untrusting = Outbound::with_parts(
                &settings(),
                Roots::Custom(unrelated_roots()),
                Arc::new(FakeDns::default()),
            )
            .unwrap();
            let (verifier, _) = verifier_with(untrusting);
            let error = verifier.verify(&name, "tok", true).await.unwrap_err();
            assert!(
                matches!(&error, OpenIdError::Federation(FederationError::Connect(detail)) if detail.contains("TLS")),
                "{error}"
            );
            assert!(server.seen().is_empty());

            let skipping = OutboundSettings {
                skip_tls_verify: true,
                ..settings()
            };
            let outbound = Outbound::with_parts(
                &skipping,
                Roots::Custom(unrelated_roots()),
                Arc::new(FakeDns::default()),
            )
            .unwrap();
            let (verifier, _) = verifier_with(outbound);
            assert!(verifier.verify(&name, "tok", true).await.is_ok());
        })
        .await;
    }

    #[tokio::test]
    async fn a_verified_token_is_answered_from_the_cache() {
        bounded(async {
            let (server, name) = loopback_homeserver().await;
            let (verifier, metrics) = new_verifier(&settings(), FakeDns::default());
            let first = verifier.verify(&name, "tok1", true).await.unwrap();
            assert_eq!(verifier.verify(&name, "tok1", true).await.unwrap(), first);
            assert_eq!(
                server.seen().len(),
                1,
                "the repeat did not reach the homeserver"
            );
            verifier.verify(&name, "tok2", true).await.unwrap();
            assert_eq!(server.seen().len(), 2, "another token is looked up");
            assert!(verifier.verify(&name, "bad", true).await.is_err());
            assert!(verifier.verify(&name, "bad", true).await.is_err());
            assert_eq!(server.seen().len(), 4, "failures are not cached");
            let text = metrics.encode();
            assert!(
                text.contains(r#"matrixrtc_auth_openid_cache_total{result="hit"} 1"#),
                "{text}"
            );
            assert!(
                text.contains(r#"matrixrtc_auth_openid_cache_total{result="miss"} 4"#),
                "{text}"
            );

            let uncached = OutboundSettings {
                openid_cache_ttl: Duration::ZERO,
                ..settings()
            };
            let (verifier, _) = new_verifier(&uncached, FakeDns::default());
            verifier.verify(&name, "tok1", true).await.unwrap();
            verifier.verify(&name, "tok1", true).await.unwrap();
            assert_eq!(server.seen().len(), 6, "a zero TTL disables the cache");
        })
        .await;
    }

    #[tokio::test]
    async fn requests_to_one_homeserver_share_a_keep_alive_connection() {
        bounded(async {
            let (server, name) = loopback_homeserver().await;
            let uncached = OutboundSettings {
                openid_cache_ttl: Duration::ZERO,
                ..settings()
            };
            let (verifier, metrics) = new_verifier(&uncached, FakeDns::default());
            for i in 0..5 {
                verifier
                    .verify(&name, &format!("tok{i}"), true)
                    .await
                    .unwrap();
            }
            assert_eq!(server.seen().len(), 5);
            assert_eq!(server.connections(), 1);
            let text = metrics.encode();
            assert!(
                text.contains(r#"matrixrtc_auth_discovery_cache_total{result="miss"} 1"#),
                "{text}"
            );
            assert!(
                text.contains(r#"matrixrtc_auth_discovery_cache_total{result="hit"} 4"#),
                "{text}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_that_later_requests_reuse() {
        bounded(async {
            let (server, name) = loopback_homeserver().await;
            let uncached = OutboundSettings {
                openid_cache_ttl: Duration::ZERO,
                ..settings()
            };
            let (verifier, _) = new_verifier(&uncached, FakeDns::default());
            let batch = |round: usize| {
                let (verifier, name) = (&verifier, &name);
                futures::future::join_all((0..16).map(move |i| async move {
                    verifier
                        .verify(name, &format!("tok{round}-{i}"), true)
                        .await
                }))
            };
            assert!(batch(0).await.iter().all(Result::is_ok));
            let opened = server.connections();
            assert!((1..=16).contains(&opened), "{opened}");
            assert!(batch(1).await.iter().all(Result::is_ok));
            assert_eq!(
                server.connections(),
                opened,
                "the second batch reused the pool"
            );
            assert_eq!(server.seen().len(), 32);
        })
        .await;
    }

    #[tokio::test]
    async fn a_silent_homeserver_times_out() {
        bounded(async {
            // Accepts connections and never says anything, not even a TLS hello.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let name = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
            let _held = tokio::spawn(async move {
                let mut sockets = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    sockets.push(socket);
                }
            });
            let quick = OutboundSettings {
                request_timeout: Duration::from_millis(300),
                ..settings()
            };
            let (verifier, _) = new_verifier(&quick, FakeDns::default());
            let started = Instant::now();
            let error = verifier.verify(&name, "tok", true).await.unwrap_err();
            assert!(matches!(error, OpenIdError::Timeout(_)), "{error}");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}",
                started.elapsed()
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_homeserver_that_moved_is_found_again_after_a_connection_failure() {
        bounded(async {
            let hs = |_: u16| "hs.test".to_owned();
            let old = homeserver(hs).await;
            let new = homeserver(hs).await;
            let delegation = Arc::new(Mutex::new(format!("delegated.test:{}", old.port())));
            let well_known = TestServer::start({
                let delegation = Arc::clone(&delegation);
                move |_| {
                    let server = delegation.lock().unwrap().clone();
                    Answer::json(
                        http::StatusCode::OK,
                        serde_json::json!({ "m.server": server }).to_string(),
                    )
                }
            })
            .await;
            let dns = FakeDns::default()
                .ip("hs.test", "127.0.0.1")
                .ip("delegated.test", "127.0.0.1");
            let (mut verifier, _) = new_verifier(&settings(), dns);
            verifier
                .federation_mut()
                .discovery_mut()
                .set_well_known_port(well_known.port());

            assert_eq!(
                verifier.verify("hs.test", "tok1", true).await.unwrap(),
                "@tok1:hs.test"
            );
            assert_eq!(
                old.seen()[0].host.as_deref(),
                Some(format!("delegated.test:{}", old.port()).as_str())
            );

            // The homeserver moves: the old address refuses connections, .well-known names the new one.
            *delegation.lock().unwrap() = format!("delegated.test:{}", new.port());
            drop(old);
            tokio::time::sleep(Duration::from_millis(50)).await;

            assert_eq!(
                verifier.verify("hs.test", "tok2", true).await.unwrap(),
                "@tok2:hs.test"
            );
            assert_eq!(new.seen().len(), 1);
            assert_eq!(
                well_known.seen().len(),
                2,
                "resolved again after the failure"
            );
        })
        .await;
    }
}
