//! The runner on paused time, against a fake homeserver and a fake LiveKit, without Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

use super::{AddJobError, DelayedEventApi, Delegation, LookupError, ParticipantLookup};
use crate::delegation::job::{JobKey, JobParams, Signal};
use crate::delegation::settings::{Settings, Timing};
use crate::matrix::client_api::ClientApiError;
use crate::matrix::delayed_event::{Action, Reply};
use crate::telemetry::{Metrics, capture_logs};

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
        params: &'a JobParams,
        action: Action,
    ) -> BoxFuture<'a, Result<Reply, ClientApiError>> {
        let (server_name, delay_id) = (&params.server_name, &params.delay_id);
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
                server_name: server_name.clone(),
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
        as_user: None,
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

/// As-mode spec §8.2 step 4: a job whose participant the membership monitor removed ends without a send,
/// whether it was connected or still waiting, and later webhooks find no job.
#[tokio::test(start_paused = true)]
async fn a_discarded_job_ends_without_sending() {
    let h = harness(None).await;
    h.add("d1", 30).await;
    h.notify(Signal::ParticipantConnected).await;
    sleep(1.0).await;
    assert_eq!(h.hs.actions(), [("d1".to_owned(), Action::Restart)]);
    h.delegation.discard(&key()).await;
    sleep(0.1).await;
    assert_eq!(h.delegation.local_jobs(), 0, "the job ended");
    h.notify(Signal::ParticipantConnectionAborted).await;
    sleep(60.0).await;
    assert_eq!(
        h.hs.actions(),
        [("d1".to_owned(), Action::Restart)],
        "never sent"
    );

    h.add("d2", 30).await;
    h.delegation.discard(&key()).await;
    sleep(60.0).await;
    assert_eq!(h.delegation.local_jobs(), 0);
    assert_eq!(h.hs.actions().len(), 1, "a waiting job is not sent either");
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
async fn a_retry_due_just_before_the_send_window_ends_is_not_sent_at_its_end() {
    // The timer rounds a wake-up to its next millisecond tick: a retry due 0.4 ms before the window's end
    // wakes at the end itself, and must not go out then.
    let h = harness(None).await;
    h.hs.answer(
        Action::Send,
        Canned::Reply(Reply::RetryAfter(Duration::from_micros(999_600))),
    );
    h.add("d1", 5).await;
    sleep(60.0).await;
    let sends = h.times(Action::Send);
    assert_eq!(sends, [5.0], "{sends:?}");
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
    // The window ends when the event would fire, at 20 s.
    assert!(sends.iter().all(|at| *at < 20.0), "{sends:?}");
    // Far past the 1 s floor's window (2 s). The randomised backoff (×1.5 per attempt, each ±50 %) cannot
    // give up before 8.6 s: k attempts take at least 1.5^k s, and it stops only when its next wait, under
    // 1.5^(k+1) s, would pass 20 s. (Not "after 10 s": a last send at 9.99 s and a long draw next is allowed.)
    assert!(sends.iter().any(|at| *at > 8.6), "{sends:?}");
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

#[tokio::test(start_paused = true)]
async fn a_jobs_lines_carry_its_key_in_a_span_of_its_own_and_never_its_delay_id() {
    let logs = capture_logs();
    let h = harness(None).await;
    // Added from inside a request, as the HTTP layer does: the job's span must not hang below it.
    h.add("secret-delay-id", 60)
        .instrument(tracing::info_span!("request"))
        .await;
    h.notify(Signal::ParticipantConnected).await;
    sleep(0.1).await;
    let text = logs.text();
    let transition = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["message"] == "delegation job transition")
        .unwrap_or_else(|| panic!("no transition logged:\n{text}"));
    assert_eq!(transition["span"]["name"], "job", "{text}");
    assert_eq!(transition["span"]["room"], "room");
    assert_eq!(transition["span"]["identity"], "identity");
    assert_eq!(
        transition["spans"].as_array().map(Vec::len),
        Some(1),
        "a root span: {text}"
    );
    assert!(
        transition.get("room").is_none(),
        "not repeated on the line: {text}"
    );
    assert!(
        !text.contains("secret-delay-id"),
        "the delay ID is a secret:\n{text}"
    );
}
