//! Unit tests of server discovery against fake DNS and loopback `.well-known` servers.

use std::time::UNIX_EPOCH;

use http::StatusCode;

use super::*;
use crate::matrix::guard::MAX_REDIRECTS;
use crate::matrix::test_support::{Answer, FakeDns, Seen, TestServer, bounded, outbound, settings};
use crate::outbound::OutboundSettings;

fn new_discovery(
    dns: FakeDns,
    settings: &OutboundSettings,
) -> (Discovery, Arc<FakeDns>, Arc<Metrics>) {
    let dns = Arc::new(dns);
    let metrics = Arc::new(Metrics::new());
    let guard = Arc::new(Guard::new(settings.allowed_ranges.clone()));
    let discovery = Discovery::new(
        &outbound(settings, Arc::clone(&dns)),
        guard,
        Arc::clone(&metrics),
    )
    .unwrap();
    (discovery, dns, metrics)
}

fn name(raw: &str) -> ServerName<'_> {
    ServerName::parse(raw).unwrap()
}

fn direct(host: TargetHost, port: u16) -> Destination {
    Destination::Direct(Target { host, port })
}

fn srv(name: &str) -> Destination {
    Destination::Srv {
        name: name.to_owned(),
    }
}

/// Asserts that `route` expires `ttl` from now, give or take the test's own run time.
fn assert_ttl(route: &Route, ttl: Duration) {
    let left = route.expires().saturating_duration_since(Instant::now());
    assert!(
        left <= ttl && left + Duration::from_secs(30) > ttl,
        "expires in {left:?}, wanted {ttl:?}"
    );
}

/// A `.well-known` server delegating `hs.test` as `answer` says, and discovery pointed at it.
async fn delegating(
    answer: impl Fn(&Seen) -> Answer + Send + Sync + 'static,
    settings: &OutboundSettings,
) -> (TestServer, Discovery, Arc<Metrics>) {
    let server = TestServer::start(answer).await;
    let (mut discovery, _, metrics) =
        new_discovery(FakeDns::default().ip("hs.test", "127.0.0.1"), settings);
    discovery.set_well_known_port(server.port());
    (server, discovery, metrics)
}

#[tokio::test]
async fn ip_literals_and_explicit_ports_need_no_lookup() {
    bounded(async {
        let (discovery, dns, _) = new_discovery(FakeDns::default(), &settings());
        let cases = [
            (
                "1.2.3.4",
                direct(TargetHost::Ip("1.2.3.4".parse().unwrap()), 8448),
                "1.2.3.4",
            ),
            (
                "[2001:db8::1]:8000",
                direct(TargetHost::Ip("2001:db8::1".parse().unwrap()), 8000),
                "2001:db8::1",
            ),
            (
                "hs.test:8080",
                direct(TargetHost::Name("hs.test".into()), 8080),
                "hs.test",
            ),
        ];
        for (raw, destination, tls_name) in cases {
            let route = discovery.resolve(&name(raw), false).await.unwrap();
            assert_eq!(route.destination(), &destination, "{raw}");
            assert_eq!(
                route.host_header(),
                raw,
                "the Host header is the server name"
            );
            assert_eq!(route.tls_name().to_str(), tls_name, "{raw}");
            assert_ttl(&route, DEFAULT_TTL);
        }
        assert_eq!(dns.queries(), Vec::<String>::new());
    })
    .await;
}

#[tokio::test]
async fn srv_targets_come_by_priority_then_weight() {
    bounded(async {
        let dns = FakeDns::default().srv(
            "_matrix-fed._tcp.hs.test",
            &[
                (10, 5, 1001, "c.test"),
                (0, 1, 1002, "b.test"),
                (0, 50, 1003, "a.test"),
                (10, 60, 1004, "d.test"),
            ],
        );
        let (discovery, dns, _) = new_discovery(dns, &settings());
        let targets = discovery.targets(&srv("hs.test")).await.unwrap();
        let order: Vec<(TargetHost, u16)> = targets.into_iter().map(|t| (t.host, t.port)).collect();
        let expected = [
            ("a.test", 1003),
            ("b.test", 1002),
            ("d.test", 1004),
            ("c.test", 1001),
        ]
        .map(|(host, port)| (TargetHost::Name(host.into()), port));
        assert_eq!(order, expected);
        assert_eq!(
            dns.queries(),
            ["SRV _matrix-fed._tcp.hs.test"],
            "no deprecated lookup"
        );
    })
    .await;
}

#[tokio::test]
async fn the_deprecated_srv_service_is_asked_only_when_the_current_one_has_none() {
    bounded(async {
        let dns = FakeDns::default().srv("_matrix._tcp.hs.test", &[(0, 0, 4443, "old.test")]);
        let (discovery, dns, _) = new_discovery(dns, &settings());
        let targets = discovery.targets(&srv("hs.test")).await.unwrap();
        assert_eq!(
            targets,
            [Target {
                host: TargetHost::Name("old.test".into()),
                port: 4443
            }]
        );
        assert_eq!(
            dns.queries(),
            ["SRV _matrix-fed._tcp.hs.test", "SRV _matrix._tcp.hs.test"]
        );
    })
    .await;
}

#[tokio::test]
async fn without_srv_records_the_name_itself_at_8448_is_the_target() {
    bounded(async {
        let (discovery, _, _) = new_discovery(FakeDns::default(), &settings());
        let targets = discovery.targets(&srv("hs.test")).await.unwrap();
        assert_eq!(
            targets,
            [Target {
                host: TargetHost::Name("hs.test".into()),
                port: DEFAULT_FEDERATION_PORT
            }]
        );
    })
    .await;
}

#[tokio::test]
async fn a_failing_or_empty_srv_service_is_an_error_not_a_fallback() {
    bounded(async {
        let dns = FakeDns::default().srv_error("_matrix-fed._tcp.hs.test");
        let (discovery, dns, _) = new_discovery(dns, &settings());
        let error = discovery.targets(&srv("hs.test")).await.unwrap_err();
        assert!(
            matches!(error, DiscoveryError::Dns(DnsError::Failed { .. })),
            "{error}"
        );
        assert_eq!(dns.queries(), ["SRV _matrix-fed._tcp.hs.test"]);

        let dns = FakeDns::default().srv("_matrix-fed._tcp.hs.test", &[(0, 0, 0, ".")]);
        let (discovery, _, _) = new_discovery(dns, &settings());
        let error = discovery.targets(&srv("hs.test")).await.unwrap_err();
        assert!(matches!(error, DiscoveryError::NoService(_)), "{error}");
    })
    .await;
}

#[tokio::test]
async fn well_known_delegates_host_header_and_tls_name_for_its_cache_time() {
    bounded(async {
        let (server, discovery, _) = delegating(
            |_| {
                Answer::json(
                    StatusCode::OK,
                    r#"{"m.server":"delegated.test:8449","other":1}"#,
                )
                .header("cache-control", "public, max-age=3600")
            },
            &settings(),
        )
        .await;
        let route = discovery.resolve(&name("hs.test"), true).await.unwrap();
        assert_eq!(
            route.destination(),
            &direct(TargetHost::Name("delegated.test".into()), 8449)
        );
        assert_eq!(route.host_header(), "delegated.test:8449");
        assert_eq!(route.tls_name().to_str(), "delegated.test");
        assert_ttl(&route, Duration::from_secs(3600));
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path_and_query, "/.well-known/matrix/server");
    })
    .await;
}

#[tokio::test]
async fn a_delegated_name_without_port_goes_through_srv_and_a_delegated_ip_to_8448() {
    bounded(async {
        let (_server, discovery, _) = delegating(
            |_| Answer::json(StatusCode::OK, r#"{"m.server":"delegated.test"}"#),
            &settings(),
        )
        .await;
        let route = discovery.resolve(&name("hs.test"), true).await.unwrap();
        assert_eq!(route.destination(), &srv("delegated.test"));
        assert_eq!(route.host_header(), "delegated.test");
        assert_eq!(route.tls_name().to_str(), "delegated.test");
        assert_ttl(&route, DEFAULT_TTL);

        let (_server, discovery, _) = delegating(
            |_| Answer::json(StatusCode::OK, r#"{"m.server":"[2001:db8::7]"}"#),
            &settings(),
        )
        .await;
        let route = discovery.resolve(&name("hs.test"), true).await.unwrap();
        let ip = "2001:db8::7".parse().unwrap();
        assert_eq!(route.destination(), &direct(TargetHost::Ip(ip), 8448));
        assert_eq!(route.host_header(), "[2001:db8::7]");
        assert_eq!(route.tls_name(), &TlsName::IpAddress(ip.into()));
    })
    .await;
}

#[tokio::test]
async fn an_unusable_well_known_falls_back_to_srv_for_ten_minutes() {
    bounded(async {
        let big = format!(
            r#"{{"m.server":"delegated.test","pad":"{}"}}"#,
            "x".repeat(WELL_KNOWN_MAX_BYTES)
        );
        let answers: Vec<(&str, StatusCode, String)> = vec![
            (
                "404",
                StatusCode::NOT_FOUND,
                r#"{"m.server":"delegated.test"}"#.into(),
            ),
            ("403", StatusCode::FORBIDDEN, String::new()),
            ("not JSON", StatusCode::OK, "<html>".into()),
            (
                "no m.server",
                StatusCode::OK,
                r#"{"server":"delegated.test"}"#.into(),
            ),
            (
                "m.server not a string",
                StatusCode::OK,
                r#"{"m.server":8448}"#.into(),
            ),
            (
                "invalid m.server",
                StatusCode::OK,
                r#"{"m.server":"bad name"}"#.into(),
            ),
            ("too large", StatusCode::OK, big),
        ];
        for (case, status, body) in answers {
            let (server, discovery, _) =
                delegating(move |_| Answer::json(status, body.clone()), &settings()).await;
            let route = discovery.resolve(&name("hs.test"), true).await.unwrap();
            assert_eq!(route.destination(), &srv("hs.test"), "{case}");
            assert_eq!(route.host_header(), "hs.test", "{case}");
            assert_eq!(route.tls_name().to_str(), "hs.test", "{case}");
            assert_ttl(&route, FAILURE_TTL);
            assert_eq!(server.seen().len(), 1, "{case}: the well-known was asked");
        }
    })
    .await;
}

#[tokio::test]
async fn a_well_known_that_times_out_or_fails_for_now_never_pins_the_fallback() {
    bounded(async {
        // Accepts connections and never says a word, not even the TLS handshake.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = silent.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(tcp);
            }
        });
        let quick = OutboundSettings {
            request_timeout: Duration::from_secs(1),
            ..settings()
        };
        let (mut discovery, _, _) =
            new_discovery(FakeDns::default().ip("hs.test", "127.0.0.1"), &quick);
        discovery.set_well_known_port(port);
        for round in 1..=2 {
            let started = Instant::now();
            let route = discovery.resolve(&name("hs.test"), true).await.unwrap();
            assert_eq!(route.destination(), &srv("hs.test"), "fallback for now");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{:?}",
                started.elapsed()
            );
            assert_eq!(
                accepted.load(std::sync::atomic::Ordering::SeqCst),
                round,
                "the timed-out .well-known is asked again"
            );
        }
        holder.abort();

        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::REQUEST_TIMEOUT,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            let (server, discovery, _) =
                delegating(move |_| Answer::json(status, ""), &settings()).await;
            for _ in 0..2 {
                let route = discovery.resolve(&name("hs.test"), true).await.unwrap();
                assert_eq!(route.destination(), &srv("hs.test"), "{status}");
            }
            assert_eq!(server.seen().len(), 2, "{status}: asked again");
        }
    })
    .await;
}

#[tokio::test]
async fn expired_routes_and_their_connections_are_reaped() {
    bounded(async {
        let (_server, discovery, _) =
            delegating(|_| Answer::json(StatusCode::NOT_FOUND, ""), &settings()).await;
        discovery.resolve(&name("hs.test"), true).await.unwrap();
        reap(&discovery.cache, Instant::now(), POOL_IDLE_TIMEOUT);
        assert_eq!(lock(&discovery.cache[1]).len(), 1, "a live route stays");
        reap(
            &discovery.cache,
            Instant::now() + FAILURE_TTL + Duration::from_secs(1),
            POOL_IDLE_TIMEOUT,
        );
        assert!(
            lock(&discovery.cache[1]).is_empty(),
            "an expired route goes"
        );
    })
    .await;
}

#[test]
fn cache_time_comes_from_max_age_then_expires_within_bounds() {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let in_an_hour = httpdate::fmt_http_date(now + Duration::from_secs(3600));
    let an_hour_ago = httpdate::fmt_http_date(now - Duration::from_secs(3600));
    let cases: [(&[(&str, &str)], Duration); 9] = [
        (&[], DEFAULT_TTL),
        (
            &[("cache-control", "max-age=3600")],
            Duration::from_secs(3600),
        ),
        (
            &[("cache-control", "public, Max-Age = 7200 ")],
            Duration::from_secs(7200),
        ),
        (&[("cache-control", "max-age=0")], MIN_TTL),
        (&[("cache-control", "max-age=99999999")], MAX_TTL),
        (
            &[("expires", in_an_hour.as_str())],
            Duration::from_secs(3600),
        ),
        (&[("expires", an_hour_ago.as_str())], MIN_TTL),
        (&[("expires", "not a date")], MIN_TTL),
        (
            &[
                ("cache-control", "max-age=7200"),
                ("expires", in_an_hour.as_str()),
            ],
            Duration::from_secs(7200),
        ),
    ];
    for (headers, ttl) in cases {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        assert_eq!(cache_ttl(&map, now), ttl, "{headers:?}");
    }
}

#[tokio::test]
async fn a_repeated_lookup_is_a_cache_hit_until_the_route_expires() {
    bounded(async {
        let (server, discovery, metrics) =
            delegating(|_| Answer::json(StatusCode::NOT_FOUND, ""), &settings()).await;
        let first = discovery.resolve(&name("hs.test"), true).await.unwrap();
        let second = discovery.resolve(&name("hs.test"), true).await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(server.seen().len(), 1, "one .well-known fetch");
        let text = metrics.encode();
        assert!(
            text.contains(r#"matrixrtc_auth_discovery_cache_total{result="hit"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"matrixrtc_auth_discovery_cache_total{result="miss"} 1"#),
            "{text}"
        );

        // The failure route lives ten minutes; trust levels are cached apart.
        let later = |minutes: u64| Instant::now() + Duration::from_secs(60 * minutes);
        assert!(
            discovery.slot("hs.test", true, later(9)).1,
            "still cached after 9 min"
        );
        assert!(
            !discovery.slot("hs.test", false, later(9)).1,
            "other trust level"
        );
        assert!(
            !discovery.slot("hs.test", true, later(11)).1,
            "expired after 11 min"
        );
    })
    .await;
}

#[tokio::test]
async fn concurrent_lookups_share_one_discovery() {
    bounded(async {
        let (server, discovery, _) = delegating(
            |_| Answer::json(StatusCode::OK, r#"{"m.server":"delegated.test:1"}"#),
            &settings(),
        )
        .await;
        let hs = name("hs.test");
        let routes = futures::future::join_all((0..8).map(|_| discovery.resolve(&hs, true))).await;
        let first = routes[0].as_ref().unwrap();
        assert!(
            routes
                .iter()
                .all(|r| Arc::ptr_eq(r.as_ref().unwrap(), first))
        );
        assert_eq!(server.seen().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn invalidate_drops_only_the_route_it_was_given() {
    bounded(async {
        let (server, discovery, _) =
            delegating(|_| Answer::json(StatusCode::NOT_FOUND, ""), &settings()).await;
        let hs = name("hs.test");
        let stale = discovery.resolve(&hs, true).await.unwrap();
        discovery.invalidate("hs.test", true, &stale);
        let fresh = discovery.resolve(&hs, true).await.unwrap();
        assert!(!Arc::ptr_eq(&stale, &fresh));
        assert_eq!(server.seen().len(), 2, "discovered again");
        // A late invalidation with the stale route must not drop the fresh one.
        discovery.invalidate("hs.test", true, &stale);
        assert!(Arc::ptr_eq(
            &fresh,
            &discovery.resolve(&hs, true).await.unwrap()
        ));
        assert_eq!(server.seen().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn the_guard_refuses_an_untrusted_well_known_on_a_private_address() {
    bounded(async {
        let answer = |_: &Seen| Answer::json(StatusCode::OK, r#"{"m.server":"delegated.test:1"}"#);
        let (server, discovery, metrics) = delegating(answer, &settings()).await;
        let route = discovery.resolve(&name("hs.test"), false).await.unwrap();
        assert_eq!(
            route.destination(),
            &srv("hs.test"),
            "refused, so no delegation"
        );
        assert_eq!(server.connections(), 0, "nothing connected to 127.0.0.1");
        assert!(
            metrics
                .encode()
                .contains("matrixrtc_auth_outbound_refused_total 1")
        );

        let allowing = OutboundSettings {
            allowed_ranges: vec!["127.0.0.0/8".parse().unwrap()],
            ..settings()
        };
        let (server, discovery, _) = delegating(answer, &allowing).await;
        let route = discovery.resolve(&name("hs.test"), false).await.unwrap();
        assert_eq!(route.host_header(), "delegated.test:1");
        assert_eq!(server.seen().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn redirects_are_followed_but_never_to_a_refused_address() {
    bounded(async {
        let allowing = OutboundSettings {
            allowed_ranges: vec!["127.0.0.0/8".parse().unwrap()],
            ..settings()
        };
        // hs.test redirects to an IP literal; the literal answers.
        let redirecting_to = |target: &'static str| {
            move |seen: &Seen| {
                let host = seen.host.clone().unwrap_or_default();
                if host.starts_with("hs.test") {
                    let port = host.rsplit(':').next().unwrap_or_default().to_owned();
                    Answer::json(StatusCode::FOUND, "").header(
                        "location",
                        format!("https://{target}:{port}/.well-known/matrix/server"),
                    )
                } else {
                    Answer::json(StatusCode::OK, r#"{"m.server":"delegated.test:1"}"#)
                }
            }
        };
        let (server, discovery, _) = delegating(redirecting_to("127.0.0.1"), &allowing).await;
        let route = discovery.resolve(&name("hs.test"), false).await.unwrap();
        assert_eq!(route.host_header(), "delegated.test:1", "redirect followed");
        assert_eq!(server.seen().len(), 2);

        let (server, discovery, metrics) = delegating(redirecting_to("[::1]"), &allowing).await;
        let route = discovery.resolve(&name("hs.test"), false).await.unwrap();
        assert_eq!(route.destination(), &srv("hs.test"), "redirect refused");
        assert_eq!(server.seen().len(), 1);
        assert!(
            metrics
                .encode()
                .contains("matrixrtc_auth_outbound_refused_total 1")
        );

        // A redirect loop is given up after a few hops.
        let looping = |seen: &Seen| {
            Answer::json(StatusCode::FOUND, "").header(
                "location",
                format!("https://hs.test:{}/.well-known/matrix/server", seen.port),
            )
        };
        let (server, discovery, _) = delegating(looping, &allowing).await;
        let route = discovery.resolve(&name("hs.test"), false).await.unwrap();
        assert_eq!(route.destination(), &srv("hs.test"));
        assert_eq!(server.seen().len(), MAX_REDIRECTS + 1);
    })
    .await;
}
