//! The SSRF guard: which addresses a client-chosen homeserver may make us connect to.
//!
//! `matrix_server_name` comes from the request body, so without a guard anyone could make the service
//! probe its own network (cluster services, the cloud metadata endpoint, loopback admin ports). Like
//! Synapse's default `federation_ip_range_blacklist`, addresses in non-public ranges are refused for every
//! homeserver that is not full-access; operators re-allow ranges with `LIVEKIT_OUTBOUND_IP_ALLOWLIST`.
//! IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by that address.
//!
//! The guard is applied to every address actually connected to: IP literals, `.well-known` and SRV
//! targets, DNS answers and redirects. Whether a host is a literal is decided by the service's one host
//! classification ([`crate::outbound::host`]), the URL parser the connectors use. Federation connections
//! check each socket address just before dialling it. reqwest dials an IP-literal URL without a resolver,
//! so the only way to use a guarded reqwest client is [`GuardedClient`], which checks the literal of
//! every URL it is given and of each redirect ([`Guard::check_url`]), and filters every DNS answer
//! ([`GuardedResolver`]): between them they cover every address reqwest can dial.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::outbound::dns::Dns;
use crate::outbound::host;
use crate::telemetry::Metrics;

/// IPv4 ranges refused by default: (network, prefix length, what it is).
const BLOCKED_V4: [(Ipv4Addr, u8, &str); 15] = [
    (
        Ipv4Addr::new(0, 0, 0, 0),
        8,
        "\"this network\" (incl. unspecified)",
    ),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private"),
    (Ipv4Addr::new(100, 64, 0, 0), 10, "carrier-grade NAT"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local (incl. cloud metadata)",
    ),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private"),
    (Ipv4Addr::new(192, 0, 0, 0), 24, "IETF protocol assignments"),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation"),
    (Ipv4Addr::new(192, 88, 99, 0), 24, "6to4 relay anycast"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking"),
    (Ipv4Addr::new(198, 51, 100, 0), 24, "documentation"),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "documentation"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved (incl. broadcast)"),
];

/// IPv6 ranges refused by default. The IPv4-carrying prefixes are handled by [`embedded_v4`] instead.
const BLOCKED_V6: [(Ipv6Addr, u8, &str); 10] = [
    (Ipv6Addr::UNSPECIFIED, 128, "unspecified"),
    (Ipv6Addr::LOCALHOST, 128, "loopback"),
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use NAT64",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique-local",
    ),
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10, "link-local"),
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10, "site-local"),
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8, "multicast"),
];

/// Why the guard refused an address. Its text is what the logs say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{addr} is a {what} address ({network}/{prefix}); allow it with LIVEKIT_OUTBOUND_IP_ALLOWLIST"
)]
pub struct Refusal {
    /// The address that was refused.
    pub addr: IpAddr,
    /// The blocked range it falls into (for IPv4-carrying IPv6 forms, the IPv4 range).
    pub network: IpAddr,
    /// Prefix length of that range.
    pub prefix: u8,
    /// What the range is.
    pub what: &'static str,
}

/// Decides which addresses non-full-access homeservers may make us contact.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    allowed: Vec<IpNet>,
}

impl Guard {
    /// A guard that re-allows `allowed` on top of the public internet.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// `Ok` if `addr` may be contacted.
    pub fn check(&self, addr: IpAddr) -> Result<(), Refusal> {
        let v4 = match addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => embedded_v4(v6),
        };
        let allowed = |ip: IpAddr| self.allowed.iter().any(|net| net.contains(&ip));
        if allowed(addr) || v4.is_some_and(|v4| allowed(IpAddr::V4(v4))) {
            return Ok(());
        }
        let blocked = match (addr, v4) {
            (_, Some(v4)) => blocked_v4(v4),
            (IpAddr::V6(v6), None) => blocked_v6(v6),
            // `embedded_v4` always returns the address itself for IPv4.
            (IpAddr::V4(_), None) => None,
        };
        match blocked {
            None => Ok(()),
            Some((network, prefix, what)) => Err(Refusal {
                addr,
                network,
                prefix,
                what,
            }),
        }
    }

    /// `Ok` unless `url`'s host is an IP literal the guard refuses (a refusal is counted). Host names are
    /// checked when they resolve, by [`GuardedResolver`].
    pub fn check_url(&self, url: &url::Url, metrics: &Metrics) -> Result<(), Refusal> {
        match host::url_address(url) {
            None => Ok(()),
            Some(ip) => self.check(ip).inspect_err(|refusal| {
                metrics.outbound_refused();
                tracing::debug!(%refusal, "outbound address refused");
            }),
        }
    }

    /// Keeps the addresses that may be contacted. Refusals are counted and logged; if every address was
    /// refused, the first refusal is returned so that the caller's error says why.
    pub fn filter(
        &self,
        addrs: impl IntoIterator<Item = IpAddr>,
        metrics: &Metrics,
    ) -> Result<Vec<IpAddr>, Refusal> {
        let mut kept = Vec::new();
        let mut first_refusal = None;
        for addr in addrs {
            match self.check(addr) {
                Ok(()) => kept.push(addr),
                Err(refusal) => {
                    metrics.outbound_refused();
                    tracing::debug!(%refusal, "outbound address refused");
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        match first_refusal {
            Some(refusal) if kept.is_empty() => Err(refusal),
            _ => Ok(kept),
        }
    }
}

/// The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(v6);
    let low32 = Ipv4Addr::from(bits as u32);
    if bits >> 32 == 0xffff {
        // ::ffff:a.b.c.d, IPv4-mapped.
        Some(low32)
    } else if bits >> 32 == 0 && bits > 1 {
        // ::a.b.c.d, IPv4-compatible (deprecated); `::` and `::1` are judged as IPv6.
        Some(low32)
    } else if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        // 64:ff9b::a.b.c.d, well-known NAT64 prefix.
        Some(low32)
    } else if bits >> 112 == 0x2002 {
        // 2002:AABB:CCDD::/48, 6to4.
        Some(Ipv4Addr::from((bits >> 80) as u32))
    } else {
        None
    }
}

fn blocked_v4(v4: Ipv4Addr) -> Option<(IpAddr, u8, &'static str)> {
    let bits = u32::from(v4);
    BLOCKED_V4
        .iter()
        .find(|(net, prefix, _)| {
            (bits ^ u32::from(*net)).checked_shr(32 - u32::from(*prefix)) == Some(0)
        })
        .map(|(net, prefix, what)| (IpAddr::V4(*net), *prefix, *what))
}

fn blocked_v6(v6: Ipv6Addr) -> Option<(IpAddr, u8, &'static str)> {
    let bits = u128::from(v6);
    BLOCKED_V6
        .iter()
        .find(|(net, prefix, _)| {
            (bits ^ u128::from(*net)).checked_shr(128 - u32::from(*prefix)) == Some(0)
        })
        .map(|(net, prefix, what)| (IpAddr::V6(*net), *prefix, *what))
}

/// A reqwest client for calls on behalf of non-full-access homeservers that cannot be used around the
/// guard: its resolver filters DNS answers, its redirect policy checks redirect targets, and the only way
/// to make a request checks the URL's literal host first.
pub(crate) struct GuardedClient {
    client: reqwest::Client,
    guard: Arc<Guard>,
    metrics: Arc<Metrics>,
}

impl GuardedClient {
    /// Finishes `builder` (timeouts, TLS, pool) with the guard's resolver and redirect policy.
    pub(crate) fn build(
        builder: reqwest::ClientBuilder,
        dns: Arc<dyn Dns>,
        guard: Arc<Guard>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let client = builder
            .redirect(redirect_policy(Some((
                Arc::clone(&guard),
                Arc::clone(&metrics),
            ))))
            .dns_resolver(Arc::new(GuardedResolver {
                dns,
                guard: Arc::clone(&guard),
                metrics: Arc::clone(&metrics),
            }))
            .build()?;
        Ok(Self {
            client,
            guard,
            metrics,
        })
    }

    /// `Ok` unless `url`'s host is a refused IP literal (counted).
    pub(crate) fn check_url(&self, url: &url::Url) -> Result<(), Refusal> {
        self.guard.check_url(url, &self.metrics)
    }

    /// A request to `url`, unless its host is a refused IP literal.
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        url: url::Url,
    ) -> Result<reqwest::RequestBuilder, Refusal> {
        self.guard.check_url(&url, &self.metrics)?;
        Ok(self.client.request(method, url))
    }
}

/// Redirects followed by a `.well-known` fetch or a delayed-event call.
pub(crate) const MAX_REDIRECTS: usize = 3;

/// Follows at most [`MAX_REDIRECTS`] redirects; with a guard, never to a refused IP literal (host names go
/// through the guarded resolver).
pub(crate) fn redirect_policy(
    guard: Option<(Arc<Guard>, Arc<Metrics>)>,
) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
        }
        if let Some((guard, metrics)) = &guard
            && let Err(refusal) = guard.check_url(attempt.url(), metrics)
        {
            return attempt.error(refusal);
        }
        attempt.follow()
    })
}

/// A reqwest DNS resolver that drops guarded addresses, for calls on behalf of non-full-access
/// homeservers. IP-literal URLs never reach a resolver; [`GuardedClient`] checks those.
struct GuardedResolver {
    dns: Arc<dyn Dns>,
    guard: Arc<Guard>,
    metrics: Arc<Metrics>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let dns = Arc::clone(&self.dns);
        let guard = Arc::clone(&self.guard);
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            let ips = dns.lookup_ip(name.as_str()).await?;
            let kept = guard.filter(ips, &metrics)?;
            // Port 0 lets reqwest fill in the URL's port.
            let addrs: reqwest::dns::Addrs =
                Box::new(kept.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn refused(guard: &Guard, text: &str) -> bool {
        guard.check(ip(text)).is_err()
    }

    #[test]
    fn refuses_every_non_public_ipv4_range_at_both_ends() {
        let guard = Guard::default();
        for addr in [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(refused(&guard, addr), "{addr} should be refused");
        }
    }

    #[test]
    fn lets_public_ipv4_through_including_the_neighbours_of_blocked_ranges() {
        let guard = Guard::default();
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.167.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert!(!refused(&guard, addr), "{addr} should be allowed");
        }
    }

    #[test]
    fn refuses_non_public_ipv6_and_lets_global_unicast_through() {
        let guard = Guard::default();
        for addr in [
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "64:ff9b:1::1",
        ] {
            assert!(refused(&guard, addr), "{addr} should be refused");
        }
        for addr in ["2606:4700:4700::1111", "2a00:1450:4001::1", "2001:db9::1"] {
            assert!(!refused(&guard, addr), "{addr} should be allowed");
        }
    }

    #[test]
    fn judges_ipv4_carrying_ipv6_forms_by_their_ipv4_address() {
        let guard = Guard::default();
        for addr in [
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::192.168.0.1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "::ffff:7f00:1",
            "::ffff:100.64.0.1",
            "::ffff:255.255.255.255",
            "::ffff:0.0.0.0",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::127.0.0.1",
            "2002:c0a8:101::1",
            "2002:ac10::1",
        ] {
            assert!(refused(&guard, addr), "{addr} should be refused");
        }
        for addr in [
            "::ffff:8.8.8.8",
            "::8.8.8.8",
            "64:ff9b::1.1.1.1",
            "2002:0808:0808::1",
        ] {
            assert!(!refused(&guard, addr), "{addr} should be allowed");
        }
        let refusal = guard.check(ip("::ffff:127.0.0.1")).unwrap_err();
        assert_eq!((refusal.network, refusal.prefix), (ip("127.0.0.0"), 8));
    }

    #[test]
    fn the_allowlist_reallows_exactly_its_ranges_in_every_form() {
        let guard = Guard::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ]);
        for addr in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "10.1.2.3",
            "::ffff:10.1.2.3",
            "fd00::5",
        ] {
            assert!(!refused(&guard, addr), "{addr} should be re-allowed");
        }
        for addr in [
            "10.2.0.1",
            "::1",
            "169.254.169.254",
            "fc00::1",
            "192.168.0.1",
        ] {
            assert!(refused(&guard, addr), "{addr} should stay refused");
        }
    }

    #[test]
    fn refusal_text_names_the_address_and_the_range() {
        let refusal = Guard::default().check(ip("169.254.169.254")).unwrap_err();
        let text = refusal.to_string();
        assert!(text.contains("169.254.169.254"), "{text}");
        assert!(text.contains("169.254.0.0/16"), "{text}");
        assert!(text.contains("link-local"), "{text}");
    }

    #[test]
    fn filter_keeps_allowed_addresses_counts_refusals_and_fails_only_when_nothing_is_left() {
        let metrics = Metrics::new();
        let guard = Guard::default();
        let kept = guard
            .filter([ip("10.0.0.1"), ip("8.8.8.8"), ip("::1")], &metrics)
            .unwrap();
        assert_eq!(kept, vec![ip("8.8.8.8")]);
        let refusal = guard.filter([ip("127.0.0.1")], &metrics).unwrap_err();
        assert_eq!(refusal.addr, ip("127.0.0.1"));
        assert!(
            metrics
                .encode()
                .contains("matrixrtc_auth_outbound_refused_total 3"),
            "{}",
            metrics.encode()
        );
    }
}
