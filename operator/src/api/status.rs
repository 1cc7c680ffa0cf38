//! The observed state the controller writes (`status`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::*;

/// Observed state, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatrixRTCTransportStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Ready LiveKit pods (managed LiveKit only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub livekit_ready_replicas: Option<i32>,
    /// Ready authorisation service pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_ready_replicas: Option<i32>,
    /// `https://<host>`: what clients use as `livekit_service_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub livekit_service_url: Option<String>,
    /// JSON to merge into `/.well-known/matrix/client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub well_known_client: Option<String>,
    /// YAML to merge into Synapse's `homeserver.yaml`, as Element Call's self-hosting guide and ESS
    /// configure it: `experimental_features` (MSC4143, MSC4222, MSC3266), `matrix_rtc.transports`,
    /// `max_event_delay_duration` and the `rc_message` and `rc_delayed_event_mgmt` rate limits, each
    /// with a comment saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synapse_config: Option<String>,
    /// Where the application-service registration is and how Synapse mounts it (AS mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_service: Option<AppServiceStatus>,
}

/// Where Synapse finds the application-service registration. Names only: the tokens stay in the
/// Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppServiceStatus {
    /// The Secret (in the transport's namespace) that holds the registration for Synapse.
    pub registration_secret: String,
    /// Its key holding the registration YAML.
    pub registration_key: String,
    /// The path `status.synapseConfig` lists in `app_service_config_files`.
    pub synapse_path: String,
    /// Pod spec YAML for Synapse: a volume from that Secret and the mount that puts the registration
    /// at `synapsePath` (Synapse reads it at startup: restart it after the tokens change).
    pub synapse_mount: String,
}
