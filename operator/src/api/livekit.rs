//! The LiveKit part of the spec: managed (pods, media ports, TURN, Redis, rollout, probes) or external.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, ResourceRequirements, Toleration, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::*;
use super::*;

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
