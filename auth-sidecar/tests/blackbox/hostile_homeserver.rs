//! Fault tests on the homeserver side: a homeserver that hangs after reading the request, one that drips
//! its answer one byte a second, one that answers 10 MB, and one that resets every connection.
//!
//! The spec (§2) makes every failure of the OpenID lookup a 401 `M_UNAUTHORIZED`, whatever went wrong, so
//! that is the only answer allowed here: never a 5xx, never a hang. The time bound is the whole-lookup
//! timeout (`LIVEKIT_OUTBOUND_TIMEOUT_SECONDS`, set to 2 s here) plus [`SLACK`]; a large or reset answer must
//! not even wait for that. The service's resident memory (`VmRSS`) may not grow by more than
//! [`RSS_GROWTH_LIMIT_KIB`] across a burst of 10 MB answers: it reads at most 64 KiB of a userinfo body.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::support::body::{self, assert_unauthorized};
use crate::support::service::Service;
use crate::support::tls::TestPki;
use crate::support::{World, bounded};

/// The whole-lookup timeout the service gets in these tests, in seconds.
const LOOKUP_TIMEOUT_SECONDS: u64 = 2;
/// Allowance on top of the lookup timeout for the service, the machine's load and the client.
const SLACK: Duration = Duration::from_secs(3);
/// Requests sent at once to each hostile homeserver.
const CONCURRENT: usize = 4;
/// Size of the huge answer.
const HUGE_BYTES: usize = 10 * 1024 * 1024;
/// How much the service's resident memory may grow across the huge answers.
const RSS_GROWTH_LIMIT_KIB: u64 = 16 * 1024;

/// What the hostile homeserver does with each connection.
#[derive(Clone, Copy, Debug)]
enum Behaviour {
    /// Reads the request and never answers.
    Hang,
    /// Sends a valid 200 answer one byte a second.
    Drip,
    /// Sends a 200 answer with a 10 MB body, as fast as it is read.
    Huge,
    /// Resets the TCP connection as soon as it is accepted.
    Reset,
}

/// A TLS homeserver on `127.0.0.1:<port>` that misbehaves; its connections end when it is dropped.
struct Hostile {
    port: u16,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    async fn start(pki: &TestPki, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind hostile homeserver");
        let port = listener.local_addr().expect("local addr").port();
        let acceptor = TlsAcceptor::from(pki.server_config());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it drops every connection.
            let mut connections = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    if let Behaviour::Reset = behaviour {
                        // SO_LINGER 0: closing sends RST instead of FIN.
                        let _ = tcp.set_zero_linger();
                        drop(tcp);
                        return;
                    }
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // Read the request head (bounded) before misbehaving.
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65_536 {
                        match tls.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buffer[..n]),
                        }
                    }
                    match behaviour {
                        Behaviour::Hang | Behaviour::Reset => {
                            std::future::pending::<()>().await;
                        }
                        Behaviour::Drip => {
                            let body = format!(r#"{{"sub":"@a:127.0.0.1:{port}"}}"#);
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            for byte in answer.bytes() {
                                if tls.write_all(&[byte]).await.is_err() || tls.flush().await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                        Behaviour::Huge => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {HUGE_BYTES}\r\n\r\n{{\"sub\":\""
                            );
                            if tls.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let chunk = vec![b'a'; 64 * 1024];
                            for _ in 0..HUGE_BYTES / chunk.len() {
                                if tls.write_all(&chunk).await.is_err() {
                                    return;
                                }
                            }
                            let _ = tls.flush().await;
                        }
                    }
                });
            }
        });
        Self {
            port,
            accepted,
            task,
        }
    }

    fn server_name(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// The service, trusting `hostile` as full-access (so the SSRF guard lets loopback through) and its CA,
/// with a short whole-lookup timeout.
async fn service_for(world: &World, hostile: &Hostile) -> Service {
    world
        .service()
        .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", &hostile.server_name())
        .set(
            "LIVEKIT_OUTBOUND_TIMEOUT_SECONDS",
            &LOOKUP_TIMEOUT_SECONDS.to_string(),
        )
        .set("LIVEKIT_OPENID_CACHE_SECONDS", "0")
        .start()
        .await
}

/// Sends [`CONCURRENT`] token requests naming `hostile` at once; asserts each is a 401 `M_UNAUTHORIZED`
/// within `bound`, and returns the slowest answer's time.
async fn all_unauthorized_within(
    service: &Service,
    hostile: &Hostile,
    bound: Duration,
) -> Duration {
    let name = hostile.server_name();
    let user = format!("@a:{name}");
    let started = Instant::now();
    let requests = (0..CONCURRENT).map(|i| {
        let request = service
            .request(http::Method::POST, "/get_token")
            .json(&body::get_token(&name, &format!("token-{i}"), &user));
        async move {
            let response = request.send().await;
            (response, started.elapsed())
        }
    });
    let mut slowest = Duration::ZERO;
    for (response, elapsed) in futures::future::join_all(requests).await {
        assert!(
            response.status < 500,
            "a hostile homeserver must not cause a 5xx: {} {}",
            response.status,
            response.text()
        );
        assert_unauthorized(&response);
        assert!(
            elapsed <= bound,
            "answered after {elapsed:?}, bound {bound:?}"
        );
        slowest = slowest.max(elapsed);
    }
    slowest
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

fn lookup_bound() -> Duration {
    Duration::from_secs(LOOKUP_TIMEOUT_SECONDS) + SLACK
}

#[tokio::test]
async fn a_hanging_homeserver_is_unauthorized_at_the_lookup_timeout() {
    bounded(async {
        let world = World::start().await;
        let hostile = Hostile::start(&world.pki, Behaviour::Hang).await;
        let service = service_for(&world, &hostile).await;
        let slowest = all_unauthorized_within(&service, &hostile, lookup_bound()).await;
        assert!(
            slowest >= Duration::from_secs(LOOKUP_TIMEOUT_SECONDS) - Duration::from_millis(100),
            "the service waited for the homeserver until its timeout, not less: {slowest:?}"
        );
        assert!(hostile.accepted.load(Ordering::SeqCst) >= 1);
        assert!(world.livekit.calls().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_dripping_homeserver_is_unauthorized_at_the_lookup_timeout() {
    bounded(async {
        let world = World::start().await;
        let hostile = Hostile::start(&world.pki, Behaviour::Drip).await;
        let service = service_for(&world, &hostile).await;
        all_unauthorized_within(&service, &hostile, lookup_bound()).await;
        assert!(hostile.accepted.load(Ordering::SeqCst) >= 1);
    })
    .await;
}

#[tokio::test]
async fn a_resetting_homeserver_is_unauthorized_at_once() {
    bounded(async {
        let world = World::start().await;
        let hostile = Hostile::start(&world.pki, Behaviour::Reset).await;
        let service = service_for(&world, &hostile).await;
        all_unauthorized_within(&service, &hostile, SLACK).await;
        assert!(hostile.accepted.load(Ordering::SeqCst) >= 1);
    })
    .await;
}

#[tokio::test]
async fn a_ten_megabyte_answer_is_unauthorized_at_once_and_memory_stays_bounded() {
    bounded(async {
        let world = World::start().await;
        let hostile = Hostile::start(&world.pki, Behaviour::Huge).await;
        let service = service_for(&world, &hostile).await;
        // One round first, so that lazily built state (TLS, pools) counts as the baseline.
        all_unauthorized_within(&service, &hostile, SLACK).await;
        let before = rss_kib(service.pid());
        for _ in 0..5 {
            all_unauthorized_within(&service, &hostile, SLACK).await;
        }
        let after = rss_kib(service.pid());
        println!("VmRSS of the service around 20 answers of 10 MB: {before} KiB -> {after} KiB");
        assert!(
            after.saturating_sub(before) <= RSS_GROWTH_LIMIT_KIB,
            "VmRSS grew from {before} KiB to {after} KiB"
        );
        assert!(hostile.accepted.load(Ordering::SeqCst) >= 1);
    })
    .await;
}
