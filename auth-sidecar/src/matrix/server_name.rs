//! Matrix server names (Matrix spec appendix "Server Name"): `host[:port]` where host is an IPv4 literal,
//! a bracketed IPv6 literal or a DNS name.
//!
//! Parsing follows the spec grammar, and then the service's one host classification
//! ([`crate::outbound::host`], the URL parser every connector uses) must agree with it. A host the grammar
//! calls a DNS name but the URL parser reads as an address (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`,
//! `127.0.0.1.`) is refused: it would be checked as a name and dialled as an address. So is a host the URL
//! parser refuses (`999.1.1.1`, `example.123`), which gomatrixserverlib would look up in DNS and not find.
//! A port must be 1–65535: port 0 matches the grammar but can never be reached. Each of these answers 401
//! upstream either way.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::outbound::host::{self, HostKind};

/// Longest DNS name the grammar allows (`dns-name = 1*255dns-char`).
const MAX_DNS_NAME_LEN: usize = 255;
/// Bounds of `IPv6address = 2*45IPv6char`.
const IPV6_LITERAL_LEN: std::ops::RangeInclusive<usize> = 2..=45;

/// The host part of a server name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    /// An IPv4 literal or a bracketed IPv6 literal.
    Ip(IpAddr),
    /// A DNS name, as written.
    Dns(&'a str),
}

/// A validated server name, borrowing the text it was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerName<'a> {
    raw: &'a str,
    host: Host<'a>,
    port: Option<u16>,
}

/// Why a string is not a server name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServerNameError {
    #[error("the server name is empty")]
    Empty,
    #[error("the port is not a number from 1 to 65535")]
    BadPort,
    #[error("the bracketed IPv6 literal is invalid")]
    BadIpv6,
    #[error("the host is neither an IP literal nor a DNS name")]
    BadHost,
    #[error("the host is not a dotted-quad IPv4 literal but URL parsers read it as an IP address")]
    AmbiguousHost,
}

impl<'a> ServerName<'a> {
    /// Parses and validates `raw`.
    pub fn parse(raw: &'a str) -> Result<Self, ServerNameError> {
        if raw.is_empty() {
            return Err(ServerNameError::Empty);
        }
        let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
            let (literal, after) = rest.split_once(']').ok_or(ServerNameError::BadIpv6)?;
            let port = match after {
                "" => None,
                _ => Some(parse_port(
                    after.strip_prefix(':').ok_or(ServerNameError::BadPort)?,
                )?),
            };
            (Host::Ip(IpAddr::V6(parse_ipv6(literal)?)), port)
        } else {
            let (host, port) = match raw.split_once(':') {
                // A second colon means an unbracketed IPv6 literal, which the grammar does not allow.
                Some((host, port)) => (host, Some(parse_port(port)?)),
                None => (raw, None),
            };
            (parse_host(host)?, port)
        };
        Ok(Self { raw, host, port })
    }

    /// The server name exactly as given.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The host part.
    pub fn host(&self) -> Host<'a> {
        self.host
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
}

impl fmt::Display for ServerName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw)
    }
}

fn parse_port(text: &str) -> Result<u16, ServerNameError> {
    // `port = 1*5DIGIT`; `u16::from_str` alone would also accept a leading `+`.
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ServerNameError::BadPort);
    }
    match text.parse::<u16>() {
        Ok(0) | Err(_) => Err(ServerNameError::BadPort),
        Ok(port) => Ok(port),
    }
}

fn parse_ipv6(literal: &str) -> Result<Ipv6Addr, ServerNameError> {
    let chars_ok = literal
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    if !IPV6_LITERAL_LEN.contains(&literal.len()) || !chars_ok {
        return Err(ServerNameError::BadIpv6);
    }
    let ip: Ipv6Addr = literal.parse().map_err(|_| ServerNameError::BadIpv6)?;
    // The connectors' reading must be the same address.
    match host::classify(&format!("[{literal}]")) {
        Some(HostKind::Ip(IpAddr::V6(read))) if read == ip => Ok(ip),
        _ => Err(ServerNameError::BadIpv6),
    }
}

fn parse_host(host: &str) -> Result<Host<'_>, ServerNameError> {
    if host.is_empty() {
        return Err(ServerNameError::BadHost);
    }
    let grammar = match host.parse::<Ipv4Addr>() {
        Ok(ip) => Host::Ip(IpAddr::V4(ip)),
        Err(_) => {
            let dns_chars = host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if host.len() > MAX_DNS_NAME_LEN || !dns_chars {
                return Err(ServerNameError::BadHost);
            }
            Host::Dns(host)
        }
    };
    // The grammar's reading stands only where the connectors read the host the same way.
    match (grammar, host::classify(host)) {
        (Host::Ip(ip), Some(HostKind::Ip(read))) if ip == read => Ok(grammar),
        (Host::Dns(name), Some(HostKind::Domain(read))) if name.eq_ignore_ascii_case(&read) => {
            Ok(grammar)
        }
        (Host::Dns(_), Some(HostKind::Ip(_))) => Err(ServerNameError::AmbiguousHost),
        _ => Err(ServerNameError::BadHost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_host_form_with_and_without_port() {
        let cases: [(&str, Host<'_>, Option<u16>); 8] = [
            ("example.com", Host::Dns("example.com"), None),
            ("example.com:8448", Host::Dns("example.com"), Some(8448)),
            (
                "Matrix-1.Example.ORG.",
                Host::Dns("Matrix-1.Example.ORG."),
                None,
            ),
            ("localhost:1", Host::Dns("localhost"), Some(1)),
            ("1.2.3.4", Host::Ip("1.2.3.4".parse().unwrap()), None),
            (
                "1.2.3.4:65535",
                Host::Ip("1.2.3.4".parse().unwrap()),
                Some(65535),
            ),
            ("[::1]", Host::Ip("::1".parse().unwrap()), None),
            (
                "[2001:db8::ffff:1.2.3.4]:443",
                Host::Ip("2001:db8::ffff:1.2.3.4".parse().unwrap()),
                Some(443),
            ),
        ];
        for (raw, host, port) in cases {
            let name = ServerName::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!((name.host(), name.port(), name.as_str()), (host, port, raw));
        }
    }

    #[test]
    fn hosts_a_url_parser_reads_otherwise_than_the_grammar_are_refused() {
        for ambiguous in [
            "2130706433",
            "2130706433:8448",
            "0x7f000001",
            "0177.0.0.1",
            "0x7f.0.0.1",
            "127.1",
            "1.2.3",
            "127.0.0.1.",
            "127.0.0.01",
            "10.0.0.1.:443",
        ] {
            assert_eq!(
                ServerName::parse(ambiguous),
                Err(ServerNameError::AmbiguousHost),
                "{ambiguous}"
            );
        }
        for unreadable in ["999.1.1.1", "example.123", "1.2.3.4.5"] {
            assert_eq!(
                ServerName::parse(unreadable),
                Err(ServerNameError::BadHost),
                "{unreadable}"
            );
        }
    }

    #[test]
    fn refuses_what_the_grammar_does_not_allow() {
        let cases = [
            ("", ServerNameError::Empty),
            (":8448", ServerNameError::BadHost),
            ("example.com:", ServerNameError::BadPort),
            ("example.com:0", ServerNameError::BadPort),
            ("example.com:65536", ServerNameError::BadPort),
            ("example.com:123456", ServerNameError::BadPort),
            ("example.com:+80", ServerNameError::BadPort),
            ("example.com:80:80", ServerNameError::BadPort),
            ("::1", ServerNameError::BadPort),
            ("example.com/path", ServerNameError::BadHost),
            ("exa mple.com", ServerNameError::BadHost),
            ("user@example.com", ServerNameError::BadHost),
            ("exämple.com", ServerNameError::BadHost),
            ("example_com", ServerNameError::BadHost),
            ("[::1", ServerNameError::BadIpv6),
            ("[]", ServerNameError::BadIpv6),
            ("[1.2.3.4]", ServerNameError::BadIpv6),
            ("[fe80::1%eth0]", ServerNameError::BadIpv6),
            ("[::1]8448", ServerNameError::BadPort),
            ("[::1]:", ServerNameError::BadPort),
        ];
        for (raw, error) in cases {
            assert_eq!(ServerName::parse(raw), Err(error), "{raw:?}");
        }
        let too_long = "a".repeat(256);
        assert_eq!(ServerName::parse(&too_long), Err(ServerNameError::BadHost));
        assert!(ServerName::parse(&too_long[..255]).is_ok());
    }
}
