//! The SSRF guard against server names that spell a loopback address in a form some parser reads as an
//! IPv4 literal while a stricter one takes it for a DNS name (decimal, hexadecimal, octal, shortened,
//! trailing dot). Without one host classification for the whole service, such a name went into the
//! `.well-known/matrix/server` URL as a "DNS name", the HTTP client read it as an address, dialled
//! `<address>:443` directly, and the guard, which sat in the resolver, never ran.
//!
//! The listener stands at port 443 of a loopback address of its own (127.0.x.y, chosen from the process
//! ID so that parallel runs do not collide) and counts the TCP connections it accepts: there must be none.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::support::body::{self, assert_unauthorized};
use crate::support::{World, bounded};

/// A loopback address of this test process's own, and a listener at its port 443 counting connections.
async fn loopback_443() -> (Ipv4Addr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let pid = std::process::id();
    // 127.0.[20..220).[20..220): away from 127.0.0.1 and from the addresses other tests use.
    let ip = Ipv4Addr::new(
        127,
        0,
        20 + u8::try_from(pid % 200).expect("below 200"),
        20 + u8::try_from((pid / 200) % 200).expect("below 200"),
    );
    // The service runs as the same user (root in CI), so a port below 1024 can be bound here too.
    let listener = TcpListener::bind(SocketAddr::from((ip, 443)))
        .await
        .unwrap_or_else(|error| panic!("bind {ip}:443 for the SSRF test: {error}"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (ip, accepted, task)
}

/// Spellings of `ip` that a WHATWG URL parser (and so the HTTP client) reads as `ip`, but that are not
/// the dotted-quad form the Matrix grammar calls an IPv4 literal.
fn spellings(ip: Ipv4Addr) -> Vec<String> {
    let [a, b, c, d] = ip.octets();
    let number = u32::from(ip);
    let low24 = number & 0x00ff_ffff;
    let low16 = number & 0xffff;
    vec![
        number.to_string(),                     // decimal
        format!("{number:#x}"),                 // hexadecimal
        format!("{number:#X}"),                 // hexadecimal, upper case
        format!("0{number:o}"),                 // octal
        format!("0{a:o}.{b}.{c}.{d}"),          // octal first part
        format!("{a:#x}.{b:#x}.{c:#x}.{d:#x}"), // hexadecimal parts
        format!("{a}.{low24}"),                 // shortened a.b
        format!("{a}.{b}.{low16}"),             // shortened a.b.c
        format!("{a}.{b}.{c}.{d}."),            // trailing dot
        format!("{number}."),                   // decimal, trailing dot
        format!("{a}.{b}.{c}.0{d:o}"),          // octal last part
    ]
}

/// None of the spellings makes the service connect to the loopback listener, and each is answered 401.
#[tokio::test]
async fn loopback_in_ipv4_spellings_is_never_connected_to() {
    bounded(async {
        let (ip, accepted, listener) = loopback_443().await;
        let world = World::start().await;
        // A short lookup budget: a spelling that got through would also wait on SRV lookups.
        let service = world
            .restricted_service()
            .set("LIVEKIT_OUTBOUND_TIMEOUT_SECONDS", "2")
            .start()
            .await;
        let mut reached = Vec::new();
        for name in spellings(ip) {
            let before = accepted.load(Ordering::SeqCst);
            let response = service
                .post_json("/get_token", &body::get_token(&name, "token", "@u:x"))
                .await;
            assert_unauthorized(&response);
            let response = service
                .post_json("/sfu/get", &body::sfu_get(&name, "token", "DEVICE"))
                .await;
            assert_unauthorized(&response);
            // A connection the service opened has been accepted by the time it answered; a moment more
            // lets the accept loop count it.
            tokio::time::sleep(Duration::from_millis(20)).await;
            if accepted.load(Ordering::SeqCst) > before {
                reached.push(name);
            }
        }
        listener.abort();
        assert!(
            reached.is_empty(),
            "these spellings of {ip} made the service connect to {ip}:443: {reached:?}\n{}",
            service.output()
        );
    })
    .await;
}
