//! The user Secrets the pods reference by name, and how they enter the pod template hash.
//!
//! The hash annotation ([`super::HASH_ANNOTATION`]) must change whenever something a pod reads
//! changes, or the Deployment keeps running pods with stale values. It must not be computed from
//! the content of a Secret a person chose: anyone allowed to read Deployments could then test guesses
//! of a weak password or API secret against the annotation offline. So a user Secret contributes its
//! `uid` (a deleted and recreated Secret is another one) and `resourceVersion` (bumped by every write
//! to it). Any write counts, a label change included: an occasional needless roll is the price of
//! never hashing the content. The controller reads these versions (metadata only) and passes them
//! into [`super::build`], which stays pure.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use serde::Serialize;
use serde_json::{Value, json};

use super::BuildError;
use crate::api::AuthRedis;
use crate::plan::CredentialsSource;
use crate::plan::{LiveKitPlan, Validated};

/// What a pod uses a user Secret for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Use {
    /// The LiveKit API key and secret (copied into the `<name>-keys` Secret the pods mount).
    Credentials,
    /// LiveKit's `REDIS_PASSWORD`.
    LiveKitRedisPassword,
    /// The TURN/TLS certificate LiveKit mounts.
    TurnTls,
    /// The TURN/TLS certificate LiveKit mounts, issued by cert-manager through the operator's
    /// Certificate: it does not exist until cert-manager first issues it, and every renewal rolls the
    /// pods (so LiveKit serves the new certificate).
    TurnTlsIssued,
    /// The authorisation service's `LIVEKIT_REDIS_URL`.
    AuthRedisUrl,
}

impl Use {
    /// The spec field that names the Secret (for messages).
    pub fn field(self) -> &'static str {
        match self {
            Use::Credentials => "spec.credentials.secretName",
            Use::LiveKitRedisPassword => "spec.livekit.managed.redis.passwordSecret",
            Use::TurnTls => "spec.livekit.managed.turn.tls.secretName",
            Use::TurnTlsIssued => "spec.livekit.managed.turn.tls.certManager",
            Use::AuthRedisUrl => "spec.auth.redis.urlSecret",
        }
    }
}

impl Use {
    /// The Secret may be missing without stopping the reconcile: cert-manager writes it after the
    /// operator applies the Certificate (until then the pods wait for their volume).
    pub fn may_be_missing(self) -> bool {
        self == Use::TurnTlsIssued
    }
}

/// One user Secret a pod references by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    pub name: String,
    pub used_for: Use,
}

impl SecretRef {
    fn new(name: &str, used_for: Use) -> Self {
        Self {
            name: name.to_owned(),
            used_for,
        }
    }
}

/// The user's credentials Secret, if the credentials are not the operator's own.
fn credentials(v: &Validated) -> Option<SecretRef> {
    match v.credentials_source() {
        CredentialsSource::Existing(r) => Some(SecretRef::new(&r.secret_name, Use::Credentials)),
        CredentialsSource::Generated { .. } => None,
    }
}

/// The authorisation service's Redis URL Secret, if any.
fn auth_redis(v: &Validated) -> Option<SecretRef> {
    match &v.auth().redis {
        Some(AuthRedis::UrlSecret(secret)) => Some(SecretRef::new(&secret.name, Use::AuthRedisUrl)),
        Some(AuthRedis::Url(_)) | None => None,
    }
}

/// What the LiveKit pods reference, including their authorisation service sidecar's Secrets.
/// Empty for an external LiveKit.
pub fn livekit_pod(v: &Validated) -> Vec<SecretRef> {
    let LiveKitPlan::Managed(plan) = v.livekit() else {
        return Vec::new();
    };
    let mut refs: Vec<SecretRef> = credentials(v).into_iter().collect();
    if let Some(secret) = plan.redis.as_ref().and_then(|r| r.password_secret.as_ref()) {
        refs.push(SecretRef::new(&secret.name, Use::LiveKitRedisPassword));
    }
    if let Some(tls) = plan.turn.as_ref().and_then(|t| t.tls.as_ref())
        && let Some(name) = &tls.secret_name
    {
        let used_for = match tls.issuer {
            Some(_) => Use::TurnTlsIssued,
            None => Use::TurnTls,
        };
        refs.push(SecretRef::new(name, used_for));
    }
    if v.auth_is_sidecar() {
        refs.extend(auth_redis(v));
    }
    refs
}

/// What the authorisation service's own pods reference. Empty with placement `Sidecar`.
pub fn auth_pod(v: &Validated) -> Vec<SecretRef> {
    if v.auth_is_sidecar() {
        return Vec::new();
    }
    credentials(v).into_iter().chain(auth_redis(v)).collect()
}

/// Every user Secret some pod references, sorted by name (a Secret can serve several uses).
pub fn all(v: &Validated) -> Vec<SecretRef> {
    let mut refs = livekit_pod(v);
    refs.extend(auth_pod(v));
    refs.sort();
    refs.dedup();
    refs
}

/// One observed version of a Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVersion {
    pub uid: String,
    pub resource_version: String,
}

impl SecretVersion {
    /// The version in a Secret's metadata (as the API server returns it, both are set).
    pub fn of(meta: &ObjectMeta) -> Self {
        Self {
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
        }
    }

    /// A Secret that does not exist yet (one that [`Use::may_be_missing`]); its creation is a change.
    pub fn absent() -> Self {
        Self {
            uid: String::new(),
            resource_version: String::new(),
        }
    }
}

/// Observed versions of Secrets, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretVersions(BTreeMap<String, SecretVersion>);

impl SecretVersions {
    pub fn insert(&mut self, name: &str, version: SecretVersion) {
        self.0.insert(name.to_owned(), version);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// What `refs` contribute to a pod hash: each reference with its Secret's version, never content.
pub(super) fn hash_input(
    refs: &[SecretRef],
    versions: &SecretVersions,
) -> Result<Value, BuildError> {
    refs.iter()
        .map(|r| {
            let version = versions
                .0
                .get(&r.name)
                .ok_or_else(|| BuildError::UnobservedSecret(r.name.clone()))?;
            Ok(json!({"secret": r, "version": version}))
        })
        .collect::<Result<Vec<Value>, BuildError>>()
        .map(Value::Array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::{REFERENCES_EVERYTHING, validated};

    fn names(refs: &[SecretRef]) -> Vec<(&str, Use)> {
        refs.iter().map(|r| (r.name.as_str(), r.used_for)).collect()
    }

    #[test]
    fn each_pod_lists_the_secrets_it_reads() {
        let v = validated(REFERENCES_EVERYTHING);
        assert_eq!(
            names(&livekit_pod(&v)),
            [
                ("lk", Use::Credentials),
                ("redis-pw", Use::LiveKitRedisPassword),
                ("turn-cert", Use::TurnTls)
            ]
        );
        assert_eq!(
            names(&auth_pod(&v)),
            [("lk", Use::Credentials), ("auth-redis", Use::AuthRedisUrl)]
        );
        assert_eq!(
            names(&all(&v)),
            [
                ("auth-redis", Use::AuthRedisUrl),
                ("lk", Use::Credentials),
                ("redis-pw", Use::LiveKitRedisPassword),
                ("turn-cert", Use::TurnTls)
            ]
        );
    }

    #[test]
    fn a_sidecar_brings_its_secrets_into_the_livekit_pod() {
        let v = validated(
            "livekit: {managed: {replicas: 2, redis: {address: 'redis:6379'}, media: {service: {externalTrafficPolicy: Local}}}}\nauth: {placement: Sidecar, redis: {urlSecret: {name: auth-redis, key: url}}}",
        );
        assert_eq!(names(&livekit_pod(&v)), [("auth-redis", Use::AuthRedisUrl)]);
        assert!(auth_pod(&v).is_empty());
    }

    #[test]
    fn a_cert_manager_certificate_is_referenced_as_issued() {
        let v = validated(
            "livekit: {managed: {turn: {domain: t.example.com, tls: {certManager: {issuerRef: {name: le, kind: ClusterIssuer}}}}}}",
        );
        assert_eq!(
            names(&livekit_pod(&v)),
            [("demo-turn-tls", Use::TurnTlsIssued)]
        );
        assert!(Use::TurnTlsIssued.may_be_missing() && !Use::TurnTls.may_be_missing());
    }

    #[test]
    fn generated_credentials_and_plain_urls_reference_nothing() {
        let v = validated("auth: {redis: {url: 'redis://r:6379'}}");
        assert!(all(&v).is_empty());
    }

    #[test]
    fn an_unobserved_secret_is_an_error_not_a_guess() {
        let refs = [SecretRef::new("lk", Use::Credentials)];
        let error = hash_input(&refs, &SecretVersions::default()).unwrap_err();
        assert!(error.to_string().contains("lk"), "{error}");
        let mut versions = SecretVersions::default();
        versions.insert(
            "lk",
            SecretVersion {
                uid: "u".into(),
                resource_version: "7".into(),
            },
        );
        assert_eq!(
            hash_input(&refs, &versions).unwrap(),
            json!([{"secret": {"name": "lk", "usedFor": "Credentials"}, "version": {"uid": "u", "resourceVersion": "7"}}])
        );
    }
}
