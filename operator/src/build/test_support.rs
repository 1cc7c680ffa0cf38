//! Fixtures for builder tests: a CR parsed from YAML and run through the real validation.

use serde_json::Value;

use crate::api::MatrixRTCTransport;
use crate::build::appservice::AppServiceTokens;
use crate::build::credentials::ApiCredentials;
use crate::build::secret_refs::{self, SecretVersion, SecretVersions};
use crate::build::{BuildInput, Children, build};
use crate::defaults::OperatorDefaults;
use crate::plan::Validated;
use crate::validate::validate;

const BASE: &str = r#"
apiVersion: matrixrtc.dev/v1alpha1
kind: MatrixRTCTransport
metadata:
  name: demo
  namespace: rtc
  uid: 0b9f1c2e-0000-4000-8000-000000000001
spec:
  serverName: example.com
  host: rtc.example.com
"#;

/// The base CR with `spec_patch` (YAML of spec fields) deep-merged into its spec.
pub fn cr(spec_patch: &str) -> MatrixRTCTransport {
    let mut base: Value = serde_yaml::from_str(BASE).expect("base fixture");
    if !spec_patch.trim().is_empty() {
        let patch: Value = serde_yaml::from_str(spec_patch).expect("patch is YAML");
        merge(&mut base["spec"], patch);
    }
    serde_json::from_value(base).expect("fixture deserialises")
}

fn merge(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(into), Value::Object(patch)) => {
            for (k, v) in patch {
                merge(into.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, patch) => *slot = patch,
    }
}

/// A valid fixture; panics (test failure) with every problem when invalid.
pub fn validated(spec_patch: &str) -> Validated {
    validate(&cr(spec_patch)).unwrap_or_else(|e| panic!("fixture invalid:\n{e}"))
}

/// An external-LiveKit fixture.
pub fn external() -> Validated {
    validated(
        "livekit: {external: {url: 'wss://sfu.example.net'}}\ncredentials: {secretName: lk-creds}",
    )
}

/// All children of a fixture, with placeholder credentials and default images.
pub fn children(spec_patch: &str) -> Children {
    build_with(&validated(spec_patch), &ApiCredentials::placeholder())
}

pub fn build_with(v: &Validated, credentials: &ApiCredentials) -> Children {
    build_observing(v, credentials, &observed(v))
}

/// Every Secret the pods of `v` reference, at version 1.
pub fn observed(v: &Validated) -> SecretVersions {
    let mut versions = SecretVersions::default();
    for r in secret_refs::all(v) {
        versions.insert(
            &r.name,
            SecretVersion {
                uid: format!("uid-{}", r.name),
                resource_version: "1".into(),
            },
        );
    }
    versions
}

pub fn build_observing(
    v: &Validated,
    credentials: &ApiCredentials,
    secrets: &SecretVersions,
) -> Children {
    build(
        v,
        &BuildInput {
            defaults: &OperatorDefaults::default(),
            credentials,
            secrets,
            app_service: Some(&AppServiceTokens::placeholder()),
        },
    )
    .expect("build")
}

/// Every Secret a pod can reference by name, with user credentials.
pub const REFERENCES_EVERYTHING: &str = r#"
credentials: {secretName: lk}
livekit:
  managed:
    replicas: 2
    redis: {address: 'redis:6379', passwordSecret: {name: redis-pw, key: p}}
    media: {service: {externalTrafficPolicy: Local}}
    turn: {domain: turn.example.com, tls: {port: 30003, secretName: turn-cert}}
auth: {replicas: 2, redis: {urlSecret: {name: auth-redis, key: url}}}
"#;
