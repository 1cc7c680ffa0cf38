//! Desired state: pure functions from a validated spec to the objects the operator applies.
//!
//! [`build`] returns every child in apply order (ServiceAccounts, Secrets, ConfigMaps, the TURN
//! Certificate, Services, Deployments, the PodDisruptionBudget, Ingress, ServiceMonitors), so mounted
//! Secrets and ConfigMaps exist before the pods that need them.
//! One module per kind; `pod` holds the hardening shared by both workloads. The kinds themselves are
//! declared in [`crate::kinds`]; the builders leave ownership (namespace, owner reference, `managed-by`)
//! to [`crate::apply::Owner::stamp`].

pub mod appservice;
pub mod auth;
pub mod certificate;
#[cfg(test)]
pub(crate) mod compat;
pub mod credentials;
pub mod discovery;
pub mod disruption_budget;
pub mod ingress;
pub mod labels;
pub mod livekit;
pub mod livekit_config;
pub mod monitoring;
mod pod;
pub mod secret;
pub mod secret_refs;
pub mod service_account;
pub mod services;
#[cfg(test)]
pub(crate) mod test_support;

use kube::api::ObjectMeta;

use crate::defaults::OperatorDefaults;
/// Kept at this path too: the end-to-end tests name children through it.
pub use crate::kinds::Child;
use crate::plan::CredentialsSource;
use crate::plan::{LiveKitPlan, Validated};
use appservice::AppServiceTokens;
use credentials::ApiCredentials;
use labels::Component;
use secret_refs::SecretVersions;

/// Kept at this path too: the binary and end-to-end tests name children through it.
pub use crate::plan::names;
pub use pod::HASH_ANNOTATION;

/// Every desired child, in the order they must be applied (Secrets and ConfigMaps before workloads).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Children(pub Vec<Child>);

impl Children {
    pub fn iter(&self) -> std::slice::Iter<'_, Child> {
        self.0.iter()
    }

    /// The child of `kind` named `name`, if built.
    pub fn get(&self, kind: &str, name: &str) -> Option<&Child> {
        self.0
            .iter()
            .find(|c| c.kind().name() == kind && c.name() == name)
    }
}

/// What the builders need besides the validated spec.
#[derive(Clone, Copy, Debug)]
pub struct BuildInput<'a> {
    pub defaults: &'a OperatorDefaults,
    /// Read from `Validated::credentials_source()` (or generated) by the controller.
    pub credentials: &'a ApiCredentials,
    /// The observed version of every Secret in [`secret_refs::all`], for the pod template hashes.
    pub secrets: &'a SecretVersions,
    /// The application-service tokens (read or generated once by the controller); needed only in AS mode.
    pub app_service: Option<&'a AppServiceTokens>,
}

/// A child could not be built. Nothing is applied when this happens.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot render the LiveKit config: {0}")]
    LiveKitConfig(#[from] serde_yaml::Error),
    #[error("cannot hash pod inputs: {0}")]
    Hash(#[from] serde_json::Error),
    #[error(
        "the version of the Secret {0} was not read before building (an operator bug: every Secret the pods reference is read first)"
    )]
    UnobservedSecret(String),
    #[error(
        "the application-service tokens were not read before building (an operator bug: they are read or generated first)"
    )]
    MissingAppServiceTokens,
}

/// Every child of the transport, in apply order.
pub fn build(v: &Validated, input: &BuildInput<'_>) -> Result<Children, BuildError> {
    let mut children = Vec::new();

    children.extend(
        service_account::build(v)
            .into_iter()
            .map(Child::ServiceAccount),
    );

    if let CredentialsSource::Generated { .. } = v.credentials_source() {
        children.push(Child::Secret(secret::generated_credentials(
            v,
            input.credentials,
        )));
    }
    let keys = secret::keys(v, input.credentials)?;
    // What the credentials contribute to the pod hashes. A user's Secret contributes its version
    // (listed by `secret_refs`), never its content: see `secret_refs`. Generated credentials are 40
    // random bytes nobody can guess from a hash, and hashing them instead of a version keeps the hash
    // the same on the reconcile that creates their Secret (which has no version yet) and the next one,
    // so the pods do not roll once more right after the first rollout.
    let credentials_input = match v.credentials_source() {
        CredentialsSource::Generated { .. } => serde_json::to_value(&keys.data)?,
        CredentialsSource::Existing(_) => serde_json::Value::Null,
    };
    let mut auth_hash_parts = vec![
        credentials_input.clone(),
        secret_refs::hash_input(&secret_refs::auth_pod(v), input.secrets)?,
    ];
    // AS mode: the registration Secret (and the user's copy of it), and what the pods hash of it.
    let mut app_service_input = None;
    if let Some(plan) = &v.auth().app_service {
        let tokens = input
            .app_service
            .ok_or(BuildError::MissingAppServiceTokens)?;
        children.push(Child::Secret(appservice::secret(v, plan, tokens)?));
        children.extend(appservice::registration_copy(v, plan, tokens)?.map(Child::Secret));
        let registration = appservice::hash_input(v, plan, tokens)?;
        auth_hash_parts.push(registration.clone());
        app_service_input = Some(registration);
    }
    let auth_hash = pod::content_hash(&auth_hash_parts);

    let livekit_parts = match v.livekit() {
        LiveKitPlan::Managed(plan) => {
            let config = livekit_config::config_map(v, plan, input.credentials.api_key())?;
            let mut parts = vec![
                serde_json::to_value(&config.data)?,
                credentials_input,
                secret_refs::hash_input(&secret_refs::livekit_pod(v), input.secrets)?,
            ];
            // A sidecar reads the registration too.
            if v.auth_is_sidecar() {
                parts.extend(app_service_input);
            }
            let hash = pod::content_hash(&parts);
            Some((plan, config, hash))
        }
        LiveKitPlan::External { .. } => None,
    };
    children.push(Child::Secret(keys));
    if let Some((_, config, _)) = &livekit_parts {
        children.push(Child::ConfigMap(config.clone()));
    }
    children.extend(certificate::build(v).map(Child::Certificate));

    children.extend(services::build(v).into_iter().map(Child::Service));

    if let Some((plan, _, hash)) = &livekit_parts {
        children.push(Child::Deployment(livekit::deployment(
            v,
            plan,
            input.defaults,
            hash,
        )));
    }
    if let Some(deployment) = auth::deployment(v, input.defaults, &auth_hash) {
        children.push(Child::Deployment(deployment));
    }
    children.extend(disruption_budget::build(v).map(Child::PodDisruptionBudget));

    if let Some(ingress) = ingress::build(v) {
        children.push(Child::Ingress(ingress));
    }
    children.extend(monitoring::build(v).into_iter().map(Child::ServiceMonitor));
    Ok(Children(children))
}

/// Metadata every child carries: name and labels. The namespace, the owner reference and the
/// `managed-by` label are stamped by [`crate::apply::Owner::stamp`], the one place that marks ownership.
fn object_meta(v: &Validated, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        labels: Some(labels::object(v.name(), component)),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::secret_refs::{SecretVersion, SecretVersions};
    use crate::build::test_support::{
        REFERENCES_EVERYTHING, build_observing, build_with, children, observed, validated,
    };
    use k8s_openapi::api::core::v1::Secret;

    const FIXTURES: [&str; 8] = [
        REFERENCES_EVERYTHING,
        "",
        "auth: {placement: Sidecar}",
        "livekit: {external: {url: 'wss://sfu.example.net'}}\ncredentials: {secretName: lk}",
        "livekit: {managed: {media: {udp: {range: {start: 31000, end: 31600, exposure: LoadBalancer}}}}}",
        "livekit: {managed: {turn: {domain: t.example.com, udp: {port: 30004}, tls: {port: 30003, secretName: c}}}}",
        "auth: {placement: Sidecar, appService: {enabled: true, registrationSecret: {name: synapse-as}}}",
        // Every optional kind and the disruption budget.
        "livekit: {managed: {replicas: 2, redis: {address: 'r:6379'}, media: {service: {externalTrafficPolicy: Local}}, turn: {domain: t.example.com, tls: {certManager: {issuerRef: {name: le}}}}}}\nmonitoring: {serviceMonitor: {enabled: true}}",
    ];

    fn pod_hash(children: &Children, name: &str) -> String {
        let Some(Child::Deployment(d)) = children.get("Deployment", name) else {
            panic!("no Deployment {name}");
        };
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .map(|a| a[HASH_ANNOTATION].clone())
            .expect("hash annotation")
    }

    #[test]
    fn every_child_is_labelled_unowned_and_in_apply_order() {
        for fixture in FIXTURES {
            let built = children(fixture);
            assert!(!built.0.is_empty());
            let kinds: Vec<_> = built.iter().map(Child::kind).collect();
            assert!(
                kinds.windows(2).all(|w| w[0] <= w[1]),
                "{fixture}: order {kinds:?}"
            );
            for child in built.iter() {
                let meta = child.metadata();
                let what = format!("{fixture}: {} {}", child.kind(), child.name());
                // Ownership is the apply layer's to stamp, so no builder can get it wrong.
                assert_eq!(meta.namespace, None, "{what}");
                assert_eq!(meta.owner_references, None, "{what}");
                let labels = meta.labels.as_ref().expect("labels");
                assert!(!labels.contains_key(labels::MANAGED_BY), "{what}");
                assert_eq!(labels[labels::INSTANCE], "demo", "{what}");
                assert!(child.name().len() <= 63, "{what}");
            }
        }
    }

    #[test]
    fn generated_credentials_secret_exists_only_when_generated() {
        assert!(children("").get("Secret", "demo-credentials").is_some());
        let external = children(FIXTURES[3]);
        assert!(external.get("Secret", "demo-credentials").is_none());
        assert!(external.get("Secret", "demo-keys").is_some());
        assert!(external.get("Deployment", "demo-livekit").is_none());
    }

    #[test]
    fn pod_hash_follows_config_and_credentials() {
        let creds = ApiCredentials::placeholder();
        let base = build_with(&validated(""), &creds);
        let same = build_with(&validated(""), &creds);
        assert_eq!(
            pod_hash(&base, "demo-livekit"),
            pod_hash(&same, "demo-livekit")
        );

        let config_changed = build_with(
            &validated("livekit: {managed: {config: {logging: {level: debug}}}}"),
            &creds,
        );
        assert_ne!(
            pod_hash(&base, "demo-livekit"),
            pod_hash(&config_changed, "demo-livekit")
        );
        // The auth service does not read LiveKit's config: no needless restart.
        assert_eq!(
            pod_hash(&base, "demo-auth"),
            pod_hash(&config_changed, "demo-auth")
        );

        let rotated = build_with(&validated(""), &ApiCredentials::from_random_bytes(&[9; 40]));
        assert_ne!(
            pod_hash(&base, "demo-livekit"),
            pod_hash(&rotated, "demo-livekit")
        );
        assert_ne!(
            pod_hash(&base, "demo-auth"),
            pod_hash(&rotated, "demo-auth")
        );
    }

    fn bumped(v: &Validated, name: &str) -> SecretVersions {
        let mut versions = observed(v);
        versions.insert(
            name,
            SecretVersion {
                uid: format!("uid-{name}"),
                resource_version: "2".into(),
            },
        );
        versions
    }

    #[test]
    fn a_referenced_secret_rolls_exactly_the_pods_that_read_it() {
        let v = validated(REFERENCES_EVERYTHING);
        let creds = ApiCredentials::placeholder();
        let base = build_with(&v, &creds);
        // (Secret, rolls LiveKit, rolls the authorisation service)
        for (name, livekit, auth) in [
            ("lk", true, true),
            ("redis-pw", true, false),
            ("turn-cert", true, false),
            ("auth-redis", false, true),
        ] {
            let after = build_observing(&v, &creds, &bumped(&v, name));
            assert_eq!(
                pod_hash(&base, "demo-livekit") != pod_hash(&after, "demo-livekit"),
                livekit,
                "{name}: LiveKit"
            );
            assert_eq!(
                pod_hash(&base, "demo-auth") != pod_hash(&after, "demo-auth"),
                auth,
                "{name}: auth"
            );
        }
        // A recreated Secret (new uid, same resourceVersion) is a change too.
        let mut recreated = observed(&v);
        recreated.insert(
            "redis-pw",
            SecretVersion {
                uid: "another".into(),
                resource_version: "1".into(),
            },
        );
        let after = build_observing(&v, &creds, &recreated);
        assert_ne!(
            pod_hash(&base, "demo-livekit"),
            pod_hash(&after, "demo-livekit")
        );
    }

    #[test]
    fn a_sidecar_rolls_with_the_auth_redis_secret() {
        let v = validated(
            "livekit: {managed: {replicas: 2, redis: {address: 'redis:6379'}, media: {service: {externalTrafficPolicy: Local}}}}\nauth: {placement: Sidecar, redis: {urlSecret: {name: auth-redis, key: url}}}",
        );
        let creds = ApiCredentials::placeholder();
        let base = build_with(&v, &creds);
        let after = build_observing(&v, &creds, &bumped(&v, "auth-redis"));
        assert_ne!(
            pod_hash(&base, "demo-livekit"),
            pod_hash(&after, "demo-livekit")
        );
    }

    #[test]
    fn user_credentials_enter_the_hash_by_version_not_content() {
        let v = validated(REFERENCES_EVERYTHING);
        // Same key (it is no secret: LiveKit's config names it, and every token carries it).
        let user = |secret: &str| {
            let data = [("api-key", "userkey"), ("api-secret", secret)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
                .collect();
            let secret = Secret {
                data: Some(data),
                ..Secret::default()
            };
            ApiCredentials::from_secret(&secret, "api-key", "api-secret").expect("valid")
        };
        let weak = user("passwordpasswordpasswordpassword");
        let other = user("0123456789abcdef0123456789abcdef");
        let versions = observed(&v);
        let a = build_observing(&v, &weak, &versions);
        let b = build_observing(&v, &other, &versions);
        for deployment in ["demo-livekit", "demo-auth"] {
            assert_eq!(
                pod_hash(&a, deployment),
                pod_hash(&b, deployment),
                "{deployment}: the hash must not depend on the secret's content"
            );
        }
        // The keys Secret does carry the new values: only the pods' trigger is the version.
        assert_ne!(a.get("Secret", "demo-keys"), b.get("Secret", "demo-keys"));
    }

    #[test]
    fn building_without_a_referenced_secrets_version_fails() {
        let v = validated(REFERENCES_EVERYTHING);
        let mut versions = SecretVersions::default();
        versions.insert(
            "lk",
            SecretVersion {
                uid: "u".into(),
                resource_version: "1".into(),
            },
        );
        let error = build(
            &v,
            &BuildInput {
                defaults: &OperatorDefaults::default(),
                credentials: &ApiCredentials::placeholder(),
                secrets: &versions,
                app_service: None,
            },
        )
        .unwrap_err();
        assert!(matches!(error, BuildError::UnobservedSecret(_)), "{error}");
    }

    const APP_SERVICE: &str =
        "auth: {appService: {enabled: true, registrationSecret: {name: synapse-as}}}";

    fn build_app_service(
        spec: &str,
        tokens: Option<&AppServiceTokens>,
    ) -> Result<Children, BuildError> {
        let v = validated(spec);
        build(
            &v,
            &BuildInput {
                defaults: &OperatorDefaults::default(),
                credentials: &ApiCredentials::placeholder(),
                secrets: &observed(&v),
                app_service: tokens,
            },
        )
    }

    #[test]
    fn app_service_mode_adds_its_secrets_and_rolls_the_pods_that_read_the_registration() {
        let a = AppServiceTokens::from_random_bytes(&[1; appservice::RANDOM_BYTES]);
        let b = AppServiceTokens::from_random_bytes(&[2; appservice::RANDOM_BYTES]);
        let off = build_app_service("", Some(&a)).expect("builds");
        assert!(
            off.get("Secret", "demo-appservice").is_none(),
            "off by default"
        );
        let on = build_app_service(APP_SERVICE, Some(&a)).expect("builds");
        assert!(on.get("Secret", "demo-appservice").is_some());
        assert!(on.get("Secret", "synapse-as").is_some());
        let rotated = build_app_service(APP_SERVICE, Some(&b)).expect("builds");
        assert_ne!(pod_hash(&off, "demo-auth"), pod_hash(&on, "demo-auth"));
        assert_ne!(pod_hash(&on, "demo-auth"), pod_hash(&rotated, "demo-auth"));
        // LiveKit does not read the registration, unless the service is its sidecar.
        assert_eq!(
            pod_hash(&on, "demo-livekit"),
            pod_hash(&rotated, "demo-livekit")
        );
        let sidecar = "auth: {placement: Sidecar, appService: {enabled: true}}";
        assert_ne!(
            pod_hash(
                &build_app_service(sidecar, Some(&a)).expect("builds"),
                "demo-livekit"
            ),
            pod_hash(
                &build_app_service(sidecar, Some(&b)).expect("builds"),
                "demo-livekit"
            ),
        );
        // Both tokens are only ever in Secrets.
        for child in rotated.iter() {
            if let Child::Secret(_) = child {
                continue;
            }
            let json = child.to_value().expect("serialise").to_string();
            assert!(
                !json.contains(b.as_token()) && !json.contains(b.hs_token()),
                "{} {}",
                child.kind(),
                child.name()
            );
        }
        let error = build_app_service(APP_SERVICE, None).unwrap_err();
        assert!(
            matches!(error, BuildError::MissingAppServiceTokens),
            "{error}"
        );
    }

    #[test]
    fn the_secret_appears_only_in_secrets() {
        let creds = ApiCredentials::from_random_bytes(&[5; 40]);
        for fixture in FIXTURES {
            for child in build_with(&validated(fixture), &creds).iter() {
                if let Child::Secret(_) = child {
                    continue;
                }
                let json = child.to_value().expect("serialise").to_string();
                assert!(
                    !json.contains(creds.api_secret()),
                    "{fixture}: {} {}",
                    child.kind(),
                    child.name()
                );
            }
        }
    }
}
