//! LiveKit's config file (a ConfigMap): the operator's settings merged over the user's `config`.
//!
//! What the operator sets always wins, because the rest of the deployment depends on it: ports
//! (Services and probes point at them), `room.auto_create: false` (only the authorisation service
//! may create rooms), `key_file` and `webhook` (wired to the keys Secret and the authorisation
//! service), `redis`, the advertised-IP settings and TURN. No secret is written here: the key file
//! comes from the keys Secret and the Redis password from a Secret via `REDIS_PASSWORD`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use matrixrtc_auth::contract;
use serde_json::{Map, Value, json};

use super::labels::Component;
use super::{BuildError, names, object_meta};
use crate::plan::{AdvertisedIpPlan, ManagedPlan, TurnTlsPlan, UdpPlan, Validated};

/// LiveKit signalling and API (HTTP + WebSocket).
pub const SIGNAL_PORT: u16 = 7880;
/// Prometheus metrics.
pub const METRICS_PORT: u16 = 6789;
/// Where TURN/TLS listens inside the pod (LiveKit advertises 443 to clients regardless).
pub const TURN_TLS_CONTAINER_PORT: u16 = 5349;

/// Key of the config file in the ConfigMap.
pub const CONFIG_FILE: &str = "config.yaml";
/// Mount directory of the ConfigMap.
pub const CONFIG_DIR: &str = "/etc/livekit/config";
/// Mount directory of the keys Secret (only `keys.yaml`).
pub const KEYS_DIR: &str = "/etc/livekit/keys";
/// Mount directory of the TURN TLS Secret.
pub const TURN_TLS_DIR: &str = "/etc/livekit/turn-tls";

/// Port TURN/TLS listens on in the container: the public port itself with `hostNetwork` (nothing
/// translates it), 5349 otherwise.
pub fn turn_tls_container_port(plan: &ManagedPlan, tls: &TurnTlsPlan) -> u16 {
    if plan.host_network {
        tls.port
    } else {
        TURN_TLS_CONTAINER_PORT
    }
}

/// Where LiveKit posts its webhooks: the authorisation service's in-cluster address.
pub fn webhook_url(v: &Validated) -> String {
    format!(
        "http://{}.{}.svc:{}{}",
        names::auth(v.name()),
        v.namespace(),
        contract::DEFAULT_PORT,
        contract::path::SFU_WEBHOOK
    )
}

/// The operator's part of the config.
fn operator_config(v: &Validated, plan: &ManagedPlan, api_key: &str) -> Value {
    let mut rtc = Map::new();
    rtc.insert("tcp_port".into(), json!(plan.tcp.port));
    match plan.udp {
        UdpPlan::Mux(p) => {
            rtc.insert("udp_port".into(), json!(p.port));
        }
        UdpPlan::Range { start, end, .. } => {
            rtc.insert("port_range_start".into(), json!(start));
            rtc.insert("port_range_end".into(), json!(end));
        }
    }
    rtc.insert(
        "use_external_ip".into(),
        json!(plan.advertised_ip == AdvertisedIpPlan::Stun),
    );
    // HostIP and PodIP arrive through the NODE_IP environment variable (downward API), which
    // LiveKit reads as its node IP; a manual address is plain config.
    if let AdvertisedIpPlan::Manual(ip) = plan.advertised_ip {
        rtc.insert("node_ip".into(), json!(ip.to_string()));
    }

    let mut config = json!({
        "port": SIGNAL_PORT,
        "prometheus": {"port": METRICS_PORT},
        "rtc": rtc,
        "key_file": format!("{KEYS_DIR}/{}", super::secret::KEY_FILE),
        "room": {"auto_create": false},
        "webhook": {"api_key": api_key, "urls": [webhook_url(v)]},
    });
    if let Some(redis) = &plan.redis {
        let mut r = Map::new();
        r.insert("address".into(), json!(redis.address));
        if let Some(db) = redis.db {
            r.insert("db".into(), json!(db));
        }
        if let Some(user) = &redis.username {
            r.insert("username".into(), json!(user));
        }
        r.insert("use_tls".into(), json!(redis.use_tls));
        config["redis"] = Value::Object(r);
    }
    if let Some(turn) = &plan.turn {
        let mut t = Map::new();
        t.insert("enabled".into(), json!(true));
        t.insert("domain".into(), json!(turn.domain));
        if let Some(udp) = turn.udp {
            t.insert("udp_port".into(), json!(udp.port));
        }
        // Explicit, because LiveKit's default (30000-40000) overlaps the node port range and the
        // default media ports.
        t.insert("relay_range_start".into(), json!(turn.relay_range.0));
        t.insert("relay_range_end".into(), json!(turn.relay_range.1));
        if let Some(tls) = &turn.tls {
            t.insert("tls_port".into(), json!(turn_tls_container_port(plan, tls)));
            match &tls.secret_name {
                Some(_) => {
                    t.insert("cert_file".into(), json!(format!("{TURN_TLS_DIR}/tls.crt")));
                    t.insert("key_file".into(), json!(format!("{TURN_TLS_DIR}/tls.key")));
                    t.insert("external_tls".into(), json!(false));
                }
                None => {
                    t.insert("external_tls".into(), json!(true));
                }
            }
        }
        config["turn"] = Value::Object(t);
    }
    config
}

/// `ours` merged over `theirs`: objects merge key by key, anything else is replaced by ours.
/// Returns the merged value and the user paths that ours replaced.
fn merge_over(theirs: &Map<String, Value>, ours: &Value) -> (Value, Vec<String>) {
    fn go(
        theirs: &Map<String, Value>,
        ours: &Map<String, Value>,
        prefix: &str,
        out: &mut Vec<String>,
    ) -> Map<String, Value> {
        let mut merged = theirs.clone();
        for (key, our) in ours {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match (theirs.get(key), our) {
                (Some(Value::Object(t)), Value::Object(o)) => {
                    merged.insert(key.clone(), Value::Object(go(t, o, &path, out)));
                }
                (Some(_), _) => {
                    out.push(path);
                    merged.insert(key.clone(), our.clone());
                }
                (None, _) => {
                    merged.insert(key.clone(), our.clone());
                }
            }
        }
        merged
    }
    let mut overridden = Vec::new();
    let empty = Map::new();
    let merged = go(
        theirs,
        ours.as_object().unwrap_or(&empty),
        "",
        &mut overridden,
    );
    (Value::Object(merged), overridden)
}

/// The complete config LiveKit runs with.
pub fn config(v: &Validated, plan: &ManagedPlan, api_key: &str) -> Value {
    merge_over(&plan.user_config, &operator_config(v, plan, api_key)).0
}

/// Paths in the user's `config` that the operator's settings replace (for warnings). The set of
/// paths does not depend on the API key, so none is needed.
pub fn overridden_user_paths(v: &Validated, plan: &ManagedPlan) -> Vec<String> {
    merge_over(&plan.user_config, &operator_config(v, plan, "")).1
}

/// The ConfigMap `<name>-livekit` with `config.yaml`.
pub fn config_map(
    v: &Validated,
    plan: &ManagedPlan,
    api_key: &str,
) -> Result<ConfigMap, BuildError> {
    let yaml = serde_yaml::to_string(&config(v, plan, api_key))?;
    Ok(ConfigMap {
        metadata: object_meta(v, names::livekit(v.name()), Component::Sfu),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_owned(), yaml)])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::credentials::ApiCredentials;
    use crate::build::test_support::validated;
    use crate::plan::LiveKitPlan;

    fn rendered(spec_patch: &str) -> Value {
        let v = validated(spec_patch);
        let LiveKitPlan::Managed(plan) = v.livekit() else {
            panic!("fixture is managed");
        };
        let creds = ApiCredentials::placeholder();
        let cm = config_map(&v, plan, creds.api_key()).expect("build");
        let yaml = &cm.data.expect("data")[CONFIG_FILE];
        assert!(
            !yaml.contains(creds.api_secret()),
            "secret leaked into the ConfigMap"
        );
        serde_yaml::from_str(yaml).expect("valid YAML")
    }

    #[test]
    fn defaults_wire_ports_keys_webhook_and_forbid_auto_create() {
        let c = rendered("");
        assert_eq!(c["port"], 7880);
        assert_eq!(c["prometheus"]["port"], 6789);
        assert_eq!(c["rtc"]["tcp_port"], 30001);
        assert_eq!(c["rtc"]["udp_port"], 30002);
        assert_eq!(c["rtc"]["use_external_ip"], true);
        assert!(c["rtc"].get("node_ip").is_none());
        assert_eq!(c["room"]["auto_create"], false);
        assert_eq!(c["key_file"], "/etc/livekit/keys/keys.yaml");
        assert_eq!(
            c["webhook"]["api_key"],
            ApiCredentials::placeholder().api_key()
        );
        assert_eq!(
            c["webhook"]["urls"],
            json!(["http://demo-auth.rtc.svc:8080/sfu_webhook"])
        );
        assert!(c.get("redis").is_none());
        assert!(c.get("turn").is_none());
    }

    #[test]
    fn range_manual_ip_redis_and_turn() {
        let c = rendered(
            r#"
livekit:
  managed:
    replicas: 1
    redis: {address: "redis:6379", db: 3, passwordSecret: {name: r, key: p}}
    media:
      udp: {range: {start: 31000, end: 31999}}
      advertisedIp: {source: Manual, address: 203.0.113.7}
    turn:
      domain: turn.example.com
      udp: {port: 30004}
      tls: {port: 443, exposure: LoadBalancer, secretName: turn-cert}
"#,
        );
        assert_eq!(c["rtc"]["port_range_start"], 31000);
        assert_eq!(c["rtc"]["port_range_end"], 31999);
        assert!(c["rtc"].get("udp_port").is_none());
        assert_eq!(c["rtc"]["use_external_ip"], false);
        assert_eq!(c["rtc"]["node_ip"], "203.0.113.7");
        assert_eq!(
            c["redis"],
            json!({"address": "redis:6379", "db": 3, "use_tls": false})
        );
        assert_eq!(c["turn"]["tls_port"], 5349);
        assert_eq!(c["turn"]["udp_port"], 30004);
        assert_eq!(
            (
                &c["turn"]["relay_range_start"],
                &c["turn"]["relay_range_end"]
            ),
            (&json!(20000), &json!(29999)),
            "LiveKit's own default (30000-40000) would overlap the node port range"
        );
        assert_eq!(c["turn"]["cert_file"], "/etc/livekit/turn-tls/tls.crt");
        assert_eq!(c["turn"]["external_tls"], false);
    }

    #[test]
    fn host_ip_is_left_to_the_environment() {
        let c = rendered("livekit: {managed: {media: {advertisedIp: {source: HostIP}}}}");
        assert_eq!(c["rtc"]["use_external_ip"], false);
        assert!(c["rtc"].get("node_ip").is_none());
    }

    #[test]
    fn turn_tls_without_secret_is_external_and_host_network_listens_on_the_public_port() {
        let c = rendered(
            "livekit: {managed: {media: {hostNetwork: true}, turn: {domain: t.example.com, tls: {port: 5350}}}}",
        );
        assert_eq!(c["turn"]["external_tls"], true);
        assert_eq!(c["turn"]["tls_port"], 5350);
        assert!(c["turn"].get("cert_file").is_none());
    }

    #[test]
    fn user_config_merges_under_ours() {
        let c = rendered(
            r#"
livekit:
  managed:
    config:
      logging: {level: debug}
      room: {auto_create: true, empty_timeout: 600}
      rtc: {tcp_port: 1234, stun_servers: ["stun.example.com:3478"]}
      webhook: {urls: ["http://evil"]}
"#,
        );
        assert_eq!(c["logging"]["level"], "debug");
        assert_eq!(c["room"]["empty_timeout"], 600);
        assert_eq!(c["room"]["auto_create"], false);
        assert_eq!(c["rtc"]["tcp_port"], 30001);
        assert_eq!(c["rtc"]["stun_servers"], json!(["stun.example.com:3478"]));
        assert_eq!(
            c["webhook"]["urls"],
            json!(["http://demo-auth.rtc.svc:8080/sfu_webhook"])
        );
    }

    #[test]
    fn overridden_user_paths_are_reported() {
        let v = validated(
            "livekit: {managed: {config: {room: {auto_create: true}, rtc: {stun_servers: []}, webhook: {urls: []}, port: 1}}}",
        );
        let mut warnings = v.warnings().to_vec();
        warnings.sort();
        assert_eq!(
            warnings,
            vec![
                "spec.livekit.managed.config.port is overridden by the operator's setting",
                "spec.livekit.managed.config.room.auto_create is overridden by the operator's setting",
                "spec.livekit.managed.config.webhook.urls is overridden by the operator's setting",
            ]
        );
    }
}
