//! Protections the reference does not have: a body size limit (413 `M_TOO_LARGE`), a body read timeout,
//! and rate limits (429 `M_LIMIT_EXCEEDED`, as MSC4195 suggests).
//!
//! - `LIVEKIT_RATE_LIMIT_PER_IP`: every request of a client, checked before the body is read.
//! - `LIVEKIT_RATE_LIMIT_PER_HOMESERVER`: requests whose OpenID token the homeserver **verified**,
//!   counted against that homeserver after the lookup. The server name in a request is only a claim
//!   until then: counted earlier, anyone could spend a homeserver's budget with made-up tokens and lock
//!   its real users out.
//! - The same rate bounds **failed** verifications per client IP ([`FailureBudget`]): a client whose
//!   failures are spent is refused before its next lookup, so made-up tokens cannot make us flood a
//!   homeserver either.
//!
//! Behind a reverse proxy every client has the proxy's address, so `X-Forwarded-For` is believed when
//! the peer is in `LIVEKIT_TRUSTED_PROXIES`: the client is the right-most address that is not itself a
//! trusted proxy. Both per-IP budgets use that address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use http::HeaderMap;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use ipnet::IpNet;

use super::error::MatrixError;
use crate::config::RateLimit;
use crate::telemetry::{Metrics, RateLimitKind};

/// Largest request body read. Real requests are well under 2 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long a client may take to send its body once the headers are in.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the whole body: 413 over [`MAX_BODY_BYTES`], 400 `M_NOT_JSON` if it cannot be read in time
/// (the reference turns every read error into a decode error).
pub async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, MatrixError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(MatrixError::too_large());
    }
    let collect = Limited::new(body, MAX_BODY_BYTES).collect();
    match tokio::time::timeout(BODY_READ_TIMEOUT, collect).await {
        // A copy, so that nothing keeps hyper's read buffer: the body is a slice of it, and hyper reads the
        // connection's next request while the handler still runs. Shared, that buffer would be replaced
        // by a new 8 KiB one for every request (a large malloc and free); ours is a few hundred bytes.
        Ok(Ok(collected)) => Ok(Bytes::copy_from_slice(&collected.to_bytes())),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(MatrixError::too_large())
        }
        Ok(Err(_)) | Err(_) => Err(MatrixError::not_json()),
    }
}

/// The rate limiters and whom to believe about client addresses.
pub struct RateLimits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_homeserver: Option<DefaultKeyedRateLimiter<String>>,
    /// Failed OpenID verifications per client, at the per-homeserver rate.
    failures_per_ip: Option<FailureBudget>,
    trusted_proxies: Vec<IpNet>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("per_ip", &self.per_ip.is_some())
            .field("per_homeserver", &self.per_homeserver.is_some())
            .field("failures_per_ip", &self.failures_per_ip.is_some())
            .field("trusted_proxies", &self.trusted_proxies)
            .finish()
    }
}

fn quota(limit: RateLimit) -> Quota {
    // `count` requests per `period`, in bursts of up to `count`: one cell every period/count.
    Quota::with_period(limit.period / limit.count.get())
        .unwrap_or_else(|| Quota::per_second(limit.count))
        .allow_burst(limit.count)
}

impl RateLimits {
    /// Limiters for the configured rates; `None` disables a limit.
    pub fn new(
        per_ip: Option<RateLimit>,
        per_homeserver: Option<RateLimit>,
        trusted_proxies: Vec<IpNet>,
    ) -> Self {
        Self {
            per_ip: per_ip.map(|limit| DefaultKeyedRateLimiter::hashmap(quota(limit))),
            per_homeserver: per_homeserver
                .map(|limit| DefaultKeyedRateLimiter::hashmap(quota(limit))),
            failures_per_ip: per_homeserver.map(FailureBudget::new),
            trusted_proxies,
        }
    }

    /// The per-IP check for a request from `client` (see [`Self::client_ip`]).
    pub fn check_ip(&self, client: IpAddr, metrics: &Metrics) -> Result<(), MatrixError> {
        let Some(limiter) = &self.per_ip else {
            return Ok(());
        };
        limiter.check_key(&client).map_err(|not_until| {
            metrics.rate_limited(RateLimitKind::PerIp);
            MatrixError::limit_exceeded(not_until.wait_time_from(limiter.clock().now()))
        })
    }

    /// Before an OpenID lookup for `client`: refused while its failed verifications are spent.
    pub fn check_failures(&self, client: IpAddr, metrics: &Metrics) -> Result<(), MatrixError> {
        let Some(budget) = &self.failures_per_ip else {
            return Ok(());
        };
        match budget.blocked(client, Instant::now()) {
            None => Ok(()),
            Some(wait) => {
                metrics.rate_limited(RateLimitKind::FailedVerifications);
                Err(MatrixError::limit_exceeded(wait))
            }
        }
    }

    /// After a homeserver refused a token `client` sent.
    pub fn record_failure(&self, client: IpAddr) {
        if let Some(budget) = &self.failures_per_ip {
            budget.spend(client, Instant::now());
        }
    }

    /// The per-homeserver check, once `server_name` has verified a token.
    pub fn check_homeserver(
        &self,
        server_name: &str,
        metrics: &Metrics,
    ) -> Result<(), MatrixError> {
        let Some(limiter) = &self.per_homeserver else {
            return Ok(());
        };
        limiter
            .check_key(&server_name.to_owned())
            .map_err(|not_until| {
                metrics.rate_limited(RateLimitKind::PerHomeserver);
                MatrixError::limit_exceeded(not_until.wait_time_from(limiter.clock().now()))
            })
    }

    /// Forgets clients whose budget is full again, so the key maps do not grow without bound.
    pub fn prune(&self) {
        if let Some(limiter) = &self.per_ip {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.per_homeserver {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(budget) = &self.failures_per_ip {
            budget.prune(Instant::now());
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer, unless the peer is a trusted proxy, in which case the right-most
    /// `X-Forwarded-For` hop that is not a trusted proxy (or the left-most, if all are).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer.to_canonical();
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        let mut client = peer.to_canonical();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop.trim()) else {
                // A hop we cannot read ends what we can believe.
                break;
            };
            client = ip.to_canonical();
            if !self.is_trusted(client) {
                break;
            }
        }
        client
    }
}

/// Failures per client, `count` per `period` in bursts of up to `count`, as a generic cell rate
/// algorithm. Hand-written because `governor` can only test a key by spending from it, and only
/// failures may spend: the check comes before the lookup, the spending after it fails.
struct FailureBudget {
    /// One failure's share of the period.
    interval: Duration,
    /// How far ahead of now a client's debt may run before it is refused (the period less one interval).
    tolerance: Duration,
    /// Per client: when its debt is paid off (the "theoretical arrival time").
    paid_off: Mutex<HashMap<IpAddr, Instant>>,
}

impl FailureBudget {
    fn new(limit: RateLimit) -> Self {
        let interval = limit.period / limit.count.get();
        Self {
            interval,
            tolerance: limit.period.saturating_sub(interval),
            paid_off: Mutex::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        // The map stays consistent even if a holder panicked: every update is one insert.
        self.paid_off.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long `client` must wait before another failure fits, or `None` if one fits now.
    fn blocked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        let paid_off = *self.map().get(&client)?;
        let wait = paid_off.checked_duration_since(now + self.tolerance)?;
        (!wait.is_zero()).then_some(wait)
    }

    /// Records one failure of `client`.
    fn spend(&self, client: IpAddr, now: Instant) {
        let mut map = self.map();
        let paid_off = map.get(&client).map_or(now, |at| (*at).max(now));
        map.insert(client, paid_off + self.interval);
    }

    /// Forgets clients whose debt is paid off.
    fn prune(&self, now: Instant) {
        let mut map = self.map();
        map.retain(|_, paid_off| *paid_off > now);
        map.shrink_to_fit();
    }
}

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::num::NonZeroU32;

    fn limit(count: u32, secs: u64) -> RateLimit {
        RateLimit {
            count: NonZeroU32::new(count).unwrap(),
            period: Duration::from_secs(secs),
        }
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn per_ip_limit_allows_a_burst_then_refuses_with_a_retry_hint() {
        let metrics = Metrics::new();
        let limits = RateLimits::new(Some(limit(3, 60)), None, Vec::new());
        let headers = HeaderMap::new();
        let client = |ip| limits.client_ip(peer(ip).ip(), &headers);
        for _ in 0..3 {
            limits.check_ip(client("192.0.2.1"), &metrics).unwrap();
        }
        let refused = limits.check_ip(client("192.0.2.1"), &metrics).unwrap_err();
        assert_eq!(refused.errcode, "M_LIMIT_EXCEEDED");
        assert_eq!(refused.status, http::StatusCode::TOO_MANY_REQUESTS);
        // One request per 20 s comes back: the wait is at most that.
        let wait = refused.retry_after.unwrap();
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        // Another client is not affected.
        limits.check_ip(client("192.0.2.2"), &metrics).unwrap();
        assert!(
            metrics
                .encode()
                .contains(r#"matrixrtc_auth_rate_limited_total{limit="ip"} 1"#)
        );
    }

    #[test]
    fn per_homeserver_limit() {
        let metrics = Metrics::new();
        let limits = RateLimits::new(None, Some(limit(1, 1)), Vec::new());
        limits.check_homeserver("a.example", &metrics).unwrap();
        assert!(limits.check_homeserver("a.example", &metrics).is_err());
        limits.check_homeserver("b.example", &metrics).unwrap();
        // The per-IP limit is off.
        for _ in 0..100 {
            limits.check_ip(peer("192.0.2.1").ip(), &metrics).unwrap();
        }
        limits.prune();
    }

    #[test]
    fn failures_are_checked_without_spending_and_spent_per_client() {
        let metrics = Metrics::new();
        let limits = RateLimits::new(None, Some(limit(2, 3600)), Vec::new());
        let attacker = peer("203.0.113.66").ip();
        let neighbour = peer("203.0.113.67").ip();
        // Checking spends nothing.
        for _ in 0..10 {
            limits.check_failures(attacker, &metrics).unwrap();
        }
        limits.record_failure(attacker);
        limits.check_failures(attacker, &metrics).unwrap();
        limits.record_failure(attacker);
        let refused = limits.check_failures(attacker, &metrics).unwrap_err();
        assert_eq!(refused.errcode, "M_LIMIT_EXCEEDED");
        // One failure per 30 min comes back.
        let wait = refused.retry_after.unwrap();
        assert!(
            wait > Duration::from_secs(29 * 60) && wait <= Duration::from_secs(30 * 60),
            "{wait:?}"
        );
        limits.check_failures(neighbour, &metrics).unwrap();
        // Failures do not touch the homeserver's budget.
        limits.check_homeserver("a.example", &metrics).unwrap();
        assert!(
            metrics
                .encode()
                .contains(r#"matrixrtc_auth_rate_limited_total{limit="failed_verification"} 1"#)
        );
    }

    #[test]
    fn failure_budget_refills_over_time_and_is_pruned() {
        let budget = FailureBudget::new(limit(3, 60));
        let client = peer("192.0.2.1").ip();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(budget.blocked(client, start), None);
            budget.spend(client, start);
        }
        assert_eq!(budget.blocked(client, start), Some(Duration::from_secs(20)));
        // One interval later one failure fits again, and only one.
        let later = start + Duration::from_secs(20);
        assert_eq!(budget.blocked(client, later), None);
        budget.spend(client, later);
        assert_eq!(budget.blocked(client, later), Some(Duration::from_secs(20)));
        // Pruning keeps clients in debt and forgets those whose debt is paid off.
        budget.prune(later);
        assert_eq!(budget.map().len(), 1);
        budget.prune(later + Duration::from_secs(60));
        assert!(budget.map().is_empty());
        assert_eq!(
            budget.blocked(client, later + Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn disabled_limits_never_refuse() {
        let metrics = Metrics::new();
        let limits = RateLimits::new(None, None, Vec::new());
        for _ in 0..1000 {
            limits.check_homeserver("a", &metrics).unwrap();
            limits.check_ip(peer("192.0.2.1").ip(), &metrics).unwrap();
            limits.record_failure(peer("192.0.2.1").ip());
            limits
                .check_failures(peer("192.0.2.1").ip(), &metrics)
                .unwrap();
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let limits = RateLimits::new(
            None,
            None,
            vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.1.1.1"),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Untrusted peer: the header is ignored.
        assert_eq!(limits.client_ip(ip("192.0.2.1"), &headers), ip("192.0.2.1"));
        // Trusted peer: right-most untrusted hop.
        assert_eq!(
            limits.client_ip(ip("10.0.0.2"), &headers),
            ip("198.51.100.7")
        );
        // IPv4-mapped IPv6 peers count as their IPv4 address.
        assert_eq!(
            limits.client_ip(ip("::ffff:10.0.0.2"), &headers),
            ip("198.51.100.7")
        );
        // All hops trusted: the left-most.
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.9.9.9,10.1.1.1"),
        );
        assert_eq!(limits.client_ip(ip("::1"), &headers), ip("10.9.9.9"));
        // Ports and several header lines.
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::1]:443"),
        );
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.5:1234"),
        );
        assert_eq!(
            limits.client_ip(ip("10.0.0.2"), &headers),
            ip("203.0.113.5")
        );
        // Garbage stops the walk at the last readable hop.
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.5, nonsense"),
        );
        assert_eq!(limits.client_ip(ip("10.0.0.2"), &headers), ip("10.0.0.2"));
        // No header: the proxy itself.
        assert_eq!(
            limits.client_ip(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[tokio::test]
    async fn body_limit() {
        let ok = read_body(&HeaderMap::new(), Body::from(vec![b'x'; MAX_BODY_BYTES]))
            .await
            .unwrap();
        assert_eq!(ok.len(), MAX_BODY_BYTES);
        let too_big = read_body(
            &HeaderMap::new(),
            Body::from(vec![b'x'; MAX_BODY_BYTES + 1]),
        )
        .await;
        assert_eq!(too_big.unwrap_err(), MatrixError::too_large());
        // A declared length over the limit is refused before reading.
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(MAX_BODY_BYTES + 1),
        );
        assert_eq!(
            read_body(&headers, Body::empty()).await.unwrap_err(),
            MatrixError::too_large()
        );
    }

    #[tokio::test]
    async fn the_body_read_keeps_nothing_of_the_connections_read_buffer() {
        // hyper hands the body over as a slice of its read buffer, as `buffer.slice` does here.
        let buffer =
            Bytes::from(b"POST /get_token HTTP/1.1\r\n\r\n{\"room_id\":\"!r:hs\"}".to_vec());
        let start = buffer.iter().position(|&byte| byte == b'{').unwrap();
        let body = buffer.slice(start..);
        let read = read_body(&HeaderMap::new(), Body::from(body))
            .await
            .unwrap();
        assert_eq!(&read[..], b"{\"room_id\":\"!r:hs\"}");
        assert!(read.is_unique(), "the body still shares the read buffer");
        assert!(buffer.is_unique(), "the read buffer is still shared");
    }
}
