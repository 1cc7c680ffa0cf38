//! What the handle, the replica coordination and the job drivers share: the jobs this replica drives,
//! the per-key add locks, the deletions to retry and the shutdown flag.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::ports::{DelayedEventApi, ParticipantLookup};
use crate::delegation::job::{JobKey, Signal};
use crate::delegation::ownership::{Lease, Ownership};
use crate::delegation::settings::Timing;
use crate::telemetry::Metrics;

/// The engine's state, one per replica.
pub(super) struct Shared {
    pub(super) timing: Timing,
    pub(super) sanity_interval: Option<Duration>,
    pub(super) homeserver: Arc<dyn DelayedEventApi>,
    pub(super) livekit: Arc<dyn ParticipantLookup>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) ownership: Option<Ownership>,
    pub(super) jobs: Mutex<HashMap<JobKey, LocalJob>>,
    /// One lock per key with an `add` (or a late first write) under way, so that two of them for one
    /// key reach Redis and this replica's memory in the same order.
    pub(super) add_locks: Mutex<HashMap<JobKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Finished jobs whose deletion from Redis failed; retried until Redis answers.
    pub(super) pending_finishes: Mutex<Vec<Lease>>,
    pub(super) shutting_down: watch::Sender<bool>,
    /// Notified whenever a job task ends.
    pub(super) job_ended: Notify,
}

/// This replica's handle on a job it drives.
pub(super) struct LocalJob {
    pub(super) generation: String,
    /// False while the job runs from memory only (its Redis write failed).
    pub(super) stored: Arc<AtomicBool>,
    pub(super) signals: mpsc::Sender<Signal>,
    /// Dropping this tells the job a newer one replaced it.
    pub(super) _replacement: oneshot::Sender<()>,
}

impl Shared {
    pub(super) fn lock_jobs(&self) -> MutexGuard<'_, HashMap<JobKey, LocalJob>> {
        // Every critical section is a single map operation, so a poisoned map is still consistent.
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn is_shutting_down(&self) -> bool {
        *self.shutting_down.borrow()
    }

    /// Hands a signal to the local job for `key` (of that generation, if given). False if there is none.
    pub(super) fn deliver(&self, key: &JobKey, generation: Option<&str>, signal: Signal) -> bool {
        let jobs = self.lock_jobs();
        let Some(job) = jobs.get(key) else {
            return false;
        };
        if generation.is_some_and(|generation| generation != job.generation) {
            return false;
        }
        match job.signals.try_send(signal) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(room = %key.room, identity = %key.identity, %signal,
                    "a delegation job is flooded with signals; dropping one");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// True if this replica's current job for `key` is `generation`.
    pub(super) fn is_current(&self, key: &JobKey, generation: &str) -> bool {
        self.lock_jobs()
            .get(key)
            .is_some_and(|job| job.generation == generation)
    }

    /// True if this replica runs the job for `key` from memory only.
    pub(super) fn runs_unstored(&self, key: &JobKey) -> bool {
        self.lock_jobs()
            .get(key)
            .is_some_and(|job| !job.stored.load(Ordering::SeqCst))
    }

    /// The lock that serialises adds (and late first writes) for `key`.
    pub(super) fn add_lock(&self, key: &JobKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .add_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Locks nobody waits for any more go, so the map holds only adds under way.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(key.clone()).or_default().clone()
    }

    /// Remembers a finished job whose deletion failed, for [`Shared::retry_finishes`].
    pub(super) fn finish_later(&self, lease: Lease) {
        self.pending_finishes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(lease);
    }

    /// Deletes finished jobs whose deletion failed earlier; keeps those that fail again.
    pub(super) async fn retry_finishes(&self) {
        let Some(ownership) = &self.ownership else {
            return;
        };
        let pending = std::mem::take(
            &mut *self
                .pending_finishes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for lease in pending {
            if ownership.finish(&lease).await.is_err() {
                self.finish_later(lease);
            }
        }
    }
}
