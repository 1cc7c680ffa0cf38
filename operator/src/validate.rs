//! Spec validation (pure): a `MatrixRTCTransport` becomes a [`Validated`] plan, or every problem at
//! once, each naming its field path.
//!
//! The CRD's CEL rules catch the simple mistakes at `kubectl apply` time; this module repeats them
//! (clusters may run without them, e.g. a CRD applied by an older operator) and adds what CEL cannot
//! check: IP and URL syntax, port collisions, reserved environment variables, secrets in the free-form
//! LiveKit config, and the length of the names derived from the resource's name.
//!
//! [`Validated`] is shaped so that the builders cannot meet a contradictory spec: each media port
//! carries its resolved [`Reach`], the advertised IP is an enum with the manual address inside, and
//! the authorisation service's placement carries the fields that only make sense for it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Volume, VolumeMount};
use matrixrtc_auth::contract::{self, env};

use crate::api::{
    AdvertisedIp, AuthRedis, AuthSpec, CredentialsSecretRef, Exposure, IngressController,
    IngressSpec, IpSource, LiveKitRedis, LiveKitSpec, ManagedLiveKit, MatrixRTCTransport,
    MediaPort, MediaServiceSpec, Placement, ProbesSpec, RolloutSpec, Scheduling, TrafficPolicy,
    TurnSpec, UdpSpec,
};
use crate::build::credentials::CredentialsSource;
use crate::build::{HASH_ANNOTATION, labels, livekit, livekit_config, names};

/// Longest resource name whose derived names (e.g. `<name>-livekit-udp-range-19`) still fit the
/// 63-character limit of Service names.
pub const MAX_NAME_LEN: usize = 63 - names::LONGEST_SUFFIX_LEN;

/// The API server's default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: std::ops::RangeInclusive<u16> = 30000..=32767;

/// Largest UDP range; sharded into Services of [`names::PORTS_PER_SERVICE`] ports.
pub const MAX_UDP_RANGE_PORTS: u32 = 5000;

/// Environment variables through which LiveKit overrides its config file (or reads what the
/// operator passes it); `livekit.managed.extraEnv` may not set them.
pub const RESERVED_LIVEKIT_ENV: [&str; 8] = [
    "LIVEKIT_CONFIG",
    "LIVEKIT_KEYS",
    "NODE_IP",
    "UDP_PORT",
    "REDIS_HOST",
    "REDIS_PASSWORD",
    "LIVEKIT_TURN_CERT",
    "LIVEKIT_TURN_KEY",
];

/// Keys of LiveKit's `rtc` section that choose its UDP ports. The operator sets them from
/// `media.udp`; LiveKit prefers a port range over `udp_port`, so a stray one in the user's config
/// would silently move ICE off the ports the Services expose.
const OPERATOR_UDP_KEYS: [&str; 3] = ["udp_port", "port_range_start", "port_range_end"];

/// Drain time of a LiveKit pod when `redis` is set: calls stay on the draining pod while new rooms
/// go to the others, and an hour lets most calls end. livekit-helm uses 5 h, which makes a rolling
/// update of N nodes take up to 5N hours.
pub const DRAIN_SECONDS_WITH_REDIS: i64 = 3600;
/// Drain time without Redis: the draining pod and its successor share no room state, so while it
/// drains, whoever joins a call lands in a second room of the same name on the new pod. Better cut
/// the old pod soon; clients reconnect and meet on the new one.
pub const DRAIN_SECONDS_WITHOUT_REDIS: i64 = 30;

/// Environment variables of the authorisation service that the operator owns; `auth.extraEnv` may
/// not set them (the ones the operator does not set would change how the ones it sets are read).
pub const RESERVED_AUTH_ENV: [&str; 14] = [
    env::LIVEKIT_URL,
    env::LIVEKIT_KEY,
    env::LIVEKIT_SECRET,
    env::LIVEKIT_KEY_FROM_FILE,
    env::LIVEKIT_SECRET_FROM_FILE,
    env::LIVEKIT_KEY_FILE,
    env::LIVEKIT_KEYS_FILE,
    env::LIVEKIT_FULL_ACCESS_HOMESERVERS,
    env::LIVEKIT_TRUSTED_HOMESERVERS,
    env::LIVEKIT_REPLICA_ID,
    env::LIVEKIT_JWT_BIND,
    env::LIVEKIT_JWT_PORT,
    env::LIVEKIT_CS_API_URL_OVERRIDES,
    env::LIVEKIT_REDIS_URL,
];

/// One thing wrong with a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Field path, e.g. `spec.livekit.managed.media.tcp.port`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a spec, in field order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    problems: Vec<Problem>,
}

impl Invalid {
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl std::error::Error for Invalid {}

impl fmt::Display for Invalid {
    /// One problem per line (a condition message or Event note shows them all).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(Problem::to_string).collect();
        f.write_str(&lines.join("\n"))
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
    /// `None`: TLS is terminated in front of LiveKit.
    pub secret_name: Option<String>,
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

    /// Where the API key and secret come from.
    pub fn credentials_source(&self) -> &CredentialsSource {
        &self.credentials
    }

    /// Non-fatal findings (e.g. user LiveKit config keys the operator overrides), for Warning Events.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Validate a resource: the plan, or every problem.
pub fn validate(cr: &MatrixRTCTransport) -> Result<Validated, Invalid> {
    let mut c = Checker::default();
    let id = c.identity(cr);
    let spec = &cr.spec;

    c.server_name("spec.serverName", &spec.server_name);
    c.dns_name("spec.host", &spec.host);
    let full_access = c.full_access(spec);
    let livekit = match &spec.livekit {
        LiveKitSpec::Managed(m) => LiveKitPlan::Managed(Box::new(c.managed(m))),
        LiveKitSpec::External(e) => {
            c.external_url("spec.livekit.external.url", &e.url);
            if spec.credentials.is_none() {
                c.problem(
                    "spec.credentials",
                    "an external LiveKit needs credentials.secretName: the operator cannot generate keys for a server it does not run",
                );
            }
            LiveKitPlan::External { url: e.url.clone() }
        }
    };
    let livekit_replicas = match &livekit {
        LiveKitPlan::Managed(plan) => Some(plan.replicas),
        LiveKitPlan::External { .. } => None,
    };
    let auth = c.auth(&spec.auth, livekit_replicas);
    let credentials = c.credentials(spec.credentials.as_ref(), &id.name);
    let ingress = c.ingress(&spec.ingress);
    for (i, secret) in spec.image_pull_secrets.iter().enumerate() {
        c.non_empty(&format!("spec.imagePullSecrets[{i}]"), secret);
    }

    if !c.problems.is_empty() {
        return Err(Invalid {
            problems: c.problems,
        });
    }
    let mut validated = Validated {
        id,
        server_name: spec.server_name.clone(),
        host: spec.host.clone(),
        full_access,
        livekit,
        auth,
        credentials,
        ingress,
        image_pull_secrets: spec.image_pull_secrets.clone(),
        warnings: c.warnings,
    };
    if let LiveKitPlan::Managed(plan) = &validated.livekit {
        let overridden = livekit_config::overridden_user_paths(&validated, plan);
        validated
            .warnings
            .extend(overridden.into_iter().map(|path| {
                format!(
                    "spec.livekit.managed.config.{path} is overridden by the operator's setting"
                )
            }));
    }
    Ok(validated)
}

/// Collects problems while walking the spec.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn identity(&mut self, cr: &MatrixRTCTransport) -> Identity {
        let name = cr.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            self.problem("metadata.name", "is missing");
        } else if name.len() > MAX_NAME_LEN || !is_dns_label(&name) {
            self.problem(
                "metadata.name",
                format!(
                    "must be a DNS label (lowercase letters, digits and '-', starting with a letter) of at most {MAX_NAME_LEN} characters: the operator derives Service names from it"
                ),
            );
        }
        let namespace = cr.metadata.namespace.clone().unwrap_or_default();
        if namespace.is_empty() {
            self.problem("metadata.namespace", "is missing");
        }
        let uid = cr.metadata.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            self.problem(
                "metadata.uid",
                "is missing (the resource must come from the API server)",
            );
        }
        Identity {
            name,
            namespace,
            uid,
        }
    }

    fn server_name(&mut self, path: &str, value: &str) {
        if !is_server_name(value) {
            self.problem(
                path,
                format!("{value:?} is not a Matrix server name (a DNS name or IP literal, optionally with :port)"),
            );
        }
    }

    fn dns_name(&mut self, path: &str, value: &str) {
        if !is_dns_name(value) {
            self.problem(
                path,
                format!("{value:?} is not a DNS name (lowercase labels of letters, digits and '-', no scheme or port)"),
            );
        }
    }

    fn non_empty(&mut self, path: &str, value: &str) {
        if value.trim().is_empty() {
            self.problem(path, "must not be empty");
        }
    }

    fn full_access(&mut self, spec: &crate::api::MatrixRTCTransportSpec) -> FullAccess {
        let path = "spec.homeservers.fullAccess";
        let Some(list) = &spec.homeservers.full_access else {
            return FullAccess::Only(vec![spec.server_name.clone()]);
        };
        if list.is_empty() {
            self.problem(path, "must not be empty (leave it unset for [serverName])");
            return FullAccess::Only(vec![spec.server_name.clone()]);
        }
        if list.iter().any(|h| h == contract::FULL_ACCESS_WILDCARD) {
            if list.len() > 1 {
                self.problem(path, "'*' must be the only entry of fullAccess");
            }
            return FullAccess::Everyone;
        }
        let mut seen = BTreeSet::new();
        for (i, name) in list.iter().enumerate() {
            self.server_name(&format!("{path}[{i}]"), name);
            if !seen.insert(name) {
                self.problem(format!("{path}[{i}]"), format!("{name:?} is listed twice"));
            }
        }
        FullAccess::Only(list.clone())
    }

    fn external_url(&mut self, path: &str, url: &str) {
        let rest = url
            .strip_prefix("wss://")
            .or_else(|| url.strip_prefix("ws://"));
        match rest {
            None => self.problem(path, "must start with wss:// (or ws://)"),
            Some(rest) => {
                let authority = rest.split('/').next().unwrap_or_default();
                if authority.is_empty() || url.chars().any(char::is_whitespace) {
                    self.problem(path, format!("{url:?} is not a WebSocket URL with a host"));
                }
            }
        }
    }

    fn image(&mut self, path: &str, image: Option<&String>) {
        if let Some(image) = image
            && (image.trim().is_empty() || image.chars().any(char::is_whitespace))
        {
            self.problem(path, "must be a non-empty image reference without spaces");
        }
    }

    fn managed(&mut self, m: &ManagedLiveKit) -> ManagedPlan {
        let base = "spec.livekit.managed";
        self.image(&format!("{base}.image"), m.image.as_ref());
        if m.replicas < 0 {
            self.problem(format!("{base}.replicas"), "must not be negative");
        }
        if m.replicas > 1 && m.redis.is_none() {
            self.problem(
                format!("{base}.redis"),
                "livekit.managed.redis is required when replicas > 1: LiveKit nodes share room state through Redis",
            );
        }
        let media = &m.media;
        let host_network = media.host_network;
        let mbase = format!("{base}.media");
        let tcp = self.port(&format!("{mbase}.tcp"), &media.tcp, host_network);
        let udp = match &media.udp {
            UdpSpec::Mux(p) => {
                UdpPlan::Mux(self.port(&format!("{mbase}.udp.mux"), p, host_network))
            }
            UdpSpec::Range(r) => {
                let path = format!("{mbase}.udp.range");
                let start = self.port_number(&format!("{path}.start"), r.start);
                let end = self.port_number(&format!("{path}.end"), r.end);
                if start > end {
                    self.problem(&path, "range start must not exceed end");
                } else if u32::from(end - start) >= MAX_UDP_RANGE_PORTS {
                    self.problem(
                        &path,
                        format!("a UDP range may hold at most {MAX_UDP_RANGE_PORTS} ports"),
                    );
                }
                let reach = self.reach(&format!("{path}.exposure"), r.exposure, host_network);
                UdpPlan::Range { start, end, reach }
            }
        };
        let advertised_ip =
            self.advertised_ip(&format!("{mbase}.advertisedIp"), &media.advertised_ip);
        let turn = m
            .turn
            .as_ref()
            .map(|t| self.turn(&format!("{base}.turn"), t, host_network));
        if let Some(redis) = &m.redis {
            self.livekit_redis(&format!("{base}.redis"), redis);
        }
        let user_config = self.user_config(&format!("{base}.config"), m.config.as_ref());
        self.pod_metadata(base, &m.pod_annotations, &m.pod_labels);
        self.livekit_extras(base, m);

        let mut plan = ManagedPlan {
            image: m.image.clone(),
            replicas: m.replicas,
            resources: m.resources.clone(),
            scheduling: m.scheduling.clone(),
            host_network,
            tcp,
            udp,
            advertised_ip,
            service: media.service.clone(),
            turn,
            redis: m.redis.clone(),
            user_config,
            // Resolved below, once the topology is known.
            rollout: RolloutPlan {
                termination_grace_seconds: 0,
                max_surge: 0,
                max_unavailable: 0,
            },
            pod_annotations: m.pod_annotations.clone(),
            pod_labels: m.pod_labels.clone(),
            extra_env: m.extra_env.clone(),
            extra_volumes: m.extra_volumes.clone(),
            extra_volume_mounts: m.extra_volume_mounts.clone(),
            probes: m.probes.clone(),
        };
        self.port_collisions(&mbase, &plan);
        self.topology(base, &plan);
        plan.rollout = self.rollout(&format!("{base}.rollout"), &m.rollout, &plan);
        self.reach_warnings(&plan);
        plan
    }

    /// More than one replica needs one pod per node's ports: each LiveKit pod advertises its own
    /// address, and only that pod knows the ICE sessions it advertised. Whatever spreads a client's
    /// packets over several pods (a LoadBalancer, a NodePort with `externalTrafficPolicy: Cluster`)
    /// or gives every pod the same address (a manual IP) breaks about half the connections.
    fn topology(&mut self, base: &str, plan: &ManagedPlan) {
        if plan.replicas <= 1 {
            return;
        }
        let reaches = plan.ice_reaches();
        if reaches.contains(&Reach::LoadBalancer) {
            self.problem(
                format!("{base}.media"),
                "a LoadBalancer cannot carry ICE media for more than one LiveKit replica: it spreads a client's packets over all pods, and only the pod that advertised the candidate knows the session; use hostNetwork, HostPort, or NodePort with externalTrafficPolicy Local",
            );
        }
        if reaches.contains(&Reach::NodePort)
            && plan.service.external_traffic_policy != Some(TrafficPolicy::Local)
        {
            self.problem(
                format!("{base}.media.service.externalTrafficPolicy"),
                "NodePort ICE media with more than one LiveKit replica needs media.service.externalTrafficPolicy Local: with Cluster, kube-proxy hands a client's packets to any pod, and only the pod that advertised the candidate knows the session",
            );
        }
        if matches!(plan.advertised_ip, AdvertisedIpPlan::Manual(_)) {
            self.problem(
                format!("{base}.media.advertisedIp.source"),
                "advertisedIp source Manual gives every LiveKit pod the same address: with more than one replica use HostIP, STUN or PodIP, so that each pod advertises its own",
            );
        }
    }

    fn rollout(&mut self, path: &str, r: &RolloutSpec, plan: &ManagedPlan) -> RolloutPlan {
        let one_per_node = plan.one_pod_per_node();
        let max_surge = r.max_surge.unwrap_or(if one_per_node { 0 } else { 1 });
        let max_unavailable = r
            .max_unavailable
            .unwrap_or(if max_surge == 0 { 1 } else { 0 });
        if one_per_node && max_surge > 0 {
            self.problem(
                format!("{path}.maxSurge"),
                "must be 0: each LiveKit pod needs a node of its own (HostPort, hostNetwork, or several replicas behind NodePort), so a surge pod would have to share one",
            );
        }
        if max_surge < 0 || max_unavailable < 0 {
            self.problem(path, "maxSurge and maxUnavailable must not be negative");
        } else if max_surge == 0 && max_unavailable == 0 {
            self.problem(
                path,
                "maxSurge and maxUnavailable cannot both be 0: the rollout could never replace a pod",
            );
        }
        let termination_grace_seconds =
            r.termination_grace_period_seconds
                .unwrap_or(if plan.redis.is_some() {
                    DRAIN_SECONDS_WITH_REDIS
                } else {
                    DRAIN_SECONDS_WITHOUT_REDIS
                });
        if !(0..=86400).contains(&termination_grace_seconds) {
            self.problem(
                format!("{path}.terminationGracePeriodSeconds"),
                "must lie between 0 and 86400 (24 h)",
            );
        }
        RolloutPlan {
            termination_grace_seconds,
            max_surge,
            max_unavailable,
        }
    }

    /// Pod annotations and labels may add to the operator's, not replace them: the selector labels
    /// tie the pods to their Deployment and Services, and the hash annotation rolls them.
    fn pod_metadata(
        &mut self,
        base: &str,
        annotations: &BTreeMap<String, String>,
        pod_labels: &BTreeMap<String, String>,
    ) {
        if annotations.contains_key(HASH_ANNOTATION) {
            self.problem(
                format!("{base}.podAnnotations"),
                format!("{HASH_ANNOTATION} is set by the operator (it rolls the pods when their inputs change)"),
            );
        }
        for key in pod_labels.keys() {
            if labels::RESERVED.contains(&key.as_str()) {
                self.problem(
                    format!("{base}.podLabels"),
                    format!("{key} is set by the operator (Deployments and Services select the pods by it)"),
                );
            }
        }
    }

    fn livekit_extras(&mut self, base: &str, m: &ManagedLiveKit) {
        let mut seen = BTreeSet::new();
        for (i, var) in m.extra_env.iter().enumerate() {
            let path = format!("{base}.extraEnv[{i}].name");
            if var.name.is_empty() {
                self.problem(&path, "must not be empty");
            } else if RESERVED_LIVEKIT_ENV.contains(&var.name.as_str()) {
                self.problem(
                    &path,
                    format!(
                        "{} would override the operator's LiveKit config and cannot be set",
                        var.name
                    ),
                );
            } else if !seen.insert(var.name.as_str()) {
                self.problem(&path, format!("{} is set twice", var.name));
            }
        }
        let mut volumes = BTreeSet::new();
        for (i, volume) in m.extra_volumes.iter().enumerate() {
            let path = format!("{base}.extraVolumes[{i}].name");
            if livekit::OPERATOR_VOLUMES.contains(&volume.name.as_str()) {
                self.problem(
                    &path,
                    format!("{} is a volume of the operator", volume.name),
                );
            } else if !volumes.insert(volume.name.as_str()) {
                self.problem(&path, format!("{} is listed twice", volume.name));
            }
        }
        for (i, mount) in m.extra_volume_mounts.iter().enumerate() {
            let path = format!("{base}.extraVolumeMounts[{i}]");
            if !volumes.contains(mount.name.as_str()) {
                self.problem(
                    format!("{path}.name"),
                    format!("{} is not one of extraVolumes", mount.name),
                );
            }
            let target = mount.mount_path.trim_end_matches('/');
            if livekit::OPERATOR_MOUNT_DIRS.iter().any(|dir| {
                target == *dir
                    || dir.starts_with(&format!("{target}/"))
                    || target.starts_with(&format!("{dir}/"))
            }) {
                self.problem(
                    format!("{path}.mountPath"),
                    format!("{} overlaps a directory the operator mounts (config, keys, TURN certificate)", mount.mount_path),
                );
            }
        }
    }

    fn port_number(&mut self, path: &str, port: i32) -> u16 {
        match u16::try_from(port) {
            Ok(p) if p > 0 => p,
            _ => {
                self.problem(path, format!("{port} is not a port (1-65535)"));
                0
            }
        }
    }

    fn reach(&mut self, path: &str, exposure: Option<Exposure>, host_network: bool) -> Reach {
        match (host_network, exposure) {
            (true, None) => Reach::HostNetwork,
            (true, Some(_)) => {
                self.problem(
                    path,
                    "with hostNetwork every port is bound on the node: leave the per-port exposure unset",
                );
                Reach::HostNetwork
            }
            (false, None | Some(Exposure::NodePort)) => Reach::NodePort,
            (false, Some(Exposure::LoadBalancer)) => Reach::LoadBalancer,
            (false, Some(Exposure::HostPort)) => Reach::HostPort,
        }
    }

    fn port(&mut self, path: &str, p: &MediaPort, host_network: bool) -> PortPlan {
        PortPlan {
            port: self.port_number(&format!("{path}.port"), p.port),
            reach: self.reach(&format!("{path}.exposure"), p.exposure, host_network),
        }
    }

    fn advertised_ip(&mut self, path: &str, a: &AdvertisedIp) -> AdvertisedIpPlan {
        match (a.source, &a.address) {
            (IpSource::Manual, Some(address)) => match address.parse::<IpAddr>() {
                Ok(ip) => AdvertisedIpPlan::Manual(ip),
                Err(_) => {
                    self.problem(
                        format!("{path}.address"),
                        format!("{address:?} is not an IPv4 or IPv6 address"),
                    );
                    AdvertisedIpPlan::Stun
                }
            },
            (IpSource::Manual, None) => {
                self.problem(
                    format!("{path}.address"),
                    "address is required with source Manual",
                );
                AdvertisedIpPlan::Stun
            }
            (source, Some(_)) => {
                self.problem(
                    format!("{path}.address"),
                    format!(
                        "address is only allowed with source Manual, not {}",
                        ip_source_name(source)
                    ),
                );
                AdvertisedIpPlan::Stun
            }
            (IpSource::Stun, None) => AdvertisedIpPlan::Stun,
            (IpSource::HostIp, None) => AdvertisedIpPlan::HostIp,
            (IpSource::PodIp, None) => AdvertisedIpPlan::PodIp,
        }
    }

    fn turn(&mut self, path: &str, t: &TurnSpec, host_network: bool) -> TurnPlan {
        self.dns_name(&format!("{path}.domain"), &t.domain);
        if t.udp.is_none() && t.tls.is_none() {
            self.problem(path, "turn needs udp, tls or both");
        }
        let udp = t
            .udp
            .as_ref()
            .map(|p| self.port(&format!("{path}.udp"), p, host_network));
        let tls = t.tls.as_ref().map(|tls| {
            let tpath = format!("{path}.tls");
            if let Some(secret) = &tls.secret_name {
                self.non_empty(&format!("{tpath}.secretName"), secret);
            }
            if host_network && tls.port < 1024 {
                self.problem(
                    format!("{tpath}.port"),
                    "with hostNetwork LiveKit listens on this port itself, and without privileges it cannot bind one below 1024",
                );
            }
            TurnTlsPlan {
                port: self.port_number(&format!("{tpath}.port"), tls.port),
                reach: self.reach(&format!("{tpath}.exposure"), tls.exposure, host_network),
                secret_name: tls.secret_name.clone(),
            }
        });
        let rpath = format!("{path}.relayRange");
        let start = self.port_number(&format!("{rpath}.start"), t.relay_range.start);
        let end = self.port_number(&format!("{rpath}.end"), t.relay_range.end);
        if start > end {
            self.problem(&rpath, "range start must not exceed end");
        }
        if host_network
            && start <= *DEFAULT_NODE_PORT_RANGE.end()
            && end >= *DEFAULT_NODE_PORT_RANGE.start()
        {
            self.problem(
                &rpath,
                format!(
                    "the TURN relay range {start}-{end} overlaps the node port range {}-{}: with hostNetwork LiveKit binds relay ports on the node, where kube-proxy forwards node ports to Services",
                    DEFAULT_NODE_PORT_RANGE.start(),
                    DEFAULT_NODE_PORT_RANGE.end()
                ),
            );
        }
        TurnPlan {
            domain: t.domain.clone(),
            udp,
            tls,
            relay_range: (start, end),
        }
    }

    fn livekit_redis(&mut self, path: &str, r: &LiveKitRedis) {
        let valid = r.address.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            self.problem(
                format!("{path}.address"),
                format!("{:?} is not host:port", r.address),
            );
        }
        if let Some(secret) = &r.password_secret {
            self.non_empty(&format!("{path}.passwordSecret.name"), &secret.name);
            self.non_empty(&format!("{path}.passwordSecret.key"), &secret.key);
        }
    }

    fn user_config(
        &mut self,
        path: &str,
        config: Option<&serde_json::Value>,
    ) -> serde_json::Map<String, serde_json::Value> {
        let Some(config) = config else {
            return serde_json::Map::new();
        };
        let Some(map) = config.as_object() else {
            self.problem(path, "must be an object of LiveKit settings");
            return serde_json::Map::new();
        };
        if map.contains_key("keys") {
            self.problem(
                format!("{path}.keys"),
                "API keys do not belong in the resource: use spec.credentials (or let the operator generate them)",
            );
        }
        if let Some(rtc) = map.get("rtc").and_then(|r| r.as_object()) {
            for key in OPERATOR_UDP_KEYS {
                if rtc.contains_key(key) {
                    self.problem(
                        format!("{path}.rtc.{key}"),
                        "the UDP ports come from spec.livekit.managed.media.udp: LiveKit prefers a port range over udp_port, so this key would silently move ICE off the ports the operator exposes",
                    );
                }
            }
        }
        if map.get("redis").and_then(|r| r.get("password")).is_some() {
            self.problem(
                format!("{path}.redis.password"),
                "a password does not belong in the resource: use livekit.managed.redis.passwordSecret",
            );
        }
        map.clone()
    }

    /// Two listeners in one pod (or on one node) cannot share a port and protocol.
    fn port_collisions(&mut self, path: &str, plan: &ManagedPlan) {
        let mut tcp: Vec<(u16, String)> = vec![
            (livekit_config::SIGNAL_PORT, "LiveKit signalling".into()),
            (livekit_config::METRICS_PORT, "LiveKit metrics".into()),
            (plan.tcp.port, "media.tcp.port".into()),
        ];
        let mut udp: Vec<(u16, String)> = Vec::new();
        match plan.udp {
            UdpPlan::Mux(p) => udp.push((p.port, "media.udp.mux.port".into())),
            UdpPlan::Range { start, end, .. } => {
                if start <= end {
                    udp.extend((start..=end).map(|p| (p, "media.udp.range".to_owned())));
                }
            }
        }
        if let Some(turn) = &plan.turn {
            if let Some(p) = turn.udp {
                udp.push((p.port, "turn.udp.port".into()));
            }
            if let Some(tls) = &turn.tls {
                let container = livekit_config::turn_tls_container_port(plan, tls);
                tcp.push((container, "turn.tls (container port)".into()));
            }
        }
        if let Some((start, end)) = plan.turn.as_ref().map(|t| t.relay_range) {
            let mut media: Vec<(u16, u16, String)> = Vec::new();
            match plan.udp {
                UdpPlan::Mux(p) => media.push((p.port, p.port, "media.udp.mux.port".into())),
                UdpPlan::Range { start, end, .. } => {
                    media.push((start, end, "media.udp.range".into()));
                }
            }
            if let Some(p) = plan.turn.as_ref().and_then(|t| t.udp) {
                media.push((p.port, p.port, "turn.udp.port".into()));
            }
            for (first, last, what) in media {
                if first <= end && last >= start {
                    self.problem(
                        path,
                        format!("the TURN relay range {start}-{end} (turn.relayRange) overlaps {what} ({first}-{last}): LiveKit would bind relay ports on its own media ports"),
                    );
                }
            }
        }
        for (protocol, ports) in [("TCP", tcp), ("UDP", udp)] {
            let mut seen: BTreeMap<u16, String> = BTreeMap::new();
            for (port, what) in ports {
                if port == 0 {
                    continue; // already reported as not a port
                }
                if let Some(first) = seen.get(&port)
                    && *first != what
                {
                    self.problem(
                        path,
                        format!("{protocol} port {port} is used by both {first} and {what}"),
                    );
                } else {
                    seen.insert(port, what);
                }
            }
        }
    }

    fn reach_warnings(&mut self, plan: &ManagedPlan) {
        // Only ICE ports carry the advertised IP; clients find TURN by `turn.domain`.
        let load_balanced = plan.ice_reaches().contains(&Reach::LoadBalancer);
        if load_balanced && !matches!(plan.advertised_ip, AdvertisedIpPlan::Manual(_)) {
            self.warnings.push(
                "spec.livekit.managed.media.advertisedIp: LoadBalancer-exposed ICE ports are advertised with the node's or pod's IP, or with what STUN finds (the node's egress IP, not the load balancer's); clients will not reach the load balancer: use source Manual with its address".into(),
            );
        }
        // Clusters can widen the node port range, so this is a warning, not an error.
        let mut node_ports: Vec<u16> = Vec::new();
        for (start, end) in plan.node_port_ranges() {
            node_ports.push(start);
            if end != start {
                node_ports.push(end);
            }
        }
        for port in node_ports {
            if !DEFAULT_NODE_PORT_RANGE.contains(&port) {
                self.warnings.push(format!(
                    "spec.livekit.managed: NodePort {port} lies outside the default node port range 30000-32767; the API server rejects it unless its --service-node-port-range allows it"
                ));
            }
        }
    }

    /// `livekit_replicas`: the managed LiveKit's replica count, `None` for an external LiveKit.
    fn auth(&mut self, a: &AuthSpec, livekit_replicas: Option<i32>) -> AuthPlan {
        let base = "spec.auth";
        self.image(&format!("{base}.image"), a.image.as_ref());
        let placement = match a.placement.unwrap_or_default() {
            Placement::Deployment => {
                let replicas = a.replicas.unwrap_or(1);
                if replicas < 0 {
                    self.problem(format!("{base}.replicas"), "must not be negative");
                }
                if replicas > 1 && a.redis.is_none() {
                    self.problem(
                        format!("{base}.redis"),
                        "auth.redis is required when auth.replicas > 1: delegated leave jobs are shared through Redis",
                    );
                }
                AuthPlacement::Deployment {
                    replicas,
                    scheduling: Box::new(a.scheduling.clone().unwrap_or_default()),
                }
            }
            Placement::Sidecar => {
                match livekit_replicas {
                    None => self.problem(
                        format!("{base}.placement"),
                        "auth.placement Sidecar needs a managed LiveKit",
                    ),
                    // Each LiveKit pod then runs its own instance, and a webhook about a room reaches
                    // whichever instance its LiveKit node posts to, not the one holding the job.
                    Some(replicas) if replicas > 1 && a.redis.is_none() => self.problem(
                        format!("{base}.redis"),
                        "auth.redis is required with placement Sidecar when livekit.managed.replicas > 1: each LiveKit pod runs its own authorisation service, so delegated leave jobs are shared through Redis",
                    ),
                    Some(_) => {}
                }
                for (field, set) in [
                    ("replicas", a.replicas.is_some()),
                    ("scheduling", a.scheduling.is_some()),
                    ("podAnnotations", !a.pod_annotations.is_empty()),
                    ("podLabels", !a.pod_labels.is_empty()),
                ] {
                    if set {
                        self.problem(
                            format!("{base}.{field}"),
                            "with placement Sidecar the service runs in the LiveKit pods: replicas, scheduling and pod metadata come from livekit.managed",
                        );
                    }
                }
                AuthPlacement::Sidecar
            }
        };
        for (server, url) in &a.cs_api_url_overrides {
            let path = format!("{base}.csApiUrlOverrides[{server}]");
            if !is_server_name(server) {
                self.problem(&path, format!("{server:?} is not a Matrix server name"));
            }
            if !is_http_url(url) || url.contains(',') {
                self.problem(&path, format!("{url:?} is not an http(s) URL"));
            }
        }
        match &a.redis {
            Some(AuthRedis::Url(url)) => {
                let path = format!("{base}.redis.url");
                if !(url.starts_with("redis://") || url.starts_with("rediss://"))
                    || url.chars().any(char::is_whitespace)
                {
                    self.problem(&path, "must be a redis:// or rediss:// URL");
                } else if url_has_password(url) {
                    self.problem(
                        &path,
                        "carries a password: put the URL in a Secret and use auth.redis.urlSecret",
                    );
                }
            }
            Some(AuthRedis::UrlSecret(secret)) => {
                self.non_empty(&format!("{base}.redis.urlSecret.name"), &secret.name);
                self.non_empty(&format!("{base}.redis.urlSecret.key"), &secret.key);
            }
            None => {}
        }
        self.pod_metadata(base, &a.pod_annotations, &a.pod_labels);
        let mut seen = BTreeSet::new();
        for (i, var) in a.extra_env.iter().enumerate() {
            let path = format!("{base}.extraEnv[{i}].name");
            if var.name.is_empty() {
                self.problem(&path, "must not be empty");
            } else if RESERVED_AUTH_ENV.contains(&var.name.as_str()) {
                self.problem(
                    &path,
                    format!(
                        "{} is set by the operator and cannot be overridden",
                        var.name
                    ),
                );
            } else if var.name == env::LIVEKIT_API_URL && livekit_replicas.is_some() {
                self.problem(
                    &path,
                    "LIVEKIT_API_URL is set by the operator for a managed LiveKit (its in-cluster address) and cannot be overridden",
                );
            } else if !seen.insert(var.name.as_str()) {
                self.problem(&path, format!("{} is set twice", var.name));
            }
        }
        AuthPlan {
            image: a.image.clone(),
            placement,
            resources: a.resources.clone(),
            cs_api_url_overrides: a.cs_api_url_overrides.clone(),
            redis: a.redis.clone(),
            extra_env: a.extra_env.clone(),
            pod_annotations: a.pod_annotations.clone(),
            pod_labels: a.pod_labels.clone(),
        }
    }

    fn credentials(&mut self, c: Option<&CredentialsSecretRef>, name: &str) -> CredentialsSource {
        let Some(c) = c else {
            return CredentialsSource::Generated {
                secret_name: names::credentials(name),
            };
        };
        let base = "spec.credentials";
        self.non_empty(&format!("{base}.secretName"), &c.secret_name);
        self.non_empty(&format!("{base}.apiKeyField"), &c.api_key_field);
        self.non_empty(&format!("{base}.apiSecretField"), &c.api_secret_field);
        if c.api_key_field == c.api_secret_field {
            self.problem(
                format!("{base}.apiSecretField"),
                "must differ from apiKeyField",
            );
        }
        CredentialsSource::Existing(c.clone())
    }

    fn ingress(&mut self, i: &IngressSpec) -> Option<IngressSpec> {
        if !i.enabled {
            return None;
        }
        if let Some(class) = &i.class_name {
            self.non_empty("spec.ingress.className", class);
        }
        if let Some(secret) = &i.tls_secret_name {
            self.non_empty("spec.ingress.tlsSecretName", secret);
        }
        Some(i.clone())
    }
}

fn ip_source_name(source: IpSource) -> &'static str {
    match source {
        IpSource::Stun => "STUN",
        IpSource::HostIp => "HostIP",
        IpSource::PodIp => "PodIP",
        IpSource::Manual => "Manual",
    }
}

/// RFC 1035 label: what Service names must be.
fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// A lowercase DNS name (RFC 1123 labels), as Ingress hosts and TLS certificates need.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A Matrix server name: a DNS name, IPv4 literal or `[IPv6]` literal, optionally with `:port`.
fn is_server_name(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, tail)) => {
                if ip.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match tail {
                    "" => return true,
                    t => match t.strip_prefix(':') {
                        Some(port) => ("", Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    let host_ok = host.is_empty() && s.starts_with('[')
        || host.parse::<std::net::Ipv4Addr>().is_ok()
        || is_dns_name(&host.to_ascii_lowercase());
    port_ok && host_ok
}

fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.split('/').next().unwrap_or_default().is_empty() && !s.chars().any(char::is_whitespace)
    })
}

/// `scheme://user:password@host`: a password sits between `:` and `@` in the authority.
fn url_has_password(url: &str) -> bool {
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
        .unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

#[cfg(test)]
mod tests;
