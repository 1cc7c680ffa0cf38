//! Test: built objects use no field a Kubernetes 1.28 API server does not know.
//!
//! k8s-openapi is compiled with the 1.33 API, so its types offer fields added after 1.28. A 1.28
//! server would drop them (or reject the object), so the builders must never set them. The check
//! walks the JSON of every built object (for every example and several fixtures) and fails on:
//! - anywhere: `appArmorProfile` (1.30), `supplementalGroupsPolicy` (1.31), `seLinuxChangePolicy`
//!   (1.32), `trafficDistribution` (1.30), `recursiveReadOnly` (1.30), `stopSignal` (1.33),
//!   `sleep` (a lifecycle handler, 1.29), `fileKeyRef` (env from file, 1.34);
//! - pod spec `resources` (pod-level resources, 1.32) and `hostnameOverride` (1.34);
//! - volume `image` (image volumes, 1.31);
//! - container `restartPolicy` (sidecar containers: alpha in 1.28, off by default).
//!
//! Status-only fields are out of scope: the builders never write status.

use serde_json::Value;

use super::test_support::{build_with, validated};
use crate::build::credentials::ApiCredentials;
use crate::kinds::Child;

const DENIED_ANYWHERE: [&str; 8] = [
    "appArmorProfile",
    "supplementalGroupsPolicy",
    "seLinuxChangePolicy",
    "trafficDistribution",
    "recursiveReadOnly",
    "stopSignal",
    "sleep",
    "fileKeyRef",
];

fn walk(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{path}.{key}");
                if DENIED_ANYWHERE.contains(&key.as_str()) {
                    found.push(here.clone());
                }
                walk(child, &here, found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

fn pod_spec_problems(pod: &Value, found: &mut Vec<String>) {
    for key in ["resources", "hostnameOverride"] {
        if pod.get(key).is_some() {
            found.push(format!("podSpec.{key}"));
        }
    }
    for volume in pod["volumes"].as_array().into_iter().flatten() {
        if volume.get("image").is_some() {
            found.push(format!("volume {} uses an image source", volume["name"]));
        }
    }
    for container in pod["containers"].as_array().into_iter().flatten() {
        if container.get("restartPolicy").is_some() {
            found.push(format!(
                "container {} sets restartPolicy",
                container["name"]
            ));
        }
    }
}

/// Problems for one child (empty when compatible).
pub(crate) fn problems(child: &Child) -> Vec<String> {
    let json = child.to_value().unwrap_or(Value::Null);
    let mut found = Vec::new();
    walk(&json, "", &mut found);
    if let Child::Deployment(_) = child {
        pod_spec_problems(&json["spec"]["template"]["spec"], &mut found);
    }
    found
}

#[test]
fn the_checker_catches_newer_fields() {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    use k8s_openapi::api::core::v1::{
        AppArmorProfile, Container, PodSpec, PodTemplateSpec, SecurityContext,
    };
    let deployment = Deployment {
        spec: Some(DeploymentSpec {
            template: PodTemplateSpec {
                spec: Some(PodSpec {
                    resources: Some(Default::default()),
                    containers: vec![Container {
                        security_context: Some(SecurityContext {
                            app_armor_profile: Some(AppArmorProfile {
                                type_: "RuntimeDefault".into(),
                                localhost_profile: None,
                            }),
                            ..SecurityContext::default()
                        }),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
                metadata: None,
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let found = problems(&Child::Deployment(deployment));
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn built_objects_only_use_fields_kubernetes_1_28_knows() {
    let fixtures = [
        "",
        "auth: {placement: Sidecar, extraEnv: [{name: LIVEKIT_LOG_LEVEL, value: debug}]}",
        "livekit: {external: {url: 'wss://sfu.example.net'}}\ncredentials: {secretName: lk}",
        r#"
livekit:
  managed:
    replicas: 2
    redis: {address: "redis:6379", passwordSecret: {name: r, key: p}}
    media:
      hostNetwork: true
      udp: {range: {start: 40000, end: 40010}}
      advertisedIp: {source: PodIP}
    turn: {domain: t.example.com, udp: {port: 30004}, tls: {port: 5350, secretName: c}}
    scheduling:
      topologySpreadConstraints: [{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule}]
auth: {replicas: 2, redis: {url: "redis://redis:6379/2"}}
"#,
    ];
    for fixture in fixtures {
        for child in build_with(&validated(fixture), &ApiCredentials::placeholder()).iter() {
            let found = problems(child);
            assert!(
                found.is_empty(),
                "{} {}: {found:?}",
                child.kind(),
                child.name()
            );
        }
    }
}
