//! Unit tests of the client-server API lookup and the delayed-event calls against loopback servers.

use super::super::test_support::{
    Answer as TlsAnswer, FakeDns, TestServer, bounded, outbound, settings,
};
use super::*;

fn base(url: &str) -> Url {
    Url::parse(url).expect("valid URL")
}

#[test]
fn builds_the_unstable_path() {
    let url = delayed_event_url(&base("https://hs.example"), "syd_abc", Action::Send)
        .expect("addressable");
    assert_eq!(
        url.as_str(),
        "https://hs.example/_matrix/client/unstable/org.matrix.msc4140/delayed_events/syd_abc/send"
    );
    let url = delayed_event_url(&base("http://hs.example:8008/"), "x", Action::Restart)
        .expect("addressable");
    assert_eq!(
        url.as_str(),
        "http://hs.example:8008/_matrix/client/unstable/org.matrix.msc4140/delayed_events/x/restart"
    );
}

#[test]
fn keeps_a_base_path() {
    for base_url in ["https://h/matrix", "https://h/matrix/"] {
        let url = delayed_event_url(&base(base_url), "d", Action::Send).expect("addressable");
        assert_eq!(
            url.path(),
            "/matrix/_matrix/client/unstable/org.matrix.msc4140/delayed_events/d/send"
        );
    }
}

#[test]
fn escapes_the_delay_id_as_one_segment() {
    let url = delayed_event_url(&base("https://h"), "../../admin?x=1#f", Action::Send)
        .expect("addressable");
    assert_eq!(
        url.as_str(),
        "https://h/_matrix/client/unstable/org.matrix.msc4140/delayed_events/..%2F..%2Fadmin%3Fx=1%23f/send"
    );
    assert!(url.path_segments().expect("path").all(|s| s != ".."));
    assert_eq!(url.query(), None);
    for unaddressable in ["", ".", ".."] {
        assert!(matches!(
            delayed_event_url(&base("https://h"), unaddressable, Action::Restart),
            Err(ClientApiError::UnaddressableDelayId)
        ));
    }
}

#[test]
fn well_known_parsing() {
    let ok = br#"{"m.homeserver":{"base_url":"https://matrix.example"},"other":1}"#;
    assert_eq!(
        well_known_base_url("e", StatusCode::OK, ok).expect("usable"),
        "https://matrix.example"
    );
    assert!(matches!(
        well_known_base_url("e", StatusCode::NOT_FOUND, b""),
        Err(ClientApiError::NotPublished { .. })
    ));
    assert!(matches!(
        well_known_base_url("e", StatusCode::BAD_GATEWAY, ok),
        Err(ClientApiError::Fetch { .. })
    ));
    for bad in [
        b"<html>".as_slice(),
        br#"{"m.homeserver":{"base_url":""}}"#,
        br#"{"m.homeserver":{}}"#,
        br#"{"m.homeserver":{"base_url":5}}"#,
        b"{}",
    ] {
        assert!(
            matches!(
                well_known_base_url("e", StatusCode::OK, bad),
                Err(ClientApiError::Invalid { .. })
            ),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// A `ClientApi` whose only named (trusted) homeserver list is `full_access`, with `allowed` ranges
/// re-opened in the SSRF guard and fake DNS.
fn api_with(
    full_access: &str,
    allowed: &[&str],
    dns: FakeDns,
    overrides: &[(&str, &str)],
    ttl: Duration,
) -> ClientApi {
    let mut settings = settings();
    settings.allowed_ranges = allowed.iter().map(|r| r.parse().expect("CIDR")).collect();
    let outbound = outbound(&settings, Arc::new(dns));
    let reach = Reach::new(
        &outbound,
        Arc::new(Guard::new(settings.allowed_ranges.clone())),
        Arc::new(Metrics::new()),
        FullAccess::parse(full_access),
    )
    .expect("clients");
    let overrides = overrides
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    ClientApi::new(reach, overrides, ttl)
}

fn client_api(overrides: &[(&str, &str)], ttl: Duration) -> ClientApi {
    api_with("hs.example", &[], FakeDns::default(), overrides, ttl)
}

fn trusted(url: &str) -> Base {
    Base {
        url: base(url),
        trusted: true,
    }
}

#[tokio::test]
async fn override_beats_cache_and_cache_is_used_until_it_expires() {
    let api = client_api(
        &[("hs.example", "http://synapse:8008")],
        Duration::from_secs(60),
    );
    api.lock_cache().insert(
        "hs.example".into(),
        (trusted("https://from-cache"), Instant::now()),
    );
    assert_eq!(
        api.resolve("hs.example").await.expect("override"),
        trusted("http://synapse:8008/")
    );

    api.lock_cache().insert(
        "cached.example".into(),
        (trusted("https://cached-api"), Instant::now()),
    );
    assert_eq!(
        api.resolve("cached.example").await.expect("cache"),
        trusted("https://cached-api/")
    );

    // An expired entry is dropped (and discovery would run).
    let expired = client_api(&[], Duration::ZERO);
    expired.lock_cache().insert(
        "old.example".into(),
        (trusted("https://cached-api"), Instant::now()),
    );
    assert_eq!(expired.cached("old.example"), None);
    assert!(expired.lock_cache().is_empty());
}

#[tokio::test]
async fn the_url_cache_is_bounded_dropping_expired_then_oldest_entries() {
    let api = client_api(&[], Duration::from_secs(60));
    let start = Instant::now();
    // One entry already expired, then a full cache of live ones.
    api.remember("expired", trusted("https://expired"), start);
    let later = start + Duration::from_secs(120);
    for i in 0..CACHE_CAPACITY - 1 {
        api.remember(&format!("hs{i}"), trusted("https://api"), later);
    }
    assert_eq!(api.lock_cache().len(), CACHE_CAPACITY);
    api.remember(
        "new1",
        trusted("https://new"),
        later + Duration::from_secs(1),
    );
    assert_eq!(api.lock_cache().len(), CACHE_CAPACITY);
    assert!(
        !api.lock_cache().contains_key("expired"),
        "expired goes first"
    );
    // No expired entry left: the oldest goes, and the newcomer stays.
    api.remember(
        "older",
        trusted("https://x"),
        start + Duration::from_secs(100),
    );
    api.remember(
        "new2",
        trusted("https://new"),
        later + Duration::from_secs(2),
    );
    let cache = api.lock_cache();
    assert_eq!(cache.len(), CACHE_CAPACITY);
    assert!(!cache.contains_key("older"), "the oldest entry goes");
    assert!(cache.contains_key("new1") && cache.contains_key("new2"));
}

#[tokio::test]
async fn overrides_must_be_http_urls() {
    let api = client_api(
        &[("a", "synapse:8008"), ("b", "ftp://x"), ("c", "https://ok")],
        ClientApi::CACHE_TTL,
    );
    assert!(matches!(
        api.resolve("a").await,
        Err(ClientApiError::BadUrl { .. })
    ));
    assert!(matches!(
        api.resolve("b").await,
        Err(ClientApiError::BadUrl { .. })
    ));
    assert!(api.resolve("c").await.is_ok());
}

/// One recorded request of the fake client-server API below.
#[derive(Debug, Clone)]
struct Recorded {
    path: String,
    content_type: Option<String>,
    authorization: bool,
    body: String,
}

/// Serves `status` with `headers` and `body` on every path of a loopback HTTP server and records
/// the requests.
async fn fake_api(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> (String, std::sync::Arc<Mutex<Vec<Recorded>>>) {
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, request_headers: HeaderMap, request_body: Bytes| {
            let record = record.clone();
            async move {
                record.lock().expect("record").push(Recorded {
                    path: uri.path().to_owned(),
                    content_type: request_headers
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    authorization: request_headers.contains_key(http::header::AUTHORIZATION),
                    body: String::from_utf8_lossy(&request_body).into_owned(),
                });
                let mut response =
                    (StatusCode::from_u16(status).expect("status"), body).into_response();
                for (name, value) in headers {
                    response
                        .headers_mut()
                        .insert(*name, http::HeaderValue::from_static(value));
                }
                response
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/base"), seen)
}

#[tokio::test]
async fn calls_the_delayed_event_endpoint_without_credentials() {
    let (url, seen) = fake_api(200, &[], "{}").await;
    let api = client_api(&[("hs.example", &url)], ClientApi::CACHE_TTL);
    let reply = api
        .delayed_event("hs.example", "id/1", Action::Restart)
        .await
        .expect("resolved");
    assert_eq!(reply, Reply::Success);
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].path,
        "/base/_matrix/client/unstable/org.matrix.msc4140/delayed_events/id%2F1/restart"
    );
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(seen[0].body, "{}");
    assert!(
        !seen[0].authorization,
        "the delay ID is the only capability"
    );
}

#[tokio::test]
async fn classifies_the_response() {
    let (url, _) = fake_api(
        429,
        &[],
        r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":2500}"#,
    )
    .await;
    let api = client_api(&[("hs", &url)], ClientApi::CACHE_TTL);
    let reply = api
        .delayed_event("hs", "d", Action::Send)
        .await
        .expect("resolved");
    assert_eq!(reply, Reply::RetryAfter(Duration::from_secs(3)));

    let (url, _) = fake_api(429, &[("retry-after", "4")], "").await;
    let api = client_api(&[("hs", &url)], ClientApi::CACHE_TTL);
    let reply = api
        .delayed_event("hs", "d", Action::Send)
        .await
        .expect("resolved");
    assert_eq!(reply, Reply::RetryAfter(Duration::from_secs(4)));

    let (url, _) = fake_api(404, &[], "").await;
    let api = client_api(&[("hs", &url)], ClientApi::CACHE_TTL);
    let reply = api
        .delayed_event("hs", "d", Action::Send)
        .await
        .expect("resolved");
    assert_eq!(reply, Reply::NotFound);

    // Nothing listens on a port we just released: a transport error is transient.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let api = client_api(
        &[("hs", &format!("http://127.0.0.1:{port}"))],
        ClientApi::CACHE_TTL,
    );
    let reply = api
        .delayed_event("hs", "d", Action::Send)
        .await
        .expect("resolved");
    assert!(matches!(reply, Reply::Transient(_)), "{reply:?}");
}

fn well_known(base_url: &str) -> TlsAnswer {
    TlsAnswer::json(
        StatusCode::OK,
        format!(r#"{{"m.homeserver":{{"base_url":"{base_url}"}}}}"#),
    )
}

#[tokio::test]
async fn a_named_homeserver_is_discovered_through_well_known_and_cached() {
    bounded(async {
        let server = TestServer::start(|_| well_known("https://matrix.hs.test/prefix")).await;
        let name = format!("127.0.0.1:{}", server.port());
        let api = api_with(&name, &[], FakeDns::default(), &[], ClientApi::CACHE_TTL);
        let resolved = api.resolve(&name).await.expect("discovered");
        assert_eq!(resolved, trusted("https://matrix.hs.test/prefix"));
        assert_eq!(
            server.seen()[0].path_and_query,
            "/.well-known/matrix/client"
        );
        api.resolve(&name).await.expect("cached");
        assert_eq!(
            server.seen().len(),
            1,
            "the second lookup is served from the cache"
        );
    })
    .await;
}

#[tokio::test]
async fn a_failed_discovery_is_not_cached() {
    bounded(async {
        let server = TestServer::start(|_| TlsAnswer::json(StatusCode::NOT_FOUND, "{}")).await;
        let name = format!("127.0.0.1:{}", server.port());
        let api = api_with(&name, &[], FakeDns::default(), &[], ClientApi::CACHE_TTL);
        for _ in 0..2 {
            assert!(matches!(
                api.resolve(&name).await,
                Err(ClientApiError::NotPublished { .. })
            ));
        }
        assert_eq!(server.seen().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn homeservers_trusted_only_through_the_wildcard_pass_the_ssrf_guard() {
    bounded(async {
        let server = TestServer::start(|seen| {
            if seen
                .host
                .as_deref()
                .is_some_and(|h| h.starts_with("hs.test"))
            {
                well_known("http://10.1.2.3:8008")
            } else {
                well_known("https://public.example")
            }
        })
        .await;
        // A loopback literal is refused before any connection.
        let literal = format!("127.0.0.1:{}", server.port());
        let api = api_with("*", &[], FakeDns::default(), &[], ClientApi::CACHE_TTL);
        assert!(matches!(
            api.resolve(&literal).await,
            Err(ClientApiError::Refused { .. })
        ));
        // A name resolving to loopback is refused by the guarded resolver.
        let dns = || FakeDns::default().ip("hs.test", "127.0.0.1");
        let named = format!("hs.test:{}", server.port());
        let api = api_with("*", &[], dns(), &[], ClientApi::CACHE_TTL);
        assert!(matches!(
            api.resolve(&named).await,
            Err(ClientApiError::Fetch { .. })
        ));
        assert_eq!(server.connections(), 0, "nothing reached the server");
        // With loopback allowed, the lookup works, but the private base URL it names is refused.
        let api = api_with("*", &["127.0.0.0/8"], dns(), &[], ClientApi::CACHE_TTL);
        assert!(matches!(
            api.resolve(&named).await,
            Err(ClientApiError::Refused { .. })
        ));
        // A public base URL is fine, and remembered as untrusted.
        let api = api_with("*", &["127.0.0.0/8"], dns(), &[], ClientApi::CACHE_TTL);
        let resolved = api.resolve(&literal).await.expect("public base URL");
        assert_eq!(
            resolved,
            Base {
                url: base("https://public.example"),
                trusted: false
            }
        );
    })
    .await;
}
