//! The one host classification of the service: is a host an IP address, and which, or a DNS name?
//!
//! Every layer that turns a host into a connection reads it the WHATWG way: the `url` crate, and through
//! it reqwest and hyper, take `2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1` and `127.0.0.1.` all for
//! 127.0.0.1. A stricter reading (the Matrix grammar's dotted quad, or `Ipv4Addr::from_str`) calls them DNS
//! names, and a guard that trusts the stricter reading lets the client dial an address it never checked.
//! So server names, URLs and redirect targets are all classified here, with the URL parser the
//! connectors use, and a host is an address exactly when that parser says so.

use std::net::IpAddr;

use url::Url;

/// What a host is, as the URL parser (and so every connector) reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// An IP address, however it was spelled.
    Ip(IpAddr),
    /// A DNS name in canonical form (ASCII, lower case).
    Domain(String),
}

/// Classifies `host` (an IPv6 literal in brackets), or `None` if the URL parser refuses it as a host.
pub fn classify(host: &str) -> Option<HostKind> {
    match url::Host::parse(host).ok()? {
        url::Host::Ipv4(ip) => Some(HostKind::Ip(IpAddr::V4(ip))),
        url::Host::Ipv6(ip) => Some(HostKind::Ip(IpAddr::V6(ip))),
        url::Host::Domain(name) => Some(HostKind::Domain(name)),
    }
}

/// The address a URL's host is, if it is an IP literal: the address a connector dials without asking
/// any resolver. hyper parses the host text of the URL reqwest hands it with `IpAddr::from_str`, which
/// reads the URL parser's serialisation (dotted quad, bracketed IPv6) as the same address.
pub fn url_address(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ipv4_spelling_a_url_parser_accepts_is_an_address() {
        let loopback = HostKind::Ip("127.0.0.1".parse().unwrap());
        for spelling in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "0X7F000001",
            "017700000001",
            "0177.0.0.1",
            "0x7f.0.0.1",
            "127.1",
            "127.0.1",
            "127.0.0.1.",
            "2130706433.",
            "127.0.0.01",
        ] {
            assert_eq!(classify(spelling), Some(loopback.clone()), "{spelling}");
        }
        assert_eq!(
            classify("[::ffff:127.0.0.1]"),
            Some(HostKind::Ip("::ffff:127.0.0.1".parse().unwrap()))
        );
    }

    #[test]
    fn names_are_canonical_and_non_hosts_are_refused() {
        assert_eq!(
            classify("Matrix.Example.ORG"),
            Some(HostKind::Domain("matrix.example.org".into()))
        );
        for refused in [
            "",
            "999.1.1.1",
            "1.2.3.4.5",
            "example.123",
            "a b",
            "[::1",
            "::1",
        ] {
            assert_eq!(classify(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn url_address_is_the_literal_a_connector_dials() {
        for (url, ip) in [
            ("https://0x7f.1/x", Some("127.0.0.1")),
            ("https://[::1]:8448/", Some("::1")),
            ("https://user@10.1.2.3/", Some("10.1.2.3")),
            ("https://example.org/", None),
        ] {
            let url = Url::parse(url).unwrap();
            assert_eq!(url_address(&url), ip.map(|ip| ip.parse().unwrap()));
        }
    }
}
