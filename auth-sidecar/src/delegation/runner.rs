//! Runs jobs: one task per job feeds signals (webhooks, LiveKit lookups, timers, call outcomes) through
//! [`job::step`] and performs the effects, with retries, on the homeserver and in Redis.
//!
//! [`Delegation`] is the handle the HTTP layer uses: add a job, deliver a webhook signal, shut down.
//! With Redis, it also purges expired jobs and resumes stored ones at startup, keeps this replica's
//! heartbeat, adopts jobs other replicas left behind (draining their inboxes), exchanges signals with
//! other replicas, and writes jobs that could only be held in memory once Redis answers again (see
//! [`super::ownership`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::{BoxFuture, OptionFuture};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior, sleep_until};

use super::job::{self, Effect, JobKey, JobParams, Signal, State};
use super::ownership::{Lease, Ownership, Route, Standing, random_id};
use super::retry::{self, Backoff, Verdict};
use super::settings::{Settings, Timing};
use super::store::{JobRecord, JobStore, StoreError, field_of, key_of};
use crate::livekit::twirp::RoomService;
use crate::matrix::client_api::{ClientApi, ClientApiError};
use crate::matrix::delayed_event::{Action, Reply};
use crate::telemetry::Metrics;

/// Signals a job may have queued before it drops webhook signals (it reacts within microseconds; the
/// bound only protects memory from a flood of signed webhooks).
const SIGNAL_QUEUE: usize = 32;
/// Timers never reach further than this (delay timeouts may be up to 292 years).
const FARTHEST_TIMER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// The homeserver's delayed-event API: one attempt of an action.
pub trait DelayedEventApi: Send + Sync {
    /// `Err` means the client-server API of `server_name` could not be found.
    fn attempt<'a>(
        &'a self,
        server_name: &'a str,
        delay_id: &'a str,
        action: Action,
    ) -> BoxFuture<'a, Result<Reply, ClientApiError>>;
}

impl DelayedEventApi for ClientApi {
    fn attempt<'a>(
        &'a self,
        server_name: &'a str,
        delay_id: &'a str,
        action: Action,
    ) -> BoxFuture<'a, Result<Reply, ClientApiError>> {
        Box::pin(self.delayed_event(server_name, delay_id, action))
    }
}

/// A LiveKit participant lookup failed for another reason than "not found".
#[derive(Debug, thiserror::Error)]
#[error("participant lookup failed: {0}")]
pub struct LookupError(pub String);

/// LiveKit's `GetParticipant`.
pub trait ParticipantLookup: Send + Sync {
    /// `Ok(false)` when LiveKit says the participant (or room) is not there.
    fn is_present<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<bool, LookupError>>;
}

impl ParticipantLookup for RoomService {
    fn is_present<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<bool, LookupError>> {
        Box::pin(async move {
            self.get_participant(room, identity)
                .await
                .map(|participant| participant.is_some())
                .map_err(|error| LookupError(error.to_string()))
        })
    }
}

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

struct Shared {
    timing: Timing,
    sanity_interval: Option<Duration>,
    homeserver: Arc<dyn DelayedEventApi>,
    livekit: Arc<dyn ParticipantLookup>,
    metrics: Arc<Metrics>,
    ownership: Option<Ownership>,
    jobs: Mutex<HashMap<JobKey, LocalJob>>,
    /// One lock per key with an `add` (or a late first write) under way, so that two of them for one
    /// key reach Redis and this replica's memory in the same order.
    add_locks: Mutex<HashMap<JobKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Finished jobs whose deletion from Redis failed; retried until Redis answers.
    pending_finishes: Mutex<Vec<Lease>>,
    shutting_down: watch::Sender<bool>,
    /// Notified whenever a job task ends.
    job_ended: Notify,
}

/// This replica's handle on a job it drives.
struct LocalJob {
    generation: String,
    /// False while the job runs from memory only (its Redis write failed).
    stored: Arc<AtomicBool>,
    signals: mpsc::Sender<Signal>,
    /// Dropping this tells the job a newer one replaced it.
    _replacement: oneshot::Sender<()>,
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
        if let (Some(ownership), Some(url)) = (&shared.ownership, &settings.redis_url) {
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
            shared.adopt_orphans(&mut unusable, true).await;
            let inbox = ownership.inbox(url, settings.timing.inbox_wait).await?;
            tokio::spawn(shared.clone().keep_alive());
            tokio::spawn(shared.clone().scan_for_orphans(unusable));
            tokio::spawn(shared.clone().read_inbox(inbox));
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

impl Shared {
    /// Delivers a signal to the job for `key` wherever it runs (see the module doc of
    /// [`super::ownership`]). Returns the replica without a heartbeat the job was just taken from, if
    /// any: its inbox needs draining.
    async fn route_signal(self: &Arc<Self>, key: &JobKey, signal: Signal) -> Option<String> {
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
    async fn drain_inbox(self: &Arc<Self>, replica: &str) {
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

    /// True if this replica runs the job for `key` from memory only.
    fn runs_unstored(&self, key: &JobKey) -> bool {
        self.lock_jobs()
            .get(key)
            .is_some_and(|job| !job.stored.load(Ordering::SeqCst))
    }

    /// True if this replica's current job for `key` is `generation`.
    fn is_current(&self, key: &JobKey, generation: &str) -> bool {
        self.lock_jobs()
            .get(key)
            .is_some_and(|job| job.generation == generation)
    }

    /// The lock that serialises adds (and late first writes) for `key`.
    fn add_lock(&self, key: &JobKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .add_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Locks nobody waits for any more go, so the map holds only adds under way.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(key.clone()).or_default().clone()
    }

    /// Remembers a finished job whose deletion failed, for [`Shared::retry_finishes`].
    fn finish_later(&self, lease: Lease) {
        self.pending_finishes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(lease);
    }

    /// Deletes finished jobs whose deletion failed earlier; keeps those that fail again.
    async fn retry_finishes(&self) {
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

    fn lock_jobs(&self) -> MutexGuard<'_, HashMap<JobKey, LocalJob>> {
        // Every critical section is a single map operation, so a poisoned map is still consistent.
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_shutting_down(&self) -> bool {
        *self.shutting_down.borrow()
    }

    /// Starts a task for a job, replacing (and so stopping) any local job for the same key. `lease` is
    /// None only without Redis; `stored` says whether Redis has the job yet.
    fn spawn(
        self: &Arc<Self>,
        params: JobParams,
        generation: String,
        lease: Option<Lease>,
        stored: bool,
        resumed: Resumed,
        first: Vec<Signal>,
    ) {
        let (signals, receiver) = mpsc::channel(SIGNAL_QUEUE);
        let (replacement, replaced) = oneshot::channel();
        for signal in first {
            // The queue is empty and large enough for the two signals a resumed job may start with.
            let _ = signals.try_send(signal);
        }
        let key = params.key.clone();
        let watcher = signals.clone();
        let stored = Arc::new(AtomicBool::new(stored));
        let keeper = lease.map(|lease| Keeper {
            shared: self.clone(),
            key: key.clone(),
            value: Arc::new(Mutex::new(
                JobRecord {
                    params: params.clone(),
                    restarted_at: time::OffsetDateTime::now_utc(),
                    generation: generation.clone(),
                    connected: resumed == Resumed::Connected,
                }
                .to_json(),
            )),
            lease,
            stored: stored.clone(),
        });
        let previous = self.lock_jobs().insert(
            key,
            LocalJob {
                generation: generation.clone(),
                stored,
                signals,
                _replacement: replacement,
            },
        );
        // Dropping the previous handle (outside the lock) tells that job it was replaced.
        drop(previous);
        self.metrics
            .delegation_job_entered(State::WaitingForInitialConnect.as_str());
        let driver = Driver {
            shared: self.clone(),
            params: Arc::new(params),
            generation,
            keeper,
            resumed,
            state: State::WaitingForInitialConnect,
            restart_deadline: None,
            next_reset: None,
            restart: None,
        };
        tokio::spawn(driver.run(receiver, watcher, replaced));
    }

    /// Hands a signal to the local job for `key` (of that generation, if given). False if there is none.
    fn deliver(&self, key: &JobKey, generation: Option<&str>, signal: Signal) -> bool {
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

    /// Resumes a stored job this replica has just leased: expired ones are deleted without any call;
    /// others start over waiting for their participant, or, if they had been seen, connected (then
    /// optionally with a first signal).
    async fn resume(self: &Arc<Self>, lease: &Lease, value: &str, first: Option<Signal>) {
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
    async fn adopt_orphans(self: &Arc<Self>, unusable: &mut HashSet<String>, own: bool) {
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
    async fn keep_alive(self: Arc<Self>) {
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
    async fn scan_for_orphans(self: Arc<Self>, mut unusable: HashSet<String>) {
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
    async fn read_inbox(self: Arc<Self>, mut inbox: super::ownership::Inbox) {
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

    /// One homeserver attempt. `None` when the client-server API cannot be resolved.
    async fn attempt(&self, params: &JobParams, action: Action) -> Option<Reply> {
        match self
            .homeserver
            .attempt(&params.server_name, &params.delay_id, action)
            .await
        {
            Ok(reply) => {
                self.metrics
                    .delayed_event_call(action.as_str(), reply.label());
                tracing::debug!(action = action.as_str(), reply = reply.label(),
                    room = %params.key.room, identity = %params.key.identity, "delayed event call");
                Some(reply)
            }
            Err(error) => {
                self.metrics
                    .delayed_event_call(action.as_str(), "no_client_api");
                tracing::warn!(%error, action = action.as_str(), "cannot call the homeserver");
                None
            }
        }
    }
}

/// How a `restart` (with its retries) ended.
#[derive(Debug, PartialEq, Eq)]
enum RestartOutcome {
    Restarted,
    NotFound,
    TimedOut,
    NoClientApi,
    Lost,
}

/// How a `send` (with its retries) ended.
#[derive(Debug, PartialEq, Eq)]
enum SendOutcome {
    /// Sent, or the homeserver no longer had it.
    Done,
    /// Retries ran out, or the client-server API could not be resolved.
    Failed,
    /// Another driver owns the job now: nothing more may be done, not even forgetting it.
    Lost,
}

/// Whether the task goes on.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// What woke a job task up.
enum Wake {
    Signal(Signal),
    Restart(RestartOutcome),
    RenewLease,
    Shutdown,
}

type RestartFuture = Pin<Box<dyn Future<Output = RestartOutcome> + Send>>;

/// How a job came to run here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resumed {
    /// Added by a request to this replica.
    No,
    /// Resumed from Redis, its participant never seen: it waits for them as a new job does.
    Waiting,
    /// Resumed from Redis after its participant had been seen: it starts connected, and LiveKit is
    /// asked whether they are still there (a leave may have gone unseen while nobody drove the job).
    Connected,
}

/// A job's hold on Redis: its lease, and its entry, which it writes late if Redis was away when the
/// job was added, and again if Redis lost it.
#[derive(Clone)]
struct Keeper {
    shared: Arc<Shared>,
    key: JobKey,
    lease: Lease,
    /// Shared with the job's [`LocalJob`].
    stored: Arc<AtomicBool>,
    /// The job's current stored value (what a late or repeated write files).
    value: Arc<Mutex<String>>,
}

impl Keeper {
    fn ownership(&self) -> Option<&Ownership> {
        self.shared.ownership.as_ref()
    }

    fn value(&self) -> String {
        self.value
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// May the job go on (and call the homeserver)? Confirms and extends the lease; a job not yet in
    /// Redis is written now if Redis answers. Redis errors never stop a job (see the module doc of
    /// [`super::ownership`]).
    async fn may_go_on(&self) -> bool {
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
                tracing::info!(room = %self.key.room, identity = %self.key.identity,
                    "a delegation job held in memory only is stored in Redis now");
            }
            Err(error) => tracing::debug!(%error, "Redis still cannot store a delegation job"),
        }
        true
    }

    /// Stores a new value for the job (after a restart).
    async fn record(&self, value: String) -> Standing {
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
    async fn finish(&self) {
        let Some(ownership) = self.ownership() else {
            return;
        };
        if let Err(error) = ownership.finish(&self.lease).await {
            tracing::warn!(%error, "could not delete a finished delegation job from Redis; retrying later");
            self.shared.finish_later(self.lease.clone());
        }
    }

    /// Renews the lease every `every` until it is lost; never returns while it is held.
    async fn hold(self, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if !self.may_go_on().await {
                return;
            }
        }
    }
}

/// The task that drives one job.
struct Driver {
    shared: Arc<Shared>,
    params: Arc<JobParams>,
    generation: String,
    /// None only without Redis.
    keeper: Option<Keeper>,
    resumed: Resumed,
    state: State,
    /// When the homeserver fires the event unless restarted (set on connecting and after each restart).
    restart_deadline: Option<Instant>,
    /// When the next restart is due.
    next_reset: Option<Instant>,
    /// A restart under way (with its retries).
    restart: Option<RestartFuture>,
}

/// Keeps the jobs-by-state metrics in step with a transition.
fn record_transition(metrics: &Metrics, from: State, to: State) {
    if from == to {
        return;
    }
    if !from.is_terminal() {
        metrics.delegation_job_left(from.as_str());
    }
    if to.is_terminal() {
        metrics.delegation_job_ended(to.as_str());
    } else {
        metrics.delegation_job_entered(to.as_str());
    }
}

/// `now + duration`, for any duration a job may carry.
fn after(now: Instant, duration: Duration) -> Instant {
    now + duration.min(FARTHEST_TIMER)
}

async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Driver {
    async fn run(
        mut self,
        mut signals: mpsc::Receiver<Signal>,
        watcher: mpsc::Sender<Signal>,
        mut replaced: oneshot::Receiver<()>,
    ) {
        let _deregister = Deregister {
            shared: self.shared.clone(),
            key: self.params.key.clone(),
            generation: self.generation.clone(),
        };
        let waiting_until = after(
            Instant::now(),
            job::waiting_timeout(self.params.delay_timeout, self.shared.timing.waiting_cap),
        );
        let _watcher = AbortOnDrop(tokio::spawn(watch_participant(
            self.shared.clone(),
            self.params.clone(),
            watcher,
            self.resumed == Resumed::Connected,
        )));
        let mut shutdown = self.shared.shutting_down.subscribe();
        let renewal = self.shared.timing.lease_renewal();
        let mut renew = tokio::time::interval_at(Instant::now() + renewal, renewal);
        renew.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            let waiting =
                Some(waiting_until).filter(|_| self.state == State::WaitingForInitialConnect);
            let reset = self.next_reset.filter(|_| self.restart.is_none());
            let holds_lease = self.keeper.is_some();
            let wake = tokio::select! {
                biased;
                _ = &mut replaced => Wake::Signal(Signal::JobReplaced),
                _ = shutdown.wait_for(|down| *down) => Wake::Shutdown,
                Some(outcome) = OptionFuture::from(self.restart.as_mut()) => Wake::Restart(outcome),
                Some(signal) = signals.recv() => Wake::Signal(signal),
                () = sleep_until_or_never(waiting) => Wake::Signal(Signal::WaitingStateTimedOut),
                () = sleep_until_or_never(reset) => Wake::Signal(Signal::DelayedEventReset),
                _ = renew.tick(), if holds_lease => Wake::RenewLease,
            };
            let flow = match wake {
                Wake::Signal(signal) => self.apply(signal, &mut replaced).await,
                Wake::Restart(outcome) => {
                    self.restart = None;
                    match self.restart_finished(outcome).await {
                        Some(signal) => self.apply(signal, &mut replaced).await,
                        None => Flow::Continue,
                    }
                }
                Wake::RenewLease => {
                    if may_call(self.keeper.as_ref()).await {
                        Flow::Continue
                    } else {
                        self.apply(Signal::JobReplaced, &mut replaced).await
                    }
                }
                Wake::Shutdown => {
                    let metrics = &self.shared.metrics;
                    metrics.delegation_job_left(self.state.as_str());
                    metrics.delegation_job_ended("shutdown");
                    self.leave_for_successor().await;
                    Flow::Stop
                }
            };
            if flow == Flow::Stop {
                return;
            }
        }
    }

    /// Feeds a signal to the state machine and performs the resulting effects.
    async fn apply(&mut self, signal: Signal, replaced: &mut oneshot::Receiver<()>) -> Flow {
        let params = self.params.clone();
        let key = &params.key;
        let Some(transition) = job::step(self.state, signal) else {
            tracing::debug!(room = %key.room, identity = %key.identity, state = %self.state, %signal,
                "signal ignored in this state");
            return Flow::Continue;
        };
        if transition.next == self.state {
            // The periodic restart: routine, so only at debug.
            tracing::debug!(room = %key.room, identity = %key.identity, state = %self.state,
                %signal, "delegation job restart due");
        } else {
            tracing::info!(room = %key.room, identity = %key.identity, from = %self.state,
                to = %transition.next, %signal, "delegation job transition");
        }
        record_transition(&self.shared.metrics, self.state, transition.next);
        self.state = transition.next;
        for effect in transition.effects {
            match effect {
                Effect::ArmRestartDeadline => {
                    self.restart_deadline = Some(after(Instant::now(), self.params.delay_timeout));
                }
                Effect::Restart => {
                    self.next_reset = None;
                    let deadline = self.restart_deadline.unwrap_or_else(Instant::now);
                    self.restart = Some(Box::pin(restart_until(
                        self.shared.clone(),
                        self.params.clone(),
                        self.keeper.clone(),
                        deadline,
                    )));
                }
                Effect::Send => {
                    self.restart = None;
                    self.next_reset = None;
                    // The send and its retry waits may outlast the lease: keep renewing it meanwhile.
                    let hold = OptionFuture::from(
                        self.keeper
                            .clone()
                            .map(|keeper| keeper.hold(self.shared.timing.lease_renewal())),
                    );
                    let outcome = tokio::select! {
                        biased;
                        _ = &mut *replaced => SendOutcome::Lost,
                        Some(()) = hold => SendOutcome::Lost,
                        outcome = self.send() => outcome,
                    };
                    tracing::info!(room = %key.room, identity = %key.identity, ?outcome, "delayed leave send finished");
                    if outcome == SendOutcome::Lost {
                        return Flow::Stop;
                    }
                }
                Effect::Forget => {
                    if let Some(keeper) = &self.keeper {
                        keeper.finish().await;
                    }
                    return Flow::Stop;
                }
            }
        }
        if self.state.is_terminal() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// Bookkeeping after a restart; returns the signal it amounts to, if any.
    async fn restart_finished(&mut self, outcome: RestartOutcome) -> Option<Signal> {
        match outcome {
            RestartOutcome::Restarted => {
                let now = Instant::now();
                self.restart_deadline = Some(after(now, self.params.delay_timeout));
                self.next_reset = Some(after(now, job::reset_interval(self.params.delay_timeout)));
                let keeper = self.keeper.as_ref()?;
                let record = JobRecord {
                    params: (*self.params).clone(),
                    restarted_at: time::OffsetDateTime::now_utc(),
                    generation: self.generation.clone(),
                    connected: true,
                };
                match keeper.record(record.to_json()).await {
                    Standing::Held => None,
                    Standing::Lost => Some(Signal::JobReplaced),
                }
            }
            RestartOutcome::NotFound => Some(Signal::DelayedEventNotFound),
            RestartOutcome::TimedOut => Some(Signal::DelayedEventTimedOut),
            RestartOutcome::NoClientApi => Some(Signal::CsApiUrlNotFound),
            RestartOutcome::Lost => Some(Signal::JobReplaced),
        }
    }

    /// `send`, retried within the send window. (`&mut`: a shared borrow of the driver, whose restart
    /// future is not `Sync`, could not be held across an await in a spawned task.)
    async fn send(&mut self) -> SendOutcome {
        let timing = &self.shared.timing;
        let now = Instant::now();
        let time_left = self
            .restart_deadline
            .map(|deadline| deadline.saturating_duration_since(now));
        let window = retry::send_window(
            time_left,
            timing.send_window_floor,
            timing.send_window_ceiling,
        );
        let end = after(now, window);
        let mut backoff = Backoff::new(timing.backoff_initial, timing.backoff_max);
        loop {
            if !may_call(self.keeper.as_ref()).await {
                return SendOutcome::Lost;
            }
            let Some(reply) = self.shared.attempt(&self.params, Action::Send).await else {
                return SendOutcome::Failed;
            };
            let wait = match retry::verdict(Action::Send, &reply) {
                Verdict::Done | Verdict::Gone => return SendOutcome::Done,
                Verdict::RetryIn(hint) => hint.unwrap_or_else(|| backoff.next_interval()),
            };
            let wake = after(Instant::now(), wait);
            if wake >= end {
                tracing::warn!(room = %self.params.key.room, identity = %self.params.key.identity,
                    "giving up sending a delayed leave: the send window is over");
                return SendOutcome::Failed;
            }
            sleep_until(wake).await;
        }
    }

    /// Graceful shutdown: no calls, the stored job stays, and its lease is released so that the next
    /// instance (or another replica) resumes it at once.
    async fn leave_for_successor(&mut self) {
        if let Some(keeper) = &self.keeper
            && let Some(ownership) = keeper.ownership()
        {
            ownership.release(&keeper.lease).await;
        }
    }
}

/// May this job call the homeserver now? Without Redis it always may.
async fn may_call(keeper: Option<&Keeper>) -> bool {
    match keeper {
        Some(keeper) => keeper.may_go_on().await,
        None => true,
    }
}

/// `restart`, retried until the deadline.
async fn restart_until(
    shared: Arc<Shared>,
    params: Arc<JobParams>,
    keeper: Option<Keeper>,
    deadline: Instant,
) -> RestartOutcome {
    let mut backoff = Backoff::new(shared.timing.backoff_initial, shared.timing.backoff_max);
    loop {
        if Instant::now() >= deadline {
            return RestartOutcome::TimedOut;
        }
        if !may_call(keeper.as_ref()).await {
            return RestartOutcome::Lost;
        }
        let Some(reply) = shared.attempt(&params, Action::Restart).await else {
            return RestartOutcome::NoClientApi;
        };
        let wait = match retry::verdict(Action::Restart, &reply) {
            Verdict::Done => return RestartOutcome::Restarted,
            Verdict::Gone => return RestartOutcome::NotFound,
            Verdict::RetryIn(hint) => hint.unwrap_or_else(|| backoff.next_interval()),
        };
        sleep_until(after(Instant::now(), wait).min(deadline)).await;
    }
}

/// Looks the participant up in LiveKit (spec §5.3). Phase 1 polls with backoff until they are found
/// (reporting it once) or the waiting time is over; phase 2, when sanity checks are on, then polls at
/// that interval until LiveKit confirms they are gone. Lookup errors other than "not found" change
/// nothing. Runs until found-and-gone, or until the job ends and aborts it.
///
/// A job resumed connected (`confirm`) already counts as found: phase 1 instead asks until LiveKit
/// answers, and a "not found" then reports the participant gone at once.
async fn watch_participant(
    shared: Arc<Shared>,
    params: Arc<JobParams>,
    signals: mpsc::Sender<Signal>,
    confirm: bool,
) {
    let (room, identity) = (&params.key.room, &params.key.identity);
    let give_up = after(
        Instant::now(),
        job::waiting_timeout(params.delay_timeout, shared.timing.waiting_cap),
    );
    let mut backoff = Backoff::new(shared.timing.backoff_initial, shared.timing.backoff_max);
    loop {
        match shared.livekit.is_present(room, identity).await {
            Ok(true) => break,
            Ok(false) if confirm => {
                let _ = signals.send(Signal::SfuParticipantGone).await;
                return;
            }
            Ok(false) => {}
            Err(error) => tracing::debug!(%error, %room, %identity, "participant lookup failed"),
        }
        let wake = after(Instant::now(), backoff.next_interval());
        if wake >= give_up {
            return;
        }
        sleep_until(wake).await;
    }
    if !confirm
        && signals
            .send(Signal::ParticipantLookupSuccessful)
            .await
            .is_err()
    {
        return;
    }
    let Some(interval) = shared.sanity_interval else {
        return;
    };
    loop {
        tokio::time::sleep(interval).await;
        match shared.livekit.is_present(room, identity).await {
            Ok(false) => {
                let _ = signals.send(Signal::SfuParticipantGone).await;
                return;
            }
            Ok(true) => {}
            Err(error) => tracing::debug!(%error, %room, %identity, "sanity check lookup failed"),
        }
    }
}

/// Removes the job's handle when its task ends (unless a newer job took the key) and wakes shutdown.
struct Deregister {
    shared: Arc<Shared>,
    key: JobKey,
    generation: String,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        let removed = {
            let mut jobs = self.shared.lock_jobs();
            let ours = jobs
                .get(&self.key)
                .is_some_and(|job| job.generation == self.generation);
            if ours { jobs.remove(&self.key) } else { None }
        };
        drop(removed);
        self.shared.job_ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// What the fake homeserver answers to an action.
    #[derive(Clone, Debug)]
    enum Canned {
        Reply(Reply),
        NoClientApi,
    }

    /// A homeserver that records every attempt (with the paused clock's time) and answers as told.
    #[derive(Default)]
    struct FakeHomeserver {
        calls: Mutex<Vec<(String, Action, Instant)>>,
        answers: Mutex<HashMap<Action, Canned>>,
    }

    impl FakeHomeserver {
        fn answer(&self, action: Action, canned: Canned) {
            self.answers.lock().expect("answers").insert(action, canned);
        }

        fn calls(&self) -> Vec<(String, Action, Instant)> {
            self.calls.lock().expect("calls").clone()
        }

        fn actions(&self) -> Vec<(String, Action)> {
            self.calls()
                .into_iter()
                .map(|(id, action, _)| (id, action))
                .collect()
        }
    }

    impl DelayedEventApi for FakeHomeserver {
        fn attempt<'a>(
            &'a self,
            server_name: &'a str,
            delay_id: &'a str,
            action: Action,
        ) -> BoxFuture<'a, Result<Reply, ClientApiError>> {
            self.calls
                .lock()
                .expect("calls")
                .push((delay_id.to_owned(), action, Instant::now()));
            let canned = self
                .answers
                .lock()
                .expect("answers")
                .get(&action)
                .cloned()
                .unwrap_or(Canned::Reply(Reply::Success));
            let result = match canned {
                Canned::Reply(reply) => Ok(reply),
                Canned::NoClientApi => Err(ClientApiError::NotPublished {
                    server_name: server_name.to_owned(),
                }),
            };
            Box::pin(std::future::ready(result))
        }
    }

    /// A LiveKit whose one participant is present or not, as told.
    #[derive(Default)]
    struct FakeLiveKit {
        present: Mutex<bool>,
    }

    impl FakeLiveKit {
        fn set_present(&self, present: bool) {
            *self.present.lock().expect("present") = present;
        }
    }

    impl ParticipantLookup for FakeLiveKit {
        fn is_present<'a>(
            &'a self,
            _room: &'a str,
            _identity: &'a str,
        ) -> BoxFuture<'a, Result<bool, LookupError>> {
            let present = *self.present.lock().expect("present");
            Box::pin(std::future::ready(Ok(present)))
        }
    }

    struct Harness {
        delegation: Delegation,
        hs: Arc<FakeHomeserver>,
        livekit: Arc<FakeLiveKit>,
        metrics: Arc<Metrics>,
        started: Instant,
    }

    async fn harness(sanity_check_interval: Option<Duration>) -> Harness {
        let hs = Arc::new(FakeHomeserver::default());
        let livekit = Arc::new(FakeLiveKit::default());
        let settings = Settings {
            redis_url: None,
            sanity_check_interval,
            timing: Timing::default(),
            replica_id: None,
        };
        let metrics = Arc::new(Metrics::new());
        let delegation = Delegation::start(settings, hs.clone(), livekit.clone(), metrics.clone())
            .await
            .expect("starts without Redis");
        Harness {
            delegation,
            hs,
            livekit,
            metrics,
            started: Instant::now(),
        }
    }

    fn key() -> JobKey {
        JobKey {
            room: "room".into(),
            identity: "identity".into(),
        }
    }

    fn params(delay_id: &str, timeout: Duration) -> JobParams {
        JobParams {
            key: key(),
            server_name: "hs.example".into(),
            delay_id: delay_id.into(),
            delay_timeout: timeout,
        }
    }

    async fn sleep(seconds: f64) {
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    }

    impl Harness {
        async fn add(&self, delay_id: &str, timeout_secs: u64) {
            self.delegation
                .add(params(delay_id, Duration::from_secs(timeout_secs)))
                .await
                .expect("added");
        }

        async fn notify(&self, signal: Signal) {
            self.delegation.notify(&key(), signal).await;
        }

        fn assert_metrics(&self, lines: &[&str]) {
            let text = self.metrics.encode();
            for line in lines {
                assert!(text.contains(line), "missing {line:?} in\n{text}");
            }
        }

        /// Seconds since the harness started at which `action` was attempted.
        fn times(&self, action: Action) -> Vec<f64> {
            self.hs
                .calls()
                .into_iter()
                .filter(|(_, a, _)| *a == action)
                .map(|(_, _, at)| (at - self.started).as_secs_f64())
                .collect()
        }
    }

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() < 0.1
    }

    #[tokio::test(start_paused = true)]
    async fn a_participant_who_never_connects_gets_the_leave_after_the_wait() {
        let h = harness(None).await;
        h.add("d1", 30).await;
        sleep(29.0).await;
        assert!(h.hs.calls().is_empty(), "nothing before the wait is over");
        sleep(2.0).await;
        let sends = h.times(Action::Send);
        assert_eq!(sends.len(), 1, "{:?}", h.hs.calls());
        assert!(close(sends[0], 30.0), "sent at {sends:?}");
        assert_eq!(h.hs.actions(), [("d1".to_owned(), Action::Send)]);
        assert_eq!(h.delegation.local_jobs(), 0, "the job ended");
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_capped_at_an_hour() {
        let h = harness(None).await;
        h.add("d1", 7200).await;
        sleep(3599.0).await;
        assert!(h.hs.calls().is_empty());
        sleep(2.0).await;
        assert_eq!(h.times(Action::Send).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_looked_up_participant_is_restarted_every_80_percent_then_sent_on_leave() {
        let h = harness(None).await;
        h.livekit.set_present(true);
        h.add("d1", 10).await;
        sleep(20.0).await;
        let restarts = h.times(Action::Restart);
        assert_eq!(restarts.len(), 3, "{restarts:?}");
        for (at, expected) in restarts.iter().zip([0.0, 8.0, 16.0]) {
            assert!(close(*at, expected), "restarts at {restarts:?}");
        }
        h.assert_metrics(&[
            r#"matrixrtc_auth_delegation_jobs{state="connected"} 1"#,
            r#"matrixrtc_auth_delegation_jobs{state="waiting"} 0"#,
            r#"matrixrtc_auth_delayed_event_calls_total{action="restart",outcome="success"} 3"#,
        ]);
        h.notify(Signal::ParticipantDisconnectedIntentionally).await;
        sleep(0.1).await;
        assert_eq!(h.times(Action::Send).len(), 1);
        assert_eq!(h.delegation.local_jobs(), 0);
        h.assert_metrics(&[
            r#"matrixrtc_auth_delegation_jobs{state="connected"} 0"#,
            r#"matrixrtc_auth_delegation_jobs_ended_total{state="disconnected"} 1"#,
            r#"matrixrtc_auth_delayed_event_calls_total{action="send",outcome="success"} 1"#,
        ]);
        sleep(100.0).await;
        assert_eq!(h.hs.calls().len(), 4, "nothing after the send");
    }

    #[tokio::test(start_paused = true)]
    async fn a_webhook_join_connects_and_an_abnormal_leave_sends() {
        let h = harness(None).await;
        h.add("d1", 60).await;
        sleep(1.0).await;
        h.notify(Signal::ParticipantConnected).await;
        sleep(0.1).await;
        assert_eq!(h.times(Action::Restart).len(), 1);
        h.notify(Signal::ParticipantConnectionAborted).await;
        sleep(0.1).await;
        assert_eq!(h.times(Action::Send).len(), 1);
        assert_eq!(h.delegation.local_jobs(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_join_sends_nothing() {
        let h = harness(None).await;
        h.add("d1", 30).await;
        h.notify(Signal::ParticipantConnectionAborted).await;
        sleep(0.1).await;
        assert_eq!(h.delegation.local_jobs(), 0);
        sleep(7200.0).await;
        assert!(h.hs.calls().is_empty(), "{:?}", h.hs.calls());
    }

    #[tokio::test(start_paused = true)]
    async fn an_intentional_leave_while_waiting_is_ignored() {
        let h = harness(None).await;
        h.add("d1", 30).await;
        h.notify(Signal::ParticipantDisconnectedIntentionally).await;
        sleep(1.0).await;
        assert_eq!(h.delegation.local_jobs(), 1, "still waiting");
        assert!(h.hs.calls().is_empty());
        sleep(30.0).await;
        assert_eq!(
            h.times(Action::Send).len(),
            1,
            "the wait still ends in a send"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn restart_404_ends_the_job_without_a_send() {
        let h = harness(None).await;
        h.hs.answer(Action::Restart, Canned::Reply(Reply::NotFound));
        h.livekit.set_present(true);
        h.add("d1", 10).await;
        sleep(0.1).await;
        assert_eq!(h.delegation.local_jobs(), 0);
        h.notify(Signal::ParticipantDisconnectedIntentionally).await;
        sleep(3600.0).await;
        assert_eq!(h.hs.actions(), [("d1".to_owned(), Action::Restart)]);
    }

    #[tokio::test(start_paused = true)]
    async fn send_404_counts_as_sent() {
        let h = harness(None).await;
        h.hs.answer(Action::Send, Canned::Reply(Reply::NotFound));
        h.add("d1", 5).await;
        sleep(60.0).await;
        assert_eq!(
            h.hs.actions(),
            [("d1".to_owned(), Action::Send)],
            "no retry"
        );
        assert_eq!(h.delegation.local_jobs(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn restart_retries_until_the_deadline_then_gives_up_without_sending() {
        let h = harness(None).await;
        h.hs.answer(
            Action::Restart,
            Canned::Reply(Reply::Transient("HTTP status 502".into())),
        );
        h.livekit.set_present(true);
        h.add("d1", 10).await;
        sleep(11.0).await;
        let restarts = h.times(Action::Restart);
        assert!(restarts.len() >= 3, "retried with backoff: {restarts:?}");
        h.assert_metrics(&[&format!(
            r#"matrixrtc_auth_delayed_event_calls_total{{action="restart",outcome="transient"}} {}"#,
            restarts.len()
        )]);
        assert!(restarts.iter().all(|at| *at < 10.0), "{restarts:?}");
        assert_eq!(h.delegation.local_jobs(), 0, "aborted at the deadline");
        sleep(3600.0).await;
        assert!(h.times(Action::Send).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let h = harness(None).await;
        h.hs.answer(
            Action::Restart,
            Canned::Reply(Reply::RetryAfter(Duration::from_secs(7))),
        );
        h.livekit.set_present(true);
        h.add("d1", 20).await;
        sleep(15.0).await;
        let restarts = h.times(Action::Restart);
        assert_eq!(restarts.len(), 3, "{restarts:?}");
        assert!(
            close(restarts[1], 7.0) && close(restarts[2], 14.0),
            "{restarts:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unresolvable_client_api_aborts_a_restart() {
        let h = harness(None).await;
        h.hs.answer(Action::Restart, Canned::NoClientApi);
        h.livekit.set_present(true);
        h.add("d1", 10).await;
        sleep(0.1).await;
        assert_eq!(h.delegation.local_jobs(), 0);
        sleep(3600.0).await;
        assert_eq!(h.hs.actions().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_without_deadline_tries_within_the_one_second_floor() {
        let h = harness(None).await;
        h.hs.answer(Action::Send, Canned::Reply(Reply::Transient("503".into())));
        h.add("d1", 5).await;
        sleep(60.0).await;
        let sends = h.times(Action::Send);
        assert!((1..=2).contains(&sends.len()), "{sends:?}");
        assert!(sends.iter().all(|at| *at >= 5.0 && *at < 6.0), "{sends:?}");
        assert_eq!(h.delegation.local_jobs(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connected_send_retries_until_the_event_would_fire() {
        let h = harness(None).await;
        h.hs.answer(Action::Send, Canned::Reply(Reply::Transient("503".into())));
        h.livekit.set_present(true);
        h.add("d1", 20).await;
        sleep(1.0).await;
        h.notify(Signal::SfuParticipantGone).await;
        sleep(60.0).await;
        let sends = h.times(Action::Send);
        assert!(sends.len() >= 4, "{sends:?}");
        assert!(sends.iter().all(|at| *at < 20.5), "{sends:?}");
        assert!(sends.iter().any(|at| *at > 10.0), "{sends:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_sanity_check_notices_a_vanished_participant() {
        let h = harness(Some(Duration::from_secs(5))).await;
        h.livekit.set_present(true);
        h.add("d1", 60).await;
        sleep(12.0).await;
        assert!(h.times(Action::Send).is_empty(), "still there");
        h.livekit.set_present(false);
        sleep(5.5).await;
        assert_eq!(h.times(Action::Send).len(), 1);
        assert_eq!(h.delegation.local_jobs(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_sanity_checks_a_vanished_participant_goes_unnoticed() {
        let h = harness(None).await;
        h.livekit.set_present(true);
        h.add("d1", 60).await;
        sleep(1.0).await;
        h.livekit.set_present(false);
        sleep(30.0).await;
        assert!(h.times(Action::Send).is_empty());
        assert_eq!(h.delegation.local_jobs(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replaced_job_makes_no_more_calls() {
        let h = harness(None).await;
        h.livekit.set_present(true);
        h.add("old", 10).await;
        sleep(1.0).await;
        h.add("new", 10).await;
        let replaced_at = Instant::now();
        sleep(20.0).await;
        h.notify(Signal::ParticipantDisconnectedIntentionally).await;
        sleep(0.1).await;
        let calls = h.hs.calls();
        assert!(
            calls
                .iter()
                .filter(|(id, _, _)| id == "old")
                .all(|(_, action, at)| *action == Action::Restart && *at < replaced_at),
            "{calls:?}"
        );
        let new: Vec<Action> = calls
            .iter()
            .filter(|(id, _, _)| id == "new")
            .map(|(_, action, _)| *action)
            .collect();
        assert_eq!(
            new,
            [
                Action::Restart,
                Action::Restart,
                Action::Restart,
                Action::Send
            ]
        );
        assert_eq!(h.delegation.local_jobs(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn signals_reach_only_their_own_job() {
        let h = harness(None).await;
        let other = JobKey {
            room: "room".into(),
            identity: "someone-else".into(),
        };
        h.add("mine", 60).await;
        h.delegation
            .add(JobParams {
                key: other.clone(),
                ..params("theirs", Duration::from_secs(60))
            })
            .await
            .expect("added");
        h.delegation
            .notify(&other, Signal::ParticipantConnected)
            .await;
        sleep(1.0).await;
        assert_eq!(h.hs.actions(), [("theirs".to_owned(), Action::Restart)]);
        h.notify(Signal::ParticipantConnectionAborted).await;
        sleep(1.0).await;
        assert_eq!(h.delegation.local_jobs(), 1, "only mine ended");
        assert_eq!(h.hs.actions().len(), 1, "and without a call");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_jobs_without_calls_and_refuses_new_ones() {
        let h = harness(None).await;
        h.livekit.set_present(true);
        h.add("d1", 10).await;
        sleep(1.0).await;
        assert_eq!(h.hs.calls().len(), 1);
        h.delegation.shutdown().await;
        assert_eq!(h.delegation.local_jobs(), 0);
        h.assert_metrics(&[
            r#"matrixrtc_auth_delegation_jobs{state="connected"} 0"#,
            r#"matrixrtc_auth_delegation_jobs_ended_total{state="shutdown"} 1"#,
        ]);
        assert_eq!(
            h.delegation
                .add(params("d2", Duration::from_secs(10)))
                .await,
            Err(AddJobError::ShuttingDown)
        );
        h.notify(Signal::ParticipantDisconnectedIntentionally).await;
        sleep(3600.0).await;
        assert_eq!(h.hs.calls().len(), 1, "{:?}", h.hs.calls());
    }
}
