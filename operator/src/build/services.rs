//! Services: LiveKit signalling, the authorisation service, and the media ports.
//!
//! Media Services keep `port == targetPort` (and `nodePort == port` for NodePort) because LiveKit
//! advertises the port it listens on; TURN/TLS is the exception (LiveKit advertises 443 whatever it
//! listens on, so the public port maps to 5349 in the pod). Single media ports are grouped per
//! exposure, so all LoadBalancer ports share one Service and one IP (a manual advertised IP can then
//! match it); a UDP range is sharded into Services of at most 250 ports. HostPort and hostNetwork
//! ports need no Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use matrixrtc_auth::contract;

use super::labels::{self, Component};
use super::livekit_config::{METRICS_PORT, SIGNAL_PORT, TURN_TLS_CONTAINER_PORT};
use super::{names, object_meta};
use crate::api::TrafficPolicy;
use crate::plan::{AuthPlacement, LiveKitPlan, ManagedPlan, Reach, UdpPlan, Validated};

/// Port names (shared with the container ports; at most 15 characters).
pub const HTTP: &str = "http";
/// The authorisation service's container port (distinct from LiveKit's `http` in a shared pod).
pub const AUTH_HTTP: &str = "auth-http";
pub const METRICS: &str = "metrics";
pub const RTC_TCP: &str = "rtc-tcp";
pub const RTC_UDP: &str = "rtc-udp";
pub const TURN_UDP: &str = "turn-udp";
pub const TURN_TLS: &str = "turn-tls";

/// Every Service of the transport.
pub fn build(v: &Validated) -> Vec<Service> {
    let mut services = Vec::new();
    if let LiveKitPlan::Managed(plan) = v.livekit() {
        services.push(cluster_ip(
            v,
            names::livekit(v.name()),
            Component::Sfu,
            Component::Sfu,
            vec![
                tcp_port(HTTP, SIGNAL_PORT, SIGNAL_PORT),
                tcp_port(METRICS, METRICS_PORT, METRICS_PORT),
            ],
        ));
        services.extend(media(v, plan));
    }
    // With placement Sidecar the service runs in the LiveKit pods; the Service stays so that the
    // webhook URL and the Ingress do not depend on the placement.
    let auth_pods = match v.auth().placement {
        AuthPlacement::Deployment { .. } => Component::Auth,
        AuthPlacement::Sidecar => Component::Sfu,
    };
    services.push(cluster_ip(
        v,
        names::auth(v.name()),
        Component::Auth,
        auth_pods,
        vec![tcp_port(
            HTTP,
            contract::DEFAULT_PORT,
            contract::DEFAULT_PORT,
        )],
    ));
    services
}

fn cluster_ip(
    v: &Validated,
    name: String,
    component: Component,
    pods: Component,
    ports: Vec<ServicePort>,
) -> Service {
    Service {
        metadata: object_meta(v, name, component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(labels::selector(v.name(), pods)),
            ports: Some(ports),
            ip_family_policy: Some("PreferDualStack".to_owned()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn tcp_port(name: &str, port: u16, target: u16) -> ServicePort {
    service_port(Some(name), "TCP", port, target)
}

fn service_port(name: Option<&str>, protocol: &str, port: u16, target: u16) -> ServicePort {
    ServicePort {
        name: name.map(str::to_owned),
        protocol: Some(protocol.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::Int(i32::from(target))),
        ..ServicePort::default()
    }
}

/// A media port as a Service port: `nodePort == port` on NodePort Services.
fn media_port(name: &str, protocol: &str, port: u16, target: u16, reach: Reach) -> ServicePort {
    ServicePort {
        node_port: (reach == Reach::NodePort).then_some(i32::from(port)),
        ..service_port(Some(name), protocol, port, target)
    }
}

fn media(v: &Validated, plan: &ManagedPlan) -> Vec<Service> {
    let mut singles: Vec<(Reach, ServicePort)> = vec![(
        plan.tcp.reach,
        media_port(RTC_TCP, "TCP", plan.tcp.port, plan.tcp.port, plan.tcp.reach),
    )];
    if let UdpPlan::Mux(p) = plan.udp {
        singles.push((p.reach, media_port(RTC_UDP, "UDP", p.port, p.port, p.reach)));
    }
    if let Some(turn) = &plan.turn {
        if let Some(p) = turn.udp {
            singles.push((
                p.reach,
                media_port(TURN_UDP, "UDP", p.port, p.port, p.reach),
            ));
        }
        if let Some(tls) = &turn.tls {
            singles.push((
                tls.reach,
                media_port(
                    TURN_TLS,
                    "TCP",
                    tls.port,
                    TURN_TLS_CONTAINER_PORT,
                    tls.reach,
                ),
            ));
        }
    }

    let mut services = Vec::new();
    for (reach, name) in [
        (Reach::NodePort, names::media_node_port(v.name())),
        (Reach::LoadBalancer, names::media_load_balancer(v.name())),
    ] {
        let ports: Vec<ServicePort> = singles
            .iter()
            .filter(|(r, _)| *r == reach)
            .map(|(_, p)| p.clone())
            .collect();
        if !ports.is_empty() {
            services.push(media_service(v, plan, name, reach, ports));
        }
    }
    if let UdpPlan::Range { start, end, reach } = plan.udp
        && matches!(reach, Reach::NodePort | Reach::LoadBalancer)
    {
        let ports: Vec<u16> = (start..=end).collect();
        for (index, chunk) in ports
            .chunks(usize::from(names::PORTS_PER_SERVICE))
            .enumerate()
        {
            let service_ports = chunk
                .iter()
                .map(|&p| media_port(&format!("udp-{p}"), "UDP", p, p, reach))
                .collect();
            services.push(media_service(
                v,
                plan,
                names::media_udp_range(v.name(), index),
                reach,
                service_ports,
            ));
        }
    }
    services
}

fn media_service(
    v: &Validated,
    plan: &ManagedPlan,
    name: String,
    reach: Reach,
    ports: Vec<ServicePort>,
) -> Service {
    let mut metadata = object_meta(v, name, Component::Sfu);
    if !plan.service.annotations.is_empty() {
        metadata.annotations = Some(plan.service.annotations.clone());
    }
    let load_balancer = reach == Reach::LoadBalancer;
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(
                if load_balancer {
                    "LoadBalancer"
                } else {
                    "NodePort"
                }
                .to_owned(),
            ),
            selector: Some(labels::selector(v.name(), Component::Sfu)),
            ports: Some(ports),
            ip_family_policy: Some("PreferDualStack".to_owned()),
            external_traffic_policy: Some(
                match plan.service.external_traffic_policy {
                    Some(TrafficPolicy::Local) => "Local",
                    Some(TrafficPolicy::Cluster) | None => "Cluster",
                }
                .to_owned(),
            ),
            load_balancer_class: plan
                .service
                .load_balancer_class
                .clone()
                .filter(|_| load_balancer),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::{external, validated};

    fn by_name<'a>(services: &'a [Service], name: &str) -> &'a ServiceSpec {
        services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .and_then(|s| s.spec.as_ref())
            .unwrap_or_else(|| panic!("no Service {name}"))
    }

    fn names_of(services: &[Service]) -> Vec<String> {
        services
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect()
    }

    #[test]
    fn defaults_give_signalling_auth_and_one_node_port_service() {
        let services = build(&validated(""));
        assert_eq!(
            names_of(&services),
            ["demo-livekit", "demo-livekit-nodeport", "demo-auth"]
        );
        let media = by_name(&services, "demo-livekit-nodeport");
        assert_eq!(media.type_.as_deref(), Some("NodePort"));
        let ports = media.ports.as_ref().expect("ports");
        for p in ports {
            assert_eq!(p.node_port, Some(p.port));
            assert_eq!(p.target_port, Some(IntOrString::Int(p.port)));
        }
        let summary: Vec<(i32, &str)> = ports
            .iter()
            .map(|p| (p.port, p.protocol.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(summary, [(30001, "TCP"), (30002, "UDP")]);
        for s in &services {
            assert_eq!(
                s.spec.as_ref().and_then(|s| s.ip_family_policy.as_deref()),
                Some("PreferDualStack")
            );
        }
        let auth = by_name(&services, "demo-auth");
        assert_eq!(
            auth.selector,
            Some(labels::selector("demo", Component::Auth))
        );
        assert_eq!(auth.ports.as_ref().expect("ports")[0].port, 8080);
    }

    #[test]
    fn udp_range_is_sharded_by_250_with_port_equal_target() {
        let services = build(&validated(
            "livekit: {managed: {media: {udp: {range: {start: 31000, end: 31600, exposure: LoadBalancer}}}}}",
        ));
        let shards: Vec<&Service> = services
            .iter()
            .filter(|s| {
                s.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.contains("udp-range"))
            })
            .collect();
        let sizes: Vec<usize> = shards
            .iter()
            .map(|s| {
                s.spec
                    .as_ref()
                    .and_then(|s| s.ports.as_ref())
                    .map_or(0, Vec::len)
            })
            .collect();
        assert_eq!(sizes, [250, 250, 101]);
        let first = by_name(&services, "demo-livekit-udp-range-0");
        assert_eq!(first.type_.as_deref(), Some("LoadBalancer"));
        let p = &first.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (p.port, p.target_port.clone(), p.node_port),
            (31000, Some(IntOrString::Int(31000)), None)
        );
        let last = by_name(&services, "demo-livekit-udp-range-2");
        assert_eq!(
            last.ports.as_ref().expect("ports").last().map(|p| p.port),
            Some(31600)
        );
    }

    #[test]
    fn load_balancer_ports_share_one_service_and_turn_tls_targets_5349() {
        let services = build(&validated(
            r#"
livekit:
  managed:
    media:
      tcp: {port: 7881, exposure: LoadBalancer}
      udp: {mux: {port: 7882, exposure: LoadBalancer}}
      service: {annotations: {metallb.universe.tf/allow-shared-ip: rtc}, externalTrafficPolicy: Local, loadBalancerClass: example.com/lb}
    turn: {domain: turn.example.com, tls: {port: 443, exposure: LoadBalancer, secretName: cert}}
"#,
        ));
        assert_eq!(
            names_of(&services),
            ["demo-livekit", "demo-livekit-lb", "demo-auth"]
        );
        let lb = services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("demo-livekit-lb"))
            .expect("lb");
        assert_eq!(
            lb.metadata
                .annotations
                .as_ref()
                .map(|a| a.contains_key("metallb.universe.tf/allow-shared-ip")),
            Some(true)
        );
        let spec = lb.spec.as_ref().expect("spec");
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(spec.load_balancer_class.as_deref(), Some("example.com/lb"));
        let tls = spec
            .ports
            .as_ref()
            .expect("ports")
            .iter()
            .find(|p| p.name.as_deref() == Some(TURN_TLS))
            .expect("tls");
        assert_eq!(
            (tls.port, tls.target_port.clone()),
            (443, Some(IntOrString::Int(5349)))
        );
    }

    #[test]
    fn host_port_and_host_network_need_no_media_service() {
        for patch in [
            "livekit: {managed: {media: {tcp: {port: 30001, exposure: HostPort}, udp: {mux: {port: 30002, exposure: HostPort}}}}}",
            "livekit: {managed: {media: {hostNetwork: true}}}",
        ] {
            assert_eq!(
                names_of(&build(&validated(patch))),
                ["demo-livekit", "demo-auth"],
                "{patch}"
            );
        }
    }

    #[test]
    fn sidecar_auth_service_selects_livekit_pods_and_external_has_no_livekit_service() {
        let services = build(&validated("auth: {placement: Sidecar}"));
        assert_eq!(
            by_name(&services, "demo-auth").selector,
            Some(labels::selector("demo", Component::Sfu))
        );
        assert_eq!(names_of(&build(&external())), ["demo-auth"]);
    }
}
