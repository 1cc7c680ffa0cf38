//! The Redis layout and the lease scripts against a real redis-server, through the library (the
//! service-level tests next door cover the same through the binary; these pin the details).

use std::time::Duration;

use matrixrtc_auth::delegation::job::{JobKey, JobParams, Signal};
use matrixrtc_auth::delegation::ownership::{Ownership, Route, Standing};
use matrixrtc_auth::delegation::record::{JobRecord, field_of};
use matrixrtc_auth::delegation::store::{JOBS_KEY, JobStore};
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::support::bounded;
use crate::support::redis::RedisServer;

const LEASE: Duration = Duration::from_secs(5);
const HEARTBEAT: Duration = Duration::from_secs(30);

async fn replica(redis: &RedisServer) -> Ownership {
    named(redis, None).await
}

async fn named(redis: &RedisServer, name: Option<&str>) -> Ownership {
    let store = JobStore::connect(&redis.url()).await.expect("connect");
    let ownership = Ownership::new(
        store,
        name.map(str::to_owned),
        LEASE,
        Duration::from_secs(30),
        HEARTBEAT,
    );
    ownership.heartbeat().await.expect("heartbeat");
    ownership
}

fn record(identity: &str, generation: &str) -> JobRecord {
    JobRecord {
        params: JobParams {
            key: JobKey {
                room: "room&alias".into(),
                identity: identity.into(),
            },
            server_name: "hs.example".into(),
            delay_id: "syd_1".into(),
            delay_timeout: Duration::from_secs(60),
            as_user: None,
        },
        restarted_at: time::OffsetDateTime::now_utc(),
        generation: generation.into(),
        connected: false,
    }
}

async fn stored(connection: &mut redis::aio::MultiplexedConnection, field: &str) -> Option<Value> {
    let value: Option<String> = connection.hget(JOBS_KEY, field).await.expect("HGET");
    value.map(|value| serde_json::from_str(&value).expect("stored JSON"))
}

async fn lease_holder(
    connection: &mut redis::aio::MultiplexedConnection,
    field: &str,
) -> Option<String> {
    connection
        .get(format!("lk-jwt:lease:{field}"))
        .await
        .expect("GET lease")
}

#[tokio::test]
async fn a_claimed_job_is_stored_in_the_reference_layout_with_its_lease() {
    bounded(async {
        let Some(redis) = RedisServer::start_or_skip("store layout").await else {
            return;
        };
        let mut connection = redis.connect().await;
        let a = replica(&redis).await;
        let job = record("@u:hs:DEV", "gen1");
        let field = field_of(&job.params.key);
        assert_eq!(field, r#"["room\u0026alias","@u:hs:DEV"]"#, "Go's escaping");
        let lease = a.lease_for(field.clone(), "gen1".into());
        a.claim(&lease, &job.to_json()).await.expect("claim");

        let value = stored(&mut connection, &field).await.expect("stored");
        assert_eq!(value["Params"]["DelayTimeout"], json!(60_000_000_000_i64));
        assert_eq!(value["Params"]["LiveKitRoom"], "room&alias");
        assert_eq!(value["Generation"], "gen1");
        assert!(value["RestartedAt"].as_str().expect("time").ends_with('Z'));
        assert_eq!(
            lease_holder(&mut connection, &field).await,
            Some(format!("{}/gen1", a.replica()))
        );
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("lk-jwt:lease:{field}"))
            .query_async(&mut connection)
            .await
            .expect("PTTL");
        assert!(ttl > 0 && ttl <= 5000, "lease TTL {ttl}");
    })
    .await;
}

#[tokio::test]
async fn a_newer_job_takes_the_key_from_the_old_driver() {
    bounded(async {
        let Some(redis) = RedisServer::start_or_skip("replacement").await else {
            return;
        };
        let mut connection = redis.connect().await;
        let (a, b) = (replica(&redis).await, replica(&redis).await);
        let old = record("i", "old");
        let field = field_of(&old.params.key);
        let old_lease = a.lease_for(field.clone(), "old".into());
        a.claim(&old_lease, &old.to_json()).await.expect("claim");
        assert_eq!(a.confirm(&old_lease, &old.to_json()).await, Standing::Held);

        // Replaced on the other replica, and on the same replica: either way the old driver is out.
        for owner in [&b, &a] {
            let new = record("i", "new");
            let new_lease = owner.lease_for(field.clone(), "new".into());
            owner
                .claim(&new_lease, &new.to_json())
                .await
                .expect("claim");
            assert_eq!(a.confirm(&old_lease, &old.to_json()).await, Standing::Lost);
            assert_eq!(a.record(&old_lease, &old.to_json()).await, Standing::Lost);
            assert_eq!(
                owner.confirm(&new_lease, &new.to_json()).await,
                Standing::Held
            );
            // Finishing the old job must not delete the new one.
            a.finish(&old_lease).await.expect("finish");
            assert_eq!(
                stored(&mut connection, &field).await.expect("still stored")["Generation"],
                "new"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_back_only_if_nobody_else_took_it() {
    bounded(async {
        let Some(redis) = RedisServer::start_or_skip("lapsed lease").await else {
            return;
        };
        let mut connection = redis.connect().await;
        let (a, b) = (replica(&redis).await, replica(&redis).await);
        let job = record("i", "g");
        let field = field_of(&job.params.key);
        let lease = a.lease_for(field.clone(), "g".into());
        a.claim(&lease, &job.to_json()).await.expect("claim");

        let _: () = connection
            .del(format!("lk-jwt:lease:{field}"))
            .await
            .expect("DEL");
        assert_eq!(
            a.confirm(&lease, &job.to_json()).await,
            Standing::Held,
            "re-taken"
        );
        assert!(lease_holder(&mut connection, &field).await.is_some());

        let _: () = connection
            .del(format!("lk-jwt:lease:{field}"))
            .await
            .expect("DEL");
        let adopted = b.adopt_orphans(false).await.expect("scan");
        assert_eq!(adopted.jobs.len(), 1);
        assert_eq!(
            a.confirm(&lease, &job.to_json()).await,
            Standing::Lost,
            "b adopted it first"
        );
        assert_eq!(
            b.confirm(&adopted.jobs[0].0, &job.to_json()).await,
            Standing::Held
        );
    })
    .await;
}

#[tokio::test]
async fn finishing_deletes_the_job_and_its_lease() {
    bounded(async {
        let Some(redis) = RedisServer::start_or_skip("finish").await else {
            return;
        };
        let mut connection = redis.connect().await;
        let a = replica(&redis).await;
        let job = record("i", "g");
        let field = field_of(&job.params.key);
        let lease = a.lease_for(field.clone(), "g".into());
        a.claim(&lease, &job.to_json()).await.expect("claim");
        let mut updated = job.clone();
        updated.restarted_at += Duration::from_secs(3);
        assert_eq!(a.record(&lease, &updated.to_json()).await, Standing::Held);
        let value: String = connection.hget(JOBS_KEY, &field).await.expect("HGET");
        assert_eq!(JobRecord::parse(&field, &value).expect("parses"), updated);

        a.finish(&lease).await.expect("finish");
        assert_eq!(stored(&mut connection, &field).await, None);
        assert_eq!(lease_holder(&mut connection, &field).await, None);
        // Finishing twice is harmless.
        a.finish(&lease).await.expect("finish");
    })
    .await;
}

#[tokio::test]
async fn orphans_are_adopted_once_including_the_references_entries() {
    bounded(async {
        let Some(redis) = RedisServer::start_or_skip("adoption").await else { return };
        let mut connection = redis.connect().await;
        let (a, b) = (replica(&redis).await, replica(&redis).await);
        // Written by the reference: no Generation member, Go's own time format with an offset.
        let reference = r#"{"Params":{"DelayId":"syd_ref","DelayTimeout":30000000000,"ServerName":"hs","LiveKitRoom":"r","LiveKitIdentity":"ref"},"RestartedAt":"2030-01-01T00:00:00.5+01:00"}"#;
        let _: () = connection
            .hset(JOBS_KEY, r#"["r","ref"]"#, reference)
            .await
            .expect("HSET");
        let _: () = connection
            .hset(JOBS_KEY, r#"["r","garbage"]"#, "not json")
            .await
            .expect("HSET");
        let held = record("held", "h");
        let held_lease = a.lease_for(field_of(&held.params.key), "h".into());
        a.claim(&held_lease, &held.to_json()).await.expect("claim");

        let adopted = b.adopt_orphans(false).await.expect("scan");
        assert_eq!(adopted.jobs.len(), 1, "{adopted:?}");
        let (lease, value) = &adopted.jobs[0];
        assert_eq!(lease.field, r#"["r","ref"]"#);
        assert_eq!(lease.generation, "");
        let parsed = JobRecord::parse(&lease.field, value).expect("parses");
        assert_eq!(parsed.params.delay_id, "syd_ref");
        assert!(b.adopt_orphans(false).await.expect("scan").jobs.is_empty(), "only once");
        assert!(a.adopt_orphans(false).await.expect("scan").jobs.is_empty());
        assert_eq!(b.confirm(lease, value).await, Standing::Held);
        // The unreadable entry is left alone.
        let garbage: Option<String> = connection.hget(JOBS_KEY, r#"["r","garbage"]"#).await.expect("HGET");
        assert_eq!(garbage.as_deref(), Some("not json"));
    })
    .await;
}

#[tokio::test]
async fn signals_are_routed_to_the_holder() {
    bounded(async {
        let Some(redis) = RedisServer::start_or_skip("routing").await else { return };
        let mut connection = redis.connect().await;
        let (a, b) = (replica(&redis).await, replica(&redis).await);
        let job = record("i", "g");
        let field = field_of(&job.params.key);
        assert_eq!(a.route(&field).await.expect("route"), Route::NoJob);

        let lease = a.lease_for(field.clone(), "g".into());
        a.claim(&lease, &job.to_json()).await.expect("claim");
        assert!(matches!(a.route(&field).await.expect("route"), Route::Here { lease: l, .. } if l == lease));
        let Route::Elsewhere { replica, generation } = b.route(&field).await.expect("route") else {
            panic!("b should see a as the holder");
        };
        assert_eq!((replica.as_str(), generation.as_str()), (a.replica(), "g"));

        let mut inbox = a.inbox(&redis.url(), Duration::from_secs(1)).await.expect("inbox");
        b.forward(&replica, &field, &generation, Signal::ParticipantConnectionAborted)
            .await
            .expect("forward");
        assert_eq!(
            inbox.next().await.expect("read"),
            Some((field.clone(), "g".to_owned(), Signal::ParticipantConnectionAborted))
        );
        assert_eq!(inbox.next().await.expect("read"), None, "empty after a quiet wait");

        // An orphan is adopted by whoever gets a signal for it.
        let _: () = connection.del(format!("lk-jwt:lease:{field}")).await.expect("DEL");
        assert!(matches!(b.route(&field).await.expect("route"), Route::Here { .. }));
        assert_eq!(a.confirm(&lease, &job.to_json()).await, Standing::Lost);
    })
    .await;
}

#[tokio::test]
async fn a_vanished_entry_is_filed_again_by_its_driver_and_a_lapsed_lease_retaken_on_update() {
    bounded(async {
        let Some(redis) = RedisServer::start_or_skip("re-file").await else {
            return;
        };
        let mut connection = redis.connect().await;
        let a = replica(&redis).await;
        let job = record("i", "g");
        let field = field_of(&job.params.key);
        let lease = a.lease_for(field.clone(), "g".into());
        a.claim(&lease, &job.to_json()).await.expect("claim");

        // A Redis that restarted without its data: entry and lease gone.
        let _: () = redis::cmd("FLUSHALL")
            .query_async(&mut connection)
            .await
            .expect("FLUSHALL");
        assert_eq!(a.confirm(&lease, &job.to_json()).await, Standing::Held);
        let value: String = connection
            .hget(JOBS_KEY, &field)
            .await
            .expect("filed again");
        assert_eq!(JobRecord::parse(&field, &value).expect("parses"), job);
        assert!(lease_holder(&mut connection, &field).await.is_some());

        // The lease lapsed: recording a restart takes it back.
        let _: () = connection
            .del(format!("lk-jwt:lease:{field}"))
            .await
            .expect("DEL");
        let mut restarted = job.clone();
        restarted.connected = true;
        assert_eq!(a.record(&lease, &restarted.to_json()).await, Standing::Held);
        assert_eq!(
            lease_holder(&mut connection, &field).await,
            Some(format!("{}/g", a.replica()))
        );
        let value: String = connection.hget(JOBS_KEY, &field).await.expect("HGET");
        assert!(JobRecord::parse(&field, &value).expect("parses").connected);
    })
    .await;
}

#[tokio::test]
async fn jobs_of_a_replica_without_heartbeat_are_adopted_and_its_inbox_drained() {
    bounded(async {
        let Some(redis) = RedisServer::start_or_skip("heartbeat").await else {
            return;
        };
        let mut connection = redis.connect().await;
        let dead = named(&redis, Some("dead")).await;
        let alive = named(&redis, Some("alive")).await;
        let job = record("i", "g");
        let field = field_of(&job.params.key);
        let lease = dead.lease_for(field.clone(), "g".into());
        dead.claim(&lease, &job.to_json()).await.expect("claim");
        alive
            .forward("dead", &field, "g", Signal::ParticipantConnectionAborted)
            .await
            .expect("forward");
        assert!(
            alive
                .adopt_orphans(false)
                .await
                .expect("scan")
                .jobs
                .is_empty(),
            "dead is alive yet"
        );

        let _: () = connection
            .del("lk-jwt:replica:dead")
            .await
            .expect("DEL heartbeat");
        let adopted = alive.adopt_orphans(false).await.expect("scan");
        assert_eq!(adopted.jobs.len(), 1);
        assert_eq!(adopted.gone, ["dead"]);
        assert_eq!(dead.confirm(&lease, &job.to_json()).await, Standing::Lost);
        assert_eq!(
            alive.drain("dead").await.expect("drain"),
            [(
                field.clone(),
                "g".to_owned(),
                Signal::ParticipantConnectionAborted
            )]
        );
        assert!(alive.drain("dead").await.expect("drain").is_empty());

        // A restarted "alive" (same name) takes back what is leased to its name only with `own`.
        let back = named(&redis, Some("alive")).await;
        assert!(
            back.adopt_orphans(false)
                .await
                .expect("scan")
                .jobs
                .is_empty()
        );
        assert_eq!(back.adopt_orphans(true).await.expect("scan").jobs.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn expired_jobs_are_purged_whoever_holds_them() {
    bounded(async {
        let Some(redis) = RedisServer::start_or_skip("purge").await else {
            return;
        };
        let mut connection = redis.connect().await;
        let (a, b) = (replica(&redis).await, replica(&redis).await);
        let mut old = record("old", "g");
        old.restarted_at -= Duration::from_secs(120);
        let fresh = record("fresh", "g");
        for job in [&old, &fresh] {
            let lease = a.lease_for(field_of(&job.params.key), "g".into());
            a.claim(&lease, &job.to_json()).await.expect("claim");
        }
        assert_eq!(
            b.purge_expired(time::OffsetDateTime::now_utc())
                .await
                .expect("purge"),
            1
        );
        assert_eq!(
            stored(&mut connection, &field_of(&old.params.key)).await,
            None
        );
        assert_eq!(
            lease_holder(&mut connection, &field_of(&old.params.key)).await,
            None
        );
        assert!(
            stored(&mut connection, &field_of(&fresh.params.key))
                .await
                .is_some()
        );
    })
    .await;
}
