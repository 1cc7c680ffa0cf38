//! The plan: what a valid `MatrixRTCTransport` asks for, with defaults resolved, and the names of
//! the objects it becomes.
//!
//! A neutral module between the CRD types and the two halves that use it: [`crate::validate`] makes a
//! [`Validated`] plan from a spec, and [`crate::build`] turns one into objects. The plan depends on
//! [`crate::api`] only, so neither half needs the other's types (see the layering in `lib.rs`).
//!
//! [`Validated`] is shaped so that the builders cannot meet a contradictory spec: each media port
//! carries its resolved [`Reach`], the advertised IP is an enum with the manual address inside, and
//! the authorisation service's placement carries the fields that only make sense for it.

pub mod names;

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Volume, VolumeMount};
use matrixrtc_auth::contract;

use crate::api::{
    AuthRedis, CredentialsSecretRef, IngressController, IngressSpec, IssuerRef, LiveKitRedis,
    MediaServiceSpec, ProbesSpec, Scheduling, ServiceMonitorSpec,
};

/// Key of the API key in the generated and in the operator-owned keys Secret.
pub const API_KEY_FIELD: &str = "api-key";
/// Key of the API secret in the generated and in the operator-owned keys Secret.
pub const API_SECRET_FIELD: &str = "api-secret";
/// Where the API key and secret live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialsSource {
    /// A Secret the user manages (`spec.credentials`).
    Existing(CredentialsSecretRef),
    /// A Secret the operator generates once and owns.
    Generated { secret_name: String },
}

impl CredentialsSource {
    /// Name of the Secret to read.
    pub fn secret_name(&self) -> &str {
        match self {
            CredentialsSource::Existing(r) => &r.secret_name,
            CredentialsSource::Generated { secret_name } => secret_name,
        }
    }

    /// Keys of the API key and the API secret in that Secret.
    pub fn fields(&self) -> (&str, &str) {
        match self {
            CredentialsSource::Existing(r) => (&r.api_key_field, &r.api_secret_field),
            CredentialsSource::Generated { .. } => (API_KEY_FIELD, API_SECRET_FIELD),
        }
    }
}

/// Who the children belong to.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// Which homeservers' users get full access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FullAccess {
    /// `*`: everyone.
    Everyone,
    /// These server names (never empty).
    Only(Vec<String>),
}

impl FullAccess {
    /// The value of `LIVEKIT_FULL_ACCESS_HOMESERVERS`.
    pub fn env_value(&self) -> String {
        match self {
            FullAccess::Everyone => contract::FULL_ACCESS_WILDCARD.to_owned(),
            FullAccess::Only(names) => names.join(","),
        }
    }
}

/// How a media port is reached, after defaults and `hostNetwork` are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reach {
    NodePort,
    LoadBalancer,
    HostPort,
    /// The pod runs in the node's network namespace (all ports of the pod share this).
    HostNetwork,
}

/// A single media port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortPlan {
    pub port: u16,
    pub reach: Reach,
}

/// ICE over UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpPlan {
    Mux(PortPlan),
    /// Inclusive range.
    Range {
        start: u16,
        end: u16,
        reach: Reach,
    },
}

/// The IP LiveKit advertises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdvertisedIpPlan {
    Stun,
    HostIp,
    PodIp,
    Manual(IpAddr),
}

/// TURN over TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnTlsPlan {
    /// Public port.
    pub port: u16,
    pub reach: Reach,
    /// `None`: TLS is terminated in front of LiveKit. With `issuer`, the Secret cert-manager writes.
    pub secret_name: Option<String>,
    /// cert-manager issues the certificate into `secret_name` (through a Certificate the operator owns).
    pub issuer: Option<IssuerRef>,
}

/// The embedded TURN server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnPlan {
    pub domain: String,
    pub udp: Option<PortPlan>,
    pub tls: Option<TurnTlsPlan>,
    /// Inclusive UDP range of relay ports.
    pub relay_range: (u16, u16),
}

/// How LiveKit pods drain and are replaced, with defaults resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolloutPlan {
    pub termination_grace_seconds: i64,
    pub max_surge: i32,
    pub max_unavailable: i32,
}

/// A LiveKit the operator runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedPlan {
    pub image: Option<String>,
    pub replicas: i32,
    pub resources: Option<ResourceRequirements>,
    pub scheduling: Scheduling,
    pub host_network: bool,
    pub tcp: PortPlan,
    pub udp: UdpPlan,
    pub advertised_ip: AdvertisedIpPlan,
    pub service: MediaServiceSpec,
    pub turn: Option<TurnPlan>,
    pub redis: Option<LiveKitRedis>,
    /// The user's free-form LiveKit config (an object; empty when unset).
    pub user_config: serde_json::Map<String, serde_json::Value>,
    pub rollout: RolloutPlan,
    pub pod_annotations: BTreeMap<String, String>,
    pub pod_labels: BTreeMap<String, String>,
    pub extra_env: Vec<EnvVar>,
    pub extra_volumes: Vec<Volume>,
    pub extra_volume_mounts: Vec<VolumeMount>,
    pub probes: ProbesSpec,
    /// `maxUnavailable` of the PodDisruptionBudget; `None` when there is none (turned off, or at most
    /// one replica).
    pub disruption_max_unavailable: Option<i32>,
}

impl ManagedPlan {
    /// Whether each pod needs a node of its own: its ports are bound on the node, or several
    /// replicas sit behind NodePort Services with `externalTrafficPolicy: Local`, where a node
    /// forwards only to its own pod (two pods on one node would share that node's packets).
    pub fn one_pod_per_node(&self) -> bool {
        self.binds_node_ports() || self.needs_node_anti_affinity()
    }

    /// Several replicas behind NodePort ICE ports: the scheduler must be told to keep them apart
    /// (the ports are not bound on the node, so nothing else stops two pods sharing one).
    pub fn needs_node_anti_affinity(&self) -> bool {
        self.replicas > 1 && self.ice_reaches().contains(&Reach::NodePort)
    }

    /// How the ICE media ports (TCP and UDP, not TURN) are reached.
    pub fn ice_reaches(&self) -> Vec<Reach> {
        let udp = match self.udp {
            UdpPlan::Mux(p) => p.reach,
            UdpPlan::Range { reach, .. } => reach,
        };
        vec![self.tcp.reach, udp]
    }

    /// Whether some port is bound on the node, so two pods cannot share a node.
    pub fn binds_node_ports(&self) -> bool {
        let range_on_node = matches!(
            self.udp,
            UdpPlan::Range {
                reach: Reach::HostPort,
                ..
            }
        );
        self.host_network
            || range_on_node
            || self
                .single_ports()
                .iter()
                .any(|p| p.reach == Reach::HostPort)
    }

    /// Every single (non-range) media port with its protocol, in a fixed order.
    pub fn single_ports(&self) -> Vec<PortPlan> {
        let mut ports = vec![self.tcp];
        if let UdpPlan::Mux(p) = self.udp {
            ports.push(p);
        }
        if let Some(turn) = &self.turn {
            ports.extend(turn.udp);
            ports.extend(turn.tls.as_ref().map(|t| PortPlan {
                port: t.port,
                reach: t.reach,
            }));
        }
        ports
    }

    /// The NodePorts this plan asks for, as inclusive `(start, end)` ranges (a single port is a range of
    /// one), in [`ManagedPlan::single_ports`] order with the UDP range last.
    pub fn node_port_ranges(&self) -> Vec<(u16, u16)> {
        let mut ranges: Vec<(u16, u16)> = self
            .single_ports()
            .iter()
            .filter(|p| p.reach == Reach::NodePort)
            .map(|p| (p.port, p.port))
            .collect();
        if let UdpPlan::Range {
            start,
            end,
            reach: Reach::NodePort,
        } = self.udp
        {
            ranges.push((start, end));
        }
        ranges
    }
}

/// Where LiveKit comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum LiveKitPlan {
    Managed(Box<ManagedPlan>),
    External { url: String },
}

/// Where the authorisation service runs.
#[derive(Clone, Debug, PartialEq)]
pub enum AuthPlacement {
    Deployment {
        replicas: i32,
        scheduling: Box<Scheduling>,
    },
    /// In the LiveKit pods.
    Sidecar,
}

/// The authorisation service.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthPlan {
    pub image: Option<String>,
    pub placement: AuthPlacement,
    pub resources: Option<ResourceRequirements>,
    pub cs_api_url_overrides: BTreeMap<String, String>,
    pub redis: Option<AuthRedis>,
    pub extra_env: Vec<EnvVar>,
    /// Only with placement `Deployment` (validation rejects them for a sidecar).
    pub pod_annotations: BTreeMap<String, String>,
    pub pod_labels: BTreeMap<String, String>,
    pub app_service: Option<AppServicePlan>,
}

/// Application-service mode (`auth.appService` with `enabled: true`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppServicePlan {
    /// `None`: the service's in-cluster address.
    pub proxy_url: Option<String>,
    pub membership_check_interval_seconds: Option<i32>,
    /// The user's Secret to write the registration into: (name, key).
    pub registration_secret: Option<(String, String)>,
}

/// A spec that passed validation, with defaults resolved (except images, which come from the
/// operator's command line at build time).
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    pub(crate) id: Identity,
    pub(crate) server_name: String,
    pub(crate) host: String,
    pub(crate) full_access: FullAccess,
    pub(crate) livekit: LiveKitPlan,
    pub(crate) auth: AuthPlan,
    pub(crate) credentials: CredentialsSource,
    pub(crate) ingress: Option<IngressSpec>,
    pub(crate) image_pull_secrets: Vec<String>,
    /// The ServiceMonitors, when enabled.
    pub(crate) service_monitor: Option<ServiceMonitorSpec>,
    pub(crate) warnings: Vec<String>,
}

impl Validated {
    pub fn name(&self) -> &str {
        &self.id.name
    }

    pub fn namespace(&self) -> &str {
        &self.id.namespace
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    pub fn full_access(&self) -> &FullAccess {
        &self.full_access
    }

    pub fn livekit(&self) -> &LiveKitPlan {
        &self.livekit
    }

    pub fn auth(&self) -> &AuthPlan {
        &self.auth
    }

    pub fn ingress(&self) -> Option<&IngressSpec> {
        self.ingress.as_ref()
    }

    /// The Ingress controller whose WebSocket annotations apply: the explicit `controllerType`, or
    /// ingress-nginx for class `nginx`.
    pub fn ingress_controller(&self) -> IngressController {
        let Some(ingress) = &self.ingress else {
            return IngressController::None;
        };
        match (ingress.controller_type, ingress.class_name.as_deref()) {
            (Some(controller), _) => controller,
            (None, Some("nginx")) => IngressController::IngressNginx,
            (None, _) => IngressController::None,
        }
    }

    /// Names of the Secrets both workloads pull images with.
    pub fn image_pull_secrets(&self) -> &[String] {
        &self.image_pull_secrets
    }

    pub fn is_managed_livekit(&self) -> bool {
        matches!(self.livekit, LiveKitPlan::Managed(_))
    }

    pub fn auth_is_sidecar(&self) -> bool {
        self.auth.placement == AuthPlacement::Sidecar
    }

    /// The ServiceMonitors to create (`spec.monitoring.serviceMonitor` with `enabled: true`).
    pub fn service_monitor(&self) -> Option<&ServiceMonitorSpec> {
        self.service_monitor.as_ref()
    }

    /// Where the API key and secret come from.
    pub fn credentials_source(&self) -> &CredentialsSource {
        &self.credentials
    }

    /// Non-fatal findings (e.g. user LiveKit config keys the operator overrides), for Warning Events.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}
