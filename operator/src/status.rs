//! The status of a `MatrixRTCTransport`, computed purely from what reconcile did and observed.
//!
//! Three conditions are always written (the `Ready` printer column reads one of them):
//! - `Ready`: every managed Deployment is rolled out at its current generation with all replicas available;
//! - `Progressing`: a rollout is under way;
//! - `Degraded`: the spec is invalid, a reconcile step failed, a rollout exceeded its progress deadline, or
//!   the spec asks for a kind the cluster does not serve (`KindNotInstalled`: the rest is applied, and
//!   `Ready` still follows the rollouts).
//!
//! `lastTransitionTime` changes only when a condition's status changes, and the timestamp is whole seconds
//! (what the API server stores), so recomputing an unchanged state yields an equal status and the controller
//! skips the write.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{AppServiceStatus, MatrixRTCTransport, MatrixRTCTransportStatus, condition};
use crate::kinds::NotInstalled;

/// Every reason the operator writes into a condition: this module's, the controller's failure reasons
/// (`ReconcileError::condition_reason`) and the credentials' (`ResolveError::reason`). Tests check that
/// each of them is listed; docs/troubleshooting.md has a row for each.
pub const REASONS: &[&str] = &[
    // Rollouts (this module).
    "Available",
    "RollingOut",
    "RolledOut",
    "ScaledToZero",
    "RolloutStuck",
    "ProgressDeadlineExceeded",
    "Reconciled",
    // Optional kinds (another project's CRD) the spec asks for but the cluster does not serve.
    "KindNotInstalled",
    // The spec.
    "InvalidSpec",
    "UnreadableSpec",
    // Credentials and the other Secrets the pods reference.
    "CredentialsSecretMissing",
    "CredentialsInvalid",
    "GeneratedCredentialsDamaged",
    "CredentialsUnreadable",
    "ReferencedSecretMissing",
    "ReferencedSecretUnreadable",
    // Application-service mode.
    "AppServiceTokensDamaged",
    "AppServiceSecretUnreadable",
    "RegistrationSecretNotOwned",
    // Building, applying and recording.
    "BuildFailed",
    "ChildConflict",
    "PortConflict",
    "ApplyFailed",
    "PruneFailed",
    "StatusFailed",
    "Incomplete",
];

/// How far one Deployment's rollout has come (from its spec and status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    pub name: String,
    pub desired: i32,
    pub ready: i32,
    pub updated: i32,
    pub available: i32,
    /// Pods of any version (old ones linger during a rollout).
    pub total: i32,
    /// The Deployment controller has seen the latest spec.
    pub observed_current: bool,
    /// The Deployment controller gave up waiting (`ProgressDeadlineExceeded`).
    pub stuck: bool,
}

impl Rollout {
    pub fn of(deployment: &Deployment) -> Self {
        let status = deployment.status.clone().unwrap_or_default();
        let generation = deployment.metadata.generation;
        let observed_current = match (status.observed_generation, generation) {
            (Some(observed), Some(generation)) => observed >= generation,
            _ => false,
        };
        let stuck = status.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        Self {
            name: deployment.metadata.name.clone().unwrap_or_default(),
            desired: deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1),
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            total: status.replicas.unwrap_or(0),
            observed_current,
            stuck,
        }
    }

    /// Rolled out: the latest spec is observed, every pod is updated and available, no old pod is left.
    pub fn complete(&self) -> bool {
        self.observed_current
            && self.updated == self.desired
            && self.available == self.desired
            && self.total == self.desired
    }

    fn summary(&self) -> String {
        format!(
            "Deployment {}: {}/{} ready, {}/{} updated",
            self.name, self.ready, self.desired, self.updated, self.desired
        )
    }
}

/// The client-facing facts derived from a valid spec.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Discovery {
    pub livekit_service_url: String,
    pub well_known_client: String,
    pub synapse_config: String,
    /// Where Synapse finds the application-service registration (AS mode only).
    pub app_service: Option<AppServiceStatus>,
}

/// What one reconcile came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Validation failed; nothing was applied.
    InvalidSpec { message: String },
    /// A step after validation failed (credentials, build, apply). `reason` is a CamelCase condition reason.
    Failed {
        reason: &'static str,
        message: String,
        discovery: Option<Discovery>,
    },
    /// Everything was applied but children of kinds the cluster does not serve (`not_installed`); these
    /// are the managed Deployments as observed.
    Applied {
        livekit: Option<Rollout>,
        auth: Option<Rollout>,
        /// The authorisation service runs inside the LiveKit pods.
        auth_is_sidecar: bool,
        discovery: Discovery,
        not_installed: Vec<NotInstalled>,
    },
}

/// The `Degraded` reasons written only after everything was applied ([`Outcome::Applied`]).
const APPLIED_REASONS: &[&str] = &["Reconciled", "RolloutStuck", "KindNotInstalled"];

/// Whether `transport`'s status says its children are applied at its current generation (so its
/// Services hold their NodePorts).
pub fn children_applied(transport: &MatrixRTCTransport) -> bool {
    transport.status.as_ref().is_some_and(|status| {
        status.observed_generation == transport.metadata.generation
            && status.conditions.iter().any(|c| {
                c.type_ == condition::DEGRADED && APPLIED_REASONS.contains(&c.reason.as_str())
            })
    })
}

/// The status for `generation` after `outcome`, keeping transition times from `previous` where unchanged.
pub fn compute(
    generation: Option<i64>,
    previous: Option<&MatrixRTCTransportStatus>,
    outcome: &Outcome,
    now: Timestamp,
) -> MatrixRTCTransportStatus {
    let previous_conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        let last_transition_time = previous_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| Time(Timestamp::from_second(now.as_second()).unwrap_or(now)));
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;

    let (ready, progressing, degraded) = match outcome {
        Outcome::InvalidSpec { message } => (
            condition(
                condition::READY,
                false,
                "InvalidSpec",
                "the spec is invalid; see Degraded".into(),
            ),
            condition(
                condition::PROGRESSING,
                false,
                "InvalidSpec",
                "nothing is applied until the spec is fixed".into(),
            ),
            condition(condition::DEGRADED, true, "InvalidSpec", message.clone()),
        ),
        Outcome::Failed {
            reason,
            message,
            discovery,
        } => {
            if let Some(discovery) = discovery {
                set_discovery(&mut status, discovery);
            }
            (
                condition(
                    condition::READY,
                    false,
                    reason,
                    "reconciliation failed; see Degraded".into(),
                ),
                condition(
                    condition::PROGRESSING,
                    false,
                    reason,
                    "retrying with backoff".into(),
                ),
                condition(condition::DEGRADED, true, reason, message.clone()),
            )
        }
        Outcome::Applied {
            livekit,
            auth,
            auth_is_sidecar,
            discovery,
            not_installed,
        } => {
            set_discovery(&mut status, discovery);
            status.livekit_ready_replicas = livekit.as_ref().map(|r| r.ready);
            status.auth_ready_replicas = match (auth, auth_is_sidecar) {
                (Some(auth), _) => Some(auth.ready),
                (None, true) => livekit.as_ref().map(|r| r.ready),
                (None, false) => None,
            };
            let (ready, progressing, mut degraded) =
                rollout_conditions(livekit.iter().chain(auth.iter()), condition);
            // A stuck rollout stays the headline; otherwise Degraded says what could not be created.
            if !not_installed.is_empty() && degraded.status == "False" {
                let missing = not_installed
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n");
                degraded = condition(
                    condition::DEGRADED,
                    true,
                    "KindNotInstalled",
                    format!("{missing}\nEverything else is applied."),
                );
            }
            (ready, progressing, degraded)
        }
    };
    status.conditions = vec![ready, progressing, degraded];
    status
}

fn set_discovery(status: &mut MatrixRTCTransportStatus, discovery: &Discovery) {
    status.livekit_service_url = Some(discovery.livekit_service_url.clone());
    status.well_known_client = Some(discovery.well_known_client.clone());
    status.synapse_config = Some(discovery.synapse_config.clone());
    status.app_service = discovery.app_service.clone();
}

fn rollout_conditions<'a>(
    rollouts: impl Iterator<Item = &'a Rollout>,
    condition: impl Fn(&str, bool, &str, String) -> Condition,
) -> (Condition, Condition, Condition) {
    let rollouts: Vec<&Rollout> = rollouts.collect();
    let summary = rollouts
        .iter()
        .map(|r| r.summary())
        .collect::<Vec<_>>()
        .join("; ");
    let stuck: Vec<&&Rollout> = rollouts
        .iter()
        .filter(|r| r.stuck && !r.complete())
        .collect();
    let pending = rollouts.iter().any(|r| !r.complete());
    let scaled_to_zero = rollouts.iter().any(|r| r.desired == 0);

    if !stuck.is_empty() {
        let names = stuck
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return (
            condition(condition::READY, false, "RolloutStuck", summary.clone()),
            condition(
                condition::PROGRESSING,
                false,
                "ProgressDeadlineExceeded",
                summary.clone(),
            ),
            condition(
                condition::DEGRADED,
                true,
                "RolloutStuck",
                format!(
                    "{names} exceeded the progress deadline; check the pods' events. {summary}"
                ),
            ),
        );
    }
    let degraded_ok = condition(
        condition::DEGRADED,
        false,
        "Reconciled",
        "all objects are applied".into(),
    );
    if pending {
        return (
            condition(condition::READY, false, "RollingOut", summary.clone()),
            condition(condition::PROGRESSING, true, "RollingOut", summary),
            degraded_ok,
        );
    }
    if scaled_to_zero {
        return (
            condition(condition::READY, false, "ScaledToZero", summary.clone()),
            condition(condition::PROGRESSING, false, "RolledOut", summary),
            degraded_ok,
        );
    }
    (
        condition(condition::READY, true, "Available", summary.clone()),
        condition(condition::PROGRESSING, false, "RolledOut", summary),
        degraded_ok,
    )
}

/// The `Degraded` condition if it is set, for "did this problem just appear" checks.
pub fn degraded(status: Option<&MatrixRTCTransportStatus>) -> Option<&Condition> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::DEGRADED && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(
        generation: i64,
        observed: i64,
        desired: i32,
        ready: i32,
        updated: i32,
        total: i32,
    ) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("demo-livekit".into()),
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                updated_replicas: Some(updated),
                replicas: Some(total),
                ..Default::default()
            }),
        }
    }

    fn applied(livekit: Rollout) -> Outcome {
        Outcome::Applied {
            livekit: Some(livekit),
            auth: None,
            auth_is_sidecar: true,
            discovery: Discovery {
                livekit_service_url: "https://rtc.example.com".into(),
                ..Default::default()
            },
            not_installed: Vec::new(),
        }
    }

    fn except_not_installed(mut outcome: Outcome, missing: &[NotInstalled]) -> Outcome {
        if let Outcome::Applied { not_installed, .. } = &mut outcome {
            *not_installed = missing.to_vec();
        }
        outcome
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    fn find<'a>(status: &'a MatrixRTCTransportStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn rollout_completeness() {
        assert!(Rollout::of(&deployment(2, 2, 1, 1, 1, 1)).complete());
        assert!(
            !Rollout::of(&deployment(3, 2, 1, 1, 1, 1)).complete(),
            "new generation not observed"
        );
        assert!(
            !Rollout::of(&deployment(2, 2, 2, 1, 2, 2)).complete(),
            "one pod not ready"
        );
        assert!(
            !Rollout::of(&deployment(2, 2, 1, 1, 1, 2)).complete(),
            "an old pod lingers"
        );
        assert!(
            !Rollout::of(&Deployment::default()).complete(),
            "no status yet"
        );
    }

    #[test]
    fn rolled_out_is_ready_and_reports_replicas() {
        let status = compute(
            Some(4),
            None,
            &applied(Rollout::of(&deployment(2, 2, 1, 1, 1, 1))),
            at(100),
        );
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(find(&status, "Ready").status, "True");
        assert_eq!(find(&status, "Progressing").status, "False");
        assert_eq!(find(&status, "Degraded").status, "False");
        assert_eq!(status.livekit_ready_replicas, Some(1));
        assert_eq!(
            status.auth_ready_replicas,
            Some(1),
            "sidecar auth is as ready as LiveKit"
        );
        assert_eq!(
            status.livekit_service_url.as_deref(),
            Some("https://rtc.example.com")
        );
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(4))
        );
    }

    #[test]
    fn a_rollout_in_progress_is_progressing_not_ready() {
        let status = compute(
            Some(1),
            None,
            &applied(Rollout::of(&deployment(2, 2, 1, 0, 1, 1))),
            at(100),
        );
        assert_eq!(find(&status, "Ready").status, "False");
        let progressing = find(&status, "Progressing");
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_str()),
            ("True", "RollingOut")
        );
        assert!(
            progressing.message.contains("0/1 ready"),
            "{}",
            progressing.message
        );
    }

    /// A Deployment whose rollout passed its progress deadline.
    fn stuck_deployment() -> Deployment {
        let mut stuck = deployment(2, 2, 1, 0, 1, 1);
        stuck.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            ..Default::default()
        }]);
        stuck
    }

    #[test]
    fn a_stuck_rollout_is_degraded() {
        let stuck = stuck_deployment();
        let status = compute(Some(1), None, &applied(Rollout::of(&stuck)), at(100));
        assert_eq!(find(&status, "Degraded").status, "True");
        assert_eq!(find(&status, "Degraded").reason, "RolloutStuck");
    }

    #[test]
    fn invalid_spec_is_degraded_with_the_message_and_keeps_earlier_facts() {
        let good = compute(
            Some(1),
            None,
            &applied(Rollout::of(&deployment(1, 1, 1, 1, 1, 1))),
            at(100),
        );
        let outcome = Outcome::InvalidSpec {
            message: "spec.host: must not be empty".into(),
        };
        let status = compute(Some(2), Some(&good), &outcome, at(200));
        let degraded = find(&status, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "InvalidSpec")
        );
        assert_eq!(degraded.message, "spec.host: must not be empty");
        assert_eq!(find(&status, "Ready").status, "False");
        assert_eq!(
            status.livekit_ready_replicas,
            Some(1),
            "last observation is kept"
        );
        assert_eq!(status.observed_generation, Some(2));
    }

    #[test]
    fn recomputing_an_unchanged_state_is_equal_and_transition_times_move_only_on_change() {
        let outcome = applied(Rollout::of(&deployment(2, 2, 1, 1, 1, 1)));
        let first = compute(Some(1), None, &outcome, at(100));
        let again = compute(Some(1), Some(&first), &outcome, at(500));
        assert_eq!(first, again, "no change, no write");

        let failing = Outcome::Failed {
            reason: "ApplyFailed",
            message: "boom".into(),
            discovery: None,
        };
        let failed = compute(Some(1), Some(&first), &failing, at(900));
        assert_eq!(
            find(&failed, "Degraded").last_transition_time,
            Time(at(900))
        );
        assert_eq!(find(&failed, "Ready").last_transition_time, Time(at(900)));
        // Progressing stayed False: its time is kept even though the reason changed.
        assert_eq!(
            find(&failed, "Progressing").last_transition_time,
            Time(at(100))
        );
    }

    #[test]
    fn transition_times_are_whole_seconds() {
        let now = Timestamp::from_millisecond(1_700_000_000_123).unwrap();
        let status = compute(
            Some(1),
            None,
            &applied(Rollout::of(&deployment(1, 1, 1, 1, 1, 1))),
            now,
        );
        assert_eq!(
            find(&status, "Ready").last_transition_time,
            Time(at(1_700_000_000))
        );
    }

    #[test]
    fn a_kind_not_installed_is_degraded_while_ready_follows_the_rollout() {
        use crate::kinds::ChildKind;
        let missing = [
            NotInstalled {
                kind: ChildKind::ServiceMonitor,
                names: vec!["demo-livekit".into(), "demo-auth".into()],
            },
            NotInstalled {
                kind: ChildKind::Certificate,
                names: vec!["demo-turn-tls".into()],
            },
        ];
        let ready = applied(Rollout::of(&deployment(1, 1, 1, 1, 1, 1)));
        let status = compute(
            Some(1),
            None,
            &except_not_installed(ready.clone(), &missing),
            at(1),
        );
        let degraded = find(&status, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "KindNotInstalled")
        );
        for part in [
            "monitoring.coreos.com/v1 ServiceMonitor is not installed",
            "demo-livekit, demo-auth were not created",
            "cert-manager.io/v1 Certificate is not installed",
            "Everything else is applied",
        ] {
            assert!(degraded.message.contains(part), "{}", degraded.message);
        }
        assert_eq!(find(&status, "Ready").status, "True");
        assert_eq!(status.livekit_ready_replicas, Some(1));
        // Nothing missing: the plain outcome.
        assert_eq!(
            compute(
                Some(1),
                None,
                &except_not_installed(ready.clone(), &[]),
                at(1)
            ),
            compute(Some(1), None, &ready, at(1))
        );
        // A stuck rollout stays the headline.
        let stuck = except_not_installed(applied(Rollout::of(&stuck_deployment())), &missing);
        assert_eq!(
            find(&compute(Some(1), None, &stuck, at(1)), "Degraded").reason,
            "RolloutStuck"
        );
    }

    #[test]
    fn children_count_as_applied_only_after_an_applied_outcome_at_the_current_generation() {
        let transport = |generation: i64, outcome: &Outcome| -> MatrixRTCTransport {
            let mut t: MatrixRTCTransport = serde_json::from_value(serde_json::json!({
                "apiVersion": "matrixrtc.dev/v1alpha1", "kind": "MatrixRTCTransport",
                "metadata": {"name": "demo", "namespace": "ns", "generation": generation},
                "spec": {"serverName": "example.com", "host": "rtc.example.com"},
            }))
            .expect("a transport");
            t.status = Some(compute(Some(1), None, outcome, at(1)));
            t
        };
        let ready = applied(Rollout::of(&deployment(1, 1, 1, 1, 1, 1)));
        let stuck = applied(Rollout::of(&stuck_deployment()));
        let refused = Outcome::Failed {
            reason: "PortConflict",
            message: "x".into(),
            discovery: None,
        };
        let invalid = Outcome::InvalidSpec {
            message: "x".into(),
        };
        assert!(children_applied(&transport(1, &ready)));
        assert!(children_applied(&transport(1, &stuck)));
        assert!(!children_applied(&transport(2, &ready)), "a newer spec");
        assert!(!children_applied(&transport(1, &refused)));
        assert!(!children_applied(&transport(1, &invalid)));
    }

    #[test]
    fn scaled_to_zero_is_not_ready() {
        let status = compute(
            Some(1),
            None,
            &applied(Rollout::of(&deployment(1, 1, 0, 0, 0, 0))),
            at(1),
        );
        assert_eq!(find(&status, "Ready").reason, "ScaledToZero");
        assert_eq!(find(&status, "Ready").status, "False");
    }

    #[test]
    fn every_reason_this_module_writes_is_listed() {
        let stuck = stuck_deployment();
        let outcomes = [
            applied(Rollout::of(&deployment(1, 1, 1, 1, 1, 1))),
            applied(Rollout::of(&deployment(2, 2, 1, 0, 1, 1))),
            applied(Rollout::of(&deployment(1, 1, 0, 0, 0, 0))),
            applied(Rollout::of(&stuck)),
            except_not_installed(
                applied(Rollout::of(&deployment(1, 1, 1, 1, 1, 1))),
                &[NotInstalled {
                    kind: crate::kinds::ChildKind::ServiceMonitor,
                    names: vec!["demo-auth".into()],
                }],
            ),
            Outcome::InvalidSpec {
                message: "x".into(),
            },
        ];
        let mut seen = std::collections::BTreeSet::new();
        for outcome in &outcomes {
            for c in compute(Some(1), None, outcome, at(1)).conditions {
                assert!(
                    REASONS.contains(&c.reason.as_str()),
                    "{} is not in REASONS",
                    c.reason
                );
                seen.insert(c.reason);
            }
        }
        assert_eq!(
            seen.len(),
            9,
            "the outcomes above cover every reason of this module: {seen:?}"
        );
        let unique: std::collections::BTreeSet<&&str> = REASONS.iter().collect();
        assert_eq!(unique.len(), REASONS.len(), "listed twice");
    }

    #[test]
    fn degraded_helper_finds_only_a_true_condition() {
        let ok = compute(
            Some(1),
            None,
            &applied(Rollout::of(&deployment(1, 1, 1, 1, 1, 1))),
            at(1),
        );
        assert!(degraded(Some(&ok)).is_none());
        let bad = compute(
            Some(1),
            Some(&ok),
            &Outcome::InvalidSpec {
                message: "x".into(),
            },
            at(2),
        );
        assert_eq!(degraded(Some(&bad)).map(|c| c.message.as_str()), Some("x"));
    }
}
