//! The monitor against a fake homeserver and a fake LiveKit: who is removed, when rooms are deleted, and
//! that nothing is removed on uncertainty.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use super::entry::State;
use super::homeserver::{Homeserver, HomeserverError, Members};
use super::jobs::Jobs;
use super::monitor::finished_room;
use super::sfu::{RetryPolicy, Sfu, SfuError};
use super::{Monitor, Settings};
use crate::livekit::webhook::{Notification, ParticipantChange};
use crate::telemetry::Metrics;
use crate::telemetry::membership::{Kick, Stage};

const ROOM: &str = "!room:hs";
const LK: &str = "lk-alias";

fn error() -> HomeserverError {
    HomeserverError::Status(500)
}

/// Tracks how many calls run at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl InFlight {
    async fn during<T>(&self, delay: Duration, value: T) -> T {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.now.fetch_sub(1, Ordering::SeqCst);
        value
    }
}

#[derive(Default)]
struct FakeHomeserver {
    /// Per room: None = an error.
    members: Mutex<HashMap<String, Option<Members>>>,
    server_joined: Mutex<HashMap<String, Option<bool>>>,
    user_joined: Mutex<Option<bool>>,
    unresolvable: AtomicBool,
    delay: Mutex<Duration>,
    calls: Mutex<Vec<String>>,
    in_flight: InFlight,
}

impl FakeHomeserver {
    fn members(&self, room: &str, members: Option<&[&str]>) {
        self.members.lock().unwrap().insert(
            room.into(),
            members.map(|users| {
                Members::Joined(users.iter().map(|user| (*user).to_owned()).collect())
            }),
        );
    }

    fn forbidden(&self, room: &str, server_joined: Option<bool>) {
        self.members
            .lock()
            .unwrap()
            .insert(room.into(), Some(Members::Forbidden));
        self.server_joined
            .lock()
            .unwrap()
            .insert(room.into(), server_joined);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Homeserver for FakeHomeserver {
    fn resolve(&self) -> BoxFuture<'_, Result<(), HomeserverError>> {
        let failed = self.unresolvable.load(Ordering::SeqCst);
        Box::pin(async move {
            if failed {
                Err(HomeserverError::ClientApi("no .well-known".into()))
            } else {
                Ok(())
            }
        })
    }

    fn joined_members<'a>(
        &'a self,
        room_id: &'a str,
    ) -> BoxFuture<'a, Result<Members, HomeserverError>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("joined_members {room_id}"));
        let answer = self.members.lock().unwrap().get(room_id).cloned().flatten();
        let delay = *self.delay.lock().unwrap();
        Box::pin(async move { self.in_flight.during(delay, answer.ok_or_else(error)).await })
    }

    fn server_joined<'a>(
        &'a self,
        room_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, HomeserverError>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("server_joined {room_id}"));
        let answer = self
            .server_joined
            .lock()
            .unwrap()
            .get(room_id)
            .copied()
            .flatten();
        Box::pin(async move { answer.ok_or_else(error) })
    }

    fn user_joined<'a>(
        &'a self,
        room_id: &'a str,
        user_id: &'a str,
    ) -> BoxFuture<'a, Result<bool, HomeserverError>> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("user_joined {room_id} {user_id}"));
        let answer = *self.user_joined.lock().unwrap();
        Box::pin(async move { answer.ok_or_else(error) })
    }
}

#[derive(Default)]
struct FakeSfu {
    present: Mutex<HashSet<String>>,
    lookup_fails: AtomicBool,
    /// The next this many removals fail (transient or not per `permanent`).
    remove_failures: AtomicUsize,
    permanent: AtomicBool,
    removed: Mutex<Vec<String>>,
    deleted: Mutex<Vec<String>>,
    delay: Mutex<Duration>,
    in_flight: InFlight,
}

impl FakeSfu {
    fn removed(&self) -> Vec<String> {
        self.removed.lock().unwrap().clone()
    }
}

impl Sfu for FakeSfu {
    fn participant_present<'a>(
        &'a self,
        _room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<bool, SfuError>> {
        let answer = if self.lookup_fails.load(Ordering::SeqCst) {
            Err(SfuError {
                transient: true,
                message: "down".into(),
            })
        } else {
            Ok(self.present.lock().unwrap().contains(identity))
        };
        let delay = *self.delay.lock().unwrap();
        Box::pin(async move { self.in_flight.during(delay, answer).await })
    }

    fn remove_participant<'a>(
        &'a self,
        _room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<(), SfuError>> {
        let fail = self
            .remove_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok();
        let answer = if fail {
            Err(SfuError {
                transient: !self.permanent.load(Ordering::SeqCst),
                message: "failing".into(),
            })
        } else {
            self.removed.lock().unwrap().push(identity.to_owned());
            Ok(())
        };
        let delay = *self.delay.lock().unwrap();
        Box::pin(async move { self.in_flight.during(delay, answer).await })
    }

    fn delete_room<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<(), SfuError>> {
        self.deleted.lock().unwrap().push(room.to_owned());
        Box::pin(async { Ok(()) })
    }
}

/// Records discarded delegation jobs, and whether LiveKit still had the participant at that moment.
struct FakeJobs {
    sfu: Arc<FakeSfu>,
    discarded: Mutex<Vec<(String, String, bool)>>,
}

impl FakeJobs {
    /// (LiveKit room, identity) of every discarded job.
    fn discarded(&self) -> Vec<(String, String)> {
        let discarded = self.discarded.lock().unwrap();
        for (_, identity, before_removal) in discarded.iter() {
            assert!(before_removal, "{identity}: discarded after its removal");
        }
        discarded
            .iter()
            .map(|(room, identity, _)| (room.clone(), identity.clone()))
            .collect()
    }
}

impl Jobs for FakeJobs {
    fn discard<'a>(
        &'a self,
        livekit_room: &'a str,
        livekit_identity: &'a str,
    ) -> BoxFuture<'a, ()> {
        let before_removal = !self.sfu.removed().iter().any(|id| id == livekit_identity)
            && self.sfu.deleted.lock().unwrap().is_empty();
        self.discarded.lock().unwrap().push((
            livekit_room.to_owned(),
            livekit_identity.to_owned(),
            before_removal,
        ));
        Box::pin(async {})
    }
}

struct Setup {
    monitor: Monitor,
    homeserver: Arc<FakeHomeserver>,
    sfu: Arc<FakeSfu>,
    jobs: Arc<FakeJobs>,
    metrics: Arc<Metrics>,
}

fn settings(concurrency: usize, interval: Duration) -> Settings {
    Settings {
        interval,
        concurrency: NonZeroUsize::new(concurrency).unwrap(),
        redis_url: None,
        replica_id: None,
        retry: RetryPolicy {
            initial: Duration::from_millis(5),
            budget: Duration::from_millis(200),
        },
    }
}

async fn setup_with(settings: Settings) -> Setup {
    let homeserver = Arc::new(FakeHomeserver::default());
    let sfu = Arc::new(FakeSfu::default());
    let metrics = Arc::new(Metrics::new());
    let jobs = Arc::new(FakeJobs {
        sfu: sfu.clone(),
        discarded: Mutex::default(),
    });
    let monitor = Monitor::new(
        settings,
        homeserver.clone(),
        sfu.clone(),
        jobs.clone(),
        Arc::clone(&metrics),
    )
    .await
    .unwrap();
    Setup {
        monitor,
        homeserver,
        sfu,
        jobs,
        metrics,
    }
}

async fn setup() -> Setup {
    setup_with(settings(4, Duration::from_secs(30))).await
}

fn identity(user: &str) -> String {
    format!("id-{user}")
}

impl Setup {
    /// A token for `user` in ROOM, and LiveKit saw them join.
    async fn connected(&self, user: &str) {
        self.monitor.track(ROOM, user, LK, &identity(user)).await;
        self.webhook(user, ParticipantChange::Joined).await;
    }

    async fn webhook(&self, user: &str, change: ParticipantChange) {
        self.monitor
            .participant_changed(&Notification {
                room: LK.into(),
                identity: identity(user),
                change,
            })
            .await;
    }

    async fn states(&self) -> HashMap<String, State> {
        self.monitor
            .entries()
            .await
            .unwrap()
            .into_iter()
            .map(|entry| (entry.matrix_user_id.clone(), entry.state()))
            .collect()
    }
}

#[tokio::test]
async fn a_connected_user_who_left_is_removed_and_the_others_stay() {
    let s = setup().await;
    s.connected("@alice:hs").await;
    s.connected("@bob:hs").await;
    s.homeserver.members(ROOM, Some(&["@bob:hs"]));

    let report = s.monitor.sweep().await;
    assert_eq!((report.rooms, report.swept, report.removed), (1, 1, 1));
    assert_eq!(s.sfu.removed(), [identity("@alice:hs")]);
    let states = s.states().await;
    assert_eq!(states["@alice:hs"], State::Revoked);
    assert_eq!(states["@bob:hs"], State::Connected);
    assert_eq!(s.metrics.membership.kicks(Kick::RemoveParticipant), 1);
    // Step 4: alice's delegated leave is discarded (before the removal), bob's is kept.
    assert_eq!(s.jobs.discarded(), [(LK.to_owned(), identity("@alice:hs"))]);

    // Removed once: the next sweep leaves the revoked entry alone.
    s.monitor.sweep().await;
    assert_eq!(s.sfu.removed().len(), 1);
    assert_eq!(s.jobs.discarded().len(), 1);
}

#[tokio::test]
async fn pending_participants_are_never_removed_but_are_checked_in_livekit_first() {
    let s = setup().await;
    s.monitor
        .track(ROOM, "@pending:hs", LK, &identity("@pending:hs"))
        .await;
    s.monitor
        .track(ROOM, "@arrived:hs", LK, &identity("@arrived:hs"))
        .await;
    s.sfu
        .present
        .lock()
        .unwrap()
        .insert(identity("@arrived:hs"));
    s.homeserver.members(ROOM, Some(&[]));

    let report = s.monitor.sweep().await;
    assert_eq!(report.connected, 1);
    // The one LiveKit knows is connected and, having left the Matrix room, removed at once.
    assert_eq!(s.sfu.removed(), [identity("@arrived:hs")]);
    assert_eq!(s.states().await["@pending:hs"], State::Pending);
}

#[tokio::test]
async fn our_server_leaving_deletes_the_livekit_room_and_revokes_everyone() {
    let s = setup().await;
    s.connected("@alice:hs").await;
    s.monitor
        .track(ROOM, "@pending:hs", LK, &identity("@pending:hs"))
        .await;
    s.homeserver.forbidden(ROOM, Some(false));

    let report = s.monitor.sweep().await;
    assert_eq!(report.deleted_rooms, 1);
    assert_eq!(*s.sfu.deleted.lock().unwrap(), [LK]);
    assert!(s.sfu.removed().is_empty());
    assert!(
        s.states()
            .await
            .values()
            .all(|state| *state == State::Revoked)
    );
    assert_eq!(s.metrics.membership.kicks(Kick::DeleteRoom), 1);
    let mut discarded = s.jobs.discarded();
    discarded.sort();
    assert_eq!(
        discarded,
        [
            (LK.to_owned(), identity("@alice:hs")),
            (LK.to_owned(), identity("@pending:hs"))
        ],
        "every job of the deleted room, pending ones too"
    );
    assert_eq!(
        s.homeserver.calls(),
        [
            format!("joined_members {ROOM}"),
            format!("server_joined {ROOM}")
        ]
    );
}

#[tokio::test]
async fn uncertainty_never_removes_anyone() {
    let s = setup().await;
    s.connected("@alice:hs").await;

    // joined_members failed (error status, timeout, partial body: the client reports all as errors).
    s.homeserver.members(ROOM, None);
    s.monitor.sweep().await;
    // Refused, and /is_joined failed too.
    s.homeserver.forbidden(ROOM, None);
    s.monitor.sweep().await;
    // Refused while our server is in the room: a namespace problem, not a leave.
    s.homeserver.forbidden(ROOM, Some(true));
    s.monitor.sweep().await;
    // Our client-server API cannot be found: joined_members is not even asked.
    s.homeserver.members(ROOM, Some(&[]));
    s.homeserver.unresolvable.store(true, Ordering::SeqCst);
    let calls_before = s.homeserver.calls().len();
    s.monitor.sweep().await;
    assert_eq!(s.homeserver.calls().len(), calls_before);

    assert!(s.sfu.removed().is_empty());
    assert!(s.sfu.deleted.lock().unwrap().is_empty());
    assert_eq!(s.states().await["@alice:hs"], State::Connected);
    let metrics = &s.metrics.membership;
    assert_eq!(metrics.failures(Stage::JoinedMembers), 1);
    assert_eq!(metrics.failures(Stage::IsJoined), 1);
    assert_eq!(metrics.failures(Stage::Namespace), 1);
    assert_eq!(metrics.failures(Stage::ClientApi), 1);
    assert_eq!(metrics.kicks(Kick::RemoveParticipant), 0);
    assert!(
        s.jobs.discarded().is_empty(),
        "no job discarded on uncertainty"
    );
}

#[tokio::test]
async fn a_failed_removal_is_retried_and_otherwise_left_for_the_next_sweep() {
    let s = setup().await;
    s.connected("@alice:hs").await;
    s.homeserver.members(ROOM, Some(&[]));
    s.sfu.remove_failures.store(2, Ordering::SeqCst);
    s.monitor.sweep().await;
    assert_eq!(
        s.sfu.removed().len(),
        1,
        "two transient failures, then done"
    );

    let s = setup().await;
    s.connected("@alice:hs").await;
    s.homeserver.members(ROOM, Some(&[]));
    s.sfu.permanent.store(true, Ordering::SeqCst);
    s.sfu.remove_failures.store(1, Ordering::SeqCst);
    s.monitor.sweep().await;
    assert!(s.sfu.removed().is_empty());
    assert_eq!(
        s.states().await["@alice:hs"],
        State::Connected,
        "not revoked"
    );
    assert_eq!(s.metrics.membership.failures(Stage::RemoveParticipant), 1);
    s.monitor.sweep().await;
    assert_eq!(s.sfu.removed().len(), 1);
}

#[tokio::test]
async fn leaving_livekit_makes_a_participant_pending_again_and_rejoining_is_rechecked() {
    let s = setup().await;
    s.connected("@alice:hs").await;
    s.webhook("@alice:hs", ParticipantChange::LeftIntentionally)
        .await;
    assert_eq!(s.states().await["@alice:hs"], State::Pending);
    s.homeserver.members(ROOM, Some(&[]));
    s.monitor.sweep().await;
    assert!(s.sfu.removed().is_empty(), "pending is never removed");

    // Back in LiveKit, removed for having left the Matrix room, then back again with the same token.
    s.webhook("@alice:hs", ParticipantChange::Joined).await;
    s.monitor.sweep().await;
    assert_eq!(s.sfu.removed().len(), 1);
    *s.homeserver.user_joined.lock().unwrap() = Some(false);
    s.webhook("@alice:hs", ParticipantChange::Joined).await;
    wait_for(|| s.sfu.removed().len() == 2).await;
    assert_eq!(s.states().await["@alice:hs"], State::Revoked);

    // If they did rejoin the Matrix room, they are connected again; if we cannot tell, too.
    for answer in [Some(true), None] {
        s.monitor
            .track(ROOM, "@carol:hs", LK, &identity("@carol:hs"))
            .await;
        s.webhook("@carol:hs", ParticipantChange::Joined).await;
        s.homeserver.members(ROOM, Some(&[]));
        s.monitor.sweep().await;
        assert_eq!(s.states().await["@carol:hs"], State::Revoked);
        *s.homeserver.user_joined.lock().unwrap() = answer;
        s.webhook("@carol:hs", ParticipantChange::Joined).await;
        let monitor = s.monitor.clone();
        wait_for_async(|| {
            let monitor = monitor.clone();
            async move {
                monitor.entries().await.unwrap().iter().any(|entry| {
                    entry.matrix_user_id == "@carol:hs" && entry.state() == State::Connected
                })
            }
        })
        .await;
        s.webhook("@carol:hs", ParticipantChange::LeftAbnormally)
            .await;
    }
}

#[tokio::test]
async fn a_new_token_keeps_the_state_and_a_finished_room_is_forgotten() {
    let s = setup().await;
    s.connected("@alice:hs").await;
    s.monitor
        .track(ROOM, "@alice:hs", LK, &identity("@alice:hs"))
        .await;
    assert_eq!(s.states().await["@alice:hs"], State::Connected);
    s.monitor
        .track("!other:hs", "@bob:hs", "other-lk", "bob")
        .await;
    s.monitor.room_finished(LK).await;
    let users: Vec<String> = s.states().await.into_keys().collect();
    assert_eq!(users, ["@bob:hs"]);
}

#[tokio::test]
async fn rooms_and_livekit_calls_in_flight_are_bounded() {
    let s = setup_with(settings(3, Duration::from_secs(30))).await;
    *s.homeserver.delay.lock().unwrap() = Duration::from_millis(10);
    *s.sfu.delay.lock().unwrap() = Duration::from_millis(5);
    for room in 0..24 {
        let room_id = format!("!r{room}:hs");
        for user in 0..3 {
            let user_id = format!("@u{user}:hs");
            s.monitor
                .track(
                    &room_id,
                    &user_id,
                    &format!("lk{room}"),
                    &format!("{room}/{user}"),
                )
                .await;
        }
        s.homeserver.members(&room_id, Some(&["@u0:hs"]));
    }
    // All pending, all present in LiveKit: 72 lookups, then 48 removals.
    s.sfu
        .present
        .lock()
        .unwrap()
        .extend((0..24).flat_map(|room| (0..3).map(move |user| format!("{room}/{user}"))));
    let report = s.monitor.sweep().await;
    assert_eq!((report.swept, report.removed), (24, 48));
    // The bound holds, and it is used (a sweep that ran rooms one by one would not show 2).
    let homeserver = s.homeserver.in_flight.max.load(Ordering::SeqCst);
    assert!((2..=3).contains(&homeserver), "{homeserver} rooms at once");
    let livekit = s.sfu.in_flight.max.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&livekit),
        "{livekit} LiveKit calls at once"
    );
}

#[tokio::test]
async fn rooms_not_started_within_an_interval_wait_for_the_next_sweep() {
    let s = setup_with(settings(1, Duration::from_millis(100))).await;
    *s.homeserver.delay.lock().unwrap() = Duration::from_millis(60);
    for room in 0..5 {
        let room_id = format!("!r{room}:hs");
        s.monitor
            .track(
                &room_id,
                "@u:hs",
                &format!("lk{room}"),
                &format!("id{room}"),
            )
            .await;
        s.homeserver.members(&room_id, Some(&["@u:hs"]));
    }
    let report = s.monitor.sweep().await;
    assert_eq!(report.rooms, 5);
    assert!(report.swept >= 1 && report.swept <= 3, "{report:?}");
    assert_eq!(report.late, 5 - report.swept);
    assert_eq!(s.metrics.membership.failures(Stage::Deadline), 1);
}

#[tokio::test]
async fn the_tracked_gauge_and_sweep_duration_are_exported() {
    let s = setup().await;
    s.connected("@alice:hs").await;
    s.monitor
        .track(ROOM, "@bob:hs", LK, &identity("@bob:hs"))
        .await;
    s.homeserver.members(ROOM, Some(&["@alice:hs", "@bob:hs"]));
    s.monitor.sweep().await;
    let text = s.metrics.encode();
    for line in [
        r#"matrixrtc_auth_membership_tracked{state="connected"} 1"#,
        r#"matrixrtc_auth_membership_tracked{state="pending"} 1"#,
        "matrixrtc_auth_membership_sweep_duration_seconds_count 1",
        r#"matrixrtc_auth_membership_kicks_total{action="remove_participant"} 0"#,
        r#"matrixrtc_auth_membership_check_failures_total{stage="store"} 0"#,
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn room_finished_bodies() {
    assert_eq!(
        finished_room(br#"{"event":"room_finished","room":{"name":"lk","sid":"RM_1"}}"#).as_deref(),
        Some("lk")
    );
    for other in [
        &br#"{"event":"room_started","room":{"name":"lk"}}"#[..],
        br#"{"event":"room_finished"}"#,
        br#"{"event":"room_finished","room":{"name":""}}"#,
        b"not json",
    ] {
        assert_eq!(finished_room(other), None);
    }
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 2 s");
}

async fn wait_for_async<F: Future<Output = bool>>(mut done: impl FnMut() -> F) {
    for _ in 0..200 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 2 s");
}
