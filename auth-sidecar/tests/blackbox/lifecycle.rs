//! Process behaviour: graceful shutdown on SIGTERM, the `healthcheck` mode, and logs that never contain
//! secrets or tokens.

use std::time::{Duration, Instant};

use crate::support::body::{self, DEVICE_ID};
use crate::support::homeserver::Answer;
use crate::support::jwt::SECRET;
use crate::support::service::{ServiceConfig, free_port};
use crate::support::{World, bounded};

/// SIGTERM while a request waits on the homeserver: the request still completes with a token, then the
/// process exits 0.
#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.user("alice");
        world.hs.answer(
            "slow-token",
            Answer::Delayed(
                Duration::from_millis(1500),
                Box::new(Answer::Sub(user.clone())),
            ),
        );
        let mut service = world.service().start().await;
        let request = service
            .request(http::Method::POST, "/get_token")
            .json(&body::get_token(
                &world.hs.server_name(),
                "slow-token",
                &user,
            ));
        let in_flight = tokio::spawn(request.send());

        let deadline = Instant::now() + Duration::from_secs(10);
        while world.hs.lookup_count() == 0 {
            assert!(Instant::now() < deadline, "the lookup never arrived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        service.sigterm();

        let response = in_flight.await.expect("request task");
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(response.json()["jwt"].is_string());
        let code = service.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(
            code,
            Some(Some(0)),
            "clean exit; output:\n{}",
            service.output()
        );
    })
    .await;
}

/// An idle service exits 0 promptly on SIGTERM.
#[tokio::test]
async fn sigterm_when_idle_exits_zero_promptly() {
    bounded(async {
        let world = World::start().await;
        let mut service = world.service().start().await;
        let started = Instant::now();
        service.sigterm();
        let code = service.wait_exit(Duration::from_secs(5)).await;
        assert_eq!(code, Some(Some(0)), "output:\n{}", service.output());
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
}

/// `matrixrtc-auth healthcheck` probes `/healthz` at `LIVEKIT_JWT_BIND`: 0 when the service answers 200,
/// 1 when nothing listens or something else answers.
#[tokio::test]
async fn healthcheck_mode_reports_service_health() {
    bounded(async {
        let world = World::start().await;
        let service = world.service().start().await;
        let probe = |bind: String| {
            ServiceConfig::new()
                .set("LIVEKIT_JWT_BIND", &bind)
                .arg("healthcheck")
        };

        let healthy = probe(service.addr().to_string()).run_to_exit().await;
        assert_eq!(healthy.code, Some(0), "{healthy:?}");

        let nothing = probe(format!("127.0.0.1:{}", free_port()))
            .run_to_exit()
            .await;
        assert_eq!(nothing.code, Some(1), "{nothing:?}");

        // The fake LiveKit answers 404 on /healthz.
        let port = world
            .livekit
            .ws_url()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        let wrong = probe(format!("127.0.0.1:{port}")).run_to_exit().await;
        assert_eq!(wrong.code, Some(1), "{wrong:?}");
    })
    .await;
}

/// At debug level, in both log formats, across successes and failures, the logs contain neither the
/// API secret, nor any access token, nor any issued JWT.
#[tokio::test]
async fn logs_never_contain_secrets_or_tokens() {
    bounded(async {
        for format in ["text", "json"] {
            let world = World::start().await;
            let alice = world.hs.add_user("access-token-alice-Zq81", "alice");
            world.hs.add_user("access-token-bob-Kw22", "bob");
            let server = world.hs.server_name();
            let service = world
                .service()
                .set("LIVEKIT_LOG_FORMAT", format)
                .set("LIVEKIT_LOG_LEVEL", "debug")
                .start()
                .await;

            let mut jwts = Vec::new();
            let ok = service
                .post_json(
                    "/get_token",
                    &body::get_token(&server, "access-token-alice-Zq81", &alice),
                )
                .await;
            assert_eq!(ok.status, 200);
            jwts.push(ok.json()["jwt"].as_str().expect("jwt").to_owned());
            let ok = service
                .post_json(
                    "/sfu/get",
                    &body::sfu_get(&server, "access-token-bob-Kw22", DEVICE_ID),
                )
                .await;
            assert_eq!(ok.status, 200);
            jwts.push(ok.json()["jwt"].as_str().expect("jwt").to_owned());
            // A mismatch, an unknown token, and a room-creation failure.
            let mismatch = body::get_token(&server, "access-token-bob-Kw22", &alice);
            assert_eq!(service.post_json("/get_token", &mismatch).await.status, 401);
            let unknown = body::get_token(&server, "access-token-unknown-Pp09", &alice);
            assert_eq!(service.post_json("/get_token", &unknown).await.status, 401);
            world.livekit.fail();
            let failing = body::get_token(&server, "access-token-alice-Zq81", &alice);
            assert_eq!(service.post_json("/get_token", &failing).await.status, 500);

            // The admin tokens sent to LiveKit are secrets too.
            jwts.extend(
                world
                    .livekit
                    .calls()
                    .into_iter()
                    .filter_map(|call| call.bearer),
            );

            let output = service.output();
            assert!(
                !output.trim().is_empty(),
                "{format}: the service logged something"
            );
            for secret in [
                SECRET,
                "access-token-alice-Zq81",
                "access-token-bob-Kw22",
                "access-token-unknown-Pp09",
            ]
            .into_iter()
            .chain(jwts.iter().map(String::as_str))
            {
                assert!(
                    !output.contains(secret),
                    "{format} logs contain {secret:?}:\n{output}"
                );
            }
        }
    })
    .await;
}
