//! One job's life: a task per job that feeds signals (webhooks, LiveKit lookups, timers, call outcomes)
//! through [`job::step`] and performs the effects, `restart` and `send` with their retries, asking its
//! [`Keeper`] before every homeserver call.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::OptionFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tracing::Instrument;

use super::keeper::Keeper;
use super::shared::{LocalJob, Shared};
use crate::delegation::job::{self, Effect, JobKey, JobParams, Signal, State};
use crate::delegation::ownership::{Lease, Standing};
use crate::delegation::record::JobRecord;
use crate::delegation::retry::{self, Backoff, Verdict};
use crate::matrix::delayed_event::{Action, Reply};
use crate::telemetry::Metrics;

/// Signals a job may have queued before it drops webhook signals (it reacts within microseconds; the
/// bound only protects memory from a flood of signed webhooks).
const SIGNAL_QUEUE: usize = 32;
/// Timers never reach further than this (delay timeouts may be up to 292 years).
const FARTHEST_TIMER: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

impl Shared {
    /// Starts a task for a job, replacing (and so stopping) any local job for the same key. `lease` is
    /// None only without Redis; `stored` says whether Redis has the job yet.
    pub(super) fn spawn(
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
        // The job's lines carry its key through this span (never its delay ID). Its own root: a job
        // outlives the request that added it by hours.
        let span =
            tracing::info_span!(parent: None, "job", room = %key.room, identity = %key.identity);
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
        tokio::spawn(driver.run(receiver, watcher, replaced).instrument(span));
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
pub(super) enum Resumed {
    /// Added by a request to this replica.
    No,
    /// Resumed from Redis, its participant never seen: it waits for them as a new job does.
    Waiting,
    /// Resumed from Redis after its participant had been seen: it starts connected, and LiveKit is
    /// asked whether they are still there (a leave may have gone unseen while nobody drove the job).
    Connected,
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
        let _watcher = AbortOnDrop(tokio::spawn(
            watch_participant(
                self.shared.clone(),
                self.params.clone(),
                watcher,
                self.resumed == Resumed::Connected,
            )
            .in_current_span(),
        ));
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
        let Some(transition) = job::step(self.state, signal) else {
            tracing::debug!(state = %self.state, %signal, "signal ignored in this state");
            return Flow::Continue;
        };
        if transition.next == self.state {
            // The periodic restart: routine, so only at debug.
            tracing::debug!(state = %self.state, %signal, "delegation job restart due");
        } else {
            tracing::info!(from = %self.state, to = %transition.next, %signal,
                "delegation job transition");
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
                    tracing::info!(?outcome, "delayed leave send finished");
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
            let Some(reply) = attempt(&self.shared, &self.params, Action::Send).await else {
                return SendOutcome::Failed;
            };
            let wait = match retry::verdict(Action::Send, &reply) {
                Verdict::Done | Verdict::Gone => return SendOutcome::Done,
                Verdict::RetryIn(hint) => hint.unwrap_or_else(|| backoff.next_interval()),
            };
            let wake = after(Instant::now(), wait);
            if wake < end {
                sleep_until(wake).await;
            }
            // Checked after the wait too: the timer fires on its next millisecond tick, which can be the
            // window's end itself (a wait planned to end 0.4 ms before it).
            if wake >= end || Instant::now() >= end {
                tracing::warn!("giving up sending a delayed leave: the send window is over");
                return SendOutcome::Failed;
            }
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

/// One homeserver attempt. `None` when the client-server API cannot be resolved.
async fn attempt(shared: &Shared, params: &JobParams, action: Action) -> Option<Reply> {
    match shared.homeserver.attempt(params, action).await {
        Ok(reply) => {
            shared
                .metrics
                .delayed_event_call(action.as_str(), reply.label());
            tracing::debug!(
                action = action.as_str(),
                reply = reply.label(),
                "delayed event call"
            );
            Some(reply)
        }
        Err(error) => {
            shared
                .metrics
                .delayed_event_call(action.as_str(), "no_client_api");
            tracing::warn!(%error, action = action.as_str(), "cannot call the homeserver");
            None
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
        let Some(reply) = attempt(&shared, &params, Action::Restart).await else {
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
            Err(error) => tracing::debug!(%error, "participant lookup failed"),
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
            Err(error) => tracing::debug!(%error, "sanity check lookup failed"),
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
