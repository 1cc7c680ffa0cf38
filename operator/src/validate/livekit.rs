//! Validation of a managed LiveKit: ports and how they are reached, the topology rules for more than
//! one replica, rollout and drain, TURN, Redis, the user's config and the pod extras.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::Checker;
use crate::api::{
    AdvertisedIp, Exposure, IpSource, LiveKitRedis, ManagedLiveKit, MediaPort, RolloutSpec,
    TrafficPolicy, TurnSpec, UdpSpec,
};
use crate::build::{livekit, livekit_config};
use crate::plan::names;
use crate::plan::{
    AdvertisedIpPlan, ManagedPlan, PortPlan, Reach, RolloutPlan, TurnPlan, TurnTlsPlan, UdpPlan,
};

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

impl Checker {
    pub(super) fn managed(&mut self, m: &ManagedLiveKit, cr_name: &str) -> ManagedPlan {
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
            .map(|t| self.turn(&format!("{base}.turn"), t, host_network, cr_name));
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
            disruption_max_unavailable: self.disruption_budget(base, m),
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

    /// The PodDisruptionBudget's `maxUnavailable`, if there is to be one.
    fn disruption_budget(&mut self, base: &str, m: &ManagedLiveKit) -> Option<i32> {
        let budget = &m.disruption_budget;
        if budget.max_unavailable < 1 {
            self.problem(
                format!("{base}.disruptionBudget.maxUnavailable"),
                "must be at least 1: 0 would block every node drain (set enabled: false for no budget)",
            );
        }
        (budget.enabled && m.replicas > 1).then_some(budget.max_unavailable)
    }

    fn turn(&mut self, path: &str, t: &TurnSpec, host_network: bool, cr_name: &str) -> TurnPlan {
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
            let issuer = tls.cert_manager.as_ref().map(|c| {
                if tls.secret_name.is_some() {
                    self.problem(
                        &tpath,
                        "tls takes secretName or certManager, not both: the pods mount one certificate",
                    );
                }
                let ipath = format!("{tpath}.certManager.issuerRef");
                self.non_empty(&format!("{ipath}.name"), &c.issuer_ref.name);
                self.non_empty(&format!("{ipath}.kind"), &c.issuer_ref.kind);
                c.issuer_ref.clone()
            });
            // cert-manager writes the Secret the pods mount under the operator's name for it.
            let secret_name = match &issuer {
                Some(_) => Some(names::turn_tls(cr_name)),
                None => tls.secret_name.clone(),
            };
            if host_network && tls.port < 1024 {
                self.problem(
                    format!("{tpath}.port"),
                    "with hostNetwork LiveKit listens on this port itself, and without privileges it cannot bind one below 1024",
                );
            }
            TurnTlsPlan {
                port: self.port_number(&format!("{tpath}.port"), tls.port),
                reach: self.reach(&format!("{tpath}.exposure"), tls.exposure, host_network),
                secret_name,
                issuer,
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
}

fn ip_source_name(source: IpSource) -> &'static str {
    match source {
        IpSource::Stun => "STUN",
        IpSource::HostIp => "HostIP",
        IpSource::PodIp => "PodIP",
        IpSource::Manual => "Manual",
    }
}
