//! Property tests of the SSRF guard over generated host spellings: every form some layer could read as an
//! address (IPv4 in decimal, hexadecimal, octal, shortened, trailing-dot and mixed forms; IPv6 with
//! embedded IPv4, zones, brackets or none), with and without a port, and with the characters that make
//! parsers disagree (percent-encoding, userinfo `@`, backslash, `#`, `?`, `/`, NUL, whitespace).
//!
//! Whatever the spelling, either the service refuses it, or the address a connector would dial for it is
//! the address the guard judged, and the guard refuses every denied range. "Denied" is defined here from
//! the standard library's own predicates and the RFC ranges, not from the guard's tables.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use url::Url;

use super::guard::Guard;
use super::server_name::{Host, ServerName};
use crate::outbound::host::url_address;
use crate::telemetry::Metrics;

/// Whether an IPv4 address is outside the public internet (the reference list for these tests).
fn denied_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || a >= 240
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (18..20).contains(&b))
        || (a == 192 && b == 88 && ip.octets()[2] == 99)
}

/// Whether an IPv6 address is outside the public internet, judging IPv4-carrying forms by their IPv4.
fn denied(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => denied_v4(v4),
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let low32 = Ipv4Addr::from(u128::from(v6) as u32);
            if let Some(v4) = v6.to_ipv4_mapped() {
                return denied_v4(v4);
            }
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return denied_v4(low32);
            }
            if segments[0] == 0x2002 {
                return denied_v4(Ipv4Addr::from(u128::from(v6).wrapping_shr(80) as u32));
            }
            if segments[..6] == [0; 6] && u128::from(v6) > 1 {
                // IPv4-compatible (deprecated) `::a.b.c.d`.
                return denied_v4(low32);
            }
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local
                || (segments[0] & 0xffc0) == 0xfe80 // link-local
                || (segments[0] & 0xffc0) == 0xfec0 // site-local
                || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
                || (segments[0] == 0x3fff && segments[1] < 0x1000) // documentation
                || segments[..4] == [0x100, 0, 0, 0] // discard-only
                || segments[..3] == [0x64, 0xff9b, 1] // local-use NAT64
        }
    }
}

/// IPv4 addresses, most of them in denied ranges.
fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    let in_net = |net: [u8; 4], prefix: u32| {
        any::<u32>().prop_map(move |bits| {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            Ipv4Addr::from((u32::from_be_bytes(net) & mask) | (bits & !mask))
        })
    };
    prop_oneof![
        in_net([127, 0, 0, 0], 8),
        in_net([10, 0, 0, 0], 8),
        in_net([172, 16, 0, 0], 12),
        in_net([192, 168, 0, 0], 16),
        in_net([169, 254, 0, 0], 16),
        in_net([100, 64, 0, 0], 10),
        in_net([0, 0, 0, 0], 8),
        in_net([224, 0, 0, 0], 3),
        in_net([192, 0, 2, 0], 24),
        Just(Ipv4Addr::BROADCAST),
        any::<u32>().prop_map(Ipv4Addr::from),
    ]
}

/// The ways a URL parser (WHATWG) lets an IPv4 address be written.
fn ipv4_spelling() -> impl Strategy<Value = String> {
    let radix = |part: u32, choice: u8| match choice % 3 {
        0 => part.to_string(),
        1 => format!("{part:#x}"),
        _ => format!("0{part:o}"),
    };
    (ipv4(), 0u8..6, any::<[u8; 4]>(), any::<bool>()).prop_map(
        move |(ip, form, radices, trailing_dot)| {
            let [a, b, c, d] = ip.octets().map(u32::from);
            let n = u32::from(ip);
            let text = match form {
                0 => format!("{a}.{b}.{c}.{d}"),
                1 => radix(n, radices[0]),
                2 => format!(
                    "{}.{}",
                    radix(a, radices[0]),
                    radix(n & 0xff_ffff, radices[1])
                ),
                3 => format!(
                    "{}.{}.{}",
                    radix(a, radices[0]),
                    radix(b, radices[1]),
                    radix(n & 0xffff, radices[2])
                ),
                4 => [a, b, c, d]
                    .iter()
                    .zip(radices)
                    .map(|(part, choice)| radix(*part, choice))
                    .collect::<Vec<_>>()
                    .join("."),
                _ => format!("{a}.{b}.{c}.{:03}", d),
            };
            if trailing_dot {
                format!("{text}.")
            } else {
                text
            }
        },
    )
}

/// IPv6 spellings, bracketed or not, with IPv4 embedded in several ways and sometimes a zone.
fn ipv6_spelling() -> impl Strategy<Value = String> {
    let address = prop_oneof![
        ipv4().prop_map(|v4| format!("::ffff:{v4}")),
        ipv4().prop_map(|v4| {
            let n = u32::from(v4);
            format!("::ffff:{:x}:{:x}", n >> 16, n & 0xffff)
        }),
        ipv4().prop_map(|v4| format!("64:ff9b::{v4}")),
        ipv4().prop_map(|v4| {
            let n = u32::from(v4);
            format!("2002:{:x}:{:x}::1", n >> 16, n & 0xffff)
        }),
        Just("::1".to_owned()),
        Just("::".to_owned()),
        Just("0:0:0:0:0:0:0:1".to_owned()),
        Just("fe80::1".to_owned()),
        Just("fd00::1".to_owned()),
        Just("ff02::1".to_owned()),
        any::<[u16; 8]>().prop_map(|s| Ipv6Addr::from(s).to_string()),
    ];
    (address, 0u8..4).prop_map(|(address, form)| match form {
        0 => format!("[{address}]"),
        1 => address,
        2 => format!("[{address}%25eth0]"),
        _ => format!("[{address}%eth0]"),
    })
}

/// Host spellings with an optional port and the characters parsers disagree about.
fn host_spelling() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        3 => ipv4_spelling(),
        2 => ipv6_spelling(),
        1 => "[a-z0-9.-]{1,20}",
        1 => Just("localhost".to_owned()),
    ];
    let port = prop_oneof![
        Just(String::new()),
        (1u32..70_000).prop_map(|p| format!(":{p}")),
        Just(":0".to_owned()),
        Just(":".to_owned()),
    ];
    let special = prop_oneof![
        Just(""),
        Just("%"),
        Just("%2e"),
        Just("%31"),
        Just("@"),
        Just("\\"),
        Just("#"),
        Just("?"),
        Just("/"),
        Just("\0"),
        Just(" "),
        Just("\t"),
        Just("\n"),
        Just("x@"),
        Just("evil.example@"),
    ];
    (host, port, special, any::<prop::sample::Index>()).prop_map(|(host, port, special, at)| {
        let text = format!("{host}{port}");
        // Insert the special text at a character boundary.
        let boundaries: Vec<usize> = (0..=text.len())
            .filter(|i| text.is_char_boundary(*i))
            .collect();
        let at = boundaries[at.index(boundaries.len())];
        format!("{}{special}{}", &text[..at], &text[at..])
    })
}

/// The address a reqwest/hyper connector dials for `url` without a resolver: hyper strips the brackets
/// of the URL's host text and parses it with `IpAddr::from_str`.
fn hyper_literal(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}

proptest! {
    // No regression files: a failure prints its minimal spelling, which then belongs in a unit test.
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// A server name is refused, or it is an IP the guard judges as the reference does, or it is a name
    /// that no layer reads as an address (so it reaches the connector only through the guarded resolver).
    #[test]
    fn a_server_name_never_reaches_a_denied_address_unguarded(spelling in host_spelling()) {
        let guard = Guard::default();
        let Ok(name) = ServerName::parse(&spelling) else {
            return Ok(());
        };
        let well_known_client = Url::parse(&format!("https://{name}/.well-known/matrix/client"));
        match name.host() {
            Host::Ip(ip) => {
                // Federation dials exactly this address; the guard must judge it as the reference does.
                prop_assert_eq!(guard.check(ip).is_err(), denied(ip), "{}", ip);
                // The client-server API discovery URL dials the same address.
                let url = well_known_client.expect("a valid server name makes a valid URL");
                prop_assert_eq!(url_address(&url), Some(ip));
            }
            Host::Dns(host) => {
                prop_assert!(host.parse::<IpAddr>().is_err(), "{}", host);
                let server = Url::parse(&format!("https://{host}/.well-known/matrix/server"))
                    .expect("a DNS name makes a valid URL");
                prop_assert_eq!(url_address(&server), None, "{}", server);
                prop_assert_eq!(hyper_literal(&server), None, "{}", server);
                let client = well_known_client.expect("a valid server name makes a valid URL");
                prop_assert_eq!(url_address(&client), None, "{}", client);
            }
        }
    }

    /// A spelling that the URL layer reads as an address is refused as a server name or classified as that
    /// very address: it can never pass as a DNS name.
    #[test]
    fn what_a_url_reads_as_an_address_is_never_a_dns_name(spelling in host_spelling()) {
        let Ok(url) = Url::parse(&format!("https://{spelling}/")) else {
            return Ok(());
        };
        let Some(ip) = url_address(&url) else {
            return Ok(());
        };
        if let Ok(name) = ServerName::parse(&spelling) {
            prop_assert_eq!(name.host(), Host::Ip(ip), "{:?}", spelling);
        }
    }

    /// For any URL a guarded client is handed (a discovered base URL, a redirect target), the literal the
    /// connector dials is the literal the guard checks, and a denied one is refused.
    #[test]
    fn a_guarded_url_is_checked_at_the_address_the_connector_dials(spelling in host_spelling()) {
        let Ok(url) = Url::parse(&format!("https://{spelling}/x")) else {
            return Ok(());
        };
        let dialled = hyper_literal(&url);
        prop_assert_eq!(dialled, url_address(&url), "{}", url);
        let refused = Guard::default().check_url(&url, &Metrics::new()).is_err();
        prop_assert_eq!(refused, dialled.is_some_and(denied), "{}", url);
    }
}
