//! The monitor's metrics (as-mode spec §8.3), registered in the service's registry by
//! [`crate::telemetry::Metrics::new`]:
//!
//! - `matrixrtc_auth_membership_kicks_total{action}`: `remove_participant` (a user left the Matrix room,
//!   or rejoined LiveKit without being in it) and `delete_room` (our server left the room);
//! - `matrixrtc_auth_membership_sweep_duration_seconds`: one observation per sweep of this replica;
//! - `matrixrtc_auth_membership_check_failures_total{stage}`: what went wrong, by where (see [`Stage`]);
//! - `matrixrtc_auth_membership_tracked{state}`: entries by state, as this replica last saw them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What the monitor did to LiveKit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    RemoveParticipant,
    DeleteRoom,
}

impl Kick {
    fn label(self) -> &'static str {
        match self {
            Self::RemoveParticipant => "remove_participant",
            Self::DeleteRoom => "delete_room",
        }
    }
}

/// Where a check failed. Each failure leaves the participants concerned alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Redis could not be read or written (no sweep without it).
    Store,
    /// Our client-server API could not be found (the sweep stops after the pending checks).
    ClientApi,
    /// `joined_members` gave no definite answer.
    JoinedMembers,
    /// `/is_joined` gave no answer.
    IsJoined,
    /// `joined_members` was refused while our server is in the room: the registration's namespace misses it.
    Namespace,
    /// `GetParticipant` failed.
    GetParticipant,
    /// `RemoveParticipant` failed after its retries.
    RemoveParticipant,
    /// `DeleteRoom` failed after its retries.
    DeleteRoom,
    /// A room was not started within one interval of the sweep's start.
    Deadline,
}

impl Stage {
    const ALL: [Self; 9] = [
        Self::Store,
        Self::ClientApi,
        Self::JoinedMembers,
        Self::IsJoined,
        Self::Namespace,
        Self::GetParticipant,
        Self::RemoveParticipant,
        Self::DeleteRoom,
        Self::Deadline,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::ClientApi => "client_api",
            Self::JoinedMembers => "joined_members",
            Self::IsJoined => "is_joined",
            Self::Namespace => "namespace",
            Self::GetParticipant => "get_participant",
            Self::RemoveParticipant => "remove_participant",
            Self::DeleteRoom => "delete_room",
            Self::Deadline => "deadline",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

/// The `state` label values of `membership_tracked`, in the order [`MonitorMetrics::tracked`] takes the
/// counts: the labels of the monitor's entry states (`membership::entry::State::label`; a test there keeps
/// the two equal; they are listed here because telemetry sits below the monitor in the layering).
pub const TRACKED_STATES: [&str; 3] = ["pending", "connected", "revoked"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// The monitor's metrics.
#[derive(Debug)]
pub struct MonitorMetrics {
    kicks: Family<ActionLabel, Counter>,
    sweep_duration: Histogram,
    failures: Family<StageLabel, Counter>,
    tracked: Family<StateLabel, Gauge>,
}

impl MonitorMetrics {
    /// Registers the metrics in `registry` (the service's, prefix `matrixrtc_auth`).
    pub fn register(registry: &mut Registry) -> Self {
        let kicks = Family::<ActionLabel, Counter>::default();
        registry.register(
            "membership_kicks",
            "LiveKit actions of the membership monitor, by action",
            kicks.clone(),
        );
        for kick in [Kick::RemoveParticipant, Kick::DeleteRoom] {
            let _ = kicks.get_or_create(&ActionLabel {
                action: kick.label(),
            });
        }
        // 10 ms .. ~160 s: a handful of rooms on loopback up to thousands against a slow homeserver.
        let sweep_duration = Histogram::new(exponential_buckets(0.01, 2.0, 15));
        registry.register(
            "membership_sweep_duration_seconds",
            "Duration of the membership monitor's sweeps on this replica",
            sweep_duration.clone(),
        );
        let failures = Family::<StageLabel, Counter>::default();
        registry.register(
            "membership_check_failures",
            "Membership checks that gave no definite answer (nobody is removed then), by stage",
            failures.clone(),
        );
        for stage in Stage::ALL {
            let _ = failures.get_or_create(&StageLabel {
                stage: stage.label(),
            });
        }
        let tracked = Family::<StateLabel, Gauge>::default();
        registry.register(
            "membership_tracked",
            "Participants the membership monitor tracks, by state, as of this replica's last sweep",
            tracked.clone(),
        );
        for state in TRACKED_STATES {
            let _ = tracked.get_or_create(&StateLabel { state });
        }
        Self {
            kicks,
            sweep_duration,
            failures,
            tracked,
        }
    }

    pub fn kicked(&self, kick: Kick) {
        self.kicks
            .get_or_create(&ActionLabel {
                action: kick.label(),
            })
            .inc();
    }

    pub fn failed(&self, stage: Stage) {
        self.failures
            .get_or_create(&StageLabel {
                stage: stage.label(),
            })
            .inc();
    }

    pub fn swept(&self, seconds: f64) {
        self.sweep_duration.observe(seconds);
    }

    /// Sets the tracked gauges from counts of pending, connected and revoked entries.
    pub fn tracked(&self, pending: usize, connected: usize, revoked: usize) {
        for (state, count) in TRACKED_STATES
            .into_iter()
            .zip([pending, connected, revoked])
        {
            self.tracked
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// The count of a kick (tests and the benchmark).
    pub fn kicks(&self, kick: Kick) -> u64 {
        self.kicks
            .get_or_create(&ActionLabel {
                action: kick.label(),
            })
            .get()
    }

    /// The count of failures at a stage (tests and the benchmark).
    pub fn failures(&self, stage: Stage) -> u64 {
        self.failures
            .get_or_create(&StageLabel {
                stage: stage.label(),
            })
            .get()
    }
}
