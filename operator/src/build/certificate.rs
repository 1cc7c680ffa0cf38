//! The cert-manager Certificate for the TURN domain (`spec.livekit.managed.turn.tls.certManager`).
//!
//! cert-manager issues it into the Secret `<name>-turn-tls`, which the LiveKit pods mount as their
//! TURN/TLS certificate (see [`super::livekit`]). That Secret is a referenced Secret of the LiveKit
//! pods ([`super::secret_refs::Use::TurnTlsIssued`]): its version is in their template hash, so a
//! renewal rolls them and LiveKit serves the new certificate.

use super::labels::Component;
use super::{names, object_meta};
use crate::kinds::third_party::{Certificate, CertificateIssuerRef, CertificateSpec};
use crate::plan::{LiveKitPlan, Validated};

/// `<name>-turn-tls`, when TURN/TLS asks cert-manager for its certificate.
pub fn build(v: &Validated) -> Option<Certificate> {
    let LiveKitPlan::Managed(plan) = v.livekit() else {
        return None;
    };
    let turn = plan.turn.as_ref()?;
    let tls = turn.tls.as_ref()?;
    let issuer = tls.issuer.as_ref()?;
    let name = names::turn_tls(v.name());
    Some(Certificate {
        metadata: object_meta(v, name.clone(), Component::Sfu),
        spec: CertificateSpec {
            secret_name: name,
            dns_names: vec![turn.domain.clone()],
            issuer_ref: CertificateIssuerRef {
                name: issuer.name.clone(),
                kind: Some(issuer.kind.clone()),
                group: issuer.group.clone(),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::{children, validated};
    use crate::kinds::Child;

    const ISSUED: &str = "livekit: {managed: {turn: {domain: turn.example.com, tls: {certManager: {issuerRef: {name: letsencrypt, kind: ClusterIssuer}}}}}}";

    #[test]
    fn the_certificate_is_for_the_turn_domain_and_writes_the_secret_the_pods_mount() {
        let certificate = build(&validated(ISSUED)).expect("a Certificate");
        assert_eq!(certificate.metadata.name.as_deref(), Some("demo-turn-tls"));
        assert_eq!(certificate.spec.secret_name, "demo-turn-tls");
        assert_eq!(certificate.spec.dns_names, ["turn.example.com"]);
        assert_eq!(certificate.spec.issuer_ref.name, "letsencrypt");
        assert_eq!(
            certificate.spec.issuer_ref.kind.as_deref(),
            Some("ClusterIssuer")
        );
        assert_eq!(certificate.spec.issuer_ref.group, None);

        let built = children(ISSUED);
        let Some(Child::Deployment(d)) = built.get("Deployment", "demo-livekit") else {
            panic!("no LiveKit Deployment");
        };
        let volumes = d
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.volumes.clone())
            .unwrap_or_default();
        assert!(
            volumes
                .iter()
                .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref())
                    == Some("demo-turn-tls")),
            "the pods mount the issued Secret: {volumes:?}"
        );
        let Some(Child::ConfigMap(config)) = built.get("ConfigMap", "demo-livekit") else {
            panic!("no LiveKit ConfigMap");
        };
        let text = config
            .data
            .as_ref()
            .map(|d| d.values().cloned().collect::<String>());
        assert!(
            text.is_some_and(|t| t.contains("external_tls: false")),
            "LiveKit terminates TLS itself"
        );
    }

    #[test]
    fn the_issuer_kind_defaults_to_issuer_and_a_group_passes_through() {
        let certificate = build(&validated(
            "livekit: {managed: {turn: {domain: t.example.com, tls: {certManager: {issuerRef: {name: pca, group: awspca.cert-manager.io}}}}}}",
        ))
        .expect("a Certificate");
        assert_eq!(certificate.spec.issuer_ref.kind.as_deref(), Some("Issuer"));
        assert_eq!(
            certificate.spec.issuer_ref.group.as_deref(),
            Some("awspca.cert-manager.io")
        );
    }

    #[test]
    fn no_certificate_without_cert_manager() {
        assert!(build(&validated("")).is_none());
        assert!(
            build(&validated(
                "livekit: {managed: {turn: {domain: t.example.com, tls: {secretName: mine}}}}"
            ))
            .is_none()
        );
    }
}
