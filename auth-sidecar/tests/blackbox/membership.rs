//! The membership monitor through the library against a real redis-server: upstream's layout, the
//! per-room sweep leases with two replicas, Redis down; and the hand-run benchmark of a sweep of 1,000
//! tracked rooms against a loopback homeserver (`--run-ignored only`, see docs/benchmark-auth.md).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use matrixrtc_auth::livekit::webhook::{Notification, ParticipantChange};
use matrixrtc_auth::membership::entry::{PARTICIPANTS_KEY, State};
use matrixrtc_auth::membership::homeserver::{Homeserver, HomeserverError, Members};
use matrixrtc_auth::membership::jobs::Jobs;
use matrixrtc_auth::membership::sfu::{RetryPolicy, Sfu, SfuError};
use matrixrtc_auth::membership::store::lease_key;
use matrixrtc_auth::membership::{Monitor, Settings};
use matrixrtc_auth::telemetry::Metrics;
use matrixrtc_auth::telemetry::membership::Kick;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::support::bounded;
use crate::support::redis::RedisServer;

/// No delegated leaves in these tests.
struct NoJobs;

impl Jobs for NoJobs {
    fn discard<'a>(&'a self, _room: &'a str, _identity: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Everyone's joined set is `joined`; counts `joined_members` calls per room.
#[derive(Default)]
struct CountingHomeserver {
    joined: HashSet<String>,
    calls: Mutex<HashMap<String, usize>>,
    delay: Duration,
}

impl Homeserver for CountingHomeserver {
    fn resolve(&self) -> BoxFuture<'_, Result<(), HomeserverError>> {
        Box::pin(async { Ok(()) })
    }

    fn joined_members<'a>(
        &'a self,
        room_id: &'a str,
    ) -> BoxFuture<'a, Result<Members, HomeserverError>> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(room_id.to_owned())
            .or_default() += 1;
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            Ok(Members::Joined(self.joined.clone()))
        })
    }

    fn server_joined<'a>(
        &'a self,
        _room_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, HomeserverError>> {
        Box::pin(async { Ok(true) })
    }

    fn user_joined<'a>(
        &'a self,
        _room_id: &'a str,
        _user_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, HomeserverError>> {
        Box::pin(async { Ok(true) })
    }
}

/// Everyone is in LiveKit; removals are recorded.
#[derive(Default)]
struct RecordingSfu {
    removed: Mutex<Vec<String>>,
    lookups: AtomicUsize,
}

impl Sfu for RecordingSfu {
    fn participant_present<'a>(
        &'a self,
        _room: &'a str,
        _identity: &'a str,
    ) -> BoxFuture<'a, Result<bool, SfuError>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(true) })
    }

    fn remove_participant<'a>(
        &'a self,
        _room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        self.removed.lock().unwrap().push(identity.to_owned());
        Box::pin(async { Ok(()) })
    }

    fn delete_room<'a>(&'a self, _room: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        Box::pin(async { Ok(()) })
    }
}

fn settings(redis_url: Option<String>, replica: &str, concurrency: usize) -> Settings {
    Settings {
        interval: Duration::from_secs(30),
        concurrency: NonZeroUsize::new(concurrency).unwrap(),
        redis_url,
        replica_id: Some(replica.to_owned()),
        retry: RetryPolicy::default(),
    }
}

async fn monitor(
    redis_url: Option<String>,
    replica: &str,
    homeserver: Arc<dyn Homeserver>,
    sfu: Arc<dyn Sfu>,
    concurrency: usize,
) -> (Monitor, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let monitor = Monitor::new(
        settings(redis_url, replica, concurrency),
        homeserver,
        sfu,
        Arc::new(NoJobs),
        Arc::clone(&metrics),
    )
    .await
    .expect("monitor");
    (monitor, metrics)
}

async fn joined(monitor: &Monitor, room: &str, identity: &str) {
    monitor
        .participant_changed(&Notification {
            room: room.into(),
            identity: identity.into(),
            change: ParticipantChange::Joined,
        })
        .await;
}

#[tokio::test]
async fn entries_are_stored_in_upstreams_layout_and_rooms_swept_under_a_lease() {
    bounded(async {
        let Some(redis) = RedisServer::start_or_skip("membership layout").await else {
            return;
        };
        let mut connection = redis.connect().await;
        // An entry upstream wrote: read, looked up in LiveKit (pending), then removed like ours.
        let upstream_field = r#"["lk","upstream-id"]"#;
        let upstream_value = json!({
            "matrix_room_id": "!room:hs", "matrix_user_id": "@gone:hs", "livekit_room": "lk",
            "livekit_identity": "upstream-id", "registered_at": "2026-01-01T00:00:00Z",
        });
        let _: () = connection
            .hset(PARTICIPANTS_KEY, upstream_field, upstream_value.to_string())
            .await
            .unwrap();

        let homeserver = Arc::new(CountingHomeserver {
            joined: ["@stays:hs".to_owned()].into(),
            ..CountingHomeserver::default()
        });
        let sfu = Arc::new(RecordingSfu::default());
        let (monitor, metrics) = monitor(
            Some(redis.url()),
            "replica-a",
            homeserver.clone(),
            sfu.clone(),
            8,
        )
        .await;
        monitor
            .track("!room:hs", "@stays:hs", "lk", "stays-id")
            .await;
        monitor.track("!room:hs", "@left:hs", "lk", "left-id").await;

        let stored: Option<String> = connection
            .hget(PARTICIPANTS_KEY, r#"["lk","stays-id"]"#)
            .await
            .unwrap();
        let stored: Value =
            serde_json::from_str(&stored.expect("stored under the upstream field")).unwrap();
        let members: Vec<&str> = stored
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            members,
            [
                "livekit_identity",
                "livekit_room",
                "matrix_room_id",
                "matrix_user_id",
                "registered_at"
            ]
        );
        assert_eq!(stored["matrix_user_id"], "@stays:hs");
        assert!(stored["registered_at"].as_str().unwrap().ends_with('Z'));

        joined(&monitor, "lk", "stays-id").await;
        joined(&monitor, "lk", "left-id").await;
        let stored: String = connection
            .hget(PARTICIPANTS_KEY, r#"["lk","left-id"]"#)
            .await
            .unwrap();
        assert!(stored.contains(r#""connected_at":"#), "{stored}");

        let report = monitor.sweep().await;
        assert_eq!(
            (report.swept, report.removed, report.connected),
            (1, 2, 1),
            "{report:?}"
        );
        let mut removed = sfu.removed.lock().unwrap().clone();
        removed.sort();
        assert_eq!(removed, ["left-id", "upstream-id"]);
        assert_eq!(metrics.membership.kicks(Kick::RemoveParticipant), 2);
        let stored: String = connection
            .hget(PARTICIPANTS_KEY, r#"["lk","left-id"]"#)
            .await
            .unwrap();
        assert!(stored.contains(r#""revoked_at":"#), "{stored}");

        // The room's lease names the replica, with max(15 s, interval) = 30 s to live, and is left to expire.
        let holder: Option<String> = connection.get(lease_key("!room:hs")).await.unwrap();
        assert_eq!(holder.as_deref(), Some("replica-a"));
        let ttl: i64 = connection.pttl(lease_key("!room:hs")).await.unwrap();
        assert!((20_000..=30_000).contains(&ttl), "{ttl} ms");

        // A second instance (a restart) sees the same entries and states.
        let (again, _) = monitor_again(&redis, homeserver.clone(), sfu.clone()).await;
        let states: HashMap<String, State> = again
            .entries()
            .await
            .unwrap()
            .into_iter()
            .map(|entry| (entry.matrix_user_id.clone(), entry.state()))
            .collect();
        assert_eq!(states["@stays:hs"], State::Connected);
        assert_eq!(states["@left:hs"], State::Revoked);

        // Redis gone: no sweep at all, nobody removed.
        drop(redis);
        let calls = homeserver.calls.lock().unwrap().values().sum::<usize>();
        let report = again.sweep().await;
        assert!(!report.store_ok);
        assert_eq!(
            homeserver.calls.lock().unwrap().values().sum::<usize>(),
            calls
        );
        assert_eq!(sfu.removed.lock().unwrap().len(), 2);
    })
    .await;
}

async fn monitor_again(
    redis: &RedisServer,
    homeserver: Arc<CountingHomeserver>,
    sfu: Arc<RecordingSfu>,
) -> (Monitor, Arc<Metrics>) {
    monitor(Some(redis.url()), "replica-a", homeserver, sfu, 8).await
}

#[tokio::test]
async fn two_replicas_never_sweep_one_room_at_once_and_each_leaver_is_removed_once() {
    bounded(async {
        let Some(redis) = RedisServer::start_or_skip("membership replicas").await else {
            return;
        };
        const ROOMS: usize = 40;
        // Slow enough that the two sweeps overlap for every room.
        let homeserver = Arc::new(CountingHomeserver {
            joined: HashSet::new(),
            delay: Duration::from_millis(20),
            ..CountingHomeserver::default()
        });
        let sfu = Arc::new(RecordingSfu::default());
        let (a, _) = monitor(Some(redis.url()), "a", homeserver.clone(), sfu.clone(), 4).await;
        let (b, _) = monitor(Some(redis.url()), "b", homeserver.clone(), sfu.clone(), 4).await;
        for room in 0..ROOMS {
            let identity = format!("id{room}");
            a.track(
                &format!("!r{room}:hs"),
                "@left:hs",
                &format!("lk{room}"),
                &identity,
            )
            .await;
            // The webhook reaches the other replica: the shared hash carries it.
            joined(&b, &format!("lk{room}"), &identity).await;
        }

        let (first_a, first_b) = tokio::join!(a.sweep(), b.sweep());
        assert_eq!(
            first_a.swept + first_b.swept,
            ROOMS,
            "{first_a:?} {first_b:?}"
        );
        assert_eq!(first_a.leased_elsewhere + first_b.leased_elsewhere, ROOMS);
        let calls = homeserver.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), ROOMS);
        assert!(calls.values().all(|count| *count == 1), "{calls:?}");
        let removed = sfu.removed.lock().unwrap().clone();
        assert_eq!(removed.len(), ROOMS);
        assert_eq!(
            removed.iter().collect::<HashSet<_>>().len(),
            ROOMS,
            "each once"
        );

        // The next interval: each room is swept again by the replica that holds it, once.
        let (second_a, second_b) = tokio::join!(a.sweep(), b.sweep());
        assert_eq!(second_a.swept, first_a.swept);
        assert_eq!(second_b.swept, first_b.swept);
        assert_eq!(
            sfu.removed.lock().unwrap().len(),
            ROOMS,
            "revoked entries are not removed again"
        );
    })
    .await;
}

/// The benchmark: one sweep of 1,000 tracked rooms (2 connected participants each, 100 of whom left
/// their room) against a loopback HTTP homeserver answering `joined_members` with 10 members; reports
/// wall time, requests and process CPU. Run with:
/// `cargo nextest run -p matrixrtc-auth --test blackbox -E 'test(membership_sweep_benchmark)' --run-ignored only --no-capture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark, run by hand"]
async fn membership_sweep_benchmark() {
    use matrixrtc_auth::membership::homeserver::{AsHomeserver, CsApi};

    const ROOMS: usize = 1000;
    let (base, requests) = bench_homeserver::start().await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(64);
    let homeserver: Arc<dyn Homeserver> =
        Arc::new(AsHomeserver::new(builder, CsApi::Fixed(base), "hs", "as-token").unwrap());
    let redis = RedisServer::start_or_skip("membership benchmark").await;
    let mut stores = vec![("memory", None)];
    if let Some(redis) = &redis {
        stores.push(("redis", Some(redis.url())));
    }
    for (store, url) in stores {
        for concurrency in [8, 32] {
            let sfu = Arc::new(RecordingSfu::default());
            let replica = format!("bench-{store}-{concurrency}");
            let (monitor, _) = monitor(
                url.clone(),
                &replica,
                homeserver.clone(),
                sfu.clone(),
                concurrency,
            )
            .await;
            if let Some(redis) = &redis {
                let mut connection = redis.connect().await;
                let _: () = redis::cmd("FLUSHALL")
                    .query_async(&mut connection)
                    .await
                    .unwrap();
            }
            for room in 0..ROOMS {
                for user in 0..2 {
                    // User 0 of every tenth room has left the Matrix room (the fake omits them).
                    let user_id = if user == 0 && room % 10 == 0 {
                        "@left:hs".to_owned()
                    } else {
                        format!("@u{user}:hs")
                    };
                    let identity = format!("{room}/{user}");
                    monitor
                        .track(
                            &format!("!r{room}:hs"),
                            &user_id,
                            &format!("lk{room}"),
                            &identity,
                        )
                        .await;
                    joined(&monitor, &format!("lk{room}"), &identity).await;
                }
            }
            for sweep in ["first (100 kicks)", "steady"] {
                let before_requests = requests.load(Ordering::SeqCst);
                let before_cpu = cpu_seconds();
                let started = std::time::Instant::now();
                let report = monitor.sweep().await;
                let wall = started.elapsed();
                let cpu = cpu_seconds() - before_cpu;
                assert_eq!(report.swept, ROOMS, "{report:?}");
                println!(
                    "BENCH store={store} concurrency={concurrency} sweep={sweep}: {:.1} ms wall, {} joined_members requests, {} removed, {:.1} ms CPU ({:.0} us per room, service and fake homeserver together)",
                    wall.as_secs_f64() * 1e3,
                    requests.load(Ordering::SeqCst) - before_requests,
                    report.removed,
                    cpu * 1e3,
                    cpu * 1e6 / ROOMS as f64,
                );
            }
            assert_eq!(sfu.removed.lock().unwrap().len(), ROOMS / 10);
        }
    }
}

/// User plus system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// A plain-HTTP homeserver on loopback whose rooms all have ten members `@u0:hs` .. `@u9:hs`.
mod bench_homeserver {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::State;

    pub async fn start() -> (url::Url, Arc<AtomicUsize>) {
        let requests = Arc::new(AtomicUsize::new(0));
        let members: serde_json::Map<String, serde_json::Value> = (0..10)
            .map(|user| {
                (
                    format!("@u{user}:hs"),
                    serde_json::json!({"display_name": format!("User {user}"), "avatar_url": null}),
                )
            })
            .collect();
        let body = Arc::new(serde_json::json!({"joined": members}).to_string());
        let app = axum::Router::new()
            .route(
                "/_matrix/client/v3/rooms/{room}/joined_members",
                axum::routing::get(
                    |State((requests, body)): State<(Arc<AtomicUsize>, Arc<String>)>| async move {
                        requests.fetch_add(1, Ordering::SeqCst);
                        (
                            [("content-type", "application/json")],
                            body.as_str().to_owned(),
                        )
                    },
                ),
            )
            .with_state((Arc::clone(&requests), body));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (
            url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
            requests,
        )
    }
}
