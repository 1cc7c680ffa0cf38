//! The Ingress for `host`: token endpoints to the authorisation service, everything else (the
//! signalling WebSocket) to LiveKit. With an external LiveKit, `/sfu_webhook` is routed in too, as
//! the external server posts its webhooks through the public host. `/healthz` and `/metrics` stay
//! internal.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use matrixrtc_auth::contract;

use super::labels::Component;
use super::livekit_config::SIGNAL_PORT;
use super::{names, object_meta};
use crate::validate::{LiveKitPlan, Validated};

/// The Ingress, unless `spec.ingress.enabled` is false.
pub fn build(v: &Validated) -> Option<Ingress> {
    let spec = v.ingress()?;
    let auth = names::auth(v.name());
    let mut paths: Vec<HTTPIngressPath> = contract::path::PUBLIC
        .iter()
        .map(|p| path(p, &auth, contract::DEFAULT_PORT))
        .collect();
    match v.livekit() {
        LiveKitPlan::Managed(_) => paths.push(path("/", &names::livekit(v.name()), SIGNAL_PORT)),
        LiveKitPlan::External { .. } => {
            paths.push(path(
                contract::path::SFU_WEBHOOK,
                &auth,
                contract::DEFAULT_PORT,
            ));
        }
    }
    let mut metadata = object_meta(v, names::ingress(v.name()), Component::Transport);
    if !spec.annotations.is_empty() {
        metadata.annotations = Some(spec.annotations.clone());
    }
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![v.host().to_owned()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(v.host().to_owned()),
                http: Some(HTTPIngressRuleValue { paths }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

fn path(prefix: &str, service: &str, port: u16) -> HTTPIngressPath {
    HTTPIngressPath {
        path: Some(prefix.to_owned()),
        path_type: "Prefix".to_owned(),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: service.to_owned(),
                port: Some(ServiceBackendPort {
                    number: Some(i32::from(port)),
                    name: None,
                }),
            }),
            resource: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::build::test_support::{external, validated};

    /// `path -> service:port` of an Ingress, for assertions.
    fn routes(ingress: &Ingress) -> BTreeMap<String, String> {
        ingress
            .spec
            .iter()
            .flat_map(|s| s.rules.iter().flatten())
            .flat_map(|r| r.http.iter().flat_map(|h| h.paths.iter()))
            .map(|p| {
                let svc = p.backend.service.as_ref().expect("service backend");
                let port = svc.port.as_ref().and_then(|p| p.number).unwrap_or_default();
                (
                    p.path.clone().unwrap_or_default(),
                    format!("{}:{port}", svc.name),
                )
            })
            .collect()
    }

    #[test]
    fn managed_routes_tokens_to_auth_and_root_to_livekit() {
        let ingress = build(&validated(
            "ingress: {className: nginx, tlsSecretName: rtc-tls, annotations: {a: b}}",
        ))
        .expect("enabled");
        let expected: BTreeMap<String, String> = [
            ("/", "demo-livekit:7880"),
            ("/delegate_delayed_leave", "demo-auth:8080"),
            ("/get_token", "demo-auth:8080"),
            ("/sfu/get", "demo-auth:8080"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        assert_eq!(routes(&ingress), expected);
        let spec = ingress.spec.expect("spec");
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let tls = &spec.tls.expect("tls")[0];
        assert_eq!(tls.secret_name.as_deref(), Some("rtc-tls"));
        assert_eq!(tls.hosts, Some(vec!["rtc.example.com".to_owned()]));
        assert!(
            spec.rules.expect("rules")[0]
                .http
                .as_ref()
                .expect("http")
                .paths
                .iter()
                .all(|p| p.path_type == "Prefix")
        );
        assert_eq!(ingress.metadata.annotations.expect("annotations")["a"], "b");
    }

    #[test]
    fn external_livekit_routes_the_webhook_and_not_root() {
        let r = routes(&build(&external()).expect("enabled"));
        assert_eq!(
            r.get("/sfu_webhook").map(String::as_str),
            Some("demo-auth:8080")
        );
        assert!(!r.contains_key("/"));
        assert!(!r.contains_key("/healthz"));
    }

    #[test]
    fn disabled_ingress_builds_nothing() {
        assert!(build(&validated("ingress: {enabled: false}")).is_none());
    }
}
