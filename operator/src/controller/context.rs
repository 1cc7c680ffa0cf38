//! The [`Context`] every reconcile shares: the API clients (counted by source), the children caches and
//! CR stores of the running controllers, the Event limiter, and what the controller remembers per object
//! between reconciles (consecutive failures for the backoff, the generation whose warnings were published,
//! the NodePorts of the other transports).

use std::collections::HashMap;
use std::sync::Mutex;

use kube::Client;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::Store;

use super::Guarded;
use super::dereference;
use super::port_claims::ClaimsAt;
use crate::apply::cache::ChildCache;
use crate::build;
use crate::defaults::OperatorDefaults;
use crate::event_limit::EventLimiter;
use crate::telemetry::{Metrics, RequestSource};

/// Source of credential randomness (replaced in tests to make generated credentials predictable).
pub type RandomBytes = fn() -> [u8; build::credentials::RANDOM_BYTES];

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    /// For reconciles: counts its requests as `source="reconcile"`.
    pub(super) client: Client,
    /// For the watches: counts its requests as `source="watch"`.
    pub(super) watch_client: Client,
    /// The children caches of the running controllers (none while not leading).
    cache: std::sync::RwLock<Option<ChildCache>>,
    /// The CR stores of the running controllers: every transport, to find NodePort clashes.
    pub(super) transports: std::sync::RwLock<Vec<Store<Guarded>>>,
    /// NodePorts of each transport by uid, at the generation they were read from (validating every other
    /// transport on every reconcile would make a reconcile cost grow with their number).
    pub(super) claims: Mutex<HashMap<String, ClaimsAt>>,
    pub(super) events: EventLimiter,
    /// Who publishes Events. A fresh `Recorder` per Event: kube's recorder folds repeats by reason into the
    /// first Event and keeps its note, which would show a stale message for a new problem. The controller
    /// already publishes only on changes, so there is nothing to fold.
    pub(super) reporter: Reporter,
    pub(super) defaults: OperatorDefaults,
    pub(super) metrics: Metrics,
    pub(super) random: RandomBytes,
    /// Consecutive failures per object (`namespace/name`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Generation whose validation warnings were already published, per object: warnings are Events,
    /// and repeating them on every resync would be a write in a steady state.
    warned: Mutex<HashMap<String, i64>>,
}

impl Context {
    pub fn new(
        client: Client,
        defaults: OperatorDefaults,
        metrics: Metrics,
        reporter: Reporter,
    ) -> Self {
        Self {
            reporter,
            client: metrics.counted(client.clone(), RequestSource::Reconcile),
            watch_client: metrics.counted(client, RequestSource::Watch),
            cache: std::sync::RwLock::default(),
            transports: std::sync::RwLock::default(),
            claims: Mutex::default(),
            events: EventLimiter::default(),
            defaults,
            metrics,
            random: dereference::random_bytes,
            failures: Mutex::default(),
            warned: Mutex::default(),
        }
    }

    /// Use another randomness source for generated credentials (tests).
    pub fn with_random(mut self, random: RandomBytes) -> Self {
        self.random = random;
        self
    }

    /// Use these caches of the children (set while the controllers run).
    pub fn set_cache(&self, cache: Option<ChildCache>) {
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = cache;
    }

    pub(super) fn cache(&self) -> Option<ChildCache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The CR stores of the running controllers (empty while not leading).
    pub fn set_transports(&self, stores: Vec<Store<Guarded>>) {
        *self.transports.write().unwrap_or_else(|p| p.into_inner()) = stores;
    }

    pub(super) fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    pub(super) fn forget_failures(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// True the first time it is asked for this object at this generation.
    pub(super) fn first_warning_for(&self, key: &str, generation: i64) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        warned.insert(key.to_owned(), generation) != Some(generation)
    }
}
