//! The LiveKit Deployment.
//!
//! Choices that matter in production:
//! - Probes: liveness is a TCP check on 7880, because `GET /` answers 406 while LiveKit's node
//!   stats are stale (e.g. Redis trouble) and restarting every pod then makes things worse;
//!   readiness is `GET /`, which takes such a node out of rotation; a TCP startup probe allows a
//!   slow STUN discovery.
//! - Drain: on SIGTERM LiveKit stops taking new rooms and waits for participants to leave, up to
//!   `rollout.terminationGracePeriodSeconds` (defaults in [`crate::validate`]: long with Redis,
//!   short without, where a draining pod shares no state with its successor).
//! - One pod per node where the topology needs it (ports bound on the node, or several replicas
//!   behind NodePort Services with `externalTrafficPolicy: Local`): the rollout never surges
//!   (`maxSurge: 0`), and for NodePort a required pod anti-affinity on the hostname keeps the
//!   replicas apart, since no bound port does. Otherwise the rollout surges first.
//! - The user's pod annotations and labels, extra env, volumes and probe timings are added to the
//!   operator's, never in place of them (validation rejects clashes).
//! - The config file and key file are mounted (ConfigMap and Secret); the pod template carries a
//!   hash of the config and of the credentials' source (plus the other Secrets the pod references),
//!   so a change rolls the pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodAffinityTerm, PodSpec, PodTemplateSpec, Probe, SecretKeySelector,
    TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::labels::{self, Component};
use super::livekit_config::{
    self, CONFIG_DIR, CONFIG_FILE, KEYS_DIR, METRICS_PORT, SIGNAL_PORT, TURN_TLS_DIR,
};
use super::pod::{self, HASH_ANNOTATION};
use super::services::{HTTP, METRICS, RTC_TCP, RTC_UDP, TURN_TLS, TURN_UDP};
use super::{appservice, auth, names, object_meta, secret};
use crate::api::ProbeTiming;
use crate::defaults::OperatorDefaults;
use crate::plan::{AdvertisedIpPlan, AuthPlacement, ManagedPlan, Reach, UdpPlan, Validated};

/// uid/gid of LiveKit (as ESS runs it).
pub const UID: i64 = 10030;
/// Container name.
pub const CONTAINER: &str = "livekit";
/// The node label the anti-affinity spreads replicas over.
pub const HOSTNAME_TOPOLOGY_KEY: &str = "kubernetes.io/hostname";
/// UDP ranges up to this size are listed as container ports when no hostPort requires it
/// (documentation only; larger ranges would bloat the pod spec).
const LIST_RANGE_UP_TO: u16 = 100;

const CONFIG_VOLUME: &str = "config";
const KEYS_VOLUME: &str = "keys";
const TURN_TLS_VOLUME: &str = "turn-tls";

/// Volumes of the LiveKit pod the operator defines; `extraVolumes` may not reuse their names.
pub const OPERATOR_VOLUMES: [&str; 5] = [
    CONFIG_VOLUME,
    KEYS_VOLUME,
    TURN_TLS_VOLUME,
    auth::CREDENTIALS_VOLUME,
    appservice::VOLUME,
];
/// Directories the operator mounts in the LiveKit container; `extraVolumeMounts` stay clear of them.
pub const OPERATOR_MOUNT_DIRS: [&str; 3] = [CONFIG_DIR, KEYS_DIR, TURN_TLS_DIR];

fn port(name: Option<String>, protocol: &str, container: u16, host: Option<u16>) -> ContainerPort {
    ContainerPort {
        name,
        container_port: i32::from(container),
        host_port: host.map(i32::from),
        protocol: Some(protocol.to_owned()),
        ..ContainerPort::default()
    }
}

/// `hostPort` for a HostPort-exposed port; nothing otherwise (with hostNetwork the API server
/// sets it to the container port itself).
fn host_port(reach: Reach, port: u16) -> Option<u16> {
    (reach == Reach::HostPort).then_some(port)
}

fn container_ports(plan: &ManagedPlan) -> Vec<ContainerPort> {
    let mut ports = vec![
        port(Some(HTTP.into()), "TCP", SIGNAL_PORT, None),
        port(Some(METRICS.into()), "TCP", METRICS_PORT, None),
        port(
            Some(RTC_TCP.into()),
            "TCP",
            plan.tcp.port,
            host_port(plan.tcp.reach, plan.tcp.port),
        ),
    ];
    match plan.udp {
        UdpPlan::Mux(p) => ports.push(port(
            Some(RTC_UDP.into()),
            "UDP",
            p.port,
            host_port(p.reach, p.port),
        )),
        UdpPlan::Range { start, end, reach } => {
            if reach == Reach::HostPort || end - start < LIST_RANGE_UP_TO {
                ports.extend((start..=end).map(|p| port(None, "UDP", p, host_port(reach, p))));
            }
        }
    }
    if let Some(turn) = &plan.turn {
        if let Some(p) = turn.udp {
            ports.push(port(
                Some(TURN_UDP.into()),
                "UDP",
                p.port,
                host_port(p.reach, p.port),
            ));
        }
        if let Some(tls) = &turn.tls {
            let container = livekit_config::turn_tls_container_port(plan, tls);
            ports.push(port(
                Some(TURN_TLS.into()),
                "TCP",
                container,
                host_port(tls.reach, tls.port),
            ));
        }
    }
    ports
}

fn env(plan: &ManagedPlan) -> Vec<EnvVar> {
    let mut vars = Vec::new();
    let field = match plan.advertised_ip {
        AdvertisedIpPlan::HostIp => Some("status.hostIP"),
        AdvertisedIpPlan::PodIp => Some("status.podIP"),
        AdvertisedIpPlan::Stun | AdvertisedIpPlan::Manual(_) => None,
    };
    if let Some(field) = field {
        vars.push(EnvVar {
            name: "NODE_IP".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: field.to_owned(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    if let Some(secret) = plan.redis.as_ref().and_then(|r| r.password_secret.as_ref()) {
        vars.push(EnvVar {
            name: "REDIS_PASSWORD".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    vars
}

fn tcp_probe(period: i32, failures: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(HTTP.to_owned()),
            host: None,
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(1),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The operator's probe with the user's timing laid over it.
fn tuned(probe: Probe, timing: Option<&ProbeTiming>) -> Probe {
    let Some(t) = timing else {
        return probe;
    };
    Probe {
        initial_delay_seconds: t.initial_delay_seconds.or(probe.initial_delay_seconds),
        period_seconds: t.period_seconds.or(probe.period_seconds),
        timeout_seconds: t.timeout_seconds.or(probe.timeout_seconds),
        failure_threshold: t.failure_threshold.or(probe.failure_threshold),
        ..probe
    }
}

fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn container(plan: &ManagedPlan, defaults: &OperatorDefaults) -> Container {
    let mut mounts = vec![
        mount(CONFIG_VOLUME, CONFIG_DIR),
        mount(KEYS_VOLUME, KEYS_DIR),
    ];
    if plan
        .turn
        .as_ref()
        .and_then(|t| t.tls.as_ref())
        .is_some_and(|t| t.secret_name.is_some())
    {
        mounts.push(mount(TURN_TLS_VOLUME, TURN_TLS_DIR));
    }
    mounts.extend(plan.extra_volume_mounts.iter().cloned());
    let mut env = env(plan);
    env.extend(plan.extra_env.iter().cloned());
    let probes = &plan.probes;
    Container {
        name: CONTAINER.to_owned(),
        image: Some(
            plan.image
                .clone()
                .unwrap_or_else(|| defaults.livekit_image.clone()),
        ),
        args: Some(vec![
            "--config".to_owned(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        ]),
        env: (!env.is_empty()).then_some(env),
        ports: Some(container_ports(plan)),
        volume_mounts: Some(mounts),
        startup_probe: Some(tuned(tcp_probe(2, 60), probes.startup.as_ref())),
        liveness_probe: Some(tuned(tcp_probe(10, 3), probes.liveness.as_ref())),
        readiness_probe: Some(tuned(
            Probe {
                http_get: Some(HTTPGetAction {
                    path: Some("/".to_owned()),
                    port: IntOrString::String(HTTP.to_owned()),
                    ..HTTPGetAction::default()
                }),
                period_seconds: Some(10),
                timeout_seconds: Some(1),
                failure_threshold: Some(3),
                ..Probe::default()
            },
            probes.readiness.as_ref(),
        )),
        resources: Some(pod::resources(
            plan.resources.as_ref(),
            "100m",
            "150Mi",
            "4Gi",
        )),
        security_context: Some(pod::container_security_context(UID)),
        ..Container::default()
    }
}

fn volumes(v: &Validated, plan: &ManagedPlan) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: CONFIG_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::livekit(v.name()),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        pod::secret_volume(KEYS_VOLUME, &names::keys(v.name()), &[secret::KEY_FILE]),
    ];
    if let Some(secret) = plan
        .turn
        .as_ref()
        .and_then(|t| t.tls.as_ref())
        .and_then(|t| t.secret_name.as_ref())
    {
        volumes.push(pod::secret_volume(
            TURN_TLS_VOLUME,
            secret,
            &["tls.crt", "tls.key"],
        ));
    }
    volumes.extend(plan.extra_volumes.iter().cloned());
    volumes
}

/// The user's affinity plus, when the topology needs it, a required anti-affinity that keeps two
/// LiveKit pods of this transport off one node.
fn affinity(plan: &ManagedPlan, selector: &BTreeMap<String, String>) -> Option<Affinity> {
    let user = plan.scheduling.affinity.clone();
    if !plan.needs_node_anti_affinity() {
        return user;
    }
    let mut affinity = user.unwrap_or_default();
    let mut anti = affinity.pod_anti_affinity.take().unwrap_or_default();
    anti.required_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new)
        .push(PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some(selector.clone()),
                match_expressions: None,
            }),
            topology_key: HOSTNAME_TOPOLOGY_KEY.to_owned(),
            ..PodAffinityTerm::default()
        });
    affinity.pod_anti_affinity = Some(anti);
    Some(affinity)
}

/// The Deployment `<name>-livekit` (with the authorisation service as a sidecar if so placed).
/// `hash` covers the ConfigMap, the credentials and the referenced Secrets' versions.
pub fn deployment(
    v: &Validated,
    plan: &ManagedPlan,
    defaults: &OperatorDefaults,
    hash: &str,
) -> Deployment {
    let selector = labels::selector(v.name(), Component::Sfu);
    let mut containers = vec![container(plan, defaults)];
    let mut volumes = volumes(v, plan);
    if v.auth().placement == AuthPlacement::Sidecar {
        containers.push(auth::container(v, defaults));
        volumes.extend(auth::volumes(v));
    }
    let mut spec = PodSpec {
        containers,
        volumes: Some(volumes),
        service_account_name: Some(names::livekit(v.name())),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        // fsGroup is also a supplementary group of a sidecar running under its own uid, so it
        // reads the group-readable Secret files too.
        security_context: Some(pod::pod_security_context(UID)),
        termination_grace_period_seconds: Some(plan.rollout.termination_grace_seconds),
        image_pull_secrets: pod::image_pull_secrets(v),
        ..PodSpec::default()
    };
    if plan.host_network {
        spec.host_network = Some(true);
        // Keep resolving cluster names (e.g. Redis) from the node's network namespace.
        spec.dns_policy = Some("ClusterFirstWithHostNet".to_owned());
    }
    pod::apply_scheduling(&mut spec, &plan.scheduling, &selector);
    spec.affinity = affinity(plan, &selector);
    let mut annotations = plan.pod_annotations.clone();
    annotations.insert(HASH_ANNOTATION.to_owned(), hash.to_owned());
    Deployment {
        metadata: object_meta(v, names::livekit(v.name()), Component::Sfu),
        spec: Some(DeploymentSpec {
            replicas: Some(plan.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                match_expressions: None,
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(plan.rollout.max_surge)),
                    max_unavailable: Some(IntOrString::Int(plan.rollout.max_unavailable)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels::pod_with(v.name(), Component::Sfu, &plan.pod_labels)),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(spec),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::test_support::validated;
    use crate::plan::LiveKitPlan;

    fn build(spec_patch: &str) -> Deployment {
        let v = validated(spec_patch);
        let LiveKitPlan::Managed(plan) = v.livekit() else {
            panic!("fixture is managed");
        };
        deployment(&v, plan, &OperatorDefaults::default(), "hash-1")
    }

    fn pod_spec(d: &Deployment) -> &PodSpec {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    fn livekit_container(d: &Deployment) -> &Container {
        &pod_spec(d).containers[0]
    }

    fn strategy(d: &Deployment) -> (IntOrString, IntOrString) {
        let ru = d
            .spec
            .as_ref()
            .and_then(|s| s.strategy.as_ref())
            .and_then(|s| s.rolling_update.clone())
            .expect("rolling update");
        (
            ru.max_surge.expect("surge"),
            ru.max_unavailable.expect("unavailable"),
        )
    }

    #[test]
    fn pod_is_hardened() {
        let d = build("");
        let pod = pod_spec(&d);
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name.as_deref(), Some("demo-livekit"));
        assert_eq!(
            pod.termination_grace_period_seconds,
            Some(30),
            "no Redis: a short drain"
        );
        assert_eq!(pod.host_network, None);
        let psc = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(
            (psc.run_as_user, psc.run_as_group, psc.fs_group),
            (Some(10030), Some(10030), Some(10030))
        );
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        let sc = livekit_container(&d)
            .security_context
            .as_ref()
            .expect("container security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
    }

    #[test]
    fn probes_tolerate_stale_stats_and_slow_starts() {
        let d = build("");
        let c = livekit_container(&d);
        let liveness = c.liveness_probe.as_ref().expect("liveness");
        assert!(liveness.tcp_socket.is_some() && liveness.http_get.is_none());
        let readiness = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("readiness");
        assert_eq!(readiness.path.as_deref(), Some("/"));
        assert_eq!(readiness.port, IntOrString::String("http".into()));
        let startup = c.startup_probe.as_ref().expect("startup");
        assert!(startup.tcp_socket.is_some());
        assert!(startup.period_seconds.unwrap_or(0) * startup.failure_threshold.unwrap_or(0) >= 60);
    }

    #[test]
    fn config_keys_and_hash_are_wired() {
        let d = build("");
        let c = livekit_container(&d);
        assert_eq!(
            c.args,
            Some(vec![
                "--config".into(),
                "/etc/livekit/config/config.yaml".into()
            ])
        );
        assert_eq!(
            c.image.as_deref(),
            Some(crate::defaults::DEFAULT_LIVEKIT_IMAGE)
        );
        let annotations = d
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.clone())
            .expect("annotations");
        assert_eq!(annotations[HASH_ANNOTATION], "hash-1");
        let volumes = pod_spec(&d).volumes.clone().expect("volumes");
        let keys = volumes
            .iter()
            .find(|v| v.name == KEYS_VOLUME)
            .and_then(|v| v.secret.clone())
            .expect("keys volume");
        assert_eq!(keys.secret_name.as_deref(), Some("demo-keys"));
        assert_eq!(
            keys.default_mode.map(|m| m & 0o007),
            Some(0),
            "LiveKit rejects other-readable key files"
        );
        let config = volumes
            .iter()
            .find(|v| v.name == CONFIG_VOLUME)
            .and_then(|v| v.config_map.clone())
            .expect("config volume");
        assert_eq!(config.name, "demo-livekit");
    }

    #[test]
    fn node_port_exposure_uses_plain_container_ports_and_surges() {
        let d = build("");
        let ports: Vec<(i32, Option<i32>, String)> = livekit_container(&d)
            .ports
            .iter()
            .flatten()
            .map(|p| {
                (
                    p.container_port,
                    p.host_port,
                    p.protocol.clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                (7880, None, "TCP".into()),
                (6789, None, "TCP".into()),
                (30001, None, "TCP".into()),
                (30002, None, "UDP".into())
            ]
        );
        assert_eq!(strategy(&d), (IntOrString::Int(1), IntOrString::Int(0)));
    }

    #[test]
    fn host_port_binds_on_the_node_and_does_not_surge() {
        let d = build(
            "livekit: {managed: {media: {tcp: {port: 30001, exposure: HostPort}, udp: {range: {start: 40000, end: 40009, exposure: HostPort}}}}}",
        );
        let ports = livekit_container(&d).ports.clone().expect("ports");
        let host_ports: Vec<i32> = ports.iter().filter_map(|p| p.host_port).collect();
        assert_eq!(host_ports.len(), 11, "tcp + 10 range ports");
        assert!(
            ports
                .iter()
                .filter(|p| p.host_port.is_some())
                .all(|p| p.host_port == Some(p.container_port))
        );
        assert_eq!(strategy(&d), (IntOrString::Int(0), IntOrString::Int(1)));
    }

    #[test]
    fn host_network_uses_node_dns_and_does_not_surge() {
        let d = build(
            "livekit: {managed: {media: {hostNetwork: true, advertisedIp: {source: HostIP}}}}",
        );
        let pod = pod_spec(&d);
        assert_eq!(pod.host_network, Some(true));
        assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        assert_eq!(strategy(&d), (IntOrString::Int(0), IntOrString::Int(1)));
        let node_ip = livekit_container(&d)
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "NODE_IP")
            .expect("NODE_IP");
        let field = node_ip
            .value_from
            .as_ref()
            .and_then(|f| f.field_ref.as_ref())
            .expect("fieldRef");
        assert_eq!(field.field_path, "status.hostIP");
    }

    #[test]
    fn large_ranges_are_not_listed_unless_host_ports_need_them() {
        let d = build("livekit: {managed: {media: {udp: {range: {start: 31000, end: 31999}}}}}");
        assert_eq!(livekit_container(&d).ports.as_ref().map(Vec::len), Some(3));
        let d = build("livekit: {managed: {media: {udp: {range: {start: 31000, end: 31009}}}}}");
        assert_eq!(livekit_container(&d).ports.as_ref().map(Vec::len), Some(13));
    }

    #[test]
    fn pod_ip_redis_password_and_turn_tls() {
        let d = build(
            r#"
livekit:
  managed:
    replicas: 3
    redis: {address: "redis:6379", passwordSecret: {name: redis, key: password}}
    media: {advertisedIp: {source: PodIP}, service: {externalTrafficPolicy: Local}}
    turn: {domain: turn.example.com, tls: {port: 443, exposure: HostPort, secretName: turn-cert}}
"#,
        );
        assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(3));
        let c = livekit_container(&d);
        let env: BTreeMap<&str, &EnvVar> = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e))
            .collect();
        assert_eq!(
            env["NODE_IP"]
                .value_from
                .as_ref()
                .and_then(|f| f.field_ref.as_ref())
                .map(|f| f.field_path.as_str()),
            Some("status.podIP")
        );
        let password = env["REDIS_PASSWORD"]
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
            .expect("secret ref");
        assert_eq!(
            (password.name.as_str(), password.key.as_str()),
            ("redis", "password")
        );
        assert!(
            env.values().all(|e| e.value.is_none()),
            "no literal values, let alone secrets"
        );
        let tls = c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(TURN_TLS))
            .expect("turn-tls port");
        assert_eq!((tls.container_port, tls.host_port), (5349, Some(443)));
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == TURN_TLS_DIR)
        );
        let volume = pod_spec(&d)
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == TURN_TLS_VOLUME)
            .and_then(|v| v.secret.clone())
            .expect("tls volume");
        assert_eq!(volume.secret_name.as_deref(), Some("turn-cert"));
    }

    #[test]
    fn sidecar_auth_joins_the_pod_with_its_own_uid() {
        let d = build("auth: {placement: Sidecar}");
        let pod = pod_spec(&d);
        let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["livekit", "auth"]);
        let auth = &pod.containers[1];
        assert_eq!(
            auth.security_context.as_ref().and_then(|s| s.run_as_user),
            Some(auth::UID)
        );
        assert!(
            pod.volumes
                .iter()
                .flatten()
                .any(|v| v.name == auth::CREDENTIALS_VOLUME)
        );
    }

    #[test]
    fn scheduling_is_passed_through() {
        let d = build(
            r#"
livekit:
  managed:
    scheduling:
      nodeSelector: {rtc: "yes"}
      tolerations: [{key: dedicated, operator: Equal, value: rtc, effect: NoSchedule}]
      priorityClassName: high
      affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}
"#,
        );
        let pod = pod_spec(&d);
        assert_eq!(
            pod.node_selector.as_ref().map(|n| n["rtc"].as_str()),
            Some("yes")
        );
        assert_eq!(
            pod.tolerations.as_ref().map(|t| t[0].key.clone()),
            Some(Some("dedicated".to_owned()))
        );
        assert_eq!(pod.priority_class_name.as_deref(), Some("high"));
        assert!(
            pod.affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .is_some()
        );
    }

    fn anti_affinity_terms(d: &Deployment) -> Vec<PodAffinityTerm> {
        pod_spec(d)
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default()
    }

    #[test]
    fn replicas_behind_node_ports_get_a_node_each() {
        let d = build(
            r#"
livekit:
  managed:
    replicas: 2
    redis: {address: "redis:6379"}
    media: {service: {externalTrafficPolicy: Local}}
    scheduling:
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - {weight: 1, podAffinityTerm: {topologyKey: zone, labelSelector: {matchLabels: {a: b}}}}
"#,
        );
        let terms = anti_affinity_terms(&d);
        assert_eq!(terms.len(), 1, "{terms:?}");
        assert_eq!(terms[0].topology_key, HOSTNAME_TOPOLOGY_KEY);
        assert_eq!(
            terms[0]
                .label_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(labels::selector("demo", Component::Sfu))
        );
        // The user's own affinity is kept beside ours.
        let anti = pod_spec(&d)
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.clone())
            .expect("anti-affinity");
        assert_eq!(
            anti.preferred_during_scheduling_ignored_during_execution
                .map(|p| p.len()),
            Some(1)
        );
        assert_eq!(strategy(&d), (IntOrString::Int(0), IntOrString::Int(1)));
        assert_eq!(pod_spec(&d).termination_grace_period_seconds, Some(3600));
    }

    #[test]
    fn a_single_replica_or_node_bound_ports_need_no_anti_affinity() {
        for patch in [
            "",
            "livekit: {managed: {replicas: 2, redis: {address: 'redis:6379'}, media: {hostNetwork: true}}}",
        ] {
            assert!(anti_affinity_terms(&build(patch)).is_empty(), "{patch}");
        }
    }

    #[test]
    fn drain_and_rollout_follow_the_spec() {
        let d = build(
            "livekit: {managed: {rollout: {terminationGracePeriodSeconds: 18000, maxSurge: 2, maxUnavailable: 1}}}",
        );
        assert_eq!(pod_spec(&d).termination_grace_period_seconds, Some(18000));
        assert_eq!(strategy(&d), (IntOrString::Int(2), IntOrString::Int(1)));
    }

    #[test]
    fn operational_fields_are_added_to_the_operators() {
        let d = build(
            r#"
imagePullSecrets: [regcred]
livekit:
  managed:
    podAnnotations: {sidecar.istio.io/inject: "false"}
    podLabels: {team: rtc}
    extraEnv: [{name: GODEBUG, value: "madvdontneed=1"}]
    extraVolumes: [{name: ca, configMap: {name: ca-bundle}}]
    extraVolumeMounts: [{name: ca, mountPath: /etc/ssl/custom, readOnly: true}]
    probes:
      readiness: {periodSeconds: 5, failureThreshold: 6}
      startup: {failureThreshold: 120}
"#,
        );
        let template = d.spec.as_ref().map(|s| &s.template).expect("template");
        let meta = template.metadata.as_ref().expect("metadata");
        let annotations = meta.annotations.as_ref().expect("annotations");
        assert_eq!(annotations["sidecar.istio.io/inject"], "false");
        assert_eq!(annotations[HASH_ANNOTATION], "hash-1");
        let pod_labels = meta.labels.as_ref().expect("labels");
        assert_eq!(pod_labels["team"], "rtc");
        for (k, v) in labels::pod("demo", Component::Sfu) {
            assert_eq!(pod_labels[&k], v);
        }
        let pod = pod_spec(&d);
        assert_eq!(
            pod.image_pull_secrets
                .as_ref()
                .map(|s| s.iter().map(|r| r.name.as_str()).collect::<Vec<_>>()),
            Some(vec!["regcred"])
        );
        assert!(pod.volumes.iter().flatten().any(|v| v.name == "ca"));
        assert!(
            pod.volumes
                .iter()
                .flatten()
                .any(|v| v.name == CONFIG_VOLUME)
        );
        let c = livekit_container(&d);
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == "/etc/ssl/custom")
        );
        assert!(c.env.iter().flatten().any(|e| e.name == "GODEBUG"));
        let readiness = c.readiness_probe.as_ref().expect("readiness");
        assert_eq!(
            (
                readiness.period_seconds,
                readiness.failure_threshold,
                readiness.timeout_seconds
            ),
            (Some(5), Some(6), Some(1)),
            "unset timings keep the operator's"
        );
        assert!(readiness.http_get.is_some());
        let startup = c.startup_probe.as_ref().expect("startup");
        assert_eq!(
            (startup.period_seconds, startup.failure_threshold),
            (Some(2), Some(120))
        );
        assert_eq!(
            c.liveness_probe.as_ref().and_then(|p| p.failure_threshold),
            Some(3)
        );
    }

    #[test]
    fn container_port_names_are_unique_in_the_pod() {
        for patch in [
            "auth: {placement: Sidecar}",
            "livekit: {managed: {turn: {domain: t.example.com, udp: {port: 3478}, tls: {port: 443, exposure: LoadBalancer}}}}\nauth: {placement: Sidecar}",
        ] {
            let d = build(patch);
            let names: Vec<String> = pod_spec(&d)
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .filter_map(|p| p.name.clone())
                .collect();
            let unique: std::collections::BTreeSet<&String> = names.iter().collect();
            assert_eq!(unique.len(), names.len(), "{patch}: {names:?}");
            let auth_probe = pod_spec(&d).containers[1]
                .readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .map(|h| h.port.clone());
            assert_eq!(
                auth_probe,
                Some(IntOrString::String(
                    super::super::services::AUTH_HTTP.into()
                )),
                "the auth probe names its own port"
            );
        }
    }
}
