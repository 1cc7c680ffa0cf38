//! One test per rule: the problem's path and message, plus the shape of what passes.

use super::*;
use crate::api::IngressController;
use crate::build::test_support::cr;
use crate::plan::{
    AdvertisedIpPlan, AppServicePlan, AuthPlacement, ManagedPlan, PortPlan, Reach, UdpPlan,
};

/// Problems of a fixture (base CR + spec patch) as `path: message` lines.
fn problems(spec_patch: &str) -> Vec<String> {
    problems_of(&cr(spec_patch))
}

fn problems_of(resource: &MatrixRTCTransport) -> Vec<String> {
    match validate(resource) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid.problems().iter().map(Problem::to_string).collect(),
    }
}

/// Assert exactly one problem, at `path`, whose message contains `fragment`.
#[track_caller]
fn assert_one(spec_patch: &str, path: &str, fragment: &str) {
    let found = problems(spec_patch);
    assert_eq!(found.len(), 1, "{spec_patch}: {found:#?}");
    assert!(
        found[0].starts_with(&format!("{path}: ")) && found[0].contains(fragment),
        "{spec_patch}: expected {path}: ...{fragment}..., got {}",
        found[0]
    );
}

fn managed(v: &Validated) -> &ManagedPlan {
    match v.livekit() {
        LiveKitPlan::Managed(plan) => plan,
        LiveKitPlan::External { .. } => panic!("fixture is managed"),
    }
}

fn ok(spec_patch: &str) -> Validated {
    validate(&cr(spec_patch)).unwrap_or_else(|e| panic!("{spec_patch}: {e}"))
}

#[test]
fn defaults_resolve_to_a_single_nodeport_transport() {
    let v = ok("");
    assert_eq!(
        v.full_access(),
        &FullAccess::Only(vec!["example.com".into()])
    );
    let plan = managed(&v);
    assert_eq!(
        plan.tcp,
        PortPlan {
            port: 30001,
            reach: Reach::NodePort
        }
    );
    assert_eq!(
        plan.udp,
        UdpPlan::Mux(PortPlan {
            port: 30002,
            reach: Reach::NodePort
        })
    );
    assert_eq!(plan.advertised_ip, AdvertisedIpPlan::Stun);
    assert!(!plan.binds_node_ports());
    assert_eq!(
        v.auth().placement,
        AuthPlacement::Deployment {
            replicas: 1,
            scheduling: Box::default()
        }
    );
    assert_eq!(
        v.credentials_source(),
        &CredentialsSource::Generated {
            secret_name: "demo-credentials".into()
        }
    );
    assert!(v.ingress().is_some());
    assert!(v.warnings().is_empty());
    assert_eq!(
        v.id,
        Identity {
            name: "demo".into(),
            namespace: v.namespace().to_owned(),
            uid: "0b9f1c2e-0000-4000-8000-000000000001".into(),
        }
    );
}

#[test]
fn identity_must_come_from_the_api_server_and_fit_service_names() {
    let mut resource = cr("");
    resource.metadata.uid = None;
    resource.metadata.namespace = None;
    assert_eq!(
        problems_of(&resource),
        [
            "metadata.namespace: is missing",
            "metadata.uid: is missing (the resource must come from the API server)"
        ]
    );
    for name in [
        "a".repeat(MAX_NAME_LEN + 1),
        "rtc.example".to_owned(),
        "1rtc".to_owned(),
    ] {
        let mut resource = cr("");
        resource.metadata.name = Some(name.clone());
        let found = problems_of(&resource);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        assert!(
            found[0].starts_with("metadata.name: must be a DNS label"),
            "{}",
            found[0]
        );
    }
    let mut resource = cr("");
    resource.metadata.name = Some("a".repeat(MAX_NAME_LEN));
    assert!(problems_of(&resource).is_empty());
}

#[test]
fn server_name_and_host() {
    assert_one(
        "serverName: 'example.com, evil.org'",
        "spec.serverName",
        "is not a Matrix server name",
    );
    assert_one(
        "host: 'https://rtc.example.com'",
        "spec.host",
        "is not a DNS name",
    );
    assert_one(
        "host: 'rtc.example.com:443'",
        "spec.host",
        "is not a DNS name",
    );
    assert_one("host: 'RTC.example.com'", "spec.host", "is not a DNS name");
    for good in [
        "example.com:8448",
        "[2001:db8::1]:8448",
        "192.0.2.1",
        "[::1]",
    ] {
        assert!(
            problems(&format!(
                "serverName: '{good}'\nhomeservers: {{fullAccess: ['*']}}"
            ))
            .is_empty(),
            "{good}"
        );
    }
}

#[test]
fn full_access_list() {
    assert_one(
        "homeservers: {fullAccess: ['*', example.com]}",
        "spec.homeservers.fullAccess",
        "'*' must be the only entry",
    );
    assert_one(
        "homeservers: {fullAccess: []}",
        "spec.homeservers.fullAccess",
        "must not be empty",
    );
    assert_one(
        "homeservers: {fullAccess: [a.example, a.example]}",
        "spec.homeservers.fullAccess[1]",
        "listed twice",
    );
    assert_one(
        "homeservers: {fullAccess: ['bad server']}",
        "spec.homeservers.fullAccess[0]",
        "not a Matrix server name",
    );
    assert_eq!(
        ok("homeservers: {fullAccess: ['*']}").full_access(),
        &FullAccess::Everyone
    );
    assert_eq!(
        ok("homeservers: {fullAccess: [a.example, b.example]}")
            .full_access()
            .env_value(),
        "a.example,b.example"
    );
}

#[test]
fn external_livekit() {
    let v =
        ok("livekit: {external: {url: 'wss://sfu.example.net'}}\ncredentials: {secretName: lk}");
    assert_eq!(
        v.livekit(),
        &LiveKitPlan::External {
            url: "wss://sfu.example.net".into()
        }
    );
    assert!(!v.is_managed_livekit());
    assert_one(
        "livekit: {external: {url: 'wss://sfu.example.net'}}",
        "spec.credentials",
        "an external LiveKit needs credentials.secretName",
    );
    assert_one(
        "livekit: {external: {url: 'https://sfu.example.net'}}\ncredentials: {secretName: lk}",
        "spec.livekit.external.url",
        "must start with wss://",
    );
    assert_one(
        "livekit: {external: {url: 'wss://'}}\ncredentials: {secretName: lk}",
        "spec.livekit.external.url",
        "is not a WebSocket URL with a host",
    );
    assert_one(
        "livekit: {external: {url: 'wss://sfu.example.net'}}\ncredentials: {secretName: lk}\nauth: {placement: Sidecar}",
        "spec.auth.placement",
        "Sidecar needs a managed LiveKit",
    );
}

#[test]
fn replicas_and_redis() {
    assert_one(
        "livekit: {managed: {replicas: 2, media: {hostNetwork: true}}}",
        "spec.livekit.managed.redis",
        "required when replicas > 1",
    );
    assert_one(
        "livekit: {managed: {replicas: -1}}",
        "spec.livekit.managed.replicas",
        "must not be negative",
    );
    assert!(problems("livekit: {managed: {replicas: 0}}").is_empty());
    assert_one(
        "livekit: {managed: {redis: {address: 'redis'}}}",
        "spec.livekit.managed.redis.address",
        "is not host:port",
    );
    assert_one(
        "livekit: {managed: {redis: {address: 'redis:6379', passwordSecret: {name: '', key: p}}}}",
        "spec.livekit.managed.redis.passwordSecret.name",
        "must not be empty",
    );
    assert_one(
        "livekit: {managed: {image: ' '}}",
        "spec.livekit.managed.image",
        "non-empty image reference",
    );
}

#[test]
fn ports_and_ranges() {
    assert_one(
        "livekit: {managed: {media: {tcp: {port: 0}}}}",
        "spec.livekit.managed.media.tcp.port",
        "is not a port",
    );
    assert_one(
        "livekit: {managed: {media: {udp: {mux: {port: 70000}}}}}",
        "spec.livekit.managed.media.udp.mux.port",
        "is not a port",
    );
    assert_one(
        "livekit: {managed: {media: {udp: {range: {start: 40000, end: 39999}}}}}",
        "spec.livekit.managed.media.udp.range",
        "range start must not exceed end",
    );
    assert_one(
        "livekit: {managed: {media: {udp: {range: {start: 30000, end: 35000}}}}}",
        "spec.livekit.managed.media.udp.range",
        "at most 5000 ports",
    );
    let v = ok(
        "livekit: {managed: {media: {udp: {range: {start: 30000, end: 34999, exposure: HostPort}}}}}",
    );
    assert_eq!(
        managed(&v).udp,
        UdpPlan::Range {
            start: 30000,
            end: 34999,
            reach: Reach::HostPort
        }
    );
    assert!(managed(&v).binds_node_ports());
}

#[test]
fn host_network_takes_every_port() {
    let found = problems(
        "livekit: {managed: {media: {hostNetwork: true, tcp: {port: 7881, exposure: NodePort}, udp: {mux: {port: 7882, exposure: HostPort}}}}}",
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("spec.livekit.managed.media.tcp.exposure: with hostNetwork"));
    assert!(found[1].starts_with("spec.livekit.managed.media.udp.mux.exposure: with hostNetwork"));
    let v = ok(
        "livekit: {managed: {media: {hostNetwork: true}, turn: {domain: t.example.com, udp: {port: 3478}}}}",
    );
    assert!(
        managed(&v)
            .single_ports()
            .iter()
            .all(|p| p.reach == Reach::HostNetwork)
    );
    assert!(managed(&v).binds_node_ports());
    assert_one(
        "livekit: {managed: {media: {hostNetwork: true}, turn: {domain: t.example.com, tls: {port: 443}}}}",
        "spec.livekit.managed.turn.tls.port",
        "cannot bind one below 1024",
    );
}

#[test]
fn colliding_ports() {
    assert_one(
        "livekit: {managed: {media: {tcp: {port: 7880}}}}",
        "spec.livekit.managed.media",
        "TCP port 7880 is used by both LiveKit signalling and media.tcp.port",
    );
    assert_one(
        "livekit: {managed: {turn: {domain: t.example.com, udp: {port: 30002}}}}",
        "spec.livekit.managed.media",
        "UDP port 30002 is used by both media.udp.mux.port and turn.udp.port",
    );
    assert_one(
        "livekit: {managed: {media: {udp: {range: {start: 31000, end: 31010}}}, turn: {domain: t.example.com, udp: {port: 31005}}}}",
        "spec.livekit.managed.media",
        "UDP port 31005",
    );
    assert_one(
        "livekit: {managed: {media: {tcp: {port: 5349}}, turn: {domain: t.example.com, tls: {port: 443}}}}",
        "spec.livekit.managed.media",
        "TCP port 5349",
    );
    // Same number, different protocols: fine.
    assert!(problems("livekit: {managed: {media: {tcp: {port: 30002}}}}").is_empty());
}

#[test]
fn advertised_ip() {
    let base = "spec.livekit.managed.media.advertisedIp.address";
    assert_one(
        "livekit: {managed: {media: {advertisedIp: {source: Manual}}}}",
        base,
        "required with source Manual",
    );
    assert_one(
        "livekit: {managed: {media: {advertisedIp: {source: Manual, address: 'rtc.example.com'}}}}",
        base,
        "is not an IPv4 or IPv6 address",
    );
    assert_one(
        "livekit: {managed: {media: {advertisedIp: {source: HostIP, address: '192.0.2.1'}}}}",
        base,
        "only allowed with source Manual, not HostIP",
    );
    let v =
        ok("livekit: {managed: {media: {advertisedIp: {source: Manual, address: '2001:db8::7'}}}}");
    assert_eq!(
        managed(&v).advertised_ip,
        AdvertisedIpPlan::Manual("2001:db8::7".parse().expect("ip"))
    );
    assert_eq!(
        managed(&ok(
            "livekit: {managed: {media: {advertisedIp: {source: PodIP}}}}"
        ))
        .advertised_ip,
        AdvertisedIpPlan::PodIp
    );
}

#[test]
fn node_ip_behind_a_load_balancer_is_a_warning() {
    let v = ok(
        "livekit: {managed: {media: {tcp: {port: 7881, exposure: LoadBalancer}, advertisedIp: {source: HostIP}}}}",
    );
    assert_eq!(v.warnings().len(), 1);
    assert!(v.warnings()[0].contains("clients will not reach the load balancer"));
    // STUN finds the node's egress address, not the load balancer's: the advice says so.
    let v = ok("livekit: {managed: {media: {udp: {mux: {port: 7882, exposure: LoadBalancer}}}}}");
    assert_eq!(v.warnings().len(), 1, "{:?}", v.warnings());
    assert!(v.warnings()[0].contains("STUN finds (the node's egress IP, not the load balancer's)"));
    assert!(v.warnings()[0].ends_with("use source Manual with its address"));
    assert!(!v.warnings()[0].contains("or STUN"));
    // TURN is found by its domain, so a load-balanced TURN port needs no manual address.
    assert!(
        ok("livekit: {managed: {turn: {domain: t.example.com, tls: {port: 443, exposure: LoadBalancer}}}}")
            .warnings()
            .is_empty()
    );
}

#[test]
fn turn() {
    assert_one(
        "livekit: {managed: {turn: {domain: t.example.com}}}",
        "spec.livekit.managed.turn",
        "turn needs udp, tls or both",
    );
    assert_one(
        "livekit: {managed: {turn: {domain: 'not a domain', udp: {port: 3478}}}}",
        "spec.livekit.managed.turn.domain",
        "is not a DNS name",
    );
    assert_one(
        "livekit: {managed: {turn: {domain: t.example.com, tls: {secretName: ''}}}}",
        "spec.livekit.managed.turn.tls.secretName",
        "must not be empty",
    );
    let v =
        ok("livekit: {managed: {turn: {domain: t.example.com, tls: {exposure: LoadBalancer}}}}");
    let tls = managed(&v)
        .turn
        .as_ref()
        .and_then(|t| t.tls.clone())
        .expect("tls");
    assert_eq!(
        (tls.port, tls.reach, tls.secret_name),
        (443, Reach::LoadBalancer, None)
    );
}

#[test]
fn free_form_config() {
    assert_one(
        "livekit: {managed: {config: [1]}}",
        "spec.livekit.managed.config",
        "must be an object",
    );
    assert_one(
        "livekit: {managed: {config: {keys: {k: s}}}}",
        "spec.livekit.managed.config.keys",
        "API keys do not belong in the resource",
    );
    assert_one(
        "livekit: {managed: {config: {redis: {password: p}}}}",
        "spec.livekit.managed.config.redis.password",
        "use livekit.managed.redis.passwordSecret",
    );
    assert!(problems("livekit: {managed: {config: {logging: {level: debug}}}}").is_empty());
}

#[test]
fn auth_placement_and_replicas() {
    assert_one(
        "auth: {replicas: 2}",
        "spec.auth.redis",
        "required when auth.replicas > 1",
    );
    assert_one(
        "auth: {replicas: -1}",
        "spec.auth.replicas",
        "must not be negative",
    );
    let found = problems("auth: {placement: Sidecar, replicas: 1, scheduling: {}}");
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("spec.auth.replicas: with placement Sidecar"));
    assert!(found[1].starts_with("spec.auth.scheduling: with placement Sidecar"));
    assert!(ok("auth: {placement: Sidecar}").auth_is_sidecar());
    assert!(problems("auth: {replicas: 2, redis: {url: 'redis://r:6379/1'}}").is_empty());
}

#[test]
fn a_sidecar_in_several_livekit_pods_needs_auth_redis() {
    let two_livekit_pods = "livekit: {managed: {replicas: 2, redis: {address: 'redis:6379'}, media: {hostNetwork: true}}}";
    assert_one(
        &format!("{two_livekit_pods}\nauth: {{placement: Sidecar}}"),
        "spec.auth.redis",
        "required with placement Sidecar when livekit.managed.replicas > 1",
    );
    assert!(
        problems(&format!(
            "{two_livekit_pods}\nauth: {{placement: Sidecar, redis: {{url: 'redis://r:6379/1'}}}}"
        ))
        .is_empty()
    );
    // One LiveKit pod means one instance: its memory is the only job store, and that is enough.
    assert!(problems("auth: {placement: Sidecar}").is_empty());
    // The same Redis rule for a Deployment, whose replicas are counted on their own.
    assert!(problems(&format!("{two_livekit_pods}\nauth: {{replicas: 1}}")).is_empty());
}

#[test]
fn auth_overrides_and_redis() {
    assert_one(
        "auth: {csApiUrlOverrides: {'bad name': 'http://synapse:8008'}}",
        "spec.auth.csApiUrlOverrides[bad name]",
        "is not a Matrix server name",
    );
    assert_one(
        "auth: {csApiUrlOverrides: {example.com: 'synapse:8008'}}",
        "spec.auth.csApiUrlOverrides[example.com]",
        "is not an http(s) URL",
    );
    assert_one(
        "auth: {redis: {url: 'http://r'}}",
        "spec.auth.redis.url",
        "redis:// or rediss://",
    );
    assert_one(
        "auth: {redis: {url: 'redis://:hunter2@r:6379'}}",
        "spec.auth.redis.url",
        "use auth.redis.urlSecret",
    );
    assert!(problems("auth: {redis: {url: 'redis://user@r:6379'}}").is_empty());
    assert_one(
        "auth: {redis: {urlSecret: {name: r, key: ''}}}",
        "spec.auth.redis.urlSecret.key",
        "must not be empty",
    );
}

#[test]
fn extra_env_cannot_override_the_operator() {
    for reserved in RESERVED_AUTH_ENV {
        assert_one(
            &format!("auth: {{extraEnv: [{{name: {reserved}, value: x}}]}}"),
            "spec.auth.extraEnv[0].name",
            &format!("{reserved} is set by the operator and cannot be overridden"),
        );
    }
    assert_one(
        "auth: {extraEnv: [{name: A, value: x}, {name: A, value: y}]}",
        "spec.auth.extraEnv[1].name",
        "A is set twice",
    );
    assert!(problems("auth: {extraEnv: [{name: LIVEKIT_LOG_LEVEL, value: debug}]}").is_empty());
    let api_url = "auth: {extraEnv: [{name: LIVEKIT_API_URL, value: 'http://sfu.internal'}]}";
    assert_one(
        api_url,
        "spec.auth.extraEnv[0].name",
        "LIVEKIT_API_URL is set by the operator for a managed LiveKit",
    );
    assert!(
        problems(&format!(
            "livekit: {{external: {{url: 'wss://sfu.example.net'}}}}\ncredentials: {{secretName: lk}}\n{api_url}"
        ))
        .is_empty(),
        "an external LiveKit may be reached by another address"
    );
}

#[test]
fn credentials_and_ingress() {
    assert_one(
        "credentials: {secretName: ''}",
        "spec.credentials.secretName",
        "must not be empty",
    );
    assert_one(
        "credentials: {secretName: c, apiKeyField: same, apiSecretField: same}",
        "spec.credentials.apiSecretField",
        "must differ from apiKeyField",
    );
    let v = ok("credentials: {secretName: c}");
    assert_eq!(v.credentials_source().secret_name(), "c");
    assert_eq!(v.credentials_source().fields(), ("api-key", "api-secret"));
    assert_one(
        "ingress: {className: ''}",
        "spec.ingress.className",
        "must not be empty",
    );
    assert_one(
        "ingress: {tlsSecretName: ' '}",
        "spec.ingress.tlsSecretName",
        "must not be empty",
    );
    assert!(
        ok("ingress: {enabled: false, className: ''}")
            .ingress()
            .is_none()
    );
}

#[test]
fn every_problem_is_reported_at_once_one_per_line() {
    let err = validate(&cr(
        "serverName: 'a b'\nhost: 'H'\nlivekit: {managed: {replicas: 3, media: {hostNetwork: true}}}\nauth: {replicas: 2}\ncredentials: {secretName: ''}",
    ))
    .expect_err("invalid");
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.serverName",
            "spec.host",
            "spec.livekit.managed.redis",
            "spec.auth.redis",
            "spec.credentials.secretName"
        ]
    );
    assert_eq!(err.to_string().lines().count(), 5);
}

#[test]
fn node_ports_outside_the_default_range_are_a_warning() {
    let v = ok("livekit: {managed: {turn: {domain: t.example.com, tls: {port: 443}}}}");
    assert_eq!(v.warnings().len(), 1, "{:?}", v.warnings());
    assert!(v.warnings()[0].contains("NodePort 443 lies outside the default node port range"));
    let v = ok("livekit: {managed: {media: {udp: {range: {start: 29990, end: 30010}}}}}");
    assert_eq!(v.warnings().len(), 1, "{:?}", v.warnings());
    assert!(ok("").warnings().is_empty());
    assert!(ok("livekit: {managed: {turn: {domain: t.example.com, tls: {port: 443, exposure: LoadBalancer}}}}").warnings().is_empty());
}

const TWO_REPLICAS: &str = "livekit: {managed: {replicas: 2, redis: {address: 'redis:6379'}";

/// A two-replica managed LiveKit with Redis plus `rest` (the rest of `managed`, without braces).
fn two_replicas(rest: &str) -> String {
    if rest.is_empty() {
        format!("{TWO_REPLICAS}}}}}")
    } else {
        format!("{TWO_REPLICAS}, {rest}}}}}")
    }
}

#[test]
fn several_replicas_refuse_a_load_balancer_for_ice() {
    for media in [
        "media: {tcp: {port: 7881, exposure: LoadBalancer}, udp: {mux: {port: 7882, exposure: HostPort}}, advertisedIp: {source: HostIP}}",
        "media: {hostNetwork: false, tcp: {port: 7881, exposure: HostPort}, udp: {range: {start: 40000, end: 40100, exposure: LoadBalancer}}}",
    ] {
        assert_one(
            &two_replicas(media),
            "spec.livekit.managed.media",
            "a LoadBalancer cannot carry ICE media for more than one LiveKit replica",
        );
    }
    // One replica behind a load balancer is fine.
    assert!(
        problems("livekit: {managed: {media: {tcp: {port: 7881, exposure: LoadBalancer}, advertisedIp: {source: Manual, address: 192.0.2.1}}}}")
            .is_empty()
    );
    // TURN keeps a client on one pod per connection (conntrack) and is found by name: allowed.
    assert!(
        problems(&two_replicas(
            "media: {hostNetwork: true}, turn: {domain: t.example.com, tls: {port: 5350}}"
        ))
        .is_empty()
    );
}

#[test]
fn several_replicas_behind_node_ports_need_local_traffic_policy() {
    assert_one(
        &two_replicas(""),
        "spec.livekit.managed.media.service.externalTrafficPolicy",
        "needs media.service.externalTrafficPolicy Local",
    );
    assert_one(
        &two_replicas(
            "media: {tcp: {port: 30001, exposure: HostPort}, service: {externalTrafficPolicy: Cluster}}",
        ),
        "spec.livekit.managed.media.service.externalTrafficPolicy",
        "kube-proxy hands a client's packets to any pod",
    );
    let v = ok(&two_replicas(
        "media: {service: {externalTrafficPolicy: Local}}",
    ));
    let plan = managed(&v);
    assert!(plan.needs_node_anti_affinity());
    assert!(!plan.binds_node_ports());
    assert_eq!(
        (plan.rollout.max_surge, plan.rollout.max_unavailable),
        (0, 1),
        "never two pods on one node, not even during a rollout"
    );
    // Ports bound on the node keep pods apart by themselves.
    for media in [
        "media: {hostNetwork: true}",
        "media: {tcp: {port: 30001, exposure: HostPort}, udp: {mux: {port: 30002, exposure: HostPort}}}",
    ] {
        let v = ok(&two_replicas(media));
        assert!(!managed(&v).needs_node_anti_affinity(), "{media}");
        assert_eq!(managed(&v).rollout.max_surge, 0, "{media}");
    }
    // A single replica needs neither.
    let v = ok("");
    assert!(!managed(&v).needs_node_anti_affinity());
    assert_eq!(
        (
            managed(&v).rollout.max_surge,
            managed(&v).rollout.max_unavailable
        ),
        (1, 0)
    );
}

#[test]
fn several_replicas_cannot_share_one_manual_address() {
    assert_one(
        &two_replicas(
            "media: {hostNetwork: true, advertisedIp: {source: Manual, address: 192.0.2.1}}",
        ),
        "spec.livekit.managed.media.advertisedIp.source",
        "gives every LiveKit pod the same address",
    );
    assert!(
        problems(&two_replicas(
            "media: {hostNetwork: true, advertisedIp: {source: PodIP}}"
        ))
        .is_empty()
    );
}

#[test]
fn drain_and_rollout() {
    let grace = |patch: &str| managed(&ok(patch)).rollout.termination_grace_seconds;
    assert_eq!(grace(""), DRAIN_SECONDS_WITHOUT_REDIS);
    assert_eq!(
        grace("livekit: {managed: {redis: {address: 'redis:6379'}}}"),
        DRAIN_SECONDS_WITH_REDIS
    );
    assert_eq!(
        grace("livekit: {managed: {rollout: {terminationGracePeriodSeconds: 18000}}}"),
        18000
    );
    let v = ok("livekit: {managed: {rollout: {maxSurge: 2, maxUnavailable: 1}}}");
    assert_eq!(
        (
            managed(&v).rollout.max_surge,
            managed(&v).rollout.max_unavailable
        ),
        (2, 1)
    );
    let v = ok("livekit: {managed: {rollout: {maxSurge: 0}}}");
    assert_eq!(managed(&v).rollout.max_unavailable, 1);
    assert_one(
        "livekit: {managed: {media: {hostNetwork: true}, rollout: {maxSurge: 1}}}",
        "spec.livekit.managed.rollout.maxSurge",
        "must be 0: each LiveKit pod needs a node of its own",
    );
    assert_one(
        "livekit: {managed: {rollout: {maxSurge: 0, maxUnavailable: 0}}}",
        "spec.livekit.managed.rollout",
        "cannot both be 0",
    );
    assert_one(
        "livekit: {managed: {rollout: {terminationGracePeriodSeconds: 90000}}}",
        "spec.livekit.managed.rollout.terminationGracePeriodSeconds",
        "between 0 and 86400",
    );
}

#[test]
fn turn_relay_range() {
    let v = ok("livekit: {managed: {turn: {domain: t.example.com, udp: {port: 3478}}}}");
    assert_eq!(
        managed(&v).turn.as_ref().map(|t| t.relay_range),
        Some((20000, 29999))
    );
    assert_one(
        "livekit: {managed: {media: {hostNetwork: true, udp: {mux: {port: 7882}}}, turn: {domain: t.example.com, udp: {port: 3478}, relayRange: {start: 30000, end: 40000}}}}",
        "spec.livekit.managed.turn.relayRange",
        "the TURN relay range 30000-40000 overlaps the node port range 30000-32767",
    );
    // Without hostNetwork the relay ports live in the pod's own network namespace.
    assert!(
        problems("livekit: {managed: {turn: {domain: t.example.com, udp: {port: 3478}, relayRange: {start: 30100, end: 30200}}}}")
            .is_empty()
    );
    assert_one(
        "livekit: {managed: {media: {hostNetwork: true, udp: {range: {start: 25000, end: 25999}}}, turn: {domain: t.example.com, udp: {port: 3478}}}}",
        "spec.livekit.managed.media",
        "the TURN relay range 20000-29999 (turn.relayRange) overlaps media.udp.range (25000-25999)",
    );
    assert_one(
        "livekit: {managed: {turn: {domain: t.example.com, udp: {port: 20001}}}}",
        "spec.livekit.managed.media",
        "overlaps turn.udp.port (20001-20001)",
    );
    assert_one(
        "livekit: {managed: {turn: {domain: t.example.com, udp: {port: 3478}, relayRange: {start: 21000, end: 20000}}}}",
        "spec.livekit.managed.turn.relayRange",
        "range start must not exceed end",
    );
}

#[test]
fn user_config_cannot_choose_the_udp_ports() {
    for (patch, key) in [
        (
            "livekit: {managed: {config: {rtc: {udp_port: 7882}}}}",
            "udp_port",
        ),
        (
            "livekit: {managed: {config: {rtc: {port_range_start: 50000}}}}",
            "port_range_start",
        ),
        (
            "livekit: {managed: {media: {udp: {range: {start: 31000, end: 31010}}}, config: {rtc: {udp_port: 7882}}}}",
            "udp_port",
        ),
    ] {
        assert_one(
            patch,
            &format!("spec.livekit.managed.config.rtc.{key}"),
            "LiveKit prefers a port range over udp_port",
        );
    }
    assert!(
        problems("livekit: {managed: {config: {rtc: {stun_servers: ['stun.example.com:3478']}}}}")
            .is_empty()
    );
}

#[test]
fn pod_metadata_adds_to_the_operators() {
    assert!(
        problems("livekit: {managed: {podAnnotations: {linkerd.io/inject: disabled}, podLabels: {team: rtc}}}\nauth: {podLabels: {team: rtc}}")
            .is_empty()
    );
    assert_one(
        "livekit: {managed: {podLabels: {app.kubernetes.io/instance: other}}}",
        "spec.livekit.managed.podLabels",
        "app.kubernetes.io/instance is set by the operator",
    );
    assert_one(
        "auth: {podAnnotations: {matrixrtc.dev/config-hash: x}}",
        "spec.auth.podAnnotations",
        "matrixrtc.dev/config-hash is set by the operator",
    );
    assert_one(
        "auth: {placement: Sidecar, podAnnotations: {a: b}}",
        "spec.auth.podAnnotations",
        "pod metadata come from livekit.managed",
    );
}

#[test]
fn livekit_extras_stay_clear_of_the_operators() {
    assert!(
        problems(
            "livekit: {managed: {extraEnv: [{name: GODEBUG, value: x}], extraVolumes: [{name: ca, configMap: {name: ca}}], extraVolumeMounts: [{name: ca, mountPath: /etc/ssl/custom}]}}"
        )
        .is_empty()
    );
    assert_one(
        "livekit: {managed: {extraEnv: [{name: NODE_IP, value: 192.0.2.1}]}}",
        "spec.livekit.managed.extraEnv[0].name",
        "NODE_IP would override the operator's LiveKit config",
    );
    assert_one(
        "livekit: {managed: {extraVolumes: [{name: keys, emptyDir: {}}]}}",
        "spec.livekit.managed.extraVolumes[0].name",
        "keys is a volume of the operator",
    );
    assert_one(
        "livekit: {managed: {extraVolumes: [{name: ca, emptyDir: {}}], extraVolumeMounts: [{name: other, mountPath: /x}]}}",
        "spec.livekit.managed.extraVolumeMounts[0].name",
        "other is not one of extraVolumes",
    );
    assert_one(
        "livekit: {managed: {extraVolumes: [{name: ca, emptyDir: {}}], extraVolumeMounts: [{name: ca, mountPath: /etc/livekit}]}}",
        "spec.livekit.managed.extraVolumeMounts[0].mountPath",
        "overlaps a directory the operator mounts",
    );
}

#[test]
fn ingress_controller_follows_the_class_unless_named() {
    assert_eq!(ok("").ingress_controller(), IngressController::None);
    assert_eq!(
        ok("ingress: {className: nginx}").ingress_controller(),
        IngressController::IngressNginx
    );
    assert_eq!(
        ok("ingress: {className: public, controllerType: ingress-nginx}").ingress_controller(),
        IngressController::IngressNginx
    );
    assert_eq!(
        ok("ingress: {className: nginx, controllerType: None}").ingress_controller(),
        IngressController::None
    );
    assert_one(
        "imagePullSecrets: [regcred, '']",
        "spec.imagePullSecrets[1]",
        "must not be empty",
    );
}

#[test]
fn app_service_mode() {
    assert_eq!(ok("").auth().app_service, None, "off by default");
    assert_eq!(
        ok("auth: {appService: {enabled: false, membershipCheckIntervalSeconds: 5}}")
            .auth()
            .app_service,
        None,
        "a disabled block is ignored"
    );
    let on = ok(
        "auth: {appService: {enabled: true, proxyUrl: 'https://auth.internal:8443', membershipCheckIntervalSeconds: 0, registrationSecret: {name: synapse-as}}}",
    );
    assert_eq!(
        on.auth().app_service,
        Some(AppServicePlan {
            proxy_url: Some("https://auth.internal:8443".into()),
            membership_check_interval_seconds: Some(0),
            registration_secret: Some(("synapse-as".into(), "matrixrtc-auth.yaml".into())),
        })
    );
    for url in [
        "http://auth.internal/",
        "http://auth.internal/prefix",
        "https://auth.internal?x=1",
        "ftp://auth.internal",
        "http://user:pw@auth.internal",
        "http://",
    ] {
        assert_one(
            &format!("auth: {{appService: {{enabled: true, proxyUrl: '{url}'}}}}"),
            "spec.auth.appService.proxyUrl",
            "no user, path, query or trailing slash",
        );
    }
    assert_one(
        "auth: {appService: {enabled: true, membershipCheckIntervalSeconds: -1}}",
        "spec.auth.appService.membershipCheckIntervalSeconds",
        "between 0",
    );
    // The copy may not land on a Secret the operator writes, or one the pods read.
    for (name, fragment) in [
        ("demo-keys", "a Secret the operator writes"),
        ("demo-credentials", "a Secret the operator writes"),
        ("demo-appservice", "a Secret the operator writes"),
        ("auth-redis", "a Secret the pods read"),
        ("Not_A_Name", "is not a Secret name"),
    ] {
        assert_one(
            &format!(
                "auth: {{redis: {{urlSecret: {{name: auth-redis, key: url}}}}, appService: {{enabled: true, registrationSecret: {{name: {name}}}}}}}"
            ),
            "spec.auth.appService.registrationSecret.name",
            fragment,
        );
    }
    assert_one(
        "auth: {appService: {enabled: true, registrationSecret: {name: synapse-as, key: 'a/b'}}}",
        "spec.auth.appService.registrationSecret.key",
        "letters, digits",
    );
}

#[test]
fn a_disruption_budget_needs_room_for_one_eviction_and_more_than_one_replica() {
    assert_one(
        "livekit: {managed: {disruptionBudget: {maxUnavailable: 0}}}",
        "spec.livekit.managed.disruptionBudget.maxUnavailable",
        "block every node drain",
    );
    assert_eq!(managed(&ok("")).disruption_max_unavailable, None);
    let two = "livekit: {managed: {replicas: 2, redis: {address: 'r:6379'}, media: {service: {externalTrafficPolicy: Local}}}}";
    assert_eq!(managed(&ok(two)).disruption_max_unavailable, Some(1));
}

#[test]
fn turn_tls_takes_one_certificate_source_and_cert_manager_names_the_secret() {
    assert_one(
        "livekit: {managed: {turn: {domain: t.example.com, tls: {secretName: mine, certManager: {issuerRef: {name: le}}}}}}",
        "spec.livekit.managed.turn.tls",
        "not both",
    );
    assert_one(
        "livekit: {managed: {turn: {domain: t.example.com, tls: {certManager: {issuerRef: {name: ' '}}}}}}",
        "spec.livekit.managed.turn.tls.certManager.issuerRef.name",
        "must not be empty",
    );
    let v = ok(
        "livekit: {managed: {turn: {domain: t.example.com, tls: {certManager: {issuerRef: {name: le}}}}}}",
    );
    let tls = managed(&v)
        .turn
        .as_ref()
        .and_then(|t| t.tls.clone())
        .expect("tls");
    assert_eq!(tls.secret_name.as_deref(), Some("demo-turn-tls"));
    assert_eq!(tls.issuer.map(|i| i.kind), Some("Issuer".to_owned()));
    // The registration Secret cannot take the name cert-manager writes.
    assert_one(
        "auth: {appService: {enabled: true, registrationSecret: {name: demo-turn-tls}}}",
        "spec.auth.appService.registrationSecret.name",
        "a Secret the operator writes",
    );
}

#[test]
fn service_monitor_durations_and_labels_are_checked_only_when_enabled() {
    assert_one(
        "monitoring: {serviceMonitor: {enabled: true, interval: '30'}}",
        "spec.monitoring.serviceMonitor.interval",
        "not a Prometheus duration",
    );
    assert_one(
        "monitoring: {serviceMonitor: {enabled: true, scrapeTimeout: 1m30}}",
        "spec.monitoring.serviceMonitor.scrapeTimeout",
        "not a Prometheus duration",
    );
    assert_one(
        "monitoring: {serviceMonitor: {enabled: true, labels: {app.kubernetes.io/instance: x}}}",
        "spec.monitoring.serviceMonitor.labels",
        "set by the operator",
    );
    let v =
        ok("monitoring: {serviceMonitor: {enabled: true, interval: 1m30s, scrapeTimeout: 500ms}}");
    assert_eq!(
        v.service_monitor().map(|m| m.interval.as_str()),
        Some("1m30s")
    );
    assert!(
        ok("monitoring: {serviceMonitor: {enabled: false, interval: x}}")
            .service_monitor()
            .is_none()
    );
}
