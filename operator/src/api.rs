//! The `MatrixRTCTransport` API (group `matrixrtc.dev`, version `v1alpha1`).
//!
//! One custom resource describes one MatrixRTC transport: a LiveKit SFU (run by the operator, or an
//! external one) plus the authorisation service that hands out LiveKit tokens to Matrix users.
//!
//! Shape decisions:
//! - Modes that exclude each other are externally tagged enums (`livekit: {managed: {...}}` or
//!   `livekit: {external: {...}}`), so the schema itself rejects a half-managed, half-external spec.
//! - Whatever the API server can check cheaply is a CEL rule (`x-kubernetes-validations`); the same
//!   rules, and the ones CEL cannot express, live in [`crate::validate`], which is what the controller
//!   trusts.
//! - Kubernetes pod knobs (affinity, tolerations, env, resources) are typed in Rust but carry a loose
//!   schema: the API server validates them again when the operator applies the Deployment, and their
//!   full 1.33 schemas would bloat the CRD and advertise fields a 1.28 cluster does not know.
//! - Defaults that depend on the operator's command line (images) are `Option`s resolved at build
//!   time; static defaults are in the schema.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod auth;
mod ingress;
mod livekit;
mod schema;
mod status;
pub use auth::*;
pub use ingress::*;
pub use livekit::*;
use schema::*;
pub use status::*;
mod operations;
pub use operations::{
    DisruptionBudgetSpec, IssuerRef, MonitoringSpec, ServiceMonitorSpec, TurnCertManager,
};

/// API group of every kind this operator serves.
pub const GROUP: &str = "matrixrtc.dev";
/// The only served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Condition types the operator maintains in `status.conditions`.
pub mod condition {
    /// Every component is rolled out and ready; the transport serves calls.
    pub const READY: &str = "Ready";
    /// A rollout is under way (generation not yet observed, or replicas not yet updated).
    pub const PROGRESSING: &str = "Progressing";
    /// The spec is invalid, an apply failed, or a component is unavailable.
    pub const DEGRADED: &str = "Degraded";
}

/// A MatrixRTC transport: LiveKit (managed or external) plus the authorisation service that issues
/// LiveKit tokens to Matrix users of the listed homeservers (MSC4195).
// Each `printcolumn(...)` repeats `type_`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "matrixrtc.dev",
    version = "v1alpha1",
    kind = "MatrixRTCTransport",
    plural = "matrixrtctransports",
    singular = "matrixrtctransport",
    shortname = "mrtc",
    namespaced,
    status = "MatrixRTCTransportStatus",
    derive = "PartialEq",
    doc = "A MatrixRTC transport: LiveKit plus the MatrixRTC authorisation service",
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.host"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!has(self.livekit.external) || has(self.credentials)")
        .message("an external LiveKit needs credentials.secretName: the operator cannot generate keys for a server it does not run")
        .field_path(".credentials"),
    validation = Rule::new("!has(self.livekit.external) || !has(self.auth.placement) || self.auth.placement != 'Sidecar'")
        .message("auth.placement Sidecar needs a managed LiveKit")
        .field_path(".auth.placement"),
    validation = Rule::new("!has(self.auth.placement) || self.auth.placement != 'Sidecar' || !has(self.livekit.managed) || !has(self.livekit.managed.replicas) || self.livekit.managed.replicas <= 1 || has(self.auth.redis)")
        .message("auth.redis is required with placement Sidecar when livekit.managed.replicas > 1: each LiveKit pod runs its own authorisation service, so delegated leave jobs are shared through Redis")
        .field_path(".auth.redis"),
)]
#[serde(rename_all = "camelCase")]
pub struct MatrixRTCTransportSpec {
    /// Matrix server name of the homeserver this transport serves (e.g. `example.com`).
    #[schemars(length(min = 1, max = 253))]
    pub server_name: String,
    /// Public DNS name for the SFU websocket and the authorisation service (e.g. `rtc.example.com`);
    /// clients are pointed at `https://<host>`.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Which homeservers' users get full access.
    #[serde(default)]
    pub homeservers: Homeservers,
    /// The SFU: managed by the operator (default) or external.
    #[serde(default)]
    pub livekit: LiveKitSpec,
    /// The authorisation service.
    #[serde(default)]
    pub auth: AuthSpec,
    /// An existing Secret holding the LiveKit API key and secret. Unset: the operator generates a key
    /// and a 32-byte random secret once into the Secret `<name>-credentials` and never rotates them
    /// by itself. Required for an external LiveKit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsSecretRef>,
    /// The Ingress that publishes `host`.
    #[serde(default)]
    pub ingress: IngressSpec,
    /// Secrets for pulling images from a private registry (the `imagePullSecrets` of the LiveKit and
    /// authorisation service pods), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub image_pull_secrets: Vec<String>,
    /// Prometheus scraping of LiveKit and the authorisation service (off unless asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
}

/// Homeserver allowlists.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Homeservers {
    /// Server names whose users may create rooms on the SFU and delegate delayed leave events.
    /// Unset means `[serverName]`. `"*"` (everyone) is allowed only as the sole entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 253)))]
    #[x_kube(validation = Rule::new("!('*' in self) || size(self) == 1")
        .message("'*' must be the only entry of fullAccess"))]
    pub full_access: Option<Vec<String>>,
}

/// An existing Secret with the LiveKit API key and secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// Name of the Secret (in the transport's namespace). Changing it rolls the pods.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key of the API key in the Secret.
    #[serde(default = "default_api_key_field")]
    pub api_key_field: String,
    /// Key of the API secret (at least 32 characters) in the Secret.
    #[serde(default = "default_api_secret_field")]
    pub api_secret_field: String,
}

#[cfg(test)]
mod cel_tests;
