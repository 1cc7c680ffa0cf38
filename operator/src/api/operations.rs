//! The operational surface of the operands: how voluntary disruptions may take LiveKit pods down
//! (a PodDisruptionBudget), how Prometheus finds their metrics (ServiceMonitors), and where the TURN
//! certificate comes from when cert-manager issues it (a Certificate).
//!
//! ServiceMonitor and Certificate are kinds of other projects (the Prometheus Operator, cert-manager):
//! the operator creates them only when the spec asks for them, and when the cluster does not serve the
//! kind it applies everything else and says so in the status (`Degraded`, reason `KindNotInstalled`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The PodDisruptionBudget of the LiveKit pods, made only while `replicas > 1` (with one pod a budget
/// would either block every node drain or allow nothing; it is deleted when replicas drop to 1).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetSpec {
    /// Create the budget (default `true`). `false` leaves node drains and the cluster autoscaler free
    /// to evict every LiveKit pod at once.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// LiveKit pods a voluntary disruption (a node drain, the cluster autoscaler) may take down at
    /// once (default 1: calls move to the other pods while one drains). 0 is not allowed: it would
    /// block node drains for good.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 1, max = 100))]
    pub max_unavailable: i32,
}

impl Default for DisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: default_max_unavailable(),
        }
    }
}

/// How Prometheus finds the metrics of LiveKit and of the authorisation service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Prometheus Operator ServiceMonitors (`monitoring.coreos.com/v1`): one for LiveKit's metrics
    /// port (6789, managed LiveKit only) and one for the authorisation service's `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor: Option<ServiceMonitorSpec>,
}

/// The ServiceMonitors the operator creates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Create them. Needs the Prometheus Operator's ServiceMonitor CRD in the cluster; without it the
    /// rest is applied and the status says that the kind is not installed.
    #[serde(default)]
    pub enabled: bool,
    /// How often Prometheus scrapes (a Prometheus duration, default `30s`).
    #[serde(default = "default_interval")]
    #[schemars(length(min = 2, max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: String,
    /// How long one scrape may take (a Prometheus duration); unset: Prometheus's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub scrape_timeout: Option<String>,
    /// Labels of the ServiceMonitors, e.g. `release: kube-prometheus-stack` for a Prometheus that
    /// selects ServiceMonitors by label. The operator's own labels win.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A cert-manager (`cert-manager.io/v1`) Certificate for the TURN domain, issued into the Secret
/// `<name>-turn-tls` that the LiveKit pods mount. The pods start once it is issued and roll when it
/// is renewed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnCertManager {
    /// The cert-manager issuer that signs it.
    pub issuer_ref: IssuerRef,
}

/// A cert-manager issuer, as in a Certificate's `issuerRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the issuer (an `Issuer` in the transport's namespace, or a `ClusterIssuer`).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (default) or `ClusterIssuer`, or the kind of an external issuer (with `group`).
    #[serde(default = "default_issuer_kind")]
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// API group of an external issuer; unset: `cert-manager.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub group: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_max_unavailable() -> i32 {
    1
}

fn default_interval() -> String {
    "30s".to_owned()
}

fn default_issuer_kind() -> String {
    "Issuer".to_owned()
}
