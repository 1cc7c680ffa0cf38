//! OpenID userinfo lookups (spec §2): the request the homeserver sees, every failure mode giving 401,
//! TLS verification and the skip flag, the SSRF guard, and the token cache.

use std::time::Duration;

use serde_json::json;

use crate::support::body::{self, DEVICE_ID, MEMBER_ID, ROOM_ID, SLOT_ID, assert_unauthorized};
use crate::support::homeserver::{Answer, FakeHomeserver, USERINFO_PATH};
use crate::support::jwt::hash;
use crate::support::service::free_port;
use crate::support::{World, assert_token_response, bounded};

const PATH: &str = "/get_token";
const SKIP_TLS: &str = "LIVEKIT_INSECURE_SKIP_VERIFY_TLS";
const SKIP_TLS_VALUE: &str = "YES_I_KNOW_WHAT_I_AM_DOING";

/// GET on the federation path with the token URL-encoded in the query, Host = the server name, and
/// no Authorization header.
#[tokio::test]
async fn userinfo_request_has_the_federation_shape() {
    bounded(async {
        let world = World::start().await;
        // Characters that must be percent-encoded in a query string.
        let token = "tok+en/with space&x=1?#";
        let user = world.hs.add_user(token, "alice");
        let service = world.service().start().await;

        let response = service
            .post_json(
                PATH,
                &body::get_token(&world.hs.server_name(), token, &user),
            )
            .await;

        assert_eq!(response.status, 200, "{}", response.text());
        let lookups = world.hs.lookups();
        assert_eq!(lookups.len(), 1);
        let lookup = &lookups[0];
        assert_eq!(lookup.method, "GET");
        assert_eq!(lookup.path, USERINFO_PATH);
        assert_eq!(lookup.access_token.as_deref(), Some(token));
        assert_eq!(
            lookup.host.as_deref(),
            Some(world.hs.server_name().as_str())
        );
        assert_eq!(lookup.authorization, None);
    })
    .await;
}

/// Row 4: any failed lookup is 401 `M_UNAUTHORIZED` and creates no room.
#[tokio::test]
async fn every_lookup_failure_is_unauthorized() {
    bounded(async {
        let world = World::start().await;
        let hs = &world.hs;
        let cases = [
            ("unknown-token", None),
            (
                "server-error",
                Some(Answer::Json(500, json!({"errcode": "M_UNKNOWN"}))),
            ),
            (
                "forbidden",
                Some(Answer::Json(403, json!({"errcode": "M_FORBIDDEN"}))),
            ),
            ("not-json", Some(Answer::Raw(200, "this is not JSON"))),
            (
                "no-sub",
                Some(Answer::Json(200, json!({"user": hs.user("alice")}))),
            ),
            ("numeric-sub", Some(Answer::Json(200, json!({"sub": 42})))),
            (
                "foreign-sub",
                Some(Answer::Sub("@alice:other.example.org".to_owned())),
            ),
            // The server part must equal matrix_server_name exactly, port included.
            (
                "portless-sub",
                Some(Answer::Sub("@alice:127.0.0.1".to_owned())),
            ),
        ];
        for (token, answer) in &cases {
            if let Some(answer) = answer {
                hs.answer(token, answer.clone());
            }
        }
        let service = world.service().start().await;

        for (token, _) in &cases {
            // The claimed user is the one the token would have to belong to.
            let request = body::get_token(&hs.server_name(), token, &hs.user("alice"));
            let response = service.post_json(PATH, &request).await;
            assert_unauthorized(&response);
        }
        assert_eq!(hs.lookup_count(), cases.len(), "one lookup per request");
        assert!(world.livekit.calls().is_empty());
    })
    .await;
}

/// A homeserver that cannot be reached is 401 too (transport error), even when it is full-access.
#[tokio::test]
async fn unreachable_homeserver_is_unauthorized() {
    bounded(async {
        let world = World::start().await;
        let dead = format!("127.0.0.1:{}", free_port());
        let service = world
            .service()
            .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", &dead)
            .start()
            .await;

        let request = body::get_token(&dead, "token", &format!("@alice:{dead}"));
        let response = service.post_json(PATH, &request).await;

        assert_unauthorized(&response);
        assert!(world.livekit.calls().is_empty());
    })
    .await;
}

/// TLS is verified by default: the fake's certificate comes from a CA the service does not know.
#[tokio::test]
async fn untrusted_certificate_is_refused_by_default() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().unset("SSL_CERT_FILE").start().await;

        let response = service
            .post_json(
                PATH,
                &body::get_token(&world.hs.server_name(), "token-alice", &user),
            )
            .await;

        assert_unauthorized(&response);
        assert!(
            world.hs.connection_count() >= 1,
            "the service did try to connect"
        );
        assert_eq!(world.hs.lookup_count(), 0, "the TLS handshake failed");
    })
    .await;
}

/// Only the exact value `YES_I_KNOW_WHAT_I_AM_DOING` turns verification off.
#[tokio::test]
async fn skip_tls_flag_works_only_with_its_exact_value() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let request = body::get_token(&world.hs.server_name(), "token-alice", &user);

        let service = world
            .service()
            .unset("SSL_CERT_FILE")
            .set(SKIP_TLS, SKIP_TLS_VALUE)
            .start()
            .await;
        let response = service.post_json(PATH, &request).await;
        assert_token_response(
            &response,
            &world.livekit.ws_url(),
            &hash(&[&user, DEVICE_ID, MEMBER_ID]),
            &hash(&[ROOM_ID, SLOT_ID]),
        );
        drop(service);

        for value in [
            "true",
            "yes",
            "1",
            "yes_i_know_what_i_am_doing",
            " YES_I_KNOW_WHAT_I_AM_DOING",
        ] {
            let service = world
                .service()
                .unset("SSL_CERT_FILE")
                .set(SKIP_TLS, value)
                .start()
                .await;
            let response = service.post_json(PATH, &request).await;
            assert_eq!(
                response.status, 401,
                "{SKIP_TLS}={value:?} must keep verification on"
            );
        }
        assert_eq!(
            world.hs.lookup_count(),
            1,
            "only the skipping service got through"
        );
    })
    .await;
}

/// The SSRF guard: a restricted homeserver that resolves to loopback is never contacted, unless
/// `LIVEKIT_OUTBOUND_IP_ALLOWLIST` covers it.
#[tokio::test]
async fn restricted_loopback_homeserver_needs_the_allowlist() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let request = body::get_token(&world.hs.server_name(), "token-alice", &user);

        for allowlist in [None, Some("10.0.0.0/8"), Some("127.0.0.2/32")] {
            let mut config = world.restricted_service();
            if let Some(ranges) = allowlist {
                config = config.set("LIVEKIT_OUTBOUND_IP_ALLOWLIST", ranges);
            }
            let service = config.start().await;
            let response = service.post_json(PATH, &request).await;
            assert_unauthorized(&response);
            assert_eq!(
                world.hs.connection_count(),
                0,
                "allowlist {allowlist:?}: the guard refuses before connecting"
            );
        }

        let service = world
            .restricted_service()
            .set("LIVEKIT_OUTBOUND_IP_ALLOWLIST", "127.0.0.0/8")
            .start()
            .await;
        let response = service.post_json(PATH, &request).await;
        assert_token_response(
            &response,
            &world.livekit.ws_url(),
            &hash(&[&user, DEVICE_ID, MEMBER_ID]),
            &hash(&[ROOM_ID, SLOT_ID]),
        );
        assert_eq!(world.hs.lookup_count(), 1);
        assert!(world.livekit.calls().is_empty(), "restricted: no room");
    })
    .await;
}

/// A verified token is remembered (default 60 s): the same request again makes no second lookup.
/// The claimed-user check still applies to a cached token.
#[tokio::test]
async fn verified_tokens_are_cached_by_default() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world
            .service()
            .unset("LIVEKIT_OPENID_CACHE_SECONDS")
            .start()
            .await;
        let request = body::get_token(&world.hs.server_name(), "token-alice", &user);

        for _ in 0..3 {
            let response = service.post_json(PATH, &request).await;
            assert_eq!(response.status, 200, "{}", response.text());
        }
        assert_eq!(world.hs.lookup_count(), 1, "later requests hit the cache");
        assert_eq!(
            world.livekit.calls().len(),
            3,
            "CreateRoom on every request"
        );

        let mut someone_else = request.clone();
        someone_else["member"]["claimed_user_id"] = json!(world.hs.user("bob"));
        assert_unauthorized(&service.post_json(PATH, &someone_else).await);
    })
    .await;
}

/// The cache is keyed by homeserver too: a token verified by one server means nothing for another.
#[tokio::test]
async fn cached_token_is_not_valid_for_another_homeserver() {
    bounded(async {
        let world = World::start().await;
        let other = FakeHomeserver::start(&world.pki).await;
        let user = world.hs.add_user("shared-token", "alice");
        let service = world
            .service()
            .set(
                "LIVEKIT_FULL_ACCESS_HOMESERVERS",
                &format!("{},{}", world.hs.server_name(), other.server_name()),
            )
            .set("LIVEKIT_OPENID_CACHE_SECONDS", "60")
            .start()
            .await;

        let first = body::get_token(&world.hs.server_name(), "shared-token", &user);
        assert_eq!(service.post_json(PATH, &first).await.status, 200);

        let second = body::get_token(&other.server_name(), "shared-token", &other.user("alice"));
        assert_unauthorized(&service.post_json(PATH, &second).await);
        assert_eq!(other.lookup_count(), 1, "the other server was asked");
    })
    .await;
}

/// `LIVEKIT_OPENID_CACHE_SECONDS=0` disables the cache: every request is a lookup.
#[tokio::test]
async fn zero_cache_seconds_looks_up_every_time() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world
            .service()
            .set("LIVEKIT_OPENID_CACHE_SECONDS", "0")
            .start()
            .await;
        let request = body::get_token(&world.hs.server_name(), "token-alice", &user);

        for _ in 0..2 {
            assert_eq!(service.post_json(PATH, &request).await.status, 200);
        }
        assert_eq!(world.hs.lookup_count(), 2);
    })
    .await;
}

/// A cached entry expires after the configured time.
#[tokio::test]
async fn cached_tokens_expire() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world
            .service()
            .set("LIVEKIT_OPENID_CACHE_SECONDS", "1")
            .start()
            .await;
        let request = body::get_token(&world.hs.server_name(), "token-alice", &user);

        assert_eq!(service.post_json(PATH, &request).await.status, 200);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(service.post_json(PATH, &request).await.status, 200);
        assert_eq!(world.hs.lookup_count(), 2, "the entry had expired");
    })
    .await;
}
