//! The fault suite, delegation half: the real binary, a real `redis-server`, fakes of the homeserver's
//! client-server API and of LiveKit, and faults injected while jobs run. One test runs every fault at
//! once (they share nothing) and prints `faults injected: N, leaves lost: L, leaves doubled: D`, counted
//! from the `send` calls the fake homeserver saw; it passes only with L = D = 0, every leave within the
//! bound stated for its fault, no 5xx, and bounded memory.
//!
//! Bounds, from the moment the participant leaves (docs/auth-service.md repeats them):
//!
//! | Fault | Leave sent within |
//! |---|---|
//! | kill -9 of the only replica, restarted at once (same `LIVEKIT_REPLICA_ID`) | 2 s (and its jobs restarted within 3 s of the kill) |
//! | kill -9 of one of three replicas, leave during the takeover | 8 s (heartbeat 3 s + scan 1 s + lookup) |
//! | kill -9 of one of three replicas, leave after the takeover | 2 s |
//! | Redis stopped for 20 s, leave during the outage | 2 s |
//! | Redis stopped for 20 s, job added during the outage, leave after it | 2 s |
//! | LiveKit answering 503, or not answering | 2 s after a leave webhook; timeout + 2 s if they never join |
//! | a burst of webhooks for unknown jobs | 2 s for a real job afterwards |
//!
//! The kill and Redis faults run with the service's real intervals (15 s leases, 3 s heartbeats), not
//! the test time scale: a scaled lease would lapse before the fault could show. The Redis outage really
//! lasts 20 s (the Redis client's own timeouts are not scaled either), once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::Method;
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::delegation::{Setup, field, identity, pause, room};
use crate::support::client_server::{FakeClientServerApi, RESTART, SEND};
use crate::support::jwt::{KEY, SECRET};
use crate::support::redis::outage::RestartableRedis;
use crate::support::service::Service;
use crate::support::webhook;

/// The service's real intervals (the default scale).
const REAL_TIME: &str = "1";

/// What one fault scenario observed.
#[derive(Debug, Default)]
struct Tally {
    faults: usize,
    lost: usize,
    doubled: usize,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Self) {
        self.faults += other.faults;
        self.lost += other.lost;
        self.doubled += other.doubled;
    }
}

/// A leave the homeserver must see once: its delay ID, when the participant left, and the bound.
struct Leave {
    delay_id: String,
    left: Instant,
    bound: Duration,
}

impl Leave {
    fn new(delay_id: &str, bound: Duration) -> Self {
        Self {
            delay_id: delay_id.to_owned(),
            left: Instant::now(),
            bound,
        }
    }
}

/// Waits (at most until the last bound) for every leave, then counts lost and doubled ones; panics if
/// one came late. `settle` is how long to keep watching for doubles afterwards.
async fn tally(
    cs: &FakeClientServerApi,
    faults: usize,
    leaves: &[Leave],
    settle: Duration,
) -> Tally {
    let last = leaves
        .iter()
        .map(|leave| leave.left + leave.bound)
        .max()
        .unwrap_or_else(Instant::now);
    while Instant::now() < last
        && leaves
            .iter()
            .any(|leave| cs.count(&leave.delay_id, SEND) == 0)
    {
        pause(0.05).await;
    }
    pause(settle.as_secs_f64()).await;
    let calls = cs.calls();
    let mut tally = Tally {
        faults,
        ..Tally::default()
    };
    for leave in leaves {
        let sends: Vec<Instant> = calls
            .iter()
            .filter(|call| call.delay_id == leave.delay_id && call.action == SEND)
            .map(|call| call.at)
            .collect();
        match sends.as_slice() {
            [] => tally.lost += 1,
            [sent] => {
                let after = sent.saturating_duration_since(leave.left);
                assert!(
                    after <= leave.bound,
                    "{}: leave sent {after:?} after the participant left; bound {:?}",
                    leave.delay_id,
                    leave.bound
                );
            }
            _ => tally.doubled += 1,
        }
    }
    tally
}

/// Tells the service the participant left on purpose (and LiveKit forgets them).
async fn leave(setup: &Setup, service: &Service, identity: &str, reason: &str) {
    setup.world.livekit.remove_participant(&room(), identity);
    webhook::send(
        service,
        &webhook::participant_event("participant_left", &room(), identity, reason),
    )
    .await;
}

/// Creates a job for a participant LiveKit has in the room, and waits until it is restarted.
async fn connected_job(
    setup: &Setup,
    service: &Service,
    n: usize,
    delay_id: &str,
    timeout_ms: u64,
) -> String {
    let token = format!("{delay_id}-token");
    let user = setup.user(&token, &format!("user{n}"));
    let identity = identity(&user, "m1");
    setup.world.livekit.add_participant(&room(), &identity);
    let response = service
        .post_json(
            "/delegate_delayed_leave",
            &setup.body(&token, &user, "m1", delay_id, timeout_ms),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    setup
        .cs
        .wait_for(delay_id, RESTART, 1, Duration::from_secs(5))
        .await;
    identity
}

/// A stored entry as the reference writes it.
fn entry(delay_id: &str, identity: &str, timeout_ns: i64, restarted_at: &str) -> String {
    serde_json::json!({
        "Params": {
            "DelayId": delay_id,
            "DelayTimeout": timeout_ns,
            "ServerName": "hs.example",
            "LiveKitRoom": room(),
            "LiveKitIdentity": identity,
        },
        "RestartedAt": restarted_at,
    })
    .to_string()
}

/// kill -9 of the only replica mid-job and an immediate restart under the same replica name: its jobs
/// are restarted at once, a leave reaching the new process is sent, and expired or corrupt entries are
/// purged at startup whoever's lease they carry.
async fn crash_and_restart() -> Tally {
    let Some(setup) = Setup::with_redis("fault: kill -9 and restart").await else {
        return Tally::default();
    };
    let config = setup
        .service()
        .set("MATRIXRTC_AUTH_TIME_SCALE", REAL_TIME)
        .set("LIVEKIT_REPLICA_ID", "auth-0");
    let service = config.start().await;
    let alice = connected_job(&setup, &service, 0, "syd_crash", 20_000).await;

    // Left behind: an expired job still leased to another replica, and a job whose time is not a
    // date (expiry arithmetic on it overflows).
    let mut redis = setup.redis().await;
    let expired = field("expired");
    let value = entry(
        "syd_expired",
        "expired",
        1_000_000_000,
        "2020-01-01T00:00:00Z",
    );
    let _: () = redis
        .hset("lk-jwt:jobs", &expired, value)
        .await
        .expect("HSET");
    let _: () = redis
        .set_ex(format!("lk-jwt:lease:{expired}"), "elsewhere/", 60)
        .await
        .expect("SET lease");
    let value = entry("syd_corrupt", "corrupt", i64::MAX, "9999-12-31T23:59:59.9Z");
    let _: () = redis
        .hset("lk-jwt:jobs", field("corrupt"), value)
        .await
        .expect("HSET");
    // The job's "connected" mark is written right after its first restart.
    pause(0.3).await;

    let before = setup.cs.count("syd_crash", RESTART);
    let killed = Instant::now();
    service.kill9().await;
    let service = config.start().await;
    let fields: Vec<String> = setup
        .stored_jobs()
        .await
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(
        fields,
        [field(&alice)],
        "expired and corrupt jobs purged at startup"
    );
    setup
        .cs
        .wait_for("syd_crash", RESTART, before + 1, Duration::from_secs(3))
        .await;
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "resumed {:?} after the kill",
        killed.elapsed()
    );

    leave(&setup, &service, &alice, "CLIENT_INITIATED").await;
    let leaves = [Leave::new("syd_crash", Duration::from_secs(2))];
    let tally = tally(&setup.cs, 1, &leaves, Duration::from_secs(1)).await;
    assert!(setup.cs.count("syd_expired", SEND) + setup.cs.count("syd_corrupt", SEND) == 0);
    assert!(
        service
            .output()
            .contains("resuming a stored delegation job")
    );
    assert!(
        !service.output().contains("panicked"),
        "{}",
        service.output()
    );
    tally
}

/// kill -9 of one of three replicas: the other two adopt its jobs within a few seconds (not when its
/// 15 s leases run out), deliver what was forwarded to it in the meantime, and send every leave once.
async fn kill_one_of_three() -> Tally {
    let Some(setup) = Setup::with_redis("fault: kill -9 one of three").await else {
        return Tally::default();
    };
    let replica = |n: usize| {
        setup
            .service()
            .set("MATRIXRTC_AUTH_TIME_SCALE", REAL_TIME)
            .set("LIVEKIT_REPLICA_ID", &format!("auth-{n}"))
    };
    let (a, b, c) = (
        replica(0).start().await,
        replica(1).start().await,
        replica(2).start().await,
    );
    let early = connected_job(&setup, &a, 1, "syd_early", 20_000).await;
    let aborted = connected_job(&setup, &a, 2, "syd_aborted", 20_000).await;
    let late = connected_job(&setup, &a, 3, "syd_late", 20_000).await;
    let restarted = setup.cs.count("syd_late", RESTART);
    // The jobs' "connected" marks are written right after their first restarts.
    pause(0.3).await;

    let killed = Instant::now();
    a.kill9().await;
    // Right after the kill, while the dead replica still looks alive: forwarded to its inbox.
    leave(&setup, &b, &early, "CLIENT_INITIATED").await;
    let mut leaves = vec![Leave::new("syd_early", Duration::from_secs(8))];
    // An abnormal leave LiveKit has not caught up with: only the drained inbox can tell.
    webhook::send(
        &c,
        &webhook::participant_event("participant_left", &room(), &aborted, "SIGNAL_CLOSE"),
    )
    .await;
    leaves.push(Leave::new("syd_aborted", Duration::from_secs(8)));

    setup
        .cs
        .wait_for("syd_late", RESTART, restarted + 1, Duration::from_secs(6))
        .await;
    let adopted = killed.elapsed();
    assert!(
        adopted < Duration::from_secs(8),
        "adopted {adopted:?} after the kill"
    );
    leave(&setup, &c, &late, "CLIENT_INITIATED").await;
    leaves.push(Leave::new("syd_late", Duration::from_secs(2)));
    let tally = tally(&setup.cs, 1, &leaves, Duration::from_secs(1)).await;
    for survivor in [&b, &c] {
        assert!(
            !survivor.output().contains("panicked"),
            "{}",
            survivor.output()
        );
    }
    tally
}

/// Redis is killed for 20 s while jobs run (it keeps its data, as a production Redis would): leaves
/// during the outage are sent, a job added during it runs from memory, gets its webhooks, and is
/// written once Redis is back; a job that ended during the outage is not resumed as a zombie.
async fn redis_outage() -> Tally {
    let Some(mut redis) = RestartableRedis::start_persistent_or_skip("fault: Redis outage").await
    else {
        return Tally::default();
    };
    let setup = Setup::start().await;
    let service = setup
        .service()
        .set("MATRIXRTC_AUTH_TIME_SCALE", REAL_TIME)
        .set("LIVEKIT_REDIS_URL", &redis.url())
        .start()
        .await;
    let during = connected_job(&setup, &service, 1, "syd_during", 10_000).await;
    let after = connected_job(&setup, &service, 2, "syd_after", 10_000).await;

    redis.kill().await;
    let outage = Instant::now();
    pause(2.0).await;
    leave(&setup, &service, &during, "CLIENT_INITIATED").await;
    let mut leaves = vec![Leave::new("syd_during", Duration::from_secs(2))];

    // Added while Redis is away: it runs from memory.
    let user = setup.user("new-token", "newcomer");
    let newcomer = identity(&user, "m1");
    let response = service
        .post_json(
            "/delegate_delayed_leave",
            &setup.body("new-token", &user, "m1", "syd_new", 10_000),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    webhook::send(
        &service,
        &webhook::participant_event("participant_joined", &room(), &newcomer, "UNKNOWN_REASON"),
    )
    .await;
    setup.world.livekit.add_participant(&room(), &newcomer);
    setup
        .cs
        .wait_for("syd_new", RESTART, 1, Duration::from_secs(5))
        .await;

    let outage_left = Duration::from_secs(20).saturating_sub(outage.elapsed());
    pause(outage_left.as_secs_f64()).await;
    redis.start_again().await;
    // One lease renewal (5 s) writes the new job; the zombie's deletion is retried within a second.
    pause(6.0).await;
    let mut connection = redis.connect().await;
    let stored: HashMap<String, String> = connection.hgetall("lk-jwt:jobs").await.expect("HGETALL");
    assert!(
        !stored.contains_key(&field(&during)),
        "the ended job is gone: {stored:?}"
    );
    assert!(
        stored.contains_key(&field(&newcomer)),
        "the new job is stored: {stored:?}"
    );

    leave(&setup, &service, &newcomer, "CLIENT_INITIATED").await;
    leaves.push(Leave::new("syd_new", Duration::from_secs(2)));
    leave(&setup, &service, &after, "SIGNAL_CLOSE").await;
    leaves.push(Leave::new("syd_after", Duration::from_secs(2)));
    let tally = tally(&setup.cs, 1, &leaves, Duration::from_secs(2)).await;
    assert!(
        !service.output().contains("panicked"),
        "{}",
        service.output()
    );
    tally
}

/// How the fake LiveKit misbehaves.
#[derive(Clone, Copy, Debug)]
enum Broken {
    /// Every request gets 503 (a Twirp `unavailable`).
    Unavailable,
    /// Requests are read and never answered.
    Silent,
}

/// A LiveKit API that only fails; `ws://127.0.0.1:<port>`.
async fn broken_livekit(mode: Broken) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind broken LiveKit");
    let port = listener.local_addr().expect("local addr").port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                match mode {
                    Broken::Unavailable => {
                        let body = r#"{"code":"unavailable","msg":"fake outage"}"#;
                        let answer = format!(
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(answer.as_bytes()).await;
                    }
                    // Held open until the service gives up (its outbound timeout, 10 s).
                    Broken::Silent => pause(30.0).await,
                }
            });
        }
    });
    (format!("ws://127.0.0.1:{port}"), task)
}

/// LiveKit's API fails (503, or no answer): participants are then known only from webhooks; every
/// leave is still sent once, and a participant who never joins still gets theirs at the timeout.
async fn livekit_broken(mode: Broken) -> Tally {
    let setup = Setup::start().await;
    let (url, server) = broken_livekit(mode).await;
    let service = setup.service().set("LIVEKIT_URL", &url).start().await;
    let user = setup.user("t1", "joiner");
    let joiner = identity(&user, "m1");
    let response = service
        .post_json(
            "/delegate_delayed_leave",
            &setup.body("t1", &user, "m1", "syd_lk_join", 3000),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let absent_user = setup.user("t2", "absent");
    let response = service
        .post_json(
            "/delegate_delayed_leave",
            &setup.body("t2", &absent_user, "m1", "syd_lk_absent", 1500),
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let mut leaves = vec![Leave::new(
        "syd_lk_absent",
        Duration::from_millis(1500 + 2000),
    )];
    webhook::send(
        &service,
        &webhook::participant_event("participant_joined", &room(), &joiner, "UNKNOWN_REASON"),
    )
    .await;
    setup
        .cs
        .wait_for("syd_lk_join", RESTART, 1, Duration::from_secs(5))
        .await;
    webhook::send(
        &service,
        &webhook::participant_event("participant_left", &room(), &joiner, "CLIENT_INITIATED"),
    )
    .await;
    leaves.push(Leave::new("syd_lk_join", Duration::from_secs(2)));
    let tally = tally(&setup.cs, 1, &leaves, Duration::from_secs(1)).await;
    server.abort();
    assert!(
        !service.output().contains("panicked"),
        "{mode:?}: {}",
        service.output()
    );
    tally
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// Sends `count` signed webhooks for participants nobody delegated for, `parallel` at a time; every
/// answer must be the empty 200.
async fn unknown_webhooks(service: &Service, count: usize, parallel: usize, tag: &str) {
    let mut sent = 0;
    while sent < count {
        let batch = (sent..count.min(sent + parallel)).map(|n| {
            let event = webhook::participant_event(
                if n % 2 == 0 {
                    "participant_joined"
                } else {
                    "participant_left"
                },
                &format!("room-{tag}-{n}"),
                &format!("nobody-{tag}-{n}"),
                "CLIENT_INITIATED",
            );
            async move { webhook::send(service, &event).await }
        });
        futures::future::join_all(batch).await;
        sent = count.min(sent + parallel);
    }
}

/// A burst of signed webhooks for jobs that do not exist, and of unsigned junk: always the empty 200,
/// memory stays bounded, nothing is written to Redis, and a real job still works afterwards.
async fn webhook_burst() -> Tally {
    let Some(setup) = Setup::with_redis("fault: webhook burst").await else {
        return Tally::default();
    };
    let service = setup
        .service()
        .set("LIVEKIT_LOG_LEVEL", "info")
        .start()
        .await;
    unknown_webhooks(&service, 300, 32, "warm").await;
    let warm = rss_kib(service.pid());
    unknown_webhooks(&service, 3000, 32, "burst").await;
    for junk in ["", "{", "null", r#"{"event":"participant_left"}"#] {
        for authorization in [None, Some("junk"), Some("Bearer x.y.z")] {
            let response = webhook::post_raw(&service, authorization, junk.to_owned()).await;
            webhook::assert_empty_ok(&response);
        }
    }
    let signed_junk = "x".repeat(10_000);
    let token = webhook::token_for(signed_junk.as_bytes(), KEY, SECRET);
    webhook::assert_empty_ok(&webhook::post_raw(&service, Some(&token), signed_junk).await);
    let grown = rss_kib(service.pid()).saturating_sub(warm);
    assert!(
        grown < 16 * 1024,
        "resident memory grew by {grown} KiB over the burst"
    );
    let mut redis = setup.redis().await;
    let keys: Vec<String> = redis.keys("*").await.expect("KEYS");
    let foreign: Vec<&String> = keys
        .iter()
        .filter(|key| !key.starts_with("lk-jwt:replica:"))
        .collect();
    assert!(
        foreign.is_empty(),
        "unknown jobs leave nothing in Redis: {foreign:?}"
    );

    let alice = connected_job(&setup, &service, 0, "syd_burst", 3000).await;
    leave(&setup, &service, &alice, "CLIENT_INITIATED").await;
    let leaves = [Leave::new("syd_burst", Duration::from_secs(2))];
    tally(&setup.cs, 1, &leaves, Duration::from_secs(1)).await
}

#[tokio::test]
async fn delegated_leaves_survive_every_fault_exactly_once() {
    // Each fault on a task of its own: one that fails is reported by name, and the others still run.
    let scenarios = [
        ("kill -9 and restart", tokio::spawn(crash_and_restart())),
        ("kill -9 one of three", tokio::spawn(kill_one_of_three())),
        ("Redis stopped for 20 s", tokio::spawn(redis_outage())),
        (
            "LiveKit 503",
            tokio::spawn(livekit_broken(Broken::Unavailable)),
        ),
        (
            "LiveKit silent",
            tokio::spawn(livekit_broken(Broken::Silent)),
        ),
        ("webhook burst", tokio::spawn(webhook_burst())),
    ];
    let mut total = Tally::default();
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        match tokio::time::timeout(Duration::from_secs(150), scenario).await {
            Ok(Ok(tally)) => total += tally,
            Ok(Err(error)) => failed.push(format!("{name}: {error}")),
            Err(_) => failed.push(format!("{name}: did not finish within 150 s")),
        }
    }
    println!(
        "faults injected: {}, leaves lost: {}, leaves doubled: {}",
        total.faults, total.lost, total.doubled
    );
    assert!(failed.is_empty(), "failed faults: {failed:#?}");
    assert_eq!((total.lost, total.doubled), (0, 0), "{total:?}");
}

/// A webhook body that drips in is cut off after the webhook read timeout (5 s) with an empty 408 and
/// the connection closed, instead of holding a connection and a task for as long as the peer likes.
#[tokio::test]
async fn a_dripping_webhook_body_is_cut_off_with_408() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let setup = Setup::start().await;
        let service = setup.service().start().await;
        let mut stream = TcpStream::connect(service.addr()).await.expect("connect");
        stream
            .write_all(
                format!(
                    "POST {} HTTP/1.1\r\nhost: x\r\ncontent-type: application/webhook+json\r\ncontent-length: 100\r\n\r\n",
                    webhook::PATH
                )
                .as_bytes(),
            )
            .await
            .expect("write headers");
        let started = Instant::now();
        let mut answer = Vec::new();
        // One byte a second; the service must answer (and close) long before 100 s.
        for _ in 0..15 {
            if stream.write_all(b"{").await.is_err() {
                break;
            }
            let mut buffer = [0u8; 1024];
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
                Err(_) => {}
            }
        }
        let elapsed = started.elapsed();
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "answer after {elapsed:?}: {text:?}");
        assert!(elapsed < Duration::from_secs(8), "cut off after {elapsed:?}");
        assert!(text.to_ascii_lowercase().contains("connection: close"), "{text:?}");
        // Still serving.
        let health = service.request(Method::GET, "/healthz").send().await;
        assert_eq!(health.status, 200);
    })
    .await
    .expect("finished within 30 s");
}
