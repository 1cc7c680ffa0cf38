//! The Ingress for `host`: token endpoints to the authorisation service, everything else (the
//! signalling WebSocket) to LiveKit. With an external LiveKit, `/sfu_webhook` is routed in too, as
//! the external server posts its webhooks through the public host. `/healthz` and `/metrics` stay
//! internal.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use matrixrtc_auth::contract;

use super::labels::Component;
use super::livekit_config::SIGNAL_PORT;
use super::{names, object_meta};
use crate::api::IngressController;
use crate::plan::{LiveKitPlan, Validated};

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
    let mut annotations = websocket_annotations(v.ingress_controller());
    annotations.extend(spec.annotations.clone());
    if !annotations.is_empty() {
        metadata.annotations = Some(annotations);
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

/// Seconds ingress-nginx keeps an idle proxied connection open (ESS's value): LiveKit pings its
/// signalling WebSockets well within that, and the default 60 s would drop quiet ones.
pub const NGINX_WEBSOCKET_TIMEOUT: &str = "120";

/// Annotations that keep the signalling WebSockets open on `controller`; the user's annotations
/// are laid over them.
fn websocket_annotations(controller: IngressController) -> BTreeMap<String, String> {
    match controller {
        IngressController::IngressNginx => [
            (
                "nginx.ingress.kubernetes.io/proxy-read-timeout",
                NGINX_WEBSOCKET_TIMEOUT,
            ),
            (
                "nginx.ingress.kubernetes.io/proxy-send-timeout",
                NGINX_WEBSOCKET_TIMEOUT,
            ),
            // Stream signalling messages as they come instead of collecting a buffer.
            ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        IngressController::None => BTreeMap::new(),
    }
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

    #[test]
    fn nginx_gets_websocket_annotations_that_the_user_can_override() {
        let annotations = |spec: &str| {
            build(&validated(spec))
                .expect("enabled")
                .metadata
                .annotations
                .unwrap_or_default()
        };
        let nginx = annotations("ingress: {className: nginx}");
        assert_eq!(
            nginx["nginx.ingress.kubernetes.io/proxy-read-timeout"],
            "120"
        );
        assert_eq!(
            nginx["nginx.ingress.kubernetes.io/proxy-send-timeout"],
            "120"
        );
        assert_eq!(nginx["nginx.ingress.kubernetes.io/proxy-buffering"], "off");
        let overridden = annotations(
            "ingress: {className: nginx, annotations: {nginx.ingress.kubernetes.io/proxy-read-timeout: '3600'}}",
        );
        assert_eq!(
            overridden["nginx.ingress.kubernetes.io/proxy-read-timeout"],
            "3600"
        );
        assert_eq!(
            overridden["nginx.ingress.kubernetes.io/proxy-buffering"],
            "off"
        );
        assert!(annotations("ingress: {className: traefik}").is_empty());
        assert!(annotations("ingress: {className: nginx, controllerType: None}").is_empty());
        assert_eq!(
            annotations("ingress: {controllerType: ingress-nginx}").len(),
            3
        );
    }
}
