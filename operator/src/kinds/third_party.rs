//! Kinds of other projects that the operator owns: the Prometheus Operator's ServiceMonitor and
//! cert-manager's Certificate. k8s-openapi does not have them, so they are typed here with only the
//! fields the operator sets (a live object's other fields are ignored when it is read back, and
//! never sent, so server-side apply leaves them to whoever set them).
//!
//! Both are optional kinds in [`super::owned_kinds!`]: the cluster may not have their CRDs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// `monitoring.coreos.com/v1` ServiceMonitor: Prometheus scrapes the endpoints of the selected
/// Services (in the ServiceMonitor's namespace) on the named ports.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "ServiceMonitor",
    plural = "servicemonitors",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// The Services to scrape.
    pub selector: LabelSelector,
    /// What to scrape on each of them.
    pub endpoints: Vec<Endpoint>,
}

/// One scrape target of a ServiceMonitor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Name of the Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// HTTP path of the metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Scrape interval (a Prometheus duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Scrape timeout (a Prometheus duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_timeout: Option<String>,
}

/// `cert-manager.io/v1` Certificate: cert-manager keeps a signed certificate for `dnsNames` in the
/// Secret `secretName` (keys `tls.crt` and `tls.key`) and renews it before it expires.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "Certificate",
    plural = "certificates",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// The Secret cert-manager writes.
    pub secret_name: String,
    /// The names the certificate is for.
    pub dns_names: Vec<String>,
    /// The issuer that signs it.
    pub issuer_ref: CertificateIssuerRef,
}

/// A Certificate's `issuerRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateIssuerRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn the_kinds_address_the_upstream_apis() {
        assert_eq!(ServiceMonitor::api_version(&()), "monitoring.coreos.com/v1");
        assert_eq!(ServiceMonitor::plural(&()), "servicemonitors");
        assert_eq!(Certificate::api_version(&()), "cert-manager.io/v1");
        assert_eq!(Certificate::plural(&()), "certificates");
    }

    #[test]
    fn a_live_object_with_fields_we_do_not_set_reads_back() {
        let live = serde_json::json!({
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": {"name": "rtc-turn-tls", "namespace": "ns"},
            "spec": {
                "secretName": "rtc-turn-tls",
                "dnsNames": ["turn.example.com"],
                "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"},
                "privateKey": {"rotationPolicy": "Always"}
            },
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        let certificate: Certificate = serde_json::from_value(live).expect("reads");
        assert_eq!(certificate.spec.dns_names, ["turn.example.com"]);
        // What the operator sends carries only its own fields.
        let sent = serde_json::to_value(&certificate).expect("serialises");
        assert!(sent["spec"].get("privateKey").is_none() && sent.get("status").is_none());
    }
}
