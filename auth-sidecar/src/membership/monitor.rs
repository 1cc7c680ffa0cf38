//! The monitor's handle and its sweep (as-mode spec §8.2, §8.3).
//!
//! A sweep reads every entry, groups them by Matrix room and works on at most `concurrency` rooms at a time;
//! a room not started within one interval of the sweep's start is left for the next sweep. Each room is
//! worked on only under its lease (see [`super::store`]), so with several replicas exactly one sweeps it, and
//! about once per interval. In a room: revocations whose token expired are forgotten; pending participants
//! are looked up in LiveKit (step 1); then, if our client-server API is known (step 2), `joined_members`
//! decides (step 3, [`super::decide::plan_room`]). At most `concurrency` LiveKit calls are in flight per
//! replica. Nothing is removed on any uncertainty.
//!
//! Ticks come every interval at a random phase (the first between half an interval and one and a half after
//! start, so that replicas do not tick together); a tick that comes while a sweep still runs is skipped with
//! a warning. Entries found at startup (a restart, or another replica's) trigger an immediate sweep.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::decide::{self, MembersAnswer, PendingOutcome, Presence, RejoinOutcome};
use super::entry::{Entry, Key, State};
use super::homeserver::{Homeserver, Members};
use super::jobs::Jobs;
use super::sfu::{RetryPolicy, Sfu, with_retries};
use super::store::{Store, Stored};
use crate::delegation::ownership::random_id;
use crate::delegation::store::StoreError;
use crate::livekit::webhook::{Notification, ParticipantChange};
use crate::telemetry::Metrics;
use crate::telemetry::membership::{Kick, MonitorMetrics, Stage};

/// Shortest sweep lease (spec §8.3: max(15 s, interval)).
const MIN_LEASE: Duration = Duration::from_secs(15);
/// Compare-and-set attempts before a write gives up (another writer kept changing the entry).
const WRITE_ATTEMPTS: usize = 8;

/// How the monitor runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS` (positive: a zero interval means no monitor).
    pub interval: Duration,
    /// `LIVEKIT_MEMBERSHIP_CHECK_CONCURRENCY`.
    pub concurrency: NonZeroUsize,
    /// `LIVEKIT_REDIS_URL`; without it the entries live in memory.
    pub redis_url: Option<String>,
    /// `LIVEKIT_REPLICA_ID`; the lease holder's name (None: random per process).
    pub replica_id: Option<String>,
    /// Retries of `RemoveParticipant` and `DeleteRoom`.
    pub retry: RetryPolicy,
}

impl Settings {
    /// The lease of a room's sweep: max(15 s, interval).
    pub fn lease_ttl(&self) -> Duration {
        self.interval.max(MIN_LEASE)
    }
}

/// What one sweep did (for tests, the benchmark and the log line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Matrix rooms with tracked entries.
    pub rooms: usize,
    /// Rooms this replica swept under their lease.
    pub swept: usize,
    /// Rooms another replica holds.
    pub leased_elsewhere: usize,
    /// Rooms not started within the interval.
    pub late: usize,
    /// Participants removed.
    pub removed: usize,
    /// LiveKit rooms deleted.
    pub deleted_rooms: usize,
    /// Pending entries found connected.
    pub connected: usize,
    /// Entries forgotten (pending and never seen, or revoked with an expired token).
    pub forgotten: usize,
    /// Whether the store could be read at all.
    pub store_ok: bool,
}

/// The monitor. Cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("replica", &self.shared.replica)
            .field("store", &self.shared.store)
            .finish_non_exhaustive()
    }
}

struct Shared {
    settings: Settings,
    store: Store,
    homeserver: Arc<dyn Homeserver>,
    sfu: Arc<dyn Sfu>,
    jobs: Arc<dyn Jobs>,
    metrics: Arc<Metrics>,
    replica: String,
    livekit_calls: Semaphore,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

impl Monitor {
    /// A monitor that does not tick (tests and the benchmark call [`Monitor::sweep`] themselves). Connects
    /// Redis if configured; failing that is a startup error, as for the delegation store.
    pub async fn new(
        settings: Settings,
        homeserver: Arc<dyn Homeserver>,
        sfu: Arc<dyn Sfu>,
        jobs: Arc<dyn Jobs>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let store = match &settings.redis_url {
            Some(url) => Store::redis(url).await?,
            None => Store::memory(),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                replica: settings.replica_id.clone().unwrap_or_else(random_id),
                livekit_calls: Semaphore::new(settings.concurrency.get()),
                settings,
                store,
                homeserver,
                sfu,
                jobs,
                metrics,
                ticker: Mutex::new(None),
            }),
        })
    }

    /// A monitor that sweeps every interval until [`Monitor::shutdown`] (never, with a zero interval).
    pub async fn start(
        settings: Settings,
        homeserver: Arc<dyn Homeserver>,
        sfu: Arc<dyn Sfu>,
        jobs: Arc<dyn Jobs>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let monitor = Self::new(settings, homeserver, sfu, jobs, metrics).await?;
        if monitor.shared.settings.interval.is_zero() {
            // `0` turns the monitor off (a zero period would also make the ticker panic).
            return Ok(monitor);
        }
        let immediate = monitor
            .shared
            .store
            .all()
            .await
            .map(|snapshot| !snapshot.entries.is_empty())
            .unwrap_or(false);
        tracing::info!(
            interval_seconds = monitor.shared.settings.interval.as_secs(),
            concurrency = monitor.shared.settings.concurrency.get(),
            redis = matches!(monitor.shared.store, Store::Redis(_)),
            "membership monitor started"
        );
        let ticking = monitor.clone();
        let handle = tokio::spawn(async move { ticking.run(immediate).await });
        *monitor.lock_ticker() = Some(handle);
        Ok(monitor)
    }

    /// Stops ticking. Entries stay stored for the next instance.
    pub fn shutdown(&self) {
        if let Some(handle) = self.lock_ticker().take() {
            handle.abort();
        }
    }

    fn lock_ticker(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.shared
            .ticker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn metrics(&self) -> &MonitorMetrics {
        &self.shared.metrics.membership
    }

    async fn run(&self, immediate: bool) {
        let interval = self.shared.settings.interval;
        if immediate {
            self.sweep().await;
        }
        let phase = interval.mul_f64(0.5 + rand::random::<f64>());
        let mut ticks = tokio::time::interval_at(Instant::now() + phase, interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            let started = Instant::now();
            self.sweep().await;
            let took = started.elapsed();
            if took > interval {
                tracing::warn!(took = ?took, interval = ?interval,
                    "a membership sweep took longer than the interval; the ticks meanwhile were skipped");
            }
        }
    }

    /// A token was issued for `matrix_user_id` in `matrix_room_id`, for `livekit_identity` in
    /// `livekit_room` (spec §8.1). A new participant starts pending; a known one keeps its state. A store
    /// failure is logged and counted, never passed on: tracking must not fail a token request.
    pub async fn track(
        &self,
        matrix_room_id: &str,
        matrix_user_id: &str,
        livekit_room: &str,
        livekit_identity: &str,
    ) {
        let key = Key {
            livekit_room: livekit_room.to_owned(),
            livekit_identity: livekit_identity.to_owned(),
        };
        let fresh = Entry::new(
            matrix_room_id,
            matrix_user_id,
            key.clone(),
            OffsetDateTime::now_utc(),
        );
        let result = self
            .update(&key, None, |current| {
                Some(current.map_or_else(|| fresh.clone(), |current| current.reregistered(&fresh)))
            })
            .await;
        self.log_store_failure(result, "track a participant");
    }

    /// A verified LiveKit webhook about a participant (spec §8.1, §8.3).
    pub async fn participant_changed(&self, notification: &Notification) {
        let key = Key {
            livekit_room: notification.room.clone(),
            livekit_identity: notification.identity.clone(),
        };
        match notification.change {
            ParticipantChange::Joined => self.participant_joined(&key).await,
            ParticipantChange::LeftIntentionally | ParticipantChange::LeftAbnormally => {
                self.participant_left(&key).await;
            }
        }
    }

    async fn participant_joined(&self, key: &Key) {
        let now = OffsetDateTime::now_utc();
        let mut rejoined = None;
        let result = self
            .update(key, None, |current| {
                let current = current?;
                match current.state() {
                    State::Pending => Some(Entry {
                        connected_at: Some(now),
                        ..current
                    }),
                    State::Connected => Some(current),
                    State::Revoked => {
                        rejoined = Some(current.clone());
                        Some(current)
                    }
                }
            })
            .await;
        self.log_store_failure(result, "mark a participant connected");
        if let Some(entry) = rejoined.filter(|entry| !entry.token_expired(now)) {
            // MSC4195: re-validate on join. Off the webhook's path: /is_joined may take seconds.
            let monitor = self.clone();
            tokio::spawn(async move { monitor.recheck_rejoin(entry).await });
        }
    }

    /// A removed participant came back with their still-valid token: removed again only if their user is
    /// definitely not in the Matrix room.
    async fn recheck_rejoin(&self, entry: Entry) {
        let answer = self
            .shared
            .homeserver
            .user_joined(&entry.matrix_room_id, &entry.matrix_user_id)
            .await;
        let joined = match answer {
            Ok(joined) => Some(joined),
            Err(error) => {
                self.metrics().failed(Stage::IsJoined);
                tracing::warn!(%error, room_id = %entry.matrix_room_id, user_id = %entry.matrix_user_id,
                    "could not re-check a rejoining participant; leaving them to the next sweep");
                None
            }
        };
        match decide::rejoin_outcome(joined) {
            RejoinOutcome::Kick => {
                if self.kick(&entry).await {
                    tracing::info!(room_id = %entry.matrix_room_id, user_id = %entry.matrix_user_id,
                        "removed a participant who rejoined LiveKit without being in the Matrix room");
                }
            }
            RejoinOutcome::Connected => {
                let now = OffsetDateTime::now_utc();
                let result = self
                    .update(&entry.key, None, |current| {
                        current.map(|current| Entry {
                            connected_at: Some(now),
                            revoked_at: None,
                            ..current
                        })
                    })
                    .await;
                self.log_store_failure(result, "mark a rejoined participant connected");
            }
        }
    }

    async fn participant_left(&self, key: &Key) {
        let now = OffsetDateTime::now_utc();
        let result = self
            .update(key, None, |current| {
                let current = current?;
                match current.state() {
                    // Back to pending while the token may still bring them back (§8.3).
                    State::Connected if !current.token_expired(now) => Some(Entry {
                        connected_at: None,
                        ..current
                    }),
                    State::Connected => None,
                    State::Pending | State::Revoked => Some(current),
                }
            })
            .await;
        self.log_store_failure(result, "mark a participant gone");
    }

    /// LiveKit's `room_finished`: the room's entries are forgotten.
    pub async fn room_finished(&self, livekit_room: &str) {
        let snapshot = match self.shared.store.all().await {
            Ok(snapshot) => snapshot,
            Err(error) => return self.log_store_failure(Err(error), "forget a finished room"),
        };
        for stored in snapshot
            .entries
            .into_iter()
            .filter(|stored| stored.entry.key.livekit_room == livekit_room)
        {
            let key = stored.entry.key.clone();
            let result = self.update(&key, Some(stored), |_| None).await;
            self.log_store_failure(result, "forget a finished room");
        }
    }

    fn log_store_failure(&self, result: Result<(), StoreError>, what: &str) {
        if let Err(error) = result {
            self.metrics().failed(Stage::Store);
            tracing::warn!(%error, "membership monitor: could not {what}");
        }
    }

    /// Applies `change` to the entry under `key` (None: absent) and writes the result if it differs, as a
    /// compare-and-set; on a conflict reads again. `known` is a value just read, saving the first read.
    async fn update(
        &self,
        key: &Key,
        mut known: Option<Stored>,
        mut change: impl FnMut(Option<Entry>) -> Option<Entry>,
    ) -> Result<(), StoreError> {
        let store = &self.shared.store;
        for _ in 0..WRITE_ATTEMPTS {
            let (raw, current) = match known.take() {
                Some(stored) => (stored.raw, Some(stored.entry)),
                None => {
                    let raw = store.raw(key).await?;
                    let current = (!raw.is_empty())
                        .then(|| Entry::parse(&key.field(), &raw).ok())
                        .flatten();
                    (raw, current)
                }
            };
            let next = change(current.clone());
            if next == current {
                return Ok(());
            }
            if store.compare_and_set(key, &raw, next.as_ref()).await? {
                return Ok(());
            }
        }
        tracing::warn!(room = %key.livekit_room, identity = %key.livekit_identity,
            "membership monitor: an entry kept changing under a write; left as it is");
        Ok(())
    }

    /// One sweep over every tracked room.
    pub async fn sweep(&self) -> SweepReport {
        let started = Instant::now();
        let deadline = started + self.shared.settings.interval;
        let mut report = SweepReport::default();
        let snapshot = match self.shared.store.all().await {
            Ok(snapshot) => snapshot,
            Err(error) => {
                // Redis down: no sweep (no leases, and a stale view could kick wrongly).
                self.metrics().failed(Stage::Store);
                tracing::warn!(%error, "membership sweep skipped: the store cannot be read");
                return report;
            }
        };
        report.store_ok = true;
        let count = |state| {
            snapshot
                .entries
                .iter()
                .filter(|stored| stored.entry.state() == state)
                .count()
        };
        self.metrics().tracked(
            count(State::Pending),
            count(State::Connected),
            count(State::Revoked),
        );
        if snapshot.unreadable > 0 {
            tracing::warn!(
                unreadable = snapshot.unreadable,
                "membership monitor: skipped stored entries it cannot read"
            );
        }
        let mut rooms: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
        for stored in snapshot.entries {
            rooms
                .entry(stored.entry.matrix_room_id.clone())
                .or_default()
                .push(stored);
        }
        report.rooms = rooms.len();
        if rooms.is_empty() {
            self.metrics().swept(started.elapsed().as_secs_f64());
            return report;
        }
        let client_api = match self.shared.homeserver.resolve().await {
            Ok(()) => true,
            Err(error) => {
                self.metrics().failed(Stage::ClientApi);
                tracing::warn!(%error, "membership sweep: only pending participants are checked");
                false
            }
        };
        let outcomes: Vec<RoomOutcome> = futures::stream::iter(rooms)
            .map(|(room_id, entries)| self.room(room_id, entries, deadline, client_api))
            .buffer_unordered(self.shared.settings.concurrency.get())
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                RoomOutcome::Late => report.late += 1,
                RoomOutcome::LeasedElsewhere => report.leased_elsewhere += 1,
                RoomOutcome::Swept(counts) => {
                    report.swept += 1;
                    report.removed += counts.removed;
                    report.deleted_rooms += counts.deleted_rooms;
                    report.connected += counts.connected;
                    report.forgotten += counts.forgotten;
                }
            }
        }
        if report.late > 0 {
            self.metrics().failed(Stage::Deadline);
            tracing::warn!(
                late = report.late,
                "membership sweep: rooms not started within the interval"
            );
        }
        let took = started.elapsed();
        self.metrics().swept(took.as_secs_f64());
        tracing::debug!(?report, took = ?took, "membership sweep done");
        report
    }

    /// One room under its lease, renewed every third of its TTL while the work lasts.
    async fn room(
        &self,
        room_id: String,
        entries: Vec<Stored>,
        deadline: Instant,
        client_api: bool,
    ) -> RoomOutcome {
        if Instant::now() >= deadline {
            return RoomOutcome::Late;
        }
        let ttl = self.shared.settings.lease_ttl();
        let store = &self.shared.store;
        match store.lease(&room_id, &self.shared.replica, ttl).await {
            Ok(true) => {}
            Ok(false) => return RoomOutcome::LeasedElsewhere,
            Err(error) => {
                self.metrics().failed(Stage::Store);
                tracing::warn!(%error, room_id = %room_id, "membership sweep: could not take a room's lease");
                return RoomOutcome::LeasedElsewhere;
            }
        }
        let work = self.sweep_room(&room_id, entries, client_api);
        tokio::pin!(work);
        loop {
            tokio::select! {
                counts = &mut work => return RoomOutcome::Swept(counts),
                () = tokio::time::sleep(ttl / 3) => {
                    if let Err(error) = store.lease(&room_id, &self.shared.replica, ttl).await {
                        tracing::warn!(%error, room_id = %room_id, "membership sweep: could not renew a room's lease");
                    }
                }
            }
        }
    }

    /// Steps 1 and 3 for one Matrix room.
    async fn sweep_room(
        &self,
        room_id: &str,
        entries: Vec<Stored>,
        client_api: bool,
    ) -> RoomCounts {
        let mut counts = RoomCounts::default();
        let now = OffsetDateTime::now_utc();
        let (expired, live): (Vec<Stored>, Vec<Stored>) = entries.into_iter().partition(|stored| {
            stored.entry.state() == State::Revoked && stored.entry.token_expired(now)
        });
        for stored in expired {
            let key = stored.entry.key.clone();
            let result = self.update(&key, Some(stored), |_| None).await;
            counts.forgotten += 1;
            self.log_store_failure(result, "forget an expired revocation");
        }

        // Step 1: where are the pending participants?
        let checked = futures::future::join_all(
            live.into_iter()
                .map(|stored| self.check_pending(stored, now)),
        )
        .await;
        let mut current = Vec::with_capacity(checked.len());
        for (entry, outcome) in checked {
            match outcome {
                PendingOutcome::Connected => counts.connected += 1,
                PendingOutcome::Forget => {
                    counts.forgotten += 1;
                    continue;
                }
                PendingOutcome::Keep => {}
            }
            current.push(entry);
        }
        if !client_api || current.iter().all(|entry| entry.state() == State::Revoked) {
            return counts;
        }

        // Step 3: who is still in the Matrix room?
        let answer = match self.shared.homeserver.joined_members(room_id).await {
            Ok(Members::Joined(joined)) => MembersAnswer::Joined(joined),
            Ok(Members::Forbidden) => {
                let server_joined = match self.shared.homeserver.server_joined(room_id).await {
                    Ok(joined) => Some(joined),
                    Err(error) => {
                        self.metrics().failed(Stage::IsJoined);
                        tracing::warn!(%error, room_id, "membership sweep: /is_joined failed; nothing done");
                        None
                    }
                };
                MembersAnswer::Forbidden { server_joined }
            }
            Err(error) => {
                self.metrics().failed(Stage::JoinedMembers);
                tracing::warn!(%error, room_id, "membership sweep: joined_members failed; nothing done");
                MembersAnswer::Unknown
            }
        };
        let plan = decide::plan_room(&current, &answer);
        if plan.namespace_mismatch {
            self.metrics().failed(Stage::Namespace);
            tracing::error!(
                room_id,
                "our homeserver is in the room but refuses joined_members: the registration's users namespace does not cover its local members"
            );
        }
        for key in &plan.kick {
            if let Some(entry) = current.iter().find(|entry| &entry.key == key)
                && self.kick(entry).await
            {
                counts.removed += 1;
                tracing::info!(room_id, user_id = %entry.matrix_user_id,
                    "removed a participant who left the Matrix room");
                self.revoke(entry).await;
            }
        }
        for livekit_room in &plan.delete_rooms {
            // Step 4, before the room goes (see `kick`).
            for entry in current
                .iter()
                .filter(|entry| &entry.key.livekit_room == livekit_room)
            {
                self.discard_job(entry).await;
            }
            if self.delete_room(livekit_room).await {
                counts.deleted_rooms += 1;
                tracing::info!(
                    room_id,
                    livekit_room,
                    "deleted the LiveKit room of a room our server left"
                );
                for entry in current.iter().filter(|entry| {
                    &entry.key.livekit_room == livekit_room && entry.state() != State::Revoked
                }) {
                    self.revoke(entry).await;
                }
            }
        }
        counts
    }

    /// Step 1 for one entry: the entry as it is now, and what became of it.
    async fn check_pending(&self, stored: Stored, now: OffsetDateTime) -> (Entry, PendingOutcome) {
        if stored.entry.state() != State::Pending {
            return (stored.entry, PendingOutcome::Keep);
        }
        let entry = stored.entry.clone();
        let presence = {
            let _permit = self.shared.livekit_calls.acquire().await;
            self.shared
                .sfu
                .participant_present(&entry.key.livekit_room, &entry.key.livekit_identity)
                .await
        };
        let presence = match presence {
            Ok(true) => Presence::Present,
            Ok(false) => Presence::NotFound,
            Err(error) => {
                self.metrics().failed(Stage::GetParticipant);
                tracing::debug!(%error, "membership sweep: GetParticipant failed");
                Presence::Unknown
            }
        };
        let outcome = decide::pending_outcome(&entry, presence, now);
        let next = match outcome {
            PendingOutcome::Connected => Some(Entry {
                connected_at: Some(now),
                ..entry.clone()
            }),
            PendingOutcome::Forget => None,
            PendingOutcome::Keep => return (entry, outcome),
        };
        let key = entry.key.clone();
        let written = next.clone();
        let result = self
            .update(&key, Some(stored), |current| match current {
                // Only if nothing else moved it meanwhile.
                Some(current) if current.state() == State::Pending => written.clone(),
                other => other,
            })
            .await;
        self.log_store_failure(result, "record a pending participant's state");
        (next.unwrap_or(entry), outcome)
    }

    /// Removes a participant whose user is not in the Matrix room: their delegation job is discarded
    /// (step 4), then `RemoveParticipant`. The job goes first: the removal makes LiveKit send
    /// `participant_left`, which would otherwise reach the job before the revocation and send the leave
    /// event of a user who already left. If the removal fails, the next sweep tries again; the job is
    /// gone either way, so the delayed event fires at its own timeout.
    async fn kick(&self, entry: &Entry) -> bool {
        self.discard_job(entry).await;
        self.remove(entry).await
    }

    async fn discard_job(&self, entry: &Entry) {
        self.shared
            .jobs
            .discard(&entry.key.livekit_room, &entry.key.livekit_identity)
            .await;
    }

    /// `RemoveParticipant` with retries; true once they are gone.
    async fn remove(&self, entry: &Entry) -> bool {
        let result = with_retries(self.shared.settings.retry, || async move {
            let _permit = self.shared.livekit_calls.acquire().await;
            self.shared
                .sfu
                .remove_participant(&entry.key.livekit_room, &entry.key.livekit_identity)
                .await
        })
        .await;
        match result {
            Ok(()) => {
                self.metrics().kicked(Kick::RemoveParticipant);
                true
            }
            Err(error) => {
                self.metrics().failed(Stage::RemoveParticipant);
                tracing::warn!(%error, user_id = %entry.matrix_user_id, "RemoveParticipant failed");
                false
            }
        }
    }

    /// `DeleteRoom` with retries; true once the room is gone.
    async fn delete_room(&self, livekit_room: &str) -> bool {
        let result = with_retries(self.shared.settings.retry, || async move {
            let _permit = self.shared.livekit_calls.acquire().await;
            self.shared.sfu.delete_room(livekit_room).await
        })
        .await;
        match result {
            Ok(()) => {
                self.metrics().kicked(Kick::DeleteRoom);
                true
            }
            Err(error) => {
                self.metrics().failed(Stage::DeleteRoom);
                tracing::warn!(%error, livekit_room, "DeleteRoom failed");
                false
            }
        }
    }

    /// Marks an entry revoked: kept until its token expires, so that a rejoin is checked (§8.3).
    async fn revoke(&self, entry: &Entry) {
        let now = OffsetDateTime::now_utc();
        let result = self
            .update(&entry.key, None, |current| {
                current.map(|current| Entry {
                    revoked_at: Some(current.revoked_at.unwrap_or(now)),
                    ..current
                })
            })
            .await;
        self.log_store_failure(result, "mark a participant revoked");
    }

    /// The stored entries (tests and the benchmark).
    pub async fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .shared
            .store
            .all()
            .await?
            .entries
            .into_iter()
            .map(|stored| stored.entry)
            .collect())
    }
}

enum RoomOutcome {
    Late,
    LeasedElsewhere,
    Swept(RoomCounts),
}

#[derive(Default)]
struct RoomCounts {
    removed: usize,
    deleted_rooms: usize,
    connected: usize,
    forgotten: usize,
}

/// The room named by a verified webhook body if it is a `room_finished` event ([`crate::livekit::webhook`]
/// reports only participant events; call this with the body it verified and found of another kind).
pub fn finished_room(verified_body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Event {
        #[serde(default)]
        event: String,
        room: Option<Room>,
    }
    #[derive(serde::Deserialize)]
    struct Room {
        #[serde(default)]
        name: String,
    }
    let event: Event = serde_json::from_slice(verified_body).ok()?;
    (event.event == "room_finished")
        .then_some(event.room?.name)
        .filter(|name| !name.is_empty())
}
