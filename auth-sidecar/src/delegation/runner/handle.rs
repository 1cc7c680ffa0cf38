//! [`Delegation`], the handle the HTTP layer uses: start the engine, add a job, deliver a webhook's
//! signal, shut down.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::driver::Resumed;
use super::ports::{DelayedEventApi, ParticipantLookup};
use super::shared::Shared;
use crate::delegation::job::{JobKey, JobParams, Signal};
use crate::delegation::ownership::{Ownership, random_id};
use crate::delegation::record::{JobRecord, field_of};
use crate::delegation::settings::Settings;
use crate::delegation::store::{JobStore, StoreError};
use crate::telemetry::Metrics;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("Could not connect Redis store: {0}")]
    Redis(#[from] StoreError),
}

/// Why a job was not added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddJobError {
    #[error("Service is shutting down")]
    ShuttingDown,
}

/// The delegation engine. Cheap to clone.
#[derive(Clone)]
pub struct Delegation {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Delegation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delegation")
            .field("jobs", &self.shared.lock_jobs().len())
            .finish_non_exhaustive()
    }
}

impl Delegation {
    /// Starts the engine. With a Redis URL: connects (failure is fatal, as in the reference), resumes
    /// every stored job nobody holds, and starts the takeover scan and the signal inbox.
    pub async fn start(
        settings: Settings,
        homeserver: Arc<dyn DelayedEventApi>,
        livekit: Arc<dyn ParticipantLookup>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartError> {
        let ownership = match &settings.redis_url {
            Some(url) => {
                let store = JobStore::connect(url).await?;
                Some(Ownership::new(
                    store,
                    settings.replica_id.clone(),
                    settings.timing.lease_ttl,
                    settings.timing.inbox_ttl,
                    settings.timing.heartbeat_ttl,
                ))
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            timing: settings.timing.clone(),
            sanity_interval: settings.sanity_check_interval,
            homeserver,
            livekit,
            metrics,
            ownership,
            jobs: Mutex::default(),
            add_locks: Mutex::default(),
            pending_finishes: Mutex::default(),
            shutting_down: watch::Sender::new(false),
            job_ended: Notify::new(),
        });
        if let Some(url) = &settings.redis_url {
            shared.start_coordination(url).await?;
        }
        Ok(Self { shared })
    }

    /// Adds a job, replacing any job for the same key. With Redis the job is stored before this returns
    /// (a Redis failure is logged and the job runs from memory only).
    pub async fn add(&self, params: JobParams) -> Result<(), AddJobError> {
        if self.shared.is_shutting_down() {
            return Err(AddJobError::ShuttingDown);
        }
        let generation = random_id();
        let lock = self.shared.add_lock(&params.key);
        let _serialised = lock.lock().await;
        let mut lease = None;
        let mut stored = false;
        if let Some(ownership) = &self.shared.ownership {
            let claimed = ownership.lease_for(field_of(&params.key), generation.clone());
            let record = JobRecord {
                params: params.clone(),
                restarted_at: time::OffsetDateTime::now_utc(),
                generation: generation.clone(),
                connected: false,
            };
            match ownership.claim(&claimed, &record.to_json()).await {
                Ok(()) => stored = true,
                Err(error) => {
                    tracing::warn!(%error, room = %params.key.room, identity = %params.key.identity,
                        "could not store a delegation job; it runs from memory until Redis answers");
                }
            }
            lease = Some(claimed);
        }
        tracing::info!(room = %params.key.room, identity = %params.key.identity, server_name = %params.server_name,
            "delegated leave job added");
        self.shared
            .spawn(params, generation, lease, stored, Resumed::No, Vec::new());
        Ok(())
    }

    /// Delivers a webhook's signal to the job for `key`, wherever it runs; dropped if there is none.
    pub async fn notify(&self, key: &JobKey, signal: Signal) {
        let shared = &self.shared;
        if let Some(gone) = shared.route_signal(key, signal).await {
            shared.drain_inbox(&gone).await;
        }
    }

    /// Ends the job for `key` without sending its delayed event, wherever it runs; nothing happens if there
    /// is none. The membership monitor's revocation (as-mode spec §8.2 step 4): the participant was
    /// removed because their user left the Matrix room, so there is nothing left to send on their behalf.
    pub async fn discard(&self, key: &JobKey) {
        self.notify(key, Signal::Discarded).await;
    }

    /// Stops every job without homeserver calls, leaving stored jobs (and their leases, released) for
    /// the next instance. `send`s already under way may finish within the grace period.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        shared.shutting_down.send_replace(true);
        let deadline = Instant::now() + shared.timing.shutdown_grace;
        loop {
            let ended = shared.job_ended.notified();
            let remaining = shared.lock_jobs().len();
            if remaining == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                tracing::warn!(
                    remaining,
                    "delegation jobs still sending at shutdown; they resume from Redis on the next start"
                );
                break;
            }
        }
    }

    /// How many jobs this replica drives right now.
    pub fn local_jobs(&self) -> usize {
        self.shared.lock_jobs().len()
    }
}
