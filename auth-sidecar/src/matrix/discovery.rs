//! Matrix server-server name resolution (spec §2.1) and its cache.
//!
//! A server name resolves to a [`Route`]: the `Host` header to send, the name the certificate must match,
//! and a [`Destination`] saying where the addresses come from:
//!
//! 1. IP literal: that IP, at the given port or 8448. Host = the server name, TLS name = the IP.
//! 2. Host name with a port: that host and port. Host = the server name, TLS name = the host.
//! 3. Host name without a port: `GET https://<name>/.well-known/matrix/server` (200, at most 50 KiB, JSON
//!    with a valid `m.server`). The delegated name is resolved with steps 1, 2 and 4–5, and becomes the
//!    Host header and (its host part) the TLS name, as the Matrix spec and Synapse have it.
//! 4. Otherwise SRV `_matrix-fed._tcp.<name>`, then the deprecated `_matrix._tcp.<name>`.
//! 5. Otherwise `<name>:8448`.
//!
//! Steps 4–5 run when a connection is opened ([`Discovery::targets`]), through the DNS resolver's own
//! TTL-honouring cache, so a route cached for a day never pins SRV answers longer than their TTL.
//!
//! Routes are cached per (server name, trusted): a `.well-known` answer for its `Cache-Control: max-age`
//! or `Expires` (at least 5 min, at most 48 h, else 24 h), a definite `.well-known` failure (a 4xx other
//! than 408/429, a body that is too large, not JSON or names no valid server) for 10 min. A failure that
//! may pass (timeout, connection error, 5xx, 408, 429) falls back to SRV/8448 for that lookup only and
//! is not cached: the next lookup asks the `.well-known` again, so a slow moment never pins the fallback.
//! Concurrent lookups of one name share a single discovery. Each route also owns the idle keep-alive
//! connections to it, so dropping a route (expiry, or [`Discovery::invalidate`] after a connection
//! failure) also drops its connections. A reaper task closes connections idle for longer than the idle
//! timeout and drops expired routes, on a timer rather than on the next request, so a homeserver that
//! is never asked again cannot keep a connection open for as long as its route is cached.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;
use http::header::{CACHE_CONTROL, EXPIRES, HeaderMap};
use rustls::pki_types::ServerName as TlsName;
use tokio::sync::OnceCell;

use super::guard::{Guard, GuardedClient, Refusal, redirect_policy};
use super::idle_pool::IdlePool;
use super::server_name::{Host, ServerName};
use super::{error_chain, lock};
use crate::outbound::dns::{Dns, DnsError, PlainResolver, SrvRecord};
use crate::outbound::{Outbound, POOL_IDLE_TIMEOUT};
use crate::telemetry::Metrics;

/// Port of federation when neither the server name nor SRV says otherwise.
pub const DEFAULT_FEDERATION_PORT: u16 = 8448;
/// Largest `.well-known/matrix/server` body accepted (spec: 50 KiB).
const WELL_KNOWN_MAX_BYTES: usize = 50 * 1024;
/// How long a `.well-known` answer without cache headers, and a route that needs none, is kept.
const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest a `.well-known` answer is kept, whatever its headers say (spec: 48 h).
const MAX_TTL: Duration = Duration::from_secs(48 * 3600);
/// Shortest a `.well-known` answer is kept, so `max-age=0` cannot make every connection refetch it.
const MIN_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a definitely failed `.well-known` lookup (and so the SRV/8448 route) is kept.
const FAILURE_TTL: Duration = Duration::from_secs(10 * 60);
/// Routes kept per trust level; bounds memory when requests name many (possibly made-up) servers.
const CACHE_CAPACITY: usize = 10_000;
/// SRV services tried in order: the current one, then the one deprecated since Matrix 1.8.
const SRV_SERVICES: [&str; 2] = ["_matrix-fed._tcp", "_matrix._tcp"];

/// A host to connect to: an address, or a name still to be looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetHost {
    Ip(IpAddr),
    Name(String),
}

/// One place to try, in order of preference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: TargetHost,
    pub port: u16,
}

/// Where a route's addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A known host and port (steps 1 and 2, also for a delegated name).
    Direct(Target),
    /// A host name without a port: SRV records, else port 8448 (steps 4 and 5).
    Srv { name: String },
}

/// How to reach one homeserver's federation API.
#[derive(Debug)]
pub struct Route {
    host_header: HeaderValue,
    tls_name: TlsName<'static>,
    destination: Destination,
    expires: Instant,
    /// Idle keep-alive connections to this route.
    pub(crate) idle: IdlePool,
}

impl Route {
    fn new(
        host_header: &str,
        tls_name: TlsName<'static>,
        destination: Destination,
        ttl: Duration,
    ) -> Result<Self, DiscoveryError> {
        Ok(Self {
            host_header: HeaderValue::from_str(host_header)
                .map_err(|_| DiscoveryError::BadName(host_header.to_owned()))?,
            tls_name,
            destination,
            expires: Instant::now() + ttl,
            idle: IdlePool::default(),
        })
    }

    /// The `Host` header of requests on this route.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// The name the server's certificate must match.
    pub fn tls_name(&self) -> &TlsName<'static> {
        &self.tls_name
    }

    /// Where the addresses come from.
    pub fn destination(&self) -> &Destination {
        &self.destination
    }

    /// When the cache stops using this route.
    pub fn expires(&self) -> Instant {
        self.expires
    }
}

/// Why a server name could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{0:?} is not usable as a TLS server name")]
    BadName(String),
    #[error(transparent)]
    Dns(#[from] DnsError),
    #[error("{0} says the service is not available (SRV target \".\")")]
    NoService(String),
}

/// Why a `.well-known/matrix/server` lookup gave nothing usable (then SRV and 8448 are used).
#[derive(Debug, thiserror::Error)]
enum WellKnownError {
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP status {0}")]
    Status(http::StatusCode),
    #[error("body larger than {WELL_KNOWN_MAX_BYTES} bytes")]
    TooLarge,
    #[error("body is not JSON with a string m.server: {0}")]
    BadJson(#[from] serde_json::Error),
    #[error("m.server {0:?} is not a valid server name")]
    BadServerName(String),
    #[error(transparent)]
    BadRoute(#[from] DiscoveryError),
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl WellKnownError {
    /// Whether the failure says something lasting about the server (its fallback route may be cached),
    /// rather than about this attempt (timeout, connection, server error, rate limit).
    fn is_definite(&self) -> bool {
        match self {
            Self::Request(_) => false,
            Self::Status(status) => {
                status.is_client_error()
                    && *status != http::StatusCode::REQUEST_TIMEOUT
                    && *status != http::StatusCode::TOO_MANY_REQUESTS
            }
            Self::TooLarge
            | Self::BadJson(_)
            | Self::BadServerName(_)
            | Self::BadRoute(_)
            | Self::Refused(_) => true,
        }
    }
}

#[derive(serde::Deserialize)]
struct WellKnownBody {
    #[serde(rename = "m.server")]
    server: String,
}

type Slot = Arc<OnceCell<Arc<Route>>>;
/// Index 0: other homeservers, index 1: full-access ones.
type Cache = [Mutex<HashMap<Box<str>, Slot>>; 2];

/// Resolves server names to routes, with a cache.
pub struct Discovery {
    dns: Arc<dyn Dns>,
    metrics: Arc<Metrics>,
    /// `.well-known` client for full-access homeservers.
    well_known_trusted: reqwest::Client,
    /// `.well-known` client for everyone else.
    well_known_guarded: GuardedClient,
    well_known_timeout: Duration,
    /// Port of `.well-known` fetches: 443, except in tests.
    well_known_port: u16,
    cache: Arc<Cache>,
    /// How long a pooled connection may stay idle.
    idle_timeout: Duration,
    /// The idle-connection reaper, started with the first lookup (which runs inside the runtime).
    reaper: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper.get() {
            reaper.abort();
        }
    }
}

impl Discovery {
    /// A resolver over the shared outbound setup.
    pub fn new(
        outbound: &Outbound,
        guard: Arc<Guard>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        // Half the request budget, so a silent `.well-known` leaves time for the SRV/8448 fallback.
        let well_known_timeout = outbound.settings().request_timeout / 2;
        let well_known_trusted = outbound
            .client_builder()
            .https_only(true)
            .redirect(redirect_policy(None))
            .dns_resolver(Arc::new(PlainResolver(Arc::clone(outbound.dns()))))
            .build()?;
        let well_known_guarded = GuardedClient::build(
            outbound.client_builder().https_only(true),
            Arc::clone(outbound.dns()),
            guard,
            Arc::clone(&metrics),
        )?;
        Ok(Self {
            dns: Arc::clone(outbound.dns()),
            metrics,
            well_known_trusted,
            well_known_guarded,
            well_known_timeout,
            well_known_port: 443,
            cache: Arc::default(),
            idle_timeout: POOL_IDLE_TIMEOUT,
            reaper: std::sync::OnceLock::new(),
        })
    }

    /// Test hook: a shorter idle timeout (before the first lookup, which starts the reaper).
    #[cfg(test)]
    pub(crate) fn set_idle_timeout(&mut self, timeout: Duration) {
        self.idle_timeout = timeout;
    }

    /// How long a pooled connection may stay idle before it is closed.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Starts the reaper once: every third of the idle timeout it closes connections idle for longer than
    /// the timeout and drops expired routes. So no connection stays idle longer than 4/3 of the timeout.
    fn start_reaper(&self) {
        self.reaper.get_or_init(|| {
            let cache = Arc::downgrade(&self.cache);
            let timeout = self.idle_timeout;
            tokio::spawn(async move {
                let mut interval =
                    tokio::time::interval((timeout / 3).max(Duration::from_millis(10)));
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    let Some(cache) = cache.upgrade() else {
                        return;
                    };
                    reap(&cache, Instant::now(), timeout);
                }
            })
        });
    }

    /// Test hook: fetch `.well-known` from another port than 443.
    #[cfg(test)]
    pub(crate) fn set_well_known_port(&mut self, port: u16) {
        self.well_known_port = port;
    }

    /// The route to `name`, from the cache or a fresh discovery. `trusted` (full-access) lifts the guard.
    pub async fn resolve(
        &self,
        name: &ServerName<'_>,
        trusted: bool,
    ) -> Result<Arc<Route>, DiscoveryError> {
        self.start_reaper();
        let (slot, hit) = self.slot(name.as_str(), trusted, Instant::now());
        self.metrics.discovery_cache(hit);
        if let Some(route) = slot.get() {
            return Ok(Arc::clone(route));
        }
        // Boxed: discovery (`.well-known`, SRV) is rare next to cache hits, and inline it would make the
        // future of every lookup in flight KiB larger (see `FederationClient::get_on`).
        Box::pin(
            slot.get_or_try_init(|| async { self.discover(name, trusted).await.map(Arc::new) }),
        )
        .await
        .map(Arc::clone)
    }

    /// Forgets `route` for `name` (if it is still the cached one), so the next lookup discovers anew.
    pub fn invalidate(&self, name: &str, trusted: bool, route: &Arc<Route>) {
        let mut cache = lock(&self.cache[usize::from(trusted)]);
        let cached = cache
            .get(name)
            .and_then(|slot| slot.get())
            .is_some_and(|cached| Arc::ptr_eq(cached, route));
        if cached {
            cache.remove(name);
        }
    }

    /// The places to connect to for `destination`, best first (steps 4 and 5 for SRV destinations).
    pub async fn targets(&self, destination: &Destination) -> Result<Vec<Target>, DiscoveryError> {
        let name = match destination {
            Destination::Direct(target) => return Ok(vec![target.clone()]),
            Destination::Srv { name } => name,
        };
        for service in SRV_SERVICES {
            let query = format!("{service}.{name}");
            match self.dns.lookup_srv(&query).await {
                Ok(records) => return srv_targets(records, &query),
                Err(DnsError::NotFound(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(vec![Target {
            host: TargetHost::Name(name.clone()),
            port: DEFAULT_FEDERATION_PORT,
        }])
    }

    /// The cache slot for `name` and whether it already held a live route.
    fn slot(&self, name: &str, trusted: bool, now: Instant) -> (Slot, bool) {
        let mut cache = lock(&self.cache[usize::from(trusted)]);
        if let Some(slot) = cache.get(name) {
            match slot.get() {
                Some(route) if route.expires <= now => {}
                // A discovery still running is joined; it counts as a miss since this caller waits for it.
                cached => return (Arc::clone(slot), cached.is_some()),
            }
        }
        if cache.len() >= CACHE_CAPACITY {
            evict(&mut cache, now);
        }
        let slot = Slot::default();
        cache.insert(name.into(), Arc::clone(&slot));
        (slot, false)
    }

    async fn discover(
        &self,
        name: &ServerName<'_>,
        trusted: bool,
    ) -> Result<Route, DiscoveryError> {
        let host = match (name.host(), name.port()) {
            (Host::Dns(host), None) => host,
            // Steps 1 and 2 need no lookup.
            _ => return direct_route(name, DEFAULT_TTL),
        };
        match self.well_known(host, trusted).await {
            Ok(route) => Ok(route),
            Err(error) => {
                let definite = error.is_definite();
                tracing::debug!(server_name = %name, %error, definite, "no usable .well-known/matrix/server; using SRV or port 8448");
                // A failure that may pass is not cached: the route expires as it is made, so the next
                // lookup asks the `.well-known` again (concurrent lookups still share this one).
                let ttl = if definite {
                    FAILURE_TTL
                } else {
                    Duration::ZERO
                };
                Route::new(
                    host,
                    dns_tls_name(host)?,
                    Destination::Srv {
                        name: host.to_owned(),
                    },
                    ttl,
                )
            }
        }
    }

    /// Step 3: the route a `.well-known/matrix/server` answer delegates to.
    async fn well_known(&self, host: &str, trusted: bool) -> Result<Route, WellKnownError> {
        let url = match self.well_known_port {
            443 => format!("https://{host}/.well-known/matrix/server"),
            port => format!("https://{host}:{port}/.well-known/matrix/server"),
        };
        let url = url::Url::parse(&url).map_err(|e| WellKnownError::Request(e.to_string()))?;
        let request = if trusted {
            self.well_known_trusted.get(url)
        } else {
            // `host` is a DNS name by the URL parser's own reading (see `server_name`), so the literal
            // check never refuses here; the resolver judges what the name resolves to.
            self.well_known_guarded.request(reqwest::Method::GET, url)?
        };
        let mut response = request
            .timeout(self.well_known_timeout)
            .send()
            .await
            .map_err(|e| WellKnownError::Request(error_chain(&e)))?;
        if response.status() != http::StatusCode::OK {
            return Err(WellKnownError::Status(response.status()));
        }
        if response
            .content_length()
            .is_some_and(|length| length > WELL_KNOWN_MAX_BYTES as u64)
        {
            return Err(WellKnownError::TooLarge);
        }
        let ttl = cache_ttl(response.headers(), SystemTime::now());
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| WellKnownError::Request(error_chain(&e)))?
        {
            if body.len() + chunk.len() > WELL_KNOWN_MAX_BYTES {
                return Err(WellKnownError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let delegated = serde_json::from_slice::<WellKnownBody>(&body)?.server;
        let delegated_name = ServerName::parse(&delegated)
            .map_err(|_| WellKnownError::BadServerName(delegated.clone()))?;
        Ok(match (delegated_name.host(), delegated_name.port()) {
            (Host::Dns(host), None) => Route::new(
                host,
                dns_tls_name(host)?,
                Destination::Srv {
                    name: host.to_owned(),
                },
                ttl,
            )?,
            _ => direct_route(&delegated_name, ttl)?,
        })
    }
}

/// The route of an IP literal or a host name with a port.
fn direct_route(name: &ServerName<'_>, ttl: Duration) -> Result<Route, DiscoveryError> {
    let port = name.port().unwrap_or(DEFAULT_FEDERATION_PORT);
    let (tls_name, host) = match name.host() {
        Host::Ip(ip) => (TlsName::IpAddress(ip.into()), TargetHost::Ip(ip)),
        Host::Dns(host) => (dns_tls_name(host)?, TargetHost::Name(host.to_owned())),
    };
    Route::new(
        name.as_str(),
        tls_name,
        Destination::Direct(Target { host, port }),
        ttl,
    )
}

fn dns_tls_name(host: &str) -> Result<TlsName<'static>, DiscoveryError> {
    TlsName::try_from(host.to_owned()).map_err(|_| DiscoveryError::BadName(host.to_owned()))
}

/// SRV answers as targets: lowest priority first, then heaviest weight first. Deterministic rather
/// than RFC 2782's weighted random pick: the service holds a few pooled connections per homeserver, so
/// spreading load across equal-priority targets buys nothing.
fn srv_targets(mut records: Vec<SrvRecord>, query: &str) -> Result<Vec<Target>, DiscoveryError> {
    records.retain(|record| record.target != ".");
    if records.is_empty() {
        return Err(DiscoveryError::NoService(query.to_owned()));
    }
    records.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)));
    Ok(records
        .into_iter()
        .map(|record| Target {
            host: TargetHost::Name(record.target),
            port: record.port,
        })
        .collect())
}

/// How long a `.well-known` answer may be cached, from `Cache-Control: max-age` or else `Expires`.
fn cache_ttl(headers: &HeaderMap, now: SystemTime) -> Duration {
    let max_age = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("max-age") {
                return None;
            }
            value.trim().trim_matches('"').parse::<u64>().ok()
        })
        .map(Duration::from_secs);
    let expires = || {
        let text = headers.get(EXPIRES)?.to_str().ok()?;
        // An unparsable or past date means "already expired".
        let at = httpdate::parse_http_date(text).unwrap_or(SystemTime::UNIX_EPOCH);
        Some(at.duration_since(now).unwrap_or(Duration::ZERO))
    };
    max_age
        .or_else(expires)
        .unwrap_or(DEFAULT_TTL)
        .clamp(MIN_TTL, MAX_TTL)
}

/// Drops expired routes (and with them their connections) and closes connections idle for `idle_timeout`.
fn reap(cache: &Cache, now: Instant, idle_timeout: Duration) {
    for level in cache {
        let mut routes = lock(level);
        routes.retain(|_, slot| slot.get().is_none_or(|route| route.expires > now));
        for route in routes.values().filter_map(|slot| slot.get()) {
            route.idle.reap(now, idle_timeout);
        }
    }
}

/// Drops expired routes, then arbitrary ones if the cache is still full.
fn evict(cache: &mut HashMap<Box<str>, Slot>, now: Instant) {
    cache.retain(|_, slot| slot.get().is_none_or(|route| route.expires > now));
    let excess = (cache.len() + 1).saturating_sub(CACHE_CAPACITY);
    let victims: Vec<Box<str>> = cache.keys().take(excess).cloned().collect();
    for victim in victims {
        cache.remove(&victim);
    }
}

#[cfg(test)]
mod tests;
