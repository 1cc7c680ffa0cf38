//! The PodDisruptionBudget of the LiveKit pods (policy/v1), while there is more than one.
//!
//! A node drain or the cluster autoscaler evicts pods through the eviction API, which honours the
//! budget: with the default `maxUnavailable: 1` one LiveKit pod drains at a time while the others
//! keep serving calls. With one replica there is no budget (it would either block every drain or
//! allow the only pod to go, which is what no budget does); when replicas drop to 1 it is pruned.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{self, Component};
use super::{names, object_meta};
use crate::plan::{LiveKitPlan, Validated};

/// `<name>-livekit`, selecting the LiveKit pods, when the plan asks for one.
pub fn build(v: &Validated) -> Option<PodDisruptionBudget> {
    let LiveKitPlan::Managed(plan) = v.livekit() else {
        return None;
    };
    let max_unavailable = plan.disruption_max_unavailable?;
    Some(PodDisruptionBudget {
        metadata: object_meta(v, names::livekit(v.name()), Component::Sfu),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector(v.name(), Component::Sfu)),
                ..LabelSelector::default()
            }),
            // A pod that is not ready serves no calls: let a drain evict it even when the budget is
            // spent, or one crash-looping pod would block every node drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::{external, validated};

    const TWO: &str = "livekit: {managed: {replicas: 2, redis: {address: 'redis:6379'}, media: {service: {externalTrafficPolicy: Local}}}}";

    /// Two replicas with this `disruptionBudget`.
    fn two_with(budget: &str) -> String {
        format!(
            "livekit: {{managed: {{replicas: 2, redis: {{address: 'redis:6379'}}, media: {{service: {{externalTrafficPolicy: Local}}}}, disruptionBudget: {budget}}}}}"
        )
    }

    #[test]
    fn two_replicas_get_a_budget_of_one_that_selects_the_livekit_pods() {
        let v = validated(TWO);
        let pdb = build(&v).expect("a budget");
        assert_eq!(pdb.metadata.name.as_deref(), Some("demo-livekit"));
        let spec = pdb.spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        let selector = spec.selector.and_then(|s| s.match_labels).expect("labels");
        assert_eq!(selector, labels::selector("demo", Component::Sfu));
        // Exactly the labels of the LiveKit pods' Deployment selector.
        let children = crate::build::test_support::children(TWO);
        let Some(crate::kinds::Child::Deployment(d)) = children.get("Deployment", "demo-livekit")
        else {
            panic!("no LiveKit Deployment");
        };
        assert_eq!(
            d.spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone()),
            Some(selector)
        );
    }

    #[test]
    fn max_unavailable_is_tunable_and_the_budget_can_be_turned_off() {
        let tuned = validated(&two_with("{maxUnavailable: 2}"));
        assert_eq!(
            build(&tuned)
                .and_then(|p| p.spec)
                .and_then(|s| s.max_unavailable),
            Some(IntOrString::Int(2))
        );
        let off = validated(&two_with("{enabled: false}"));
        assert!(build(&off).is_none());
    }

    #[test]
    fn one_replica_or_an_external_livekit_has_no_budget() {
        assert!(build(&validated("")).is_none());
        assert!(build(&validated("livekit: {managed: {replicas: 0}}")).is_none());
        assert!(build(&external()).is_none());
    }
}
