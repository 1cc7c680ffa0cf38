//! Several replicas behind one Service, sharing one Redis: a request or webhook may reach any of them,
//! exactly one drives each job, and a killed replica's jobs are taken over and finished exactly once.

use std::time::Duration;

use redis::AsyncCommands;

use super::{SOON, Setup, field, identity, pause, room};
use crate::support::bounded;
use crate::support::client_server::{Answer, RESTART, SEND};
use crate::support::webhook;

#[tokio::test]
async fn a_webhook_at_another_replica_reaches_the_job() {
    bounded(async {
        let Some(setup) = Setup::with_redis("webhook forwarding").await else {
            return;
        };
        let a = setup.service().start().await;
        let b = setup.service().start().await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        let response = a
            .post_json("/get_token", &setup.body("t", &user, "m1", "syd_fw", 3000))
            .await;
        assert_eq!(response.status, 200);
        // The join reaches b, the leave reaches b too: a (the owner) acts on both.
        webhook::send(
            &b,
            &webhook::participant_event("participant_joined", &room(), &identity, "UNKNOWN_REASON"),
        )
        .await;
        setup.cs.wait_for("syd_fw", RESTART, 1, SOON).await;
        webhook::send(
            &b,
            &webhook::participant_event("participant_left", &room(), &identity, "CLIENT_INITIATED"),
        )
        .await;
        setup.cs.wait_for("syd_fw", SEND, 1, SOON).await;
        pause(1.0).await;
        assert_eq!(
            setup.cs.count("syd_fw", SEND),
            1,
            "{:?}",
            setup.cs.actions()
        );
        assert_eq!(
            setup.cs.count("syd_fw", RESTART),
            1,
            "one driver: {:?}",
            setup.cs.actions()
        );
        assert!(setup.stored_jobs().await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn jobs_spread_over_replicas_are_each_driven_once() {
    bounded(async {
        let Some(setup) = Setup::with_redis("one driver per job").await else {
            return;
        };
        let replicas = [
            setup.service().start().await,
            setup.service().start().await,
            setup.service().start().await,
        ];
        let mut delays = Vec::new();
        for n in 0..6 {
            let token = format!("t{n}");
            let user = setup.user(&token, &format!("user{n}"));
            let member = format!("m{n}");
            setup
                .world
                .livekit
                .add_participant(&room(), &identity(&user, &member));
            let delay = format!("syd_{n}");
            let response = replicas[n % 3]
                .post_json(
                    "/delegate_delayed_leave",
                    &setup.body(&token, &user, &member, &delay, 2000),
                )
                .await;
            assert_eq!(response.status, 200);
            delays.push(delay);
        }
        pause(3.0).await;
        // 2 s timeout: a restart at once, then every 1.6 s: two or three each in 3 s, never doubled.
        for delay in &delays {
            let restarts = setup.cs.count(delay, RESTART);
            assert!(
                (2..=3).contains(&restarts),
                "{delay}: {restarts} restarts; {:?}",
                setup.cs.actions()
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_killed_replicas_job_is_taken_over_and_sent_exactly_once() {
    bounded(async {
        let Some(setup) = Setup::with_redis("takeover").await else {
            return;
        };
        let a = setup.service().start().await;
        let b = setup.service().start().await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        setup.world.livekit.add_participant(&room(), &identity);
        let response = a
            .post_json(
                "/delegate_delayed_leave",
                &setup.body("t", &user, "m1", "syd_k", 3000),
            )
            .await;
        assert_eq!(response.status, 200);
        setup.cs.wait_for("syd_k", RESTART, 1, SOON).await;
        let before = setup.cs.count("syd_k", RESTART);

        // SIGKILL: no graceful release of anything; b must wait for the lease to expire (1.5 s here).
        drop(a);
        setup.cs.wait_for("syd_k", RESTART, before + 1, SOON).await;
        assert_eq!(
            setup.cs.count("syd_k", SEND),
            0,
            "taking over sends nothing"
        );

        webhook::send(
            &b,
            &webhook::participant_event("participant_left", &room(), &identity, "CLIENT_INITIATED"),
        )
        .await;
        setup.cs.wait_for("syd_k", SEND, 1, SOON).await;
        pause(2.0).await;
        assert_eq!(setup.cs.count("syd_k", SEND), 1, "{:?}", setup.cs.actions());
        assert!(setup.stored_jobs().await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_replacement_on_another_replica_stops_the_old_driver() {
    bounded(async {
        let Some(setup) = Setup::with_redis("cross-replica replacement").await else {
            return;
        };
        let a = setup.service().start().await;
        let b = setup.service().start().await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        setup.world.livekit.add_participant(&room(), &identity);
        let first = a
            .post_json(
                "/delegate_delayed_leave",
                &setup.body("t", &user, "m1", "syd_a", 1000),
            )
            .await;
        assert_eq!(first.status, 200);
        setup.cs.wait_for("syd_a", RESTART, 1, SOON).await;
        let second = b
            .post_json(
                "/delegate_delayed_leave",
                &setup.body("t", &user, "m1", "syd_b", 1000),
            )
            .await;
        assert_eq!(second.status, 200);
        // Within one lease renewal (0.5 s here) the old driver notices and stops.
        pause(0.8).await;
        let old_calls = setup.cs.count("syd_a", RESTART);
        setup.cs.wait_for("syd_b", RESTART, 2, SOON).await;
        pause(1.0).await;
        assert_eq!(
            setup.cs.count("syd_a", RESTART),
            old_calls,
            "{:?}",
            setup.cs.actions()
        );
        webhook::send(
            &a,
            &webhook::participant_event("participant_left", &room(), &identity, "CLIENT_INITIATED"),
        )
        .await;
        setup.cs.wait_for("syd_b", SEND, 1, SOON).await;
        pause(0.5).await;
        assert_eq!(setup.cs.count("syd_a", SEND), 0);
        let _ = b;
    })
    .await;
}

#[tokio::test]
async fn a_waiting_job_sends_once_whichever_replica_dies() {
    bounded(async {
        let Some(setup) = Setup::with_redis("waiting takeover").await else {
            return;
        };
        let a = setup.service().start().await;
        let _b = setup.service().start().await;
        let user = setup.user("t", "alice");
        let response = a
            .post_json("/get_token", &setup.body("t", &user, "m1", "syd_w", 3000))
            .await;
        assert_eq!(response.status, 200);
        drop(a);
        // b adopts it, waits min(6 min scaled, 3 s) for the participant, who never comes, and sends.
        setup
            .cs
            .wait_for("syd_w", SEND, 1, Duration::from_secs(10))
            .await;
        pause(1.0).await;
        assert_eq!(setup.cs.actions(), [("syd_w".to_owned(), SEND.to_owned())]);
    })
    .await;
}

#[tokio::test]
async fn the_lease_is_renewed_while_a_send_waits_to_retry() {
    bounded(async {
        let Some(setup) = Setup::with_redis("lease during send retries").await else {
            return;
        };
        let a = setup.service().start().await;
        let _b = setup.service().start().await;
        let user = setup.user("t", "alice");
        let identity = identity(&user, "m1");
        setup.world.livekit.add_participant(&room(), &identity);
        // The retry waits 4 s: far longer than the (scaled) 1.5 s lease.
        setup.cs.script(
            "syd_retry",
            SEND,
            vec![
                Answer {
                    status: 429,
                    headers: vec![("retry-after", "4".to_owned())],
                    body: r#"{"errcode":"M_LIMIT_EXCEEDED"}"#.to_owned(),
                },
                Answer::status(200),
            ],
        );
        let response = a
            .post_json(
                "/delegate_delayed_leave",
                &setup.body("t", &user, "m1", "syd_retry", 20_000),
            )
            .await;
        assert_eq!(response.status, 200);
        setup.cs.wait_for("syd_retry", RESTART, 1, SOON).await;
        setup.world.livekit.remove_participant(&room(), &identity);
        webhook::send(
            &a,
            &webhook::participant_event("participant_left", &room(), &identity, "CLIENT_INITIATED"),
        )
        .await;
        setup.cs.wait_for("syd_retry", SEND, 1, SOON).await;

        let mut redis = setup.redis().await;
        let lease_key = format!("lk-jwt:lease:{}", field(&identity));
        let first: Option<String> = redis.get(&lease_key).await.expect("GET lease");
        let first = first.expect("the sender holds the lease");
        for _ in 0..30 {
            let holder: Option<String> = redis.get(&lease_key).await.expect("GET lease");
            assert_eq!(
                holder.as_ref(),
                Some(&first),
                "the lease lapsed or moved mid-send"
            );
            if setup.cs.count("syd_retry", SEND) >= 2 {
                break;
            }
            pause(0.1).await;
        }
        setup
            .cs
            .wait_for("syd_retry", SEND, 2, Duration::from_secs(6))
            .await;
        pause(1.0).await;
        assert_eq!(
            setup.cs.count("syd_retry", SEND),
            2,
            "{:?}",
            setup.cs.actions()
        );
        assert!(setup.stored_jobs().await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn concurrent_adds_for_one_participant_leave_one_consistent_job() {
    bounded(async {
        let Some(setup) = Setup::with_redis("concurrent adds").await else {
            return;
        };
        let service = setup.service().start().await;
        let user = setup.user("t", "alice");
        let adds = (0..8).map(|n| {
            let body = setup.body("t", &user, "m1", &format!("syd_c{n}"), 1500);
            let service = &service;
            async move { service.post_json("/delegate_delayed_leave", &body).await }
        });
        for response in futures::future::join_all(adds).await {
            assert_eq!(response.status, 200, "{}", response.text());
        }
        let stored = setup.stored_jobs().await;
        assert_eq!(stored.len(), 1);
        let winner = stored[0].1["Params"]["DelayId"]
            .as_str()
            .expect("DelayId")
            .to_owned();
        // Nobody joins: the job Redis holds sends at its timeout, and no other one does.
        setup
            .cs
            .wait_for(&winner, SEND, 1, Duration::from_secs(5))
            .await;
        pause(1.0).await;
        assert_eq!(
            setup.cs.actions(),
            [(winner, SEND.to_owned())],
            "exactly the stored job sends"
        );
    })
    .await;
}
