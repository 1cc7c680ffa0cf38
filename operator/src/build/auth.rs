//! The authorisation service: its container (used by its own Deployment, or as a sidecar in the
//! LiveKit pods) and its Deployment.
//!
//! Environment follows the service's contract (`matrixrtc_auth::contract`), so a renamed variable
//! breaks this build rather than a deployment. The key and secret are files from the keys Secret
//! (`LIVEKIT_KEY_FROM_FILE` / `LIVEKIT_SECRET_FROM_FILE`, which the reference service understands
//! too), never plain environment values.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, Probe, SecretKeySelector, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use matrixrtc_auth::contract::{self, env};

use super::labels::{self, Component};
use super::pod::{self, HASH_ANNOTATION};
use super::services::AUTH_HTTP;
use super::{appservice, livekit_config, names, object_meta};
use crate::api::AuthRedis;
use crate::defaults::OperatorDefaults;
use crate::plan::{API_KEY_FIELD, API_SECRET_FIELD};
use crate::plan::{AuthPlacement, LiveKitPlan, Validated};

/// uid/gid of the service (as ESS runs it).
pub const UID: i64 = 10033;
/// Container name.
pub const CONTAINER: &str = "auth";
/// Volume with the key and secret files.
pub const CREDENTIALS_VOLUME: &str = "auth-credentials";
/// Where the key and secret files are mounted.
pub const CREDENTIALS_DIR: &str = "/etc/matrixrtc-auth/credentials";

/// The URL the service hands to clients: the public host for a managed LiveKit.
fn livekit_url(v: &Validated) -> String {
    match v.livekit() {
        LiveKitPlan::Managed(_) => format!("wss://{}", v.host()),
        LiveKitPlan::External { url } => url.clone(),
    }
}

/// Where the service calls LiveKit's API: for a managed LiveKit its in-cluster address, so the calls
/// do not leave the cluster and come back in through the public host and the Ingress (which would
/// need hairpin routing). `None` for an external LiveKit: the service then uses `LIVEKIT_URL`.
fn livekit_api_url(v: &Validated) -> Option<String> {
    match v.livekit() {
        // Same pod, same network namespace (also with hostNetwork).
        LiveKitPlan::Managed(_) if v.auth_is_sidecar() => {
            Some(format!("http://127.0.0.1:{}", livekit_config::SIGNAL_PORT))
        }
        LiveKitPlan::Managed(_) => Some(format!(
            "http://{}.{}.svc:{}",
            names::livekit(v.name()),
            v.namespace(),
            livekit_config::SIGNAL_PORT
        )),
        LiveKitPlan::External { .. } => None,
    }
}

fn value(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    }
}

/// The operator's environment, then the user's `extraEnv` (validation rejects clashes, and later
/// entries can reference ours with `$(NAME)`).
pub fn env(v: &Validated) -> Vec<EnvVar> {
    let mut vars = vec![
        value(env::LIVEKIT_URL, livekit_url(v)),
        value(
            env::LIVEKIT_KEY_FROM_FILE,
            format!("{CREDENTIALS_DIR}/{API_KEY_FIELD}"),
        ),
        value(
            env::LIVEKIT_SECRET_FROM_FILE,
            format!("{CREDENTIALS_DIR}/{API_SECRET_FIELD}"),
        ),
        value(
            env::LIVEKIT_FULL_ACCESS_HOMESERVERS,
            v.full_access().env_value(),
        ),
        // The own homeserver is reached wherever it resolves, private addresses included: with a
        // full-access list of `*` the SSRF guard would otherwise refuse an in-cluster homeserver.
        value(env::LIVEKIT_TRUSTED_HOMESERVERS, v.server_name().to_owned()),
        // The pod name: a container restarted in the same pod takes back its delegated-leave jobs at
        // once instead of waiting for its old leases to lapse. Unique among live pods, as required.
        EnvVar {
            name: env::LIVEKIT_REPLICA_ID.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".to_owned()),
                    field_path: "metadata.name".to_owned(),
                }),
                ..EnvVarSource::default()
            }),
        },
        value(
            env::LIVEKIT_JWT_BIND,
            format!(":{}", contract::DEFAULT_PORT),
        ),
    ];
    if let Some(url) = livekit_api_url(v) {
        vars.push(value(env::LIVEKIT_API_URL, url));
    }
    let auth = v.auth();
    if !auth.cs_api_url_overrides.is_empty() {
        let overrides: Vec<String> = auth
            .cs_api_url_overrides
            .iter()
            .map(|(server, url)| format!("{server}={url}"))
            .collect();
        vars.push(value(
            env::LIVEKIT_CS_API_URL_OVERRIDES,
            overrides.join(","),
        ));
    }
    match &auth.redis {
        Some(AuthRedis::Url(url)) => vars.push(value(env::LIVEKIT_REDIS_URL, url.clone())),
        Some(AuthRedis::UrlSecret(secret)) => vars.push(EnvVar {
            name: env::LIVEKIT_REDIS_URL.to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        }),
        None => {}
    }
    if let Some(plan) = &auth.app_service {
        vars.extend(appservice::env(v, plan));
    }
    vars.extend(auth.extra_env.iter().cloned());
    vars
}

fn health_probe() -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(contract::path::HEALTHZ.to_owned()),
            port: IntOrString::String(AUTH_HTTP.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        timeout_seconds: Some(1),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// The service's container.
pub fn container(v: &Validated, defaults: &OperatorDefaults) -> Container {
    let auth = v.auth();
    Container {
        name: CONTAINER.to_owned(),
        image: Some(
            auth.image
                .clone()
                .unwrap_or_else(|| defaults.auth_image.clone()),
        ),
        env: Some(env(v)),
        // Not `http`: as a sidecar it shares the pod with LiveKit's `http` port, and port names
        // must be unique in a pod.
        ports: Some(vec![ContainerPort {
            name: Some(AUTH_HTTP.to_owned()),
            container_port: i32::from(contract::DEFAULT_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        volume_mounts: Some(
            [VolumeMount {
                name: CREDENTIALS_VOLUME.to_owned(),
                mount_path: CREDENTIALS_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            }]
            .into_iter()
            .chain(auth.app_service.as_ref().map(|_| appservice::mount()))
            .collect(),
        ),
        liveness_probe: Some(health_probe()),
        readiness_probe: Some(health_probe()),
        resources: Some(pod::resources(
            auth.resources.as_ref(),
            "50m",
            "50Mi",
            "200Mi",
        )),
        security_context: Some(pod::container_security_context(UID)),
        ..Container::default()
    }
}

/// The volumes the service's container mounts: the key and secret files from the keys Secret, and in AS
/// mode the registration.
pub fn volumes(v: &Validated) -> Vec<Volume> {
    let credentials = pod::secret_volume(
        CREDENTIALS_VOLUME,
        &names::keys(v.name()),
        &[API_KEY_FIELD, API_SECRET_FIELD],
    );
    let registration = v.auth().app_service.as_ref().map(|_| appservice::volume(v));
    std::iter::once(credentials).chain(registration).collect()
}

/// The Deployment `<name>-auth`, unless the service runs as a sidecar. `hash` covers the credentials
/// and the referenced Secrets' versions, so new credentials roll the pods.
pub fn deployment(v: &Validated, defaults: &OperatorDefaults, hash: &str) -> Option<Deployment> {
    let AuthPlacement::Deployment {
        replicas,
        scheduling,
    } = &v.auth().placement
    else {
        return None;
    };
    let selector = labels::selector(v.name(), Component::Auth);
    let mut spec = PodSpec {
        containers: vec![container(v, defaults)],
        volumes: Some(volumes(v)),
        service_account_name: Some(names::auth(v.name())),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(pod::pod_security_context(UID)),
        image_pull_secrets: pod::image_pull_secrets(v),
        ..PodSpec::default()
    };
    pod::apply_scheduling(&mut spec, scheduling, &selector);
    let mut annotations = v.auth().pod_annotations.clone();
    annotations.insert(HASH_ANNOTATION.to_owned(), hash.to_owned());
    Some(Deployment {
        metadata: object_meta(v, names::auth(v.name()), Component::Auth),
        spec: Some(DeploymentSpec {
            replicas: Some(*replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            // Start the new pod before stopping an old one: no gap in token issuance.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::pod_with(
                        v.name(),
                        Component::Auth,
                        &v.auth().pod_labels,
                    )),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(spec),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::build::test_support::{external, validated};

    fn env_map(v: &Validated) -> BTreeMap<String, EnvVar> {
        env(v).into_iter().map(|e| (e.name.clone(), e)).collect()
    }

    fn plain(vars: &BTreeMap<String, EnvVar>, name: &str) -> Option<String> {
        vars.get(name).and_then(|e| e.value.clone())
    }

    #[test]
    fn env_follows_the_contract() {
        let vars = env_map(&validated(
            r#"
homeservers: {fullAccess: [example.com, other.example]}
auth:
  csApiUrlOverrides: {example.com: "http://synapse.matrix.svc:8008"}
  redis: {urlSecret: {name: redis, key: url}}
  extraEnv: [{name: LIVEKIT_LOG_LEVEL, value: debug}]
"#,
        ));
        assert_eq!(
            plain(&vars, env::LIVEKIT_URL).as_deref(),
            Some("wss://rtc.example.com")
        );
        assert_eq!(
            plain(&vars, env::LIVEKIT_KEY_FROM_FILE).as_deref(),
            Some("/etc/matrixrtc-auth/credentials/api-key")
        );
        assert_eq!(
            plain(&vars, env::LIVEKIT_SECRET_FROM_FILE).as_deref(),
            Some("/etc/matrixrtc-auth/credentials/api-secret")
        );
        assert_eq!(
            plain(&vars, env::LIVEKIT_FULL_ACCESS_HOMESERVERS).as_deref(),
            Some("example.com,other.example")
        );
        assert_eq!(
            plain(&vars, env::LIVEKIT_JWT_BIND).as_deref(),
            Some(":8080")
        );
        assert_eq!(
            plain(&vars, env::LIVEKIT_CS_API_URL_OVERRIDES).as_deref(),
            Some("example.com=http://synapse.matrix.svc:8008")
        );
        let redis = vars[env::LIVEKIT_REDIS_URL]
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
            .expect("secret ref");
        assert_eq!((redis.name.as_str(), redis.key.as_str()), ("redis", "url"));
        assert_eq!(plain(&vars, "LIVEKIT_LOG_LEVEL").as_deref(), Some("debug"));
        assert_eq!(
            plain(&vars, env::LIVEKIT_TRUSTED_HOMESERVERS).as_deref(),
            Some("example.com")
        );
        let replica = vars[env::LIVEKIT_REPLICA_ID]
            .value_from
            .as_ref()
            .and_then(|f| f.field_ref.as_ref())
            .expect("field ref");
        assert_eq!(replica.field_path, "metadata.name");
        // No secret ever travels as a plain value.
        assert!(!vars.contains_key(env::LIVEKIT_SECRET) && !vars.contains_key(env::LIVEKIT_KEY));
    }

    #[test]
    fn defaults_allow_only_the_own_server_and_external_url_is_passed_through() {
        let vars = env_map(&validated(""));
        assert_eq!(
            plain(&vars, env::LIVEKIT_FULL_ACCESS_HOMESERVERS).as_deref(),
            Some("example.com")
        );
        assert!(!vars.contains_key(env::LIVEKIT_REDIS_URL));
        assert!(!vars.contains_key(env::LIVEKIT_CS_API_URL_OVERRIDES));
        let vars = env_map(&external());
        assert_eq!(
            plain(&vars, env::LIVEKIT_URL).as_deref(),
            Some("wss://sfu.example.net")
        );
        let vars = env_map(&validated("homeservers: {fullAccess: ['*']}"));
        assert_eq!(
            plain(&vars, env::LIVEKIT_FULL_ACCESS_HOMESERVERS).as_deref(),
            Some("*")
        );
        // Under the wildcard no homeserver is named, so the own one is trusted explicitly.
        assert_eq!(
            plain(&vars, env::LIVEKIT_TRUSTED_HOMESERVERS).as_deref(),
            Some("example.com")
        );
    }

    #[test]
    fn livekit_api_is_called_inside_the_cluster_when_the_operator_runs_livekit() {
        let api_url = |spec: &str| plain(&env_map(&validated(spec)), env::LIVEKIT_API_URL);
        assert_eq!(
            api_url("").as_deref(),
            Some("http://demo-livekit.rtc.svc:7880")
        );
        assert_eq!(
            api_url("auth: {placement: Sidecar}").as_deref(),
            Some("http://127.0.0.1:7880")
        );
        // Clients still get the public URL.
        assert_eq!(
            plain(&env_map(&validated("")), env::LIVEKIT_URL).as_deref(),
            Some("wss://rtc.example.com")
        );
        // An external server is called where it says it is (or where extraEnv says).
        assert!(!env_map(&external()).contains_key(env::LIVEKIT_API_URL));
        let vars = env_map(&validated(
            "livekit: {external: {url: 'wss://sfu.example.net'}}\ncredentials: {secretName: lk}\nauth: {extraEnv: [{name: LIVEKIT_API_URL, value: 'http://sfu.internal:7880'}]}",
        ));
        assert_eq!(
            plain(&vars, env::LIVEKIT_API_URL).as_deref(),
            Some("http://sfu.internal:7880")
        );
    }

    #[test]
    fn deployment_is_hardened_and_probed() {
        let d = deployment(
            &validated("auth: {replicas: 1}"),
            &OperatorDefaults::default(),
            "h1",
        )
        .expect("deployment");
        let spec = d.spec.expect("spec");
        let template = spec.template;
        assert_eq!(
            template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .map(|a| a[HASH_ANNOTATION].clone()),
            Some("h1".to_owned())
        );
        let pod = template.spec.expect("pod");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.expect("psc");
        assert_eq!(
            (psc.run_as_user, psc.run_as_group, psc.fs_group),
            (Some(UID), Some(UID), Some(UID))
        );
        assert_eq!(psc.run_as_non_root, Some(true));
        let c = &pod.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some(crate::defaults::DEFAULT_AUTH_IMAGE)
        );
        let probe = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("probe");
        assert_eq!(probe.path.as_deref(), Some("/healthz"));
        let volume = pod.volumes.expect("volumes")[0]
            .secret
            .clone()
            .expect("secret");
        assert_eq!(volume.secret_name.as_deref(), Some("demo-keys"));
        assert_eq!(volume.default_mode.map(|m| m & 0o007), Some(0));
    }

    #[test]
    fn sidecar_has_no_deployment_and_images_can_be_overridden() {
        assert!(
            deployment(
                &validated("auth: {placement: Sidecar}"),
                &OperatorDefaults::default(),
                "h"
            )
            .is_none()
        );
        let c = container(
            &validated("auth: {image: 'example/auth:1'}"),
            &OperatorDefaults::default(),
        );
        assert_eq!(c.image.as_deref(), Some("example/auth:1"));
        let defaults = OperatorDefaults {
            auth_image: "mirror/auth:2".into(),
            ..OperatorDefaults::default()
        };
        assert_eq!(
            container(&validated(""), &defaults).image.as_deref(),
            Some("mirror/auth:2")
        );
    }

    #[test]
    fn deployment_pods_carry_user_metadata_and_pull_secrets() {
        let d = deployment(
            &validated(
                "imagePullSecrets: [regcred]\nauth: {podAnnotations: {linkerd.io/inject: disabled}, podLabels: {team: rtc}}",
            ),
            &OperatorDefaults::default(),
            "h1",
        )
        .expect("deployment");
        let template = d.spec.expect("spec").template;
        let meta = template.metadata.expect("metadata");
        let annotations = meta.annotations.expect("annotations");
        assert_eq!(annotations["linkerd.io/inject"], "disabled");
        assert_eq!(annotations[HASH_ANNOTATION], "h1");
        let pod_labels = meta.labels.expect("labels");
        assert_eq!(pod_labels["team"], "rtc");
        assert_eq!(pod_labels[labels::COMPONENT], "auth");
        let secrets = template
            .spec
            .expect("pod")
            .image_pull_secrets
            .expect("pull secrets");
        assert_eq!(secrets[0].name, "regcred");
    }
}
