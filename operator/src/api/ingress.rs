//! The Ingress part of the spec: host routing and the controller whose WebSocket annotations apply.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::*;

/// The Ingress for `host`: `/sfu/get`, `/get_token`, `/delegate_delayed_leave` (and `/sfu_webhook`
/// for an external LiveKit) to the authorisation service, `/` to LiveKit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Create the Ingress. `false`: publish `host` some other way (e.g. a Gateway).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `ingressClassName`; unset uses the cluster's default IngressClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Annotations on the Ingress (e.g. for cert-manager). They win over the operator's WebSocket
    /// annotations for `controllerType`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The Ingress controller, for the annotations that keep LiveKit's long-lived signalling
    /// WebSockets open: `ingress-nginx` (proxy read and send timeouts 120 s, buffering off, as ESS
    /// sets them) or `None`. Unset: `ingress-nginx` when `className` is `nginx`, otherwise `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_description_wins)]
    pub controller_type: Option<IngressController>,
    /// TLS Secret for `host`; unset means no `tls` section (TLS terminated elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

impl Default for IngressSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            class_name: None,
            annotations: BTreeMap::new(),
            controller_type: None,
            tls_secret_name: None,
        }
    }
}

/// Ingress controllers whose WebSocket settings the operator knows.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum IngressController {
    /// kubernetes/ingress-nginx (`nginx.ingress.kubernetes.io/*` annotations).
    #[serde(rename = "ingress-nginx")]
    IngressNginx,
    /// No controller-specific annotations.
    None,
}
