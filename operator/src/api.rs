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

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, ResourceRequirements, Toleration, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Where LiveKit comes from. Exactly one of `managed` or `external`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LiveKitSpec {
    /// The operator runs LiveKit.
    Managed(Box<ManagedLiveKit>),
    /// LiveKit runs elsewhere; the operator runs only the authorisation service.
    External(ExternalLiveKit),
}

impl Default for LiveKitSpec {
    fn default() -> Self {
        LiveKitSpec::Managed(Box::default())
    }
}

/// A LiveKit server the operator deploys.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.replicas <= 1 || has(self.redis)")
        .message("livekit.managed.redis is required when replicas > 1: LiveKit nodes share room state through Redis")
        .field_path(".redis"),
    validation = Rule::new("self.replicas <= 1 || !((has(self.media.tcp.exposure) && self.media.tcp.exposure == 'LoadBalancer') || (has(self.media.udp.mux) && has(self.media.udp.mux.exposure) && self.media.udp.mux.exposure == 'LoadBalancer') || (has(self.media.udp.range) && has(self.media.udp.range.exposure) && self.media.udp.range.exposure == 'LoadBalancer'))")
        .message("a LoadBalancer cannot carry ICE media for more than one LiveKit replica: it spreads a client's packets over all pods, and only the pod that advertised the candidate knows the session; use hostNetwork, HostPort, or NodePort with externalTrafficPolicy Local")
        .field_path(".media"),
    validation = Rule::new("self.replicas <= 1 || self.media.hostNetwork || (has(self.media.service.externalTrafficPolicy) && self.media.service.externalTrafficPolicy == 'Local') || ((has(self.media.tcp.exposure) && self.media.tcp.exposure != 'NodePort') && (has(self.media.udp.mux) ? (has(self.media.udp.mux.exposure) && self.media.udp.mux.exposure != 'NodePort') : (has(self.media.udp.range.exposure) && self.media.udp.range.exposure != 'NodePort')))")
        .message("NodePort ICE media with more than one LiveKit replica needs media.service.externalTrafficPolicy Local: with Cluster, kube-proxy hands a client's packets to any pod, and only the pod that advertised the candidate knows the session")
        .field_path(".media.service.externalTrafficPolicy"),
    validation = Rule::new("self.replicas <= 1 || self.media.advertisedIp.source != 'Manual'")
        .message("advertisedIp source Manual gives every LiveKit pod the same address: with more than one replica use HostIP, STUN or PodIP, so that each pod advertises its own")
        .field_path(".media.advertisedIp.source"),
)]
#[serde(rename_all = "camelCase")]
pub struct ManagedLiveKit {
    /// Container image; defaults to the operator's LiveKit image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Number of LiveKit pods. More than one needs `redis`.
    #[serde(default = "default_one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Container resources; defaults to requests cpu 100m / memory 150Mi and a 4Gi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Pod placement.
    #[serde(default)]
    pub scheduling: Scheduling,
    /// How media (ICE) ports are exposed and which IP LiveKit advertises.
    #[serde(default)]
    pub media: MediaSpec,
    /// Embedded TURN server (for clients behind restrictive firewalls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<TurnSpec>,
    /// Redis shared by LiveKit nodes; required when `replicas > 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<LiveKitRedis>,
    /// Free-form LiveKit configuration (YAML object) merged under the operator's: keys the operator
    /// sets (ports, `room.auto_create: false`, `key_file`, `webhook`, `redis`, `rtc` IP settings,
    /// `turn`) always win. `keys` and `redis.password` are rejected: secrets do not belong in a CR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object_schema")]
    pub config: Option<serde_json::Value>,
    /// How LiveKit pods drain and are replaced.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// Annotations of the LiveKit pods (e.g. `sidecar.istio.io/inject: "false"` to keep media out of a
    /// service mesh). The operator's config hash annotation cannot be set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Labels of the LiveKit pods, added to the operator's (which cannot be overridden).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// Extra environment of the LiveKit container. Variables through which LiveKit would override
    /// the operator's config (`LIVEKIT_CONFIG`, `LIVEKIT_KEYS`, `NODE_IP`, `UDP_PORT`, `REDIS_HOST`,
    /// `REDIS_PASSWORD`, `LIVEKIT_TURN_CERT`, `LIVEKIT_TURN_KEY`) are rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "env_list_schema")]
    pub extra_env: Vec<EnvVar>,
    /// Extra volumes of the LiveKit pods (pod spec `volumes`), e.g. for a custom CA bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "named_object_list_schema")]
    pub extra_volumes: Vec<Volume>,
    /// Extra mounts of the LiveKit container (container `volumeMounts`) for `extraVolumes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "named_object_list_schema")]
    pub extra_volume_mounts: Vec<VolumeMount>,
    /// Timing of the LiveKit container's probes.
    #[serde(default)]
    pub probes: ProbesSpec,
    /// The PodDisruptionBudget of the LiveKit pods while `replicas > 1` (default: at most one pod
    /// down at a time).
    #[serde(default)]
    pub disruption_budget: DisruptionBudgetSpec,
}

impl Default for ManagedLiveKit {
    fn default() -> Self {
        Self {
            image: None,
            replicas: 1,
            resources: None,
            scheduling: Scheduling::default(),
            media: MediaSpec::default(),
            turn: None,
            redis: None,
            config: None,
            rollout: RolloutSpec::default(),
            pod_annotations: BTreeMap::new(),
            pod_labels: BTreeMap::new(),
            extra_env: Vec::new(),
            extra_volumes: Vec::new(),
            extra_volume_mounts: Vec::new(),
            probes: ProbesSpec::default(),
            disruption_budget: DisruptionBudgetSpec::default(),
        }
    }
}

/// How LiveKit pods drain and are replaced. On SIGTERM LiveKit stops taking new rooms and exits when
/// its last participant leaves, or when the grace period ends and the kubelet kills it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.maxSurge) || !has(self.maxUnavailable) || self.maxSurge > 0 || self.maxUnavailable > 0")
    .message("maxSurge and maxUnavailable cannot both be 0: the rollout could never replace a pod"))]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Seconds a stopping LiveKit pod may drain its calls. Default: 3600 with `redis` (calls stay on
    /// the draining pod while new rooms go to the others), 30 without (a draining pod shares no
    /// state with its successor, so a long drain splits a call between the two pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub termination_grace_period_seconds: Option<i64>,
    /// Extra pods during a rollout (Deployment `maxSurge`). Default 1, or 0 when each LiveKit pod
    /// needs a node of its own (HostPort, hostNetwork, or several replicas behind NodePort), where it
    /// must be 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_surge: Option<i32>,
    /// Missing pods during a rollout (Deployment `maxUnavailable`). Default 0, or 1 when `maxSurge`
    /// is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_unavailable: Option<i32>,
}

/// Timing of the probes; unset fields keep the operator's values.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbesSpec {
    /// The startup probe (TCP; defaults: every 2 s, 60 failures, so a slow STUN discovery has 2 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<ProbeTiming>,
    /// The liveness probe (TCP; defaults: every 10 s, timeout 1 s, 3 failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<ProbeTiming>,
    /// The readiness probe (`GET /`; defaults: every 10 s, timeout 1 s, 3 failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ProbeTiming>,
}

/// A probe's timing, as in a pod spec's probe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeTiming {
    /// Seconds before the first probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_delay_seconds: Option<i32>,
    /// Seconds between probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: Option<i32>,
    /// Seconds a probe may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
    /// Failures in a row before the probe counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_threshold: Option<i32>,
}

/// A LiveKit server the operator does not run.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalLiveKit {
    /// WebSocket URL of the server (`wss://...`), handed to clients and used for its API.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('wss://') || self.startsWith('ws://')")
        .message("url must start with wss:// (or ws://)"))]
    pub url: String,
}

/// Pod scheduling knobs, passed through to the pod spec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// Node labels the pods require (the pod spec's `nodeSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pods tolerate (a list of pod spec `tolerations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "object_list_schema")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node and pod (anti-)affinity, as in a pod spec's `affinity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object_schema")]
    pub affinity: Option<Affinity>,
    /// Topology spread constraints. A constraint without `labelSelector` gets the component's pod
    /// labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "object_list_schema")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// PriorityClass of the pods (e.g. to keep calls running when the cluster is short of room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Media (ICE) networking of the managed LiveKit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!self.hostNetwork || (!has(self.tcp.exposure) && (has(self.udp.mux) ? !has(self.udp.mux.exposure) : !has(self.udp.range.exposure)))")
        .message("with hostNetwork every port is bound on the node: leave the per-port exposure unset"),
)]
#[serde(rename_all = "camelCase")]
pub struct MediaSpec {
    /// Run LiveKit in the node's network namespace: every port (media, signalling 7880, metrics 6789)
    /// is bound on the node, no media Service is created and only one LiveKit pod fits per node.
    #[serde(default)]
    pub host_network: bool,
    /// ICE over TCP (fallback for clients whose UDP is blocked).
    #[serde(default = "default_tcp")]
    pub tcp: MediaPort,
    /// ICE over UDP: one muxed port (default) or a port range.
    #[serde(default)]
    pub udp: UdpSpec,
    /// Which IP LiveKit advertises in its ICE candidates.
    #[serde(default)]
    pub advertised_ip: AdvertisedIp,
    /// Settings of the media Services (NodePort and LoadBalancer exposure).
    #[serde(default)]
    pub service: MediaServiceSpec,
}

impl Default for MediaSpec {
    fn default() -> Self {
        Self {
            host_network: false,
            tcp: default_tcp(),
            udp: UdpSpec::default(),
            advertised_ip: AdvertisedIp::default(),
            service: MediaServiceSpec::default(),
        }
    }
}

/// One media port. Services expose it with `port == targetPort` (LiveKit advertises the port it
/// listens on); a NodePort Service also uses it as the node port, so it must lie in the cluster's
/// node port range (30000-32767 by default).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaPort {
    /// The port LiveKit listens on and advertises; with `NodePort` also the node port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// How the port is reachable: `NodePort` (default), `LoadBalancer` or `HostPort`; must be unset
    /// with `hostNetwork`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_description_wins)]
    pub exposure: Option<Exposure>,
}

/// ICE over UDP. Exactly one of `mux` or `range`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UdpSpec {
    /// One UDP port shared by all peers (LiveKit `rtc.udp_port`).
    Mux(MediaPort),
    /// A port range (LiveKit `rtc.port_range_start/end`), exposed by Services of at most 250 ports.
    Range(UdpPortRange),
}

impl Default for UdpSpec {
    fn default() -> Self {
        UdpSpec::Mux(MediaPort {
            port: 30002,
            exposure: None,
        })
    }
}

/// An inclusive UDP port range.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.start <= self.end").message("range start must not exceed end"),
    validation = Rule::new("self.end - self.start < 5000").message("a UDP range may hold at most 5000 ports"),
)]
#[serde(rename_all = "camelCase")]
pub struct UdpPortRange {
    /// First port of the range (LiveKit `rtc.port_range_start`).
    #[schemars(range(min = 1, max = 65535))]
    pub start: i32,
    /// Last port of the range, inclusive (LiveKit `rtc.port_range_end`).
    #[schemars(range(min = 1, max = 65535))]
    pub end: i32,
    /// How the ports are reachable: `NodePort` (default), `LoadBalancer` or `HostPort`; must be
    /// unset with `hostNetwork`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_description_wins)]
    pub exposure: Option<Exposure>,
}

/// How one media port reaches the outside world.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum Exposure {
    /// A NodePort Service with `nodePort == port` on every node.
    NodePort,
    /// A LoadBalancer Service; all single ports with this exposure share one Service (one IP).
    LoadBalancer,
    /// A `hostPort` on the node running the pod; no Service.
    HostPort,
}

/// Source of the IP that LiveKit advertises in ICE candidates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("self.source == 'Manual' ? has(self.address) : !has(self.address)")
    .message("address is required with source Manual and not allowed otherwise")
    .field_path(".address"))]
#[serde(rename_all = "camelCase")]
pub struct AdvertisedIp {
    /// Where the advertised IP comes from: `STUN` (default: LiveKit asks STUN servers), `HostIP`
    /// (the node's IP), `PodIP` (the pod's IP) or `Manual` (`address`).
    #[serde(default)]
    pub source: IpSource,
    /// The IP to advertise (IPv4 or IPv6), only with `source: Manual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    pub address: Option<String>,
}

/// Where the advertised IP comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum IpSource {
    /// LiveKit discovers its public IP over STUN (`rtc.use_external_ip`).
    #[default]
    #[serde(rename = "STUN")]
    Stun,
    /// The IP of the node running the pod (downward API `status.hostIP`).
    #[serde(rename = "HostIP")]
    HostIp,
    /// The pod's IP (downward API `status.podIP`), for routable pod networks.
    #[serde(rename = "PodIP")]
    PodIp,
    /// A fixed address, e.g. a LoadBalancer's IP.
    Manual,
}

/// Options of the media Services.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaServiceSpec {
    /// Annotations on every media Service (e.g. for MetalLB or a cloud load balancer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// `externalTrafficPolicy` of NodePort and LoadBalancer Services: `Cluster` (default) or
    /// `Local` (only nodes running a LiveKit pod answer, and the client's source IP is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_description_wins)]
    pub external_traffic_policy: Option<TrafficPolicy>,
    /// `loadBalancerClass` of LoadBalancer Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
}

/// Service `externalTrafficPolicy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TrafficPolicy {
    /// Any node forwards to a LiveKit pod (source IP is rewritten).
    Cluster,
    /// Only nodes running a LiveKit pod answer; keeps the client's source IP.
    Local,
}

/// LiveKit's embedded TURN server. At least one of `udp` or `tls`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("has(self.udp) || has(self.tls)").message("turn needs udp, tls or both"))]
#[serde(rename_all = "camelCase")]
pub struct TurnSpec {
    /// DNS name clients use for TURN (must match the TLS certificate).
    #[schemars(length(min = 1, max = 253))]
    pub domain: String,
    /// TURN over UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<MediaPort>,
    /// TURN over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TurnTls>,
    /// UDP ports TURN allocates relay addresses from (LiveKit `turn.relay_range_start/end`). Default
    /// 20000-29999: below the node port range (30000-32767) and Linux's ephemeral ports
    /// (32768-60999). With `hostNetwork` they are bound on the node, so they must not overlap the
    /// node port range or the media ports.
    #[serde(default = "default_relay_range")]
    pub relay_range: PortRange,
}

/// An inclusive port range.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.start <= self.end").message("range start must not exceed end"))]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    /// First port.
    #[schemars(range(min = 1024, max = 65535))]
    pub start: i32,
    /// Last port, inclusive.
    #[schemars(range(min = 1024, max = 65535))]
    pub end: i32,
}

/// TURN over TLS. LiveKit advertises TURN/TLS on port 443 whatever it listens on, so `port` should
/// be 443 as seen by clients. The container listens on 5349 (on `port` itself with `hostNetwork`).
/// The certificate comes from `secretName` or `certManager` (at most one); with neither, TLS is
/// terminated in front of LiveKit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.secretName) || !has(self.certManager)")
    .message("tls takes secretName or certManager, not both: the pods mount one certificate"))]
#[serde(rename_all = "camelCase")]
pub struct TurnTls {
    /// Public port (Service port, node port or host port).
    #[serde(default = "default_turn_tls_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// How the port is reachable: `NodePort` (default), `LoadBalancer` or `HostPort`; must be unset
    /// with `hostNetwork`. Port 443 lies outside the default node port range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_description_wins)]
    pub exposure: Option<Exposure>,
    /// A `kubernetes.io/tls` Secret with the certificate for `domain`. Unset, and no `certManager`:
    /// TLS is terminated in front of LiveKit (LiveKit `turn.external_tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Have cert-manager issue the certificate for `domain`: the operator owns a Certificate that
    /// writes the Secret `<name>-turn-tls`, which the LiveKit pods mount (they roll on renewal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<TurnCertManager>,
}

/// Redis used by LiveKit nodes to share state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveKitRedis {
    /// `host:port`.
    #[schemars(length(min = 1, max = 512))]
    pub address: String,
    /// Redis database number (LiveKit's default: 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 255))]
    pub db: Option<i32>,
    /// User name for Redis ACL authentication (with `passwordSecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Secret key holding the password (passed to LiveKit as `REDIS_PASSWORD`, never in the ConfigMap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretKeyRef>,
    /// Connect to Redis over TLS.
    #[serde(default)]
    pub use_tls: bool,
}

/// One key of a Secret in the transport's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (in the transport's namespace). Changing the Secret rolls the pods that
    /// read it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The authorisation service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(
    validation = Rule::new("!has(self.replicas) || self.replicas <= 1 || has(self.redis)")
        .message("auth.redis is required when auth.replicas > 1: delegated leave jobs are shared through Redis")
        .field_path(".redis"),
    validation = Rule::new("!has(self.placement) || self.placement != 'Sidecar' || (!has(self.replicas) && !has(self.scheduling) && !has(self.podAnnotations) && !has(self.podLabels))")
        .message("with placement Sidecar the service runs in the LiveKit pods: replicas, scheduling and pod metadata come from livekit.managed"),
)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Container image; defaults to the operator's authorisation service image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Where the service runs: `Deployment` (default: its own Deployment and Service) or `Sidecar`
    /// (a container in each LiveKit pod; managed LiveKit only, and with several LiveKit pods it needs
    /// `redis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = field_description_wins)]
    pub placement: Option<Placement>,
    /// Number of pods with placement `Deployment` (default 1). More than one needs `redis`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: Option<i32>,
    /// Container resources; defaults to requests cpu 50m / memory 50Mi and a 200Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Pod placement with placement `Deployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,
    /// Client-server API base URL per server name (e.g. `example.com: http://synapse.matrix.svc:8008`),
    /// skipping `.well-known` discovery for those homeservers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cs_api_url_overrides: BTreeMap<String, String>,
    /// Redis for delegated leave jobs; required when more than one instance runs (`replicas > 1`,
    /// or placement `Sidecar` with `livekit.managed.replicas > 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<AuthRedis>,
    /// Extra environment (e.g. `LIVEKIT_LOG_LEVEL`). Variables the operator sets (URL, credentials,
    /// allowlist, bind address, CS API overrides, Redis) are rejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "env_list_schema")]
    pub extra_env: Vec<EnvVar>,
    /// Annotations of the service's pods with placement `Deployment` (e.g. a service-mesh opt-out).
    /// The operator's config hash annotation cannot be set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Labels of the service's pods with placement `Deployment`, added to the operator's (which
    /// cannot be overridden).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// Application-service (AS) mode: the homeserver of `serverName` authenticates its users and
    /// forwards their MSC4195 token requests to the service, which checks room membership first
    /// (MSC4502, MSC4512). Off unless `enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_service: Option<AppServiceSpec>,
}

/// Application-service mode of the authorisation service. The operator generates the `as_token` and
/// `hs_token` once into the Secret `<name>-appservice` (never rotated by itself: delete the Secret for
/// new tokens), renders the registration there (key `registration.yaml`) and points the service at
/// it; `status.appService` says how Synapse mounts it and `status.synapseConfig` what to add to
/// `homeserver.yaml`. Disabling deletes that Secret, so enabling again means new tokens.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AppServiceSpec {
    /// Turn AS mode on.
    #[serde(default)]
    pub enabled: bool,
    /// Where the homeserver forwards the token requests (`io.element.msc4512.proxy_url`): an http(s)
    /// URL without a path or trailing slash. Default: the service's in-cluster address,
    /// `http://<name>-auth.<namespace>.svc:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#@\\\\s]+$')")
        .message("proxyUrl must be an http(s) URL with no user, path, query or trailing slash: the homeserver appends the request path to it verbatim"))]
    pub proxy_url: Option<String>,
    /// Seconds between the membership monitor's sweeps (`LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS`),
    /// which remove participants who left the Matrix room; 0 disables it. Unset: the service's
    /// default (30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub membership_check_interval_seconds: Option<i32>,
    /// Also write the registration into this Secret, so that a homeserver running in the same
    /// namespace mounts it directly. The operator creates and owns it (it is deleted with the
    /// transport, or when this field changes); an existing Secret it did not create is never
    /// overwritten (status `Degraded`, reason `RegistrationSecretNotOwned`). Only the transport's
    /// namespace: writing Secrets elsewhere would let anyone who may create a transport write
    /// Secrets into namespaces they cannot otherwise touch. A ConfigMap is not offered: the
    /// registration carries both tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_secret: Option<RegistrationSecret>,
}

/// A Secret (in the transport's namespace) that the operator writes the registration into.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationSecret {
    /// Name of the Secret; not one the operator already writes or the pods read.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key (file name) of the registration in the Secret.
    #[serde(default = "default_registration_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z0-9]+$')")
        .message("key must consist of letters, digits, '-', '_' and '.'"))]
    pub key: String,
}

/// Where the authorisation service runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Placement {
    /// Its own Deployment and Service.
    #[default]
    Deployment,
    /// A container in each LiveKit pod (managed LiveKit only).
    Sidecar,
}

/// Redis URL of the authorisation service. Exactly one of `url` or `urlSecret`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AuthRedis {
    /// `redis://host:port/db` without a password.
    Url(String),
    /// A Secret key holding the URL (use this when it carries a password).
    UrlSecret(SecretKeyRef),
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

fn default_one() -> i32 {
    1
}

fn default_true() -> bool {
    true
}

fn default_tcp() -> MediaPort {
    MediaPort {
        port: 30001,
        exposure: None,
    }
}

fn default_turn_tls_port() -> i32 {
    443
}

fn default_relay_range() -> PortRange {
    PortRange {
        start: 20000,
        end: 29999,
    }
}

fn default_registration_key() -> String {
    "matrixrtc-auth.yaml".to_owned()
}

fn default_api_key_field() -> String {
    "api-key".to_owned()
}

fn default_api_secret_field() -> String {
    "api-secret".to_owned()
}

/// For an optional enum field: drop the enum's own description, so that the field's doc comment is
/// what the CRD shows. (kube hoists an `Option<Enum>`'s inner schema over the field's, and its
/// description would win.)
fn field_description_wins(schema: &mut Schema) {
    if let Some(Value::Array(variants)) = schema.get_mut("anyOf") {
        for variant in variants {
            if let Some(variant) = variant.as_object_mut() {
                variant.remove("description");
            }
        }
    }
}

/// Any object; the API server keeps unknown fields.
fn free_form_object_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A list of objects whose fields the API server checks when the operator applies the pod spec.
fn object_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    })
}

/// Objects with a `name` (volumes, volume mounts), the rest checked when the pod spec is applied.
fn named_object_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 63,
                "description": "Name of the volume (for a mount: the volume it mounts); the operator's own names are rejected.",
            }},
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// Container environment entries: `name` is checked here, the rest when the pod spec is applied.
fn env_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 128,
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {
                "type": "string",
                "minLength": 1,
                "description": "Name of the variable; those the operator sets are rejected.",
            }},
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// `limits` and `requests` maps of quantities (`claims` is left out: dynamic resource allocation is
/// not something the transport uses).
fn resources_schema(_: &mut SchemaGenerator) -> Schema {
    let quantities = |description: &str| {
        serde_json::json!({
            "type": "object",
            "additionalProperties": {"x-kubernetes-int-or-string": true},
            "description": description,
        })
    };
    json_schema!({
        "type": "object",
        "properties": {
            "limits": quantities("Most the container may use, per resource (e.g. `memory: 4Gi`)."),
            "requests": quantities("What the scheduler reserves for the container, per resource (e.g. `cpu: 100m`)."),
        },
    })
}

/// The standard `metav1.Condition` list, a map keyed by `type`.
fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {"type": "string", "format": "date-time", "description": "When the status last changed."},
                "message": {"type": "string", "maxLength": 32768, "description": "What happened, for people (for Degraded: every problem, one per line)."},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0, "description": "The metadata.generation the condition was computed for."},
                "reason": {"type": "string", "maxLength": 1024, "minLength": 1, "description": "Why, as one CamelCase word (troubleshooting.md lists every reason)."},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"], "description": "Whether the condition holds."},
                "type": {"type": "string", "maxLength": 316, "description": "Ready, Progressing or Degraded."},
            },
        },
    })
}

#[cfg(test)]
mod cel_tests;
