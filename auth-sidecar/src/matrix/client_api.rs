//! The homeserver's client-server API, as far as delegated leaves need it (spec §5.4, §5.5): where it is,
//! and the unauthenticated MSC4140 `restart`/`send` calls on a delayed event.
//!
//! The base URL comes from `LIVEKIT_CS_API_URL_OVERRIDES`, else from a cache of earlier successful
//! discoveries (4 h, at most [`CACHE_CAPACITY`] homeservers), else from `https://<server_name>/.well-known/matrix/client`. The `delay_cs_api_url`
//! a client sends is never used: pointing us at an arbitrary URL would make the service a request proxy.
//!
//! Who is contacted how: overrides and homeservers the operator named in
//! `LIVEKIT_FULL_ACCESS_HOMESERVERS` are trusted. Homeservers that are full-access only through `*` are
//! not (anyone can run one), so their `.well-known` lookup and their calls go through the SSRF guard,
//! like the OpenID lookup: a discovered base URL may not point into the service's own network.
//!
//! The delay ID is the capability to act on the event, so it is treated as a secret: it never appears in
//! an error or a log line produced here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use url::Url;

use super::delayed_event::{self, Action, Reply};
use super::full_access::FullAccess;
use super::guard::{Guard, GuardedClient, Refusal};
use super::server_name::ServerName;
use crate::outbound::Outbound;
use crate::telemetry::Metrics;

/// Homeservers whose client-server API URL is remembered. Anyone can make the service discover a server
/// name of their choosing, so the cache is bounded: when full, expired entries go, then the oldest.
pub const CACHE_CAPACITY: usize = 10_000;
/// `.well-known/matrix/client` bodies above this size are refused.
const WELL_KNOWN_LIMIT: usize = 64 * 1024;
/// Whole-request timeout of the well-known lookup.
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a delayed-event error body is read (enough for a Matrix error with `retry_after_ms`).
const ERROR_BODY_LIMIT: usize = 16 * 1024;
/// Per-attempt timeout of a delayed-event call.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The unstable MSC4140 path below the client-server API base.
const DELAYED_EVENTS_PATH: [&str; 5] = [
    "_matrix",
    "client",
    "unstable",
    "org.matrix.msc4140",
    "delayed_events",
];

/// Why no client-server API URL is available for a homeserver.
#[derive(Debug, thiserror::Error)]
pub enum ClientApiError {
    #[error("{server_name} publishes no .well-known/matrix/client")]
    NotPublished { server_name: String },
    #[error("fetching .well-known/matrix/client of {server_name} failed: {reason}")]
    Fetch { server_name: String, reason: String },
    #[error(".well-known/matrix/client of {server_name} is unusable: {reason}")]
    Invalid { server_name: String, reason: String },
    #[error("client-server API URL {url:?} of {server_name} is not an http(s) URL")]
    BadUrl { server_name: String, url: String },
    #[error("client-server API of {server_name} refused: {refusal}")]
    Refused {
        server_name: String,
        refusal: Refusal,
    },
    #[error("the delay ID cannot be written as one URL path segment")]
    UnaddressableDelayId,
}

/// The HTTP clients, by how far a homeserver is trusted.
pub struct Reach {
    /// For overrides and homeservers the operator named.
    trusted: reqwest::Client,
    /// For everyone else: URLs, DNS answers and redirects pass the SSRF guard.
    guarded: GuardedClient,
    full_access: FullAccess,
}

impl Reach {
    /// Clients over the shared outbound setup. `full_access` decides who is trusted (named, not `*`).
    pub fn new(
        outbound: &Outbound,
        guard: Arc<Guard>,
        metrics: Arc<Metrics>,
        full_access: FullAccess,
    ) -> Result<Self, reqwest::Error> {
        let guarded = GuardedClient::build(
            outbound.client_builder(),
            Arc::clone(outbound.dns()),
            guard,
            metrics,
        )?;
        Ok(Self {
            trusted: outbound.http().clone(),
            guarded,
            full_access,
        })
    }

    /// A request to `url`; for an untrusted homeserver, refused if its host is a guarded IP literal (host
    /// names are checked when they resolve).
    fn request(
        &self,
        server_name: &str,
        method: reqwest::Method,
        url: Url,
        trusted: bool,
    ) -> Result<reqwest::RequestBuilder, ClientApiError> {
        if trusted {
            return Ok(self.trusted.request(method, url));
        }
        self.guarded
            .request(method, url)
            .map_err(|refusal| ClientApiError::Refused {
                server_name: server_name.to_owned(),
                refusal,
            })
    }
}

/// A client-server API base URL and whether its homeserver is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    pub url: Url,
    pub trusted: bool,
}

/// Finds client-server APIs and calls their delayed-event endpoints.
pub struct ClientApi {
    reach: Reach,
    overrides: HashMap<String, String>,
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, (Base, Instant)>>,
}

impl std::fmt::Debug for ClientApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientApi")
            .field("overrides", &self.overrides)
            .field("cache_ttl", &self.cache_ttl)
            .finish_non_exhaustive()
    }
}

impl ClientApi {
    /// Successful discoveries are cached this long (spec §5.4).
    pub const CACHE_TTL: Duration = Duration::from_secs(4 * 3600);

    /// `overrides` maps a server name (exact string) to a base URL, as parsed from
    /// `LIVEKIT_CS_API_URL_OVERRIDES`.
    pub fn new(reach: Reach, overrides: HashMap<String, String>, cache_ttl: Duration) -> Self {
        Self {
            reach,
            overrides,
            cache_ttl,
            cache: Mutex::default(),
        }
    }

    /// The client-server API base URL of `server_name`: override, then cache, then `.well-known`.
    pub async fn resolve(&self, server_name: &str) -> Result<Base, ClientApiError> {
        if let Some(url) = self.overrides.get(server_name) {
            // The operator wrote this URL down: trusted.
            return Ok(Base {
                url: parse_base(server_name, url)?,
                trusted: true,
            });
        }
        if let Some(base) = self.cached(server_name) {
            return Ok(base);
        }
        let trusted = self.reach.full_access.names(server_name);
        let url = self.discover(server_name, trusted).await?;
        // Refused now rather than at the first call: the request path answers 400 when this fails.
        if !trusted {
            self.reach
                .guarded
                .check_url(&url)
                .map_err(|refusal| ClientApiError::Refused {
                    server_name: server_name.to_owned(),
                    refusal,
                })?;
        }
        let base = Base { url, trusted };
        self.remember(server_name, base.clone(), Instant::now());
        Ok(base)
    }

    /// Resolves the homeserver's API and performs one `restart` or `send` attempt.
    pub async fn delayed_event(
        &self,
        server_name: &str,
        delay_id: &str,
        action: Action,
    ) -> Result<Reply, ClientApiError> {
        let base = self.resolve(server_name).await?;
        let url = delayed_event_url(&base.url, delay_id, action)?;
        let request = self
            .reach
            .request(server_name, reqwest::Method::POST, url, base.trusted)?;
        Ok(post_empty_object(request).await)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Base, Instant)>> {
        super::lock(&self.cache)
    }

    /// Caches `base` for `server_name`, keeping at most [`CACHE_CAPACITY`] entries.
    fn remember(&self, server_name: &str, base: Base, now: Instant) {
        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_CAPACITY && !cache.contains_key(server_name) {
            let ttl = self.cache_ttl;
            cache.retain(|_, (_, at)| now.saturating_duration_since(*at) < ttl);
            while cache.len() >= CACHE_CAPACITY {
                let oldest = cache
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(name, _)| name.clone());
                match oldest {
                    Some(name) => cache.remove(&name),
                    None => break,
                };
            }
        }
        cache.insert(server_name.to_owned(), (base, now));
    }

    fn cached(&self, server_name: &str) -> Option<Base> {
        let mut cache = self.lock_cache();
        match cache.get(server_name) {
            Some((base, at)) if at.elapsed() < self.cache_ttl => Some(base.clone()),
            Some(_) => {
                cache.remove(server_name);
                None
            }
            None => None,
        }
    }

    async fn discover(&self, server_name: &str, trusted: bool) -> Result<Url, ClientApiError> {
        let fetch_error = |reason: String| ClientApiError::Fetch {
            server_name: server_name.to_owned(),
            reason,
        };
        // Parsed with the service's one host classification, so the URL's host is what was validated.
        let name = ServerName::parse(server_name)
            .map_err(|error| fetch_error(format!("not a server name: {error}")))?;
        let url = Url::parse(&format!("https://{name}/.well-known/matrix/client"))
            .map_err(|error| fetch_error(format!("not a server name: {error}")))?;
        let mut response = self
            .reach
            .request(server_name, reqwest::Method::GET, url, trusted)?
            .timeout(WELL_KNOWN_TIMEOUT)
            .send()
            .await
            .map_err(|error| fetch_error(super::error_chain(&error)))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| fetch_error(super::error_chain(&error)))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > WELL_KNOWN_LIMIT {
                return Err(ClientApiError::Invalid {
                    server_name: server_name.to_owned(),
                    reason: format!("larger than {WELL_KNOWN_LIMIT} bytes"),
                });
            }
        }
        let base_url = well_known_base_url(server_name, status, &body)?;
        parse_base(server_name, &base_url)
    }
}

/// Performs one delayed-event call and classifies its outcome (also used for the AS-asserted calls of
/// [`super::own_homeserver`]).
pub(super) async fn post_empty_object(request: reqwest::RequestBuilder) -> Reply {
    let sent = request
        .header(CONTENT_TYPE, "application/json")
        .body("{}")
        .timeout(ATTEMPT_TIMEOUT)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        // `without_url`: the URL holds the delay ID, which must not be logged.
        Err(error) => {
            return Reply::Transient(format!(
                "transport: {}",
                super::error_chain(&error.without_url())
            ));
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    // Only a 429 body is interesting; a body that fails to arrive just has no hint in it.
    if status == StatusCode::TOO_MANY_REQUESTS.as_u16() {
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() > ERROR_BODY_LIMIT {
                break;
            }
        }
    }
    delayed_event::classify(
        status,
        retry_after.as_deref(),
        &body,
        time::OffsetDateTime::now_utc(),
    )
}

/// `m.homeserver.base_url` of a `.well-known/matrix/client` response (mautrix `DiscoverClientAPI`
/// semantics: 404 means "none", other failures and an empty URL are errors).
fn well_known_base_url(
    server_name: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<String, ClientApiError> {
    let invalid = |reason: String| ClientApiError::Invalid {
        server_name: server_name.to_owned(),
        reason,
    };
    if status == StatusCode::NOT_FOUND {
        return Err(ClientApiError::NotPublished {
            server_name: server_name.to_owned(),
        });
    }
    if !status.is_success() {
        return Err(ClientApiError::Fetch {
            server_name: server_name.to_owned(),
            reason: format!("HTTP status {status}"),
        });
    }
    let document: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| invalid(format!("not JSON: {error}")))?;
    let base_url = document
        .get("m.homeserver")
        .and_then(|homeserver| homeserver.get("base_url"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    if base_url.is_empty() {
        return Err(invalid("no m.homeserver.base_url".into()));
    }
    Ok(base_url.to_owned())
}

fn parse_base(server_name: &str, url: &str) -> Result<Url, ClientApiError> {
    Url::parse(url)
        .ok()
        .filter(|parsed| matches!(parsed.scheme(), "http" | "https") && parsed.has_host())
        .ok_or_else(|| ClientApiError::BadUrl {
            server_name: server_name.to_owned(),
            url: url.to_owned(),
        })
}

/// `<base>/_matrix/client/unstable/org.matrix.msc4140/delayed_events/<delay_id>/<action>`, keeping any
/// path of the base and escaping the delay ID as one segment (`/` becomes `%2F`). URL parsers collapse
/// `.` and `..` segments even when percent-encoded, so such a delay ID cannot be addressed at all.
pub fn delayed_event_url(
    base: &Url,
    delay_id: &str,
    action: Action,
) -> Result<Url, ClientApiError> {
    if matches!(delay_id, "" | "." | "..") {
        return Err(ClientApiError::UnaddressableDelayId);
    }
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| ClientApiError::UnaddressableDelayId)?
        .pop_if_empty()
        .extend(DELAYED_EVENTS_PATH)
        .push(delay_id)
        .push(action.as_str());
    Ok(url)
}

#[cfg(test)]
mod tests;
