//! The authorisation service part of the spec: image, placement, Redis, allowlist overrides, AS mode.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::*;
use super::*;

/// The authorisation service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("!has(self.replicas) || self.replicas <= 1 || has(self.redis)")
        .message("auth.redis is required when auth.replicas > 1: delegated leave jobs are shared through Redis")
        .field_path(".redis"),
    validation = Rule::new("!has(self.placement) || self.placement != 'Sidecar' || (!has(self.replicas) && !has(self.scheduling) && !has(self.podAnnotations) && !has(self.podLabels))")
        .message("with placement Sidecar the service runs in the LiveKit pods: replicas, scheduling and pod metadata come from livekit.managed"),
)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Container image; defaults to the operator's authorisation service image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Where the service runs: `Deployment` (default: its own Deployment and Service) or `Sidecar`
    /// (a container in each LiveKit pod; managed LiveKit only, and with several LiveKit pods it needs
    /// `redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_description_wins)]
    pub placement: Option<Placement>,
    /// Number of pods with placement `Deployment` (default 1). More than one needs `redis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// Container resources; defaults to requests cpu 50m / memory 50Mi and a 200Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Pod placement with placement `Deployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,
    /// Client-server API base URL per server name (e.g. `example.com: http://synapse.matrix.svc:8008`),
    /// skipping `.well-known` discovery for those homeservers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cs_api_url_overrides: BTreeMap<String, String>,
    /// Redis for delegated leave jobs; required when more than one instance runs (`replicas > 1`,
    /// or placement `Sidecar` with `livekit.managed.replicas > 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<AuthRedis>,
    /// Extra environment (e.g. `LIVEKIT_LOG_LEVEL`). Variables the operator sets (URL, credentials,
    /// allowlist, bind address, CS API overrides, Redis) are rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "env_list_schema")]
    pub extra_env: Vec<EnvVar>,
    /// Annotations of the service's pods with placement `Deployment` (e.g. a service-mesh opt-out).
    /// The operator's config hash annotation cannot be set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Labels of the service's pods with placement `Deployment`, added to the operator's (which
    /// cannot be overridden).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// Application-service (AS) mode: the homeserver of `serverName` authenticates its users and
    /// forwards their MSC4195 token requests to the service, which checks room membership first
    /// (MSC4502, MSC4512). Off unless `enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_service: Option<AppServiceSpec>,
}

/// Application-service mode of the authorisation service. The operator generates the `as_token` and
/// `hs_token` once into the Secret `<name>-appservice` (never rotated by itself: delete the Secret for
/// new tokens), renders the registration there (key `registration.yaml`) and points the service at
/// it; `status.appService` says how Synapse mounts it and `status.synapseConfig` what to add to
/// `homeserver.yaml`. Disabling deletes that Secret, so enabling again means new tokens.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AppServiceSpec {
    /// Turn AS mode on.
    #[serde(default)]
    pub enabled: bool,
    /// Where the homeserver forwards the token requests (`io.element.msc4512.proxy_url`): an http(s)
    /// URL without a path or trailing slash. Default: the service's in-cluster address,
    /// `http://<name>-auth.<namespace>.svc:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#@\\\\s]+$')")
        .message("proxyUrl must be an http(s) URL with no user, path, query or trailing slash: the homeserver appends the request path to it verbatim"))]
    pub proxy_url: Option<String>,
    /// Seconds between the membership monitor's sweeps (`LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS`),
    /// which remove participants who left the Matrix room; 0 disables it. Unset: the service's
    /// default (30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub membership_check_interval_seconds: Option<i32>,
    /// Also write the registration into this Secret, so that a homeserver running in the same
    /// namespace mounts it directly. The operator creates and owns it (it is deleted with the
    /// transport, or when this field changes); an existing Secret it did not create is never
    /// overwritten (status `Degraded`, reason `RegistrationSecretNotOwned`). Only the transport's
    /// namespace: writing Secrets elsewhere would let anyone who may create a transport write
    /// Secrets into namespaces they cannot otherwise touch. A ConfigMap is not offered: the
    /// registration carries both tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_secret: Option<RegistrationSecret>,
}

/// A Secret (in the transport's namespace) that the operator writes the registration into.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationSecret {
    /// Name of the Secret; not one the operator already writes or the pods read.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key (file name) of the registration in the Secret.
    #[serde(default = "default_registration_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')")
        .message("key must consist of letters, digits, '-', '_' and '.'"))]
    pub key: String,
}

/// Where the authorisation service runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Placement {
    /// Its own Deployment and Service.
    #[default]
    Deployment,
    /// A container in each LiveKit pod (managed LiveKit only).
    Sidecar,
}

/// Redis URL of the authorisation service. Exactly one of `url` or `urlSecret`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AuthRedis {
    /// `redis://host:port/db` without a password.
    Url(String),
    /// A Secret key holding the URL (use this when it carries a password).
    UrlSecret(SecretKeyRef),
}
