//! Log-capturing tests that run as threads of one process (`cargo test`) see every line they log.
//!
//! tracing caches a call site's interest for the whole process, the first time any thread reaches it.
//! With at most one subscriber registered, it takes that thread's answer alone, so a call site first
//! reached by a test without a subscriber stayed off for a capturing test running beside it (a test of the
//! authorisation service failed in 103 of 150 parallel runs of its unit-test binary, the operator's in 26
//! of 40). [`anchor_call_site_interest`] installs a global subscriber that answers "sometimes" for every
//! call site and enables nothing: the cached answer is then "ask each time", which each thread's own
//! subscriber gives. cargo-nextest runs each test in a process of its own and never needed this.

use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

/// Installs the anchor once per process. Call it before installing a capturing subscriber
/// (`tracing::subscriber::set_default`). Panics if another global subscriber is already set: a test
/// process that sets one has its own reasons, and capturing would not be reliable beside it.
pub fn anchor_call_site_interest() {
    static ANCHOR: std::sync::Once = std::sync::Once::new();
    ANCHOR.call_once(|| {
        tracing::subscriber::set_global_default(Anchor)
            .expect("no other global subscriber in a test process that captures logs");
    });
}

/// Interested in every call site, enabling nothing.
struct Anchor;

impl Subscriber for Anchor {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // Never called: nothing is enabled.
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}
