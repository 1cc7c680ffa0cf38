//! One service: the job lifecycle of spec §5.2–5.5 as the homeserver and LiveKit see it, and the Redis
//! persistence of §5.6 across restarts.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{SOON, Setup, field, identity, pause, room};
use crate::support::body::{assert_bad_json, assert_cors, assert_matrix_error};
use crate::support::bounded;
use crate::support::client_server::{Answer, RESTART, SEND};
use crate::support::webhook;

#[tokio::test]
async fn a_job_that_never_connects_sends_after_its_timeout() {
    bounded(async {
        let setup = Setup::start().await;
        let service = setup.service().start().await;
        let user = setup.user("t", "alice");
        let started = Instant::now();
        let response = service
            .post_json(
                "/get_token",
                &setup.body("t", &user, "m1", "syd_never", 1500),
            )
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(setup.world.livekit.calls().len(), 1, "the room is created");
        setup.cs.wait_for("syd_never", SEND, 1, SOON).await;
        let sent = setup.cs.calls()[0].at;
        assert!(
            sent - started >= Duration::from_millis(1400),
            "not before the timeout: {:?}",
            sent - started
        );
        pause(1.0).await;
        assert_eq!(
            setup.cs.actions(),
            [("syd_never".to_owned(), SEND.to_owned())],
            "one send and nothing else"
        );
        let call = &setup.cs.calls()[0];
        assert_eq!(call.method, "POST");
        assert_eq!(call.body, "{}");
        assert_eq!(call.content_type.as_deref(), Some("application/json"));
        assert_eq!(call.authorization, None, "the delay ID is the capability");
        assert!(
            setup.cs.other_paths().is_empty(),
            "{:?}",
            setup.cs.other_paths()
        );
    })
    .await;
}

#[tokio::test]
async fn a_looked_up_participant_is_restarted_repeatedly_then_sent_on_a_client_leave() {
    bounded(async {
        let setup = Setup::start().await;
        let service = setup.service().start().await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        setup.world.livekit.add_participant(&room(), &identity);
        let response = service
            .post_json(
                "/delegate_delayed_leave",
                &setup.body("t", &user, "m1", "syd_1", 2000),
            )
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "{}\n");
        assert_cors(&response, "delegate answer");
        assert!(setup.world.livekit.calls().is_empty(), "no room is created");

        // Restarted at once (the lookup finds the participant), then every 80 % of 2 s.
        setup.cs.wait_for("syd_1", RESTART, 3, SOON).await;
        let restarts: Vec<Instant> = setup.cs.calls().iter().map(|call| call.at).collect();
        let gap = restarts[2] - restarts[1];
        assert!(
            gap >= Duration::from_millis(1400) && gap <= Duration::from_millis(2000),
            "restart interval {gap:?}"
        );
        assert!(
            setup
                .world
                .livekit
                .participant_lookups()
                .contains(&(room(), identity.clone())),
            "GetParticipant was asked about this participant"
        );

        webhook::send(
            &service,
            &webhook::participant_event("participant_left", &room(), &identity, "CLIENT_INITIATED"),
        )
        .await;
        setup.cs.wait_for("syd_1", SEND, 1, SOON).await;
        let restarts_then = setup.cs.count("syd_1", RESTART);
        pause(2.5).await;
        assert_eq!(
            setup.cs.count("syd_1", RESTART),
            restarts_then,
            "no restart after the send"
        );
        assert_eq!(setup.cs.count("syd_1", SEND), 1);
        // The delay ID is a capability: never logged, even at debug level.
        assert!(!service.output().contains("syd_1"), "{}", service.output());
    })
    .await;
}

#[tokio::test]
async fn a_failed_join_sends_nothing() {
    bounded(async {
        let setup = Setup::start().await;
        let service = setup.service().start().await;
        let user = setup.user("t", "alice");
        let response = service
            .post_json("/get_token", &setup.body("t", &user, "m1", "syd_j", 1500))
            .await;
        assert_eq!(response.status, 200);
        webhook::send(
            &service,
            &webhook::participant_event(
                "participant_connection_aborted",
                &room(),
                &identity(&user, "m1"),
                "JOIN_FAILURE",
            ),
        )
        .await;
        pause(3.0).await;
        assert!(setup.cs.calls().is_empty(), "{:?}", setup.cs.actions());
    })
    .await;
}

#[tokio::test]
async fn a_signal_close_after_connecting_sends() {
    bounded(async {
        let setup = Setup::start().await;
        let service = setup.service().start().await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        let response = service
            .post_json("/get_token", &setup.body("t", &user, "m1", "syd_s", 3000))
            .await;
        assert_eq!(response.status, 200);
        webhook::send(
            &service,
            &webhook::participant_event("participant_joined", &room(), &identity, "UNKNOWN_REASON"),
        )
        .await;
        setup.cs.wait_for("syd_s", RESTART, 1, SOON).await;
        webhook::send(
            &service,
            &webhook::participant_event("participant_left", &room(), &identity, "SIGNAL_CLOSE"),
        )
        .await;
        setup.cs.wait_for("syd_s", SEND, 1, SOON).await;
    })
    .await;
}

#[tokio::test]
async fn the_sanity_check_notices_a_vanished_participant() {
    bounded(async {
        let setup = Setup::start().await;
        let service = setup
            .service()
            .set("LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS", "1")
            .start()
            .await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        setup.world.livekit.add_participant(&room(), &identity);
        let response = service
            .post_json(
                "/delegate_delayed_leave",
                &setup.body("t", &user, "m1", "syd_v", 10_000),
            )
            .await;
        assert_eq!(response.status, 200);
        setup.cs.wait_for("syd_v", RESTART, 1, SOON).await;
        pause(1.5).await;
        assert_eq!(setup.cs.count("syd_v", SEND), 0, "still there");
        setup.world.livekit.remove_participant(&room(), &identity);
        setup.cs.wait_for("syd_v", SEND, 1, SOON).await;
    })
    .await;
}

#[tokio::test]
async fn a_restart_404_ends_the_job_without_a_send() {
    bounded(async {
        let setup = Setup::start().await;
        let service = setup.service().start().await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        setup
            .cs
            .script("syd_gone", RESTART, vec![Answer::status(404)]);
        setup.world.livekit.add_participant(&room(), &identity);
        let response = service
            .post_json(
                "/delegate_delayed_leave",
                &setup.body("t", &user, "m1", "syd_gone", 2000),
            )
            .await;
        assert_eq!(response.status, 200);
        setup.cs.wait_for("syd_gone", RESTART, 1, SOON).await;
        webhook::send(
            &service,
            &webhook::participant_event("participant_left", &room(), &identity, "CLIENT_INITIATED"),
        )
        .await;
        pause(2.5).await;
        assert_eq!(
            setup.cs.actions(),
            [("syd_gone".to_owned(), RESTART.to_owned())]
        );
    })
    .await;
}

#[tokio::test]
async fn restart_errors_are_retried_and_rate_limits_honoured() {
    bounded(async {
        let setup = Setup::start().await;
        let service = setup.service().start().await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        let limited = Answer {
            status: 429,
            headers: Vec::new(),
            body: r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1000}"#.to_owned(),
        };
        setup.cs.script(
            "syd_r",
            RESTART,
            vec![Answer::status(502), limited, Answer::status(200)],
        );
        setup.world.livekit.add_participant(&room(), &identity);
        let response = service
            .post_json(
                "/delegate_delayed_leave",
                &setup.body("t", &user, "m1", "syd_r", 20_000),
            )
            .await;
        assert_eq!(response.status, 200);
        setup.cs.wait_for("syd_r", RESTART, 3, SOON).await;
        let at: Vec<Instant> = setup.cs.calls().iter().map(|call| call.at).collect();
        assert!(
            at[2] - at[1] >= Duration::from_millis(950),
            "retry_after_ms 1000 waited only {:?}",
            at[2] - at[1]
        );
        pause(1.0).await;
        assert_eq!(
            setup.cs.count("syd_r", RESTART),
            3,
            "success ends the retries"
        );
    })
    .await;
}

#[tokio::test]
async fn a_send_404_counts_as_sent() {
    bounded(async {
        let Some(setup) = Setup::with_redis("send 404").await else {
            return;
        };
        let service = setup.service().start().await;
        let user = setup.user("t", "alice");
        setup.cs.script("syd_404", SEND, vec![Answer::status(404)]);
        let response = service
            .post_json("/get_token", &setup.body("t", &user, "m1", "syd_404", 1000))
            .await;
        assert_eq!(response.status, 200);
        setup.cs.wait_for("syd_404", SEND, 1, SOON).await;
        pause(1.5).await;
        assert_eq!(setup.cs.count("syd_404", SEND), 1, "not retried");
        assert!(setup.stored_jobs().await.is_empty(), "and the job is gone");
        drop(service);
    })
    .await;
}

#[tokio::test]
async fn a_newer_job_replaces_the_older_one() {
    bounded(async {
        let setup = Setup::start().await;
        let service = setup.service().start().await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        setup.world.livekit.add_participant(&room(), &identity);
        let first = service
            .post_json(
                "/delegate_delayed_leave",
                &setup.body("t", &user, "m1", "syd_old", 1000),
            )
            .await;
        assert_eq!(first.status, 200);
        setup.cs.wait_for("syd_old", RESTART, 1, SOON).await;
        let second = service
            .post_json("/get_token", &setup.body("t", &user, "m1", "syd_new", 1000))
            .await;
        assert_eq!(second.status, 200);
        let replaced_at = Instant::now();
        setup.cs.wait_for("syd_new", RESTART, 2, SOON).await;
        webhook::send(
            &service,
            &webhook::participant_event("participant_left", &room(), &identity, "CLIENT_INITIATED"),
        )
        .await;
        setup.cs.wait_for("syd_new", SEND, 1, SOON).await;
        pause(1.5).await;
        let late_old: Vec<_> = setup
            .cs
            .calls()
            .into_iter()
            .filter(|call| call.delay_id == "syd_old" && call.at > replaced_at)
            .map(|call| call.action)
            .collect();
        assert!(
            late_old.is_empty(),
            "the old job called {late_old:?} after its replacement"
        );
        assert_eq!(setup.cs.count("syd_old", SEND), 0);
    })
    .await;
}

#[tokio::test]
async fn jobs_of_different_participants_do_not_cross_talk() {
    bounded(async {
        let setup = Setup::start().await;
        let service = setup.service().start().await;
        let alice = setup.user("ta", "alice");
        let bob = setup.user("tb", "bob");
        let (alice_id, bob_id) = (identity(&alice, "ma"), identity(&bob, "mb"));
        for id in [&alice_id, &bob_id] {
            setup.world.livekit.add_participant(&room(), id);
        }
        for (token, user, member, delay) in
            [("ta", &alice, "ma", "syd_a"), ("tb", &bob, "mb", "syd_b")]
        {
            let response = service
                .post_json(
                    "/delegate_delayed_leave",
                    &setup.body(token, user, member, delay, 2000),
                )
                .await;
            assert_eq!(response.status, 200);
        }
        setup.cs.wait_for("syd_a", RESTART, 1, SOON).await;
        setup.cs.wait_for("syd_b", RESTART, 1, SOON).await;
        webhook::send(
            &service,
            &webhook::participant_event("participant_left", &room(), &alice_id, "CLIENT_INITIATED"),
        )
        .await;
        setup.cs.wait_for("syd_a", SEND, 1, SOON).await;
        let bob_restarts = setup.cs.count("syd_b", RESTART);
        setup
            .cs
            .wait_for("syd_b", RESTART, bob_restarts + 1, SOON)
            .await;
        assert_eq!(setup.cs.count("syd_b", SEND), 0, "bob is still in the call");
        // A leave for someone without a job changes nothing.
        webhook::send(
            &service,
            &webhook::participant_event("participant_left", &room(), "nobody", "CLIENT_INITIATED"),
        )
        .await;
        pause(0.5).await;
        assert_eq!(setup.cs.count("syd_b", SEND), 0);
    })
    .await;
}

#[tokio::test]
async fn webhooks_that_are_not_from_our_livekit_change_nothing() {
    bounded(async {
        let setup = Setup::start().await;
        let service = setup.service().start().await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        setup.world.livekit.add_participant(&room(), &identity);
        let response = service
            .post_json(
                "/delegate_delayed_leave",
                &setup.body("t", &user, "m1", "syd_w", 3000),
            )
            .await;
        assert_eq!(response.status, 200);
        setup.cs.wait_for("syd_w", RESTART, 1, SOON).await;

        let leave =
            webhook::participant_event("participant_left", &room(), &identity, "CLIENT_INITIATED")
                .to_string();
        let signed = webhook::token_for(
            leave.as_bytes(),
            crate::support::jwt::KEY,
            crate::support::jwt::SECRET,
        );
        let forged =
            webhook::token_for(leave.as_bytes(), crate::support::jwt::KEY, "not-the-secret");
        let stranger =
            webhook::token_for(leave.as_bytes(), "stranger", crate::support::jwt::SECRET);
        let other_body =
            webhook::token_for(b"{}", crate::support::jwt::KEY, crate::support::jwt::SECRET);
        for authorization in [
            None,
            Some(forged.as_str()),
            Some(stranger.as_str()),
            Some(other_body.as_str()),
            Some(&*format!("Bearer {signed}")),
        ] {
            let answer = webhook::post_raw(&service, authorization, leave.clone()).await;
            webhook::assert_empty_ok(&answer);
        }
        // Signed but malformed events: no room, no participant, not JSON, unknown type.
        for body in [
            json!({"event": "participant_left", "participant": {"identity": identity}}).to_string(),
            json!({"event": "participant_joined", "room": {"name": room()}}).to_string(),
            "not json".to_owned(),
            json!({"event": "track_published", "room": {"name": room()}}).to_string(),
        ] {
            let token = webhook::token_for(
                body.as_bytes(),
                crate::support::jwt::KEY,
                crate::support::jwt::SECRET,
            );
            webhook::assert_empty_ok(&webhook::post_raw(&service, Some(&token), body).await);
        }
        // Any method is answered the same way.
        let get = service.get(webhook::PATH).await;
        webhook::assert_empty_ok(&get);

        pause(1.0).await;
        assert_eq!(
            setup.cs.count("syd_w", SEND),
            0,
            "no forged leave got through"
        );
        assert_eq!(service.get("/healthz").await.status, 200, "still alive");
        let metrics = service.get("/metrics").await.text();
        // Five forged, plus the GET without any token; three malformed; the track event ignored.
        for line in [
            r#"matrixrtc_auth_webhooks_total{outcome="rejected"} 6"#,
            r#"matrixrtc_auth_webhooks_total{outcome="malformed"} 3"#,
            r#"matrixrtc_auth_webhooks_total{outcome="ignored"} 1"#,
            r#"matrixrtc_auth_webhooks_total{outcome="delivered"} 0"#,
        ] {
            assert!(metrics.contains(line), "missing {line} in {metrics}");
        }
        // The genuine one still works.
        webhook::send(
            &service,
            &serde_json::from_str::<Value>(&leave).expect("JSON"),
        )
        .await;
        setup.cs.wait_for("syd_w", SEND, 1, SOON).await;
    })
    .await;
}

#[tokio::test]
async fn the_client_server_api_is_discovered_through_well_known() {
    bounded(async {
        let setup = Setup::start().await;
        setup.world.hs.set_client_well_known(Some(json!({
            "m.homeserver": {"base_url": setup.cs.base_url()},
        })));
        let service = setup
            .service()
            .unset("LIVEKIT_CS_API_URL_OVERRIDES")
            .start()
            .await;
        let user = setup.user("t", "alice");
        let mut body = setup.body("t", &user, "m1", "syd_wk", 1000);
        body["delay_cs_api_url"] = json!("http://127.0.0.1:9/never-used");
        let response = service.post_json("/get_token", &body).await;
        assert_eq!(response.status, 200, "{}", response.text());
        setup.cs.wait_for("syd_wk", SEND, 1, SOON).await;

        // Without a usable well-known the request is refused before the room is created.
        setup.world.hs.set_client_well_known(None);
        let rooms_before = setup.world.livekit.calls().len();
        let other = setup.user("t2", "bob");
        let service = setup
            .service()
            .unset("LIVEKIT_CS_API_URL_OVERRIDES")
            .start()
            .await;
        let response = service
            .post_json("/get_token", &setup.body("t2", &other, "m2", "syd_x", 1000))
            .await;
        assert_bad_json(&response, "Unable to resolve client-server API");
        assert_eq!(setup.world.livekit.calls().len(), rooms_before);
    })
    .await;
}

#[tokio::test]
async fn restricted_users_may_not_delegate() {
    bounded(async {
        let setup = Setup::start().await;
        // The SSRF guard would refuse a restricted homeserver on loopback; the allowlist lets it in.
        let service = setup
            .world
            .restricted_service()
            .set("LIVEKIT_OUTBOUND_IP_ALLOWLIST", "127.0.0.0/8")
            .start()
            .await;
        let user = setup.user("t", "alice");
        let response = service
            .post_json(
                "/delegate_delayed_leave",
                &setup.body("t", &user, "m1", "syd_no", 1000),
            )
            .await;
        assert_matrix_error(
            &response,
            403,
            "M_FORBIDDEN",
            "Delegation of delayed events is only supported for full access users",
        );
        pause(1.5).await;
        assert!(setup.cs.calls().is_empty());
    })
    .await;
}

#[tokio::test]
async fn jobs_are_stored_before_the_answer_and_follow_the_job() {
    bounded(async {
        let Some(setup) = Setup::with_redis("stored jobs").await else {
            return;
        };
        let service = setup.service().start().await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        let response = service
            .post_json("/get_token", &setup.body("t", &user, "m1", "syd_st", 3000))
            .await;
        assert_eq!(response.status, 200);
        let jobs = setup.stored_jobs().await;
        assert_eq!(jobs.len(), 1, "stored before the response: {jobs:?}");
        let (stored_field, value) = &jobs[0];
        assert_eq!(stored_field, &field(&identity));
        assert_eq!(
            value["Params"],
            json!({
                "DelayId": "syd_st",
                "DelayTimeout": 3_000_000_000_i64,
                "ServerName": setup.world.hs.server_name(),
                "LiveKitRoom": room(),
                "LiveKitIdentity": identity,
            })
        );
        let created = value["RestartedAt"]
            .as_str()
            .expect("RestartedAt")
            .to_owned();

        setup.world.livekit.add_participant(&room(), &identity);
        setup.cs.wait_for("syd_st", RESTART, 1, SOON).await;
        pause(0.3).await;
        let restarted = setup.stored_jobs().await[0].1["RestartedAt"]
            .as_str()
            .expect("RestartedAt")
            .to_owned();
        assert!(
            restarted > created,
            "RestartedAt moves on: {created} -> {restarted}"
        );

        webhook::send(
            &service,
            &webhook::participant_event("participant_left", &room(), &identity, "CLIENT_INITIATED"),
        )
        .await;
        setup.cs.wait_for("syd_st", SEND, 1, SOON).await;
        pause(0.3).await;
        assert!(setup.stored_jobs().await.is_empty(), "deleted once sent");
    })
    .await;
}

#[tokio::test]
async fn a_job_survives_a_restart_of_the_service() {
    bounded(async {
        let Some(setup) = Setup::with_redis("service restart").await else {
            return;
        };
        let mut first = setup.service().start().await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        setup.world.livekit.add_participant(&room(), &identity);
        let response = first
            .post_json(
                "/delegate_delayed_leave",
                &setup.body("t", &user, "m1", "syd_keep", 3000),
            )
            .await;
        assert_eq!(response.status, 200);
        setup.cs.wait_for("syd_keep", RESTART, 1, SOON).await;

        first.sigterm();
        assert_eq!(
            first.wait_exit(Duration::from_secs(15)).await,
            Some(Some(0))
        );
        assert_eq!(
            setup.cs.count("syd_keep", SEND),
            0,
            "shutdown sends nothing"
        );
        assert_eq!(
            setup.stored_jobs().await.len(),
            1,
            "the job is left in Redis"
        );
        let restarts_before = setup.cs.count("syd_keep", RESTART);

        let second = setup.service().start().await;
        setup
            .cs
            .wait_for("syd_keep", RESTART, restarts_before + 1, SOON)
            .await;
        webhook::send(
            &second,
            &webhook::participant_event("participant_left", &room(), &identity, "CLIENT_INITIATED"),
        )
        .await;
        setup.cs.wait_for("syd_keep", SEND, 1, SOON).await;
        pause(0.5).await;
        assert_eq!(setup.cs.count("syd_keep", SEND), 1);
        assert!(setup.stored_jobs().await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn stored_jobs_of_the_reference_are_resumed_and_expired_ones_purged() {
    bounded(async {
        let Some(setup) = Setup::with_redis("reference jobs").await else {
            return;
        };
        let mut redis = setup.redis().await;
        let live_identity = "live-identity";
        let now = time::OffsetDateTime::now_utc();
        let go_time = |at: time::OffsetDateTime| {
            at.format(&time::format_description::well_known::Rfc3339)
                .expect("format")
        };
        // What the reference writes (no Generation member), one expired an hour ago, one live.
        let entry = |delay_id: &str, identity: &str, timeout_ns: i64, at: String| {
            json!({
                "Params": {
                    "DelayId": delay_id, "DelayTimeout": timeout_ns,
                    "ServerName": setup.world.hs.server_name(),
                    "LiveKitRoom": room(), "LiveKitIdentity": identity,
                },
                "RestartedAt": at,
            })
            .to_string()
        };
        let expired = entry(
            "syd_expired",
            "old-identity",
            30_000_000_000,
            go_time(now - Duration::from_secs(3600)),
        );
        let live = entry("syd_live", live_identity, 60_000_000_000, go_time(now));
        for (identity, value) in [("old-identity", expired), (live_identity, live)] {
            let _: () =
                redis::AsyncCommands::hset(&mut redis, "lk-jwt:jobs", field(identity), value)
                    .await
                    .expect("HSET");
        }
        let _: () = redis::AsyncCommands::hset(&mut redis, "lk-jwt:jobs", "unreadable", "{")
            .await
            .expect("HSET");
        setup.world.livekit.add_participant(&room(), live_identity);

        let service = setup.service().start().await;
        setup.cs.wait_for("syd_live", RESTART, 1, SOON).await;
        pause(0.5).await;
        assert_eq!(
            setup.cs.count("syd_expired", RESTART) + setup.cs.count("syd_expired", SEND),
            0
        );
        let lookups = setup.world.livekit.participant_lookups();
        assert!(
            !lookups
                .iter()
                .any(|(_, identity)| identity == "old-identity"),
            "no lookup for a purged job: {lookups:?}"
        );
        let fields: Vec<String> = setup.stored_jobs_raw().await;
        assert!(
            !fields.contains(&field("old-identity")),
            "purged: {fields:?}"
        );
        assert!(fields.contains(&field(live_identity)), "{fields:?}");
        assert!(
            fields.contains(&"unreadable".to_owned()),
            "left alone: {fields:?}"
        );
        drop(service);
    })
    .await;
}

impl Setup {
    /// The stored fields only (some tests store entries that are not JSON).
    async fn stored_jobs_raw(&self) -> Vec<String> {
        let mut connection = self.redis().await;
        redis::AsyncCommands::hkeys(&mut connection, "lk-jwt:jobs")
            .await
            .expect("HKEYS")
    }
}

#[tokio::test]
async fn without_redis_a_shutdown_sends_nothing() {
    bounded(async {
        let setup = Setup::start().await;
        let mut service = setup.service().start().await;
        let user = setup.user("t", "alice");
        let response = service
            .post_json(
                "/get_token",
                &setup.body("t", &user, "m1", "syd_down", 60_000),
            )
            .await;
        assert_eq!(response.status, 200);
        service.sigterm();
        assert_eq!(
            service.wait_exit(Duration::from_secs(15)).await,
            Some(Some(0))
        );
        assert!(setup.cs.calls().is_empty());
    })
    .await;
}

#[tokio::test]
async fn jobs_are_stored_over_tls_with_a_rediss_url() {
    bounded(async {
        let setup = Setup::start().await;
        let Some(redis) =
            crate::support::redis::RedisServer::start_tls_or_skip("rediss", &setup.world.pki).await
        else {
            return;
        };
        // The service trusts the test CA through SSL_CERT_FILE, as for the homeserver.
        let service = setup
            .service()
            .set("LIVEKIT_REDIS_URL", &redis.tls_url())
            .start()
            .await;
        let user = setup.user("t", "alice");
        let response = service
            .post_json(
                "/get_token",
                &setup.body("t", &user, "m1", "syd_tls", 60_000),
            )
            .await;
        assert_eq!(response.status, 200);
        let mut connection = redis.connect().await;
        let stored: Vec<String> = redis::AsyncCommands::hkeys(&mut connection, "lk-jwt:jobs")
            .await
            .expect("HKEYS");
        assert_eq!(stored, [field(&identity(&user, "m1"))]);
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_redis_stops_the_start() {
    bounded(async {
        let setup = Setup::start().await;
        let port = crate::support::service::free_port();
        let exited = setup
            .service()
            .set(
                "LIVEKIT_REDIS_URL",
                &format!("redis://:hunter2@127.0.0.1:{port}"),
            )
            .run_to_exit()
            .await;
        assert_eq!(exited.code, Some(1), "{exited:?}");
        assert!(
            exited.stderr.contains("Could not connect Redis store"),
            "{}",
            exited.stderr
        );
        assert!(
            !exited.stderr.contains("hunter2"),
            "the password leaked: {}",
            exited.stderr
        );
    })
    .await;
}
