//! Pod hardening and helpers shared by the LiveKit and authorisation service pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, KeyToPath, LocalObjectReference, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext,
    TopologySpreadConstraint, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use sha2::{Digest, Sha256};

use crate::api::Scheduling;
use crate::plan::Validated;

/// Pod template annotation holding a hash of what the pods read: the LiveKit ConfigMap's content,
/// generated credentials, and the observed versions (not the content) of the user Secrets they
/// reference (see [`super::secret_refs`]). When any of these change, the template changes and the
/// Deployment rolls its pods.
pub const HASH_ANNOTATION: &str = "matrixrtc.dev/config-hash";

/// Mode of mounted Secret files: owner and group read, nothing for others (LiveKit refuses a key
/// file with any "other" permission bit).
pub const SECRET_FILE_MODE: i32 = 0o440;

/// sha256 (hex) over the JSON of each part, in order.
pub fn content_hash(parts: &[serde_json::Value]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.to_string().as_bytes());
        hasher.update([0]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Non-root with the given uid/gid (also the fsGroup, so mounted Secrets are group-readable),
/// RuntimeDefault seccomp.
pub fn pod_security_context(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(runtime_default()),
        ..PodSecurityContext::default()
    }
}

/// No privilege escalation, no capabilities, read-only root, running as `uid`.
pub fn container_security_context(uid: i64) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        seccomp_profile: Some(runtime_default()),
        ..SecurityContext::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

/// The user's resources, or requests `cpu`/`memory` with a memory limit.
pub fn resources(
    user: Option<&ResourceRequirements>,
    cpu: &str,
    memory: &str,
    memory_limit: &str,
) -> ResourceRequirements {
    user.cloned().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity(memory_limit.to_owned()),
        )])),
        claims: None,
    })
}

/// A Secret volume exposing `items` (key == file name) with [`SECRET_FILE_MODE`].
pub fn secret_volume(volume: &str, secret: &str, items: &[&str]) -> Volume {
    Volume {
        name: volume.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            default_mode: Some(SECRET_FILE_MODE),
            items: (!items.is_empty()).then(|| {
                items
                    .iter()
                    .map(|key| KeyToPath {
                        key: (*key).to_owned(),
                        path: (*key).to_owned(),
                        mode: None,
                    })
                    .collect()
            }),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

/// `imagePullSecrets` of both workloads (`None` when the spec names none).
pub fn image_pull_secrets(v: &Validated) -> Option<Vec<LocalObjectReference>> {
    let names = v.image_pull_secrets();
    (!names.is_empty()).then(|| {
        names
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect()
    })
}

/// Copy the user's scheduling into the pod spec. A topology spread constraint without a label
/// selector gets the component's pod selector (the only sensible choice for a Deployment).
pub fn apply_scheduling(
    spec: &mut PodSpec,
    scheduling: &Scheduling,
    selector: &BTreeMap<String, String>,
) {
    spec.node_selector = scheduling.node_selector.clone();
    spec.tolerations = scheduling.tolerations.clone();
    spec.affinity = scheduling.affinity.clone();
    spec.priority_class_name = scheduling.priority_class_name.clone();
    spec.topology_spread_constraints =
        scheduling.topology_spread_constraints.as_ref().map(|list| {
            list.iter()
                .map(|c| TopologySpreadConstraint {
                    label_selector: c.label_selector.clone().or_else(|| {
                        Some(LabelSelector {
                            match_labels: Some(selector.clone()),
                            match_expressions: None,
                        })
                    }),
                    ..c.clone()
                })
                .collect()
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_changes_with_any_part_and_is_stable() {
        let a = serde_json::json!({"k": "v1"});
        let b = serde_json::json!({"k": "v2"});
        let h1 = content_hash(&[a.clone(), a.clone()]);
        assert_eq!(h1, content_hash(&[a.clone(), a.clone()]));
        assert_ne!(h1, content_hash(&[a.clone(), b.clone()]));
        assert_ne!(h1, content_hash(&[b, a]));
        assert_eq!(h1.len(), 64);
    }

    #[test]
    fn secret_volume_has_no_permission_bits_for_others() {
        let mode = secret_volume("v", "s", &["a"])
            .secret
            .and_then(|s| s.default_mode)
            .expect("mode");
        assert_eq!(mode & 0o007, 0);
        assert_ne!(
            mode & 0o040,
            0,
            "group must read: the pod reads through fsGroup"
        );
    }

    #[test]
    fn spread_constraints_get_the_selector_only_when_missing() {
        let selector = BTreeMap::from([("app".to_owned(), "x".to_owned())]);
        let own = LabelSelector {
            match_labels: Some(BTreeMap::from([("own".to_owned(), "y".to_owned())])),
            match_expressions: None,
        };
        let scheduling = Scheduling {
            topology_spread_constraints: Some(vec![
                TopologySpreadConstraint {
                    max_skew: 1,
                    topology_key: "zone".into(),
                    when_unsatisfiable: "ScheduleAnyway".into(),
                    ..TopologySpreadConstraint::default()
                },
                TopologySpreadConstraint {
                    label_selector: Some(own.clone()),
                    ..TopologySpreadConstraint::default()
                },
            ]),
            ..Scheduling::default()
        };
        let mut spec = PodSpec::default();
        apply_scheduling(&mut spec, &scheduling, &selector);
        let tsc = spec.topology_spread_constraints.expect("constraints");
        assert_eq!(
            tsc[0]
                .label_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(selector)
        );
        assert_eq!(tsc[0].topology_key, "zone");
        assert_eq!(tsc[1].label_selector, Some(own));
    }
}
