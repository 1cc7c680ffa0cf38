//! Replica coordination (see [`crate::delegation::ownership`]): at startup, purging expired jobs and
//! taking back this replica's own; then the heartbeat, the takeover scan for jobs other replicas left
//! behind, the inbox of signals forwarded by other replicas, and routing a webhook's signal to the
//! replica that drives its job.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::MissedTickBehavior;

use super::driver::Resumed;
use super::shared::Shared;
use crate::delegation::job::{JobKey, Signal};
use crate::delegation::ownership::{Inbox, Lease, Route};
use crate::delegation::record::{JobRecord, field_of, key_of};
use crate::delegation::store::StoreError;

impl Shared {
    /// With Redis, at startup: marks this replica alive, purges expired jobs, takes back its own jobs and
    /// adopts orphans, then starts the heartbeat, the takeover scan and the inbox reader.
    pub(super) async fn start_coordination(self: &Arc<Self>, url: &str) -> Result<(), StoreError> {
        let Some(ownership) = &self.ownership else {
            return Ok(());
        };
        tracing::info!(
            replica = ownership.replica(),
            "delegation jobs are stored in Redis"
        );
        // Alive first, so that nobody adopts what this replica is about to take back.
        ownership.heartbeat().await?;
        match ownership
            .purge_expired(time::OffsetDateTime::now_utc())
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired delegation jobs at startup"),
            Err(error) => tracing::warn!(%error, "could not purge expired delegation jobs"),
        }
        let mut unusable = HashSet::new();
        self.adopt_orphans(&mut unusable, true).await;
        let inbox = ownership.inbox(url, self.timing.inbox_wait).await?;
        tokio::spawn(self.clone().keep_alive());
        tokio::spawn(self.clone().scan_for_orphans(unusable));
        tokio::spawn(self.clone().read_inbox(inbox));
        Ok(())
    }

    /// Delivers a signal to the job for `key` wherever it runs (see the module doc of
    /// [`super::ownership`]). Returns the replica without a heartbeat the job was just taken from, if
    /// any: its inbox needs draining.
    pub(super) async fn route_signal(
        self: &Arc<Self>,
        key: &JobKey,
        signal: Signal,
    ) -> Option<String> {
        if self.is_shutting_down() {
            return None;
        }
        let Some(ownership) = &self.ownership else {
            if !self.deliver(key, None, signal) {
                tracing::debug!(room = %key.room, identity = %key.identity, %signal, "no job for this participant");
            }
            return None;
        };
        // A job Redis has not heard of yet: only this replica knows it.
        if self.runs_unstored(key) && self.deliver(key, None, signal) {
            return None;
        }
        let field = field_of(key);
        match ownership.route(&field).await {
            Ok(Route::NoJob) => {
                // Redis may have lost the entry (restarted without its data); the job's next renewal
                // files it again.
                if !self.deliver(key, None, signal) {
                    tracing::debug!(room = %key.room, identity = %key.identity, %signal, "no job for this participant");
                }
            }
            Ok(Route::Here {
                lease,
                value,
                previous,
            }) => {
                if !self.deliver(key, Some(&lease.generation), signal) {
                    // Leased to us (just now, or by a task that has since stopped) but not running here.
                    self.resume(&lease, &value, Some(signal)).await;
                }
                return previous;
            }
            Ok(Route::Elsewhere {
                replica,
                generation,
            }) => {
                tracing::debug!(room = %key.room, identity = %key.identity, %signal, %replica,
                    "forwarding a signal to the replica that drives the job");
                if let Err(error) = ownership
                    .forward(&replica, &field, &generation, signal)
                    .await
                {
                    tracing::warn!(%error, %signal, "could not forward a signal to another replica");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not look up the owner of a job; delivering locally");
                self.deliver(key, None, signal);
            }
        }
        None
    }

    /// Delivers what was forwarded to a replica that is gone, to wherever its jobs run now.
    pub(super) async fn drain_inbox(self: &Arc<Self>, replica: &str) {
        let Some(ownership) = &self.ownership else {
            return;
        };
        let messages = match ownership.drain(replica).await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "could not drain a gone replica's delegation inbox");
                return;
            }
        };
        if !messages.is_empty() {
            tracing::info!(count = messages.len(), %replica, "delivering signals left for a gone replica");
        }
        for (field, generation, signal) in messages {
            let Ok(key) = key_of(&field) else { continue };
            if !self.deliver(&key, Some(&generation), signal) {
                // Not adopted here: route it (a further gone replica's inbox waits for the next scan).
                self.route_signal(&key, signal).await;
            }
        }
    }

    /// Resumes a stored job this replica has just leased: expired ones are deleted without any call;
    /// others start over waiting for their participant, or, if they had been seen, connected (then
    /// optionally with a first signal).
    pub(super) async fn resume(
        self: &Arc<Self>,
        lease: &Lease,
        value: &str,
        first: Option<Signal>,
    ) {
        let Some(ownership) = &self.ownership else {
            return;
        };
        match JobRecord::parse(&lease.field, value) {
            Err(error) => {
                tracing::warn!(%error, field = %lease.field, "skipping a stored delegation job that cannot be read");
                ownership.release(lease).await;
            }
            Ok(record) if record.expired(time::OffsetDateTime::now_utc()) => {
                tracing::info!(room = %record.params.key.room, identity = %record.params.key.identity,
                    "purging an expired delegation job");
                if let Err(error) = ownership.finish(lease).await {
                    tracing::warn!(%error, "could not delete an expired delegation job from Redis");
                    self.finish_later(lease.clone());
                }
            }
            Ok(record) => {
                tracing::info!(room = %record.params.key.room, identity = %record.params.key.identity,
                    connected = record.connected, "resuming a stored delegation job");
                let (resumed, mut signals) = if record.connected {
                    (
                        Resumed::Connected,
                        vec![Signal::ParticipantLookupSuccessful],
                    )
                } else {
                    (Resumed::Waiting, Vec::new())
                };
                signals.extend(first);
                self.spawn(
                    record.params,
                    record.generation,
                    Some(lease.clone()),
                    true,
                    resumed,
                    signals,
                );
            }
        }
    }

    /// Leases and resumes every stored job nobody (alive) holds, with `own` also those leased to this
    /// replica's name, then drains the inboxes of the replicas they were taken from. Entries that
    /// cannot be read are reported once.
    pub(super) async fn adopt_orphans(self: &Arc<Self>, unusable: &mut HashSet<String>, own: bool) {
        let Some(ownership) = &self.ownership else {
            return;
        };
        // Jobs that ended while Redis was away must not be adopted as if they had not.
        self.retry_finishes().await;
        let adopted = match ownership.adopt_orphans(own).await {
            Ok(adopted) => adopted,
            Err(error) => {
                tracing::warn!(%error, "could not scan Redis for delegation jobs to resume");
                return;
            }
        };
        for replica in &adopted.gone {
            tracing::info!(%replica, "adopting the delegation jobs of a replica without a heartbeat");
        }
        for (lease, value) in adopted.jobs {
            let running_here = key_of(&lease.field).is_ok_and(|key| {
                self.lock_jobs()
                    .get(&key)
                    .is_some_and(|job| job.generation == lease.generation)
            });
            if running_here {
                // Our own lease lapsed and was taken again: the task still drives the job.
                continue;
            }
            if JobRecord::parse(&lease.field, &value).is_err()
                && !unusable.insert(lease.field.clone())
            {
                ownership.release(&lease).await;
                continue;
            }
            self.resume(&lease, &value, None).await;
        }
        for replica in adopted.gone {
            self.drain_inbox(&replica).await;
        }
    }

    /// Refreshes this replica's heartbeat, and retries deletions that failed, until shutdown.
    pub(super) async fn keep_alive(self: Arc<Self>) {
        let Some(ownership) = &self.ownership else {
            return;
        };
        let mut shutdown = self.shutting_down.subscribe();
        let mut tick = tokio::time::interval(self.timing.heartbeat_interval());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|down| *down) => return,
                _ = tick.tick() => {}
            }
            if let Err(error) = ownership.heartbeat().await {
                tracing::warn!(%error, "could not refresh this replica's heartbeat in Redis");
                continue;
            }
            self.retry_finishes().await;
        }
    }

    /// Periodically adopts jobs whose driver died or left, until shutdown.
    pub(super) async fn scan_for_orphans(self: Arc<Self>, mut unusable: HashSet<String>) {
        let mut shutdown = self.shutting_down.subscribe();
        loop {
            // ±20 % so that replicas started together do not scan in lockstep.
            let period = self
                .timing
                .orphan_scan
                .mul_f64(0.8 + 0.4 * rand::random::<f64>());
            tokio::select! {
                _ = shutdown.wait_for(|down| *down) => return,
                () = tokio::time::sleep(period) => {}
            }
            self.adopt_orphans(&mut unusable, false).await;
        }
    }

    /// Delivers signals other replicas forwarded to this one, until shutdown.
    pub(super) async fn read_inbox(self: Arc<Self>, mut inbox: Inbox) {
        let mut shutdown = self.shutting_down.subscribe();
        loop {
            let next = tokio::select! {
                _ = shutdown.wait_for(|down| *down) => return,
                next = inbox.next() => next,
            };
            match next {
                Ok(Some((field, generation, signal))) => {
                    let delivered = key_of(&field)
                        .is_ok_and(|key| self.deliver(&key, Some(&generation), signal));
                    if !delivered {
                        tracing::debug!(%signal, "a forwarded signal found no job here");
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "could not read this replica's delegation inbox");
                    tokio::time::sleep(self.timing.backoff_initial).await;
                }
            }
        }
    }
}
