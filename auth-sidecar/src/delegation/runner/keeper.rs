//! A job's hold on Redis: it confirms and renews the job's lease before every homeserver call, writes the
//! job late if Redis was away when it was added (and again if Redis lost it), and deletes it when done.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::shared::Shared;
use crate::delegation::job::JobKey;
use crate::delegation::ownership::{Lease, Ownership, Standing};

/// A job's hold on Redis: its lease, and its entry, which it writes late if Redis was away when the
/// job was added, and again if Redis lost it.
#[derive(Clone)]
pub(super) struct Keeper {
    pub(super) shared: Arc<Shared>,
    pub(super) key: JobKey,
    pub(super) lease: Lease,
    /// Shared with the job's [`LocalJob`].
    pub(super) stored: Arc<AtomicBool>,
    /// The job's current stored value (what a late or repeated write files).
    pub(super) value: Arc<Mutex<String>>,
}

impl Keeper {
    pub(super) fn ownership(&self) -> Option<&Ownership> {
        self.shared.ownership.as_ref()
    }

    pub(super) fn value(&self) -> String {
        self.value
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// May the job go on (and call the homeserver)? Confirms and extends the lease; a job not yet in
    /// Redis is written now if Redis answers. Redis errors never stop a job (see the module doc of
    /// [`super::ownership`]).
    pub(super) async fn may_go_on(&self) -> bool {
        let Some(ownership) = self.ownership() else {
            return true;
        };
        if self.stored.load(Ordering::SeqCst) {
            return ownership.confirm(&self.lease, &self.value()).await == Standing::Held;
        }
        let lock = self.shared.add_lock(&self.key);
        let _serialised = lock.lock().await;
        if !self.shared.is_current(&self.key, &self.lease.generation) {
            // A newer add for the key took over (and wrote its own entry).
            return false;
        }
        match ownership.claim(&self.lease, &self.value()).await {
            Ok(()) => {
                self.stored.store(true, Ordering::SeqCst);
                tracing::info!("a delegation job held in memory only is stored in Redis now");
            }
            Err(error) => tracing::debug!(%error, "Redis still cannot store a delegation job"),
        }
        true
    }

    /// Stores a new value for the job (after a restart).
    pub(super) async fn record(&self, value: String) -> Standing {
        *self
            .value
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = value.clone();
        match self.ownership() {
            Some(ownership) if self.stored.load(Ordering::SeqCst) => {
                ownership.record(&self.lease, &value).await
            }
            _ if self.may_go_on().await => Standing::Held,
            _ => Standing::Lost,
        }
    }

    /// Deletes the ended job from Redis, now or (if Redis does not answer) later.
    pub(super) async fn finish(&self) {
        let Some(ownership) = self.ownership() else {
            return;
        };
        if let Err(error) = ownership.finish(&self.lease).await {
            tracing::warn!(%error, "could not delete a finished delegation job from Redis; retrying later");
            self.shared.finish_later(self.lease.clone());
        }
    }

    /// Renews the lease every `every` until it is lost; never returns while it is held.
    pub(super) async fn hold(self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if !self.may_go_on().await {
                return;
            }
        }
    }
}
