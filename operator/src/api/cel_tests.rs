//! The CRD's CEL rules, evaluated client-side with kube's `cel` feature (kube-cel), so a typo in a
//! rule or a rule that does not say what we mean fails here instead of at `kubectl apply`. Each
//! case also runs through `validate`, which must reject what CEL rejects.

use kube::CustomResourceExt;
use kube::core::cel::{CompiledSchema, Validator, compile_schema};
use serde_json::{Value, json};

use super::MatrixRTCTransport;
use crate::validate::validate;

fn schema() -> Value {
    let crd = MatrixRTCTransport::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(schema).expect("schema JSON")
}

fn base() -> Value {
    json!({
        "apiVersion": "matrixrtc.dev/v1alpha1",
        "kind": "MatrixRTCTransport",
        "metadata": {"name": "demo", "namespace": "rtc", "uid": "u-1"},
        "spec": {"serverName": "example.com", "host": "rtc.example.com"},
    })
}

fn with_spec(patch: Value) -> Value {
    fn merge(into: &mut Value, patch: Value) {
        match (into, patch) {
            (Value::Object(into), Value::Object(patch)) => {
                for (k, v) in patch {
                    merge(into.entry(k).or_insert(Value::Null), v);
                }
            }
            (slot, patch) => *slot = patch,
        }
    }
    let mut cr = base();
    merge(&mut cr["spec"], patch);
    cr
}

/// CEL failure messages for `cr` (empty when it passes).
fn cel_messages(cr: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), cr, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn validate_rejects(cr: &Value) -> bool {
    let typed: MatrixRTCTransport = serde_json::from_value(cr.clone()).expect("deserialises");
    validate(&typed).is_err()
}

fn compilation_errors(schema: &CompiledSchema, path: &str, out: &mut Vec<String>) {
    for error in schema.compilation_errors() {
        out.push(format!("{path}: {error:?}"));
    }
    for (name, child) in &schema.properties {
        compilation_errors(child, &format!("{path}.{name}"), out);
    }
    let nested = schema
        .items
        .iter()
        .chain(schema.additional_properties.iter())
        .map(|b| &**b)
        .chain(&schema.one_of)
        .chain(&schema.any_of)
        .chain(&schema.all_of);
    for child in nested {
        compilation_errors(child, path, out);
    }
}

#[test]
fn every_rule_compiles() {
    let mut errors = Vec::new();
    compilation_errors(&compile_schema(&schema()), "", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}");
    let rules = serde_json::to_string(&schema())
        .expect("json")
        .matches("\"rule\"")
        .count();
    assert_eq!(
        rules, 20,
        "a rule was added or lost: update the cases below"
    );
}

#[test]
fn a_minimal_transport_passes() {
    assert_eq!(cel_messages(&base()), Vec::<String>::new());
}

#[test]
fn each_rule_rejects_what_it_should_and_validate_agrees() {
    let cases: [(Value, &str); 22] = [
        (
            json!({"homeservers": {"fullAccess": ["*", "example.com"]}}),
            "'*' must be the only entry",
        ),
        (
            json!({"livekit": {"external": {"url": "https://sfu.example.net"}}, "credentials": {"secretName": "c"}}),
            "url must start with wss://",
        ),
        (
            json!({"livekit": {"external": {"url": "wss://sfu.example.net"}}}),
            "an external LiveKit needs credentials",
        ),
        (
            json!({"livekit": {"external": {"url": "wss://sfu.example.net"}}, "credentials": {"secretName": "c"}, "auth": {"placement": "Sidecar"}}),
            "auth.placement Sidecar needs a managed LiveKit",
        ),
        (
            json!({"livekit": {"managed": {"replicas": 2}}}),
            "livekit.managed.redis is required",
        ),
        (
            json!({"livekit": {"managed": {"media": {"advertisedIp": {"source": "Manual"}}}}}),
            "address is required with source Manual",
        ),
        (
            json!({"livekit": {"managed": {"media": {"advertisedIp": {"source": "STUN", "address": "192.0.2.1"}}}}}),
            "address is required with source Manual",
        ),
        (
            json!({"livekit": {"managed": {"media": {"udp": {"range": {"start": 40000, "end": 39000}}}}}}),
            "range start must not exceed end",
        ),
        (
            json!({"livekit": {"managed": {"media": {"udp": {"range": {"start": 30000, "end": 36000}}}}}}),
            "at most 5000 ports",
        ),
        (
            json!({"livekit": {"managed": {"media": {"hostNetwork": true, "tcp": {"port": 7881, "exposure": "HostPort"}}}}}),
            "leave the per-port exposure unset",
        ),
        (
            json!({"livekit": {"managed": {"turn": {"domain": "turn.example.com"}}}}),
            "turn needs udp, tls or both",
        ),
        (json!({"auth": {"replicas": 2}}), "auth.redis is required"),
        (
            json!({"livekit": {"managed": {"replicas": 2, "redis": {"address": "redis:6379"}}}, "auth": {"placement": "Sidecar"}}),
            "auth.redis is required with placement Sidecar",
        ),
        (
            json!({"auth": {"placement": "Sidecar", "replicas": 1}}),
            "with placement Sidecar",
        ),
        (
            json!({"livekit": {"managed": {"replicas": 2, "redis": {"address": "redis:6379"}, "media": {"tcp": {"port": 7881, "exposure": "LoadBalancer"}, "udp": {"mux": {"port": 7882, "exposure": "HostPort"}}}}}}),
            "a LoadBalancer cannot carry ICE media for more than one LiveKit replica",
        ),
        (
            json!({"livekit": {"managed": {"replicas": 2, "redis": {"address": "redis:6379"}, "media": {"tcp": {"port": 7881, "exposure": "HostPort"}}}}}),
            "needs media.service.externalTrafficPolicy Local",
        ),
        (
            json!({"livekit": {"managed": {"replicas": 3, "redis": {"address": "redis:6379"}, "media": {"hostNetwork": true, "advertisedIp": {"source": "Manual", "address": "192.0.2.1"}}}}}),
            "gives every LiveKit pod the same address",
        ),
        (
            json!({"livekit": {"managed": {"rollout": {"maxSurge": 0, "maxUnavailable": 0}}}}),
            "cannot both be 0",
        ),
        (
            json!({"livekit": {"managed": {"turn": {"domain": "t.example.com", "udp": {"port": 3478}, "relayRange": {"start": 21000, "end": 20000}}}}}),
            "range start must not exceed end",
        ),
        (
            json!({"auth": {"appService": {"enabled": true, "proxyUrl": "http://auth.internal:8080/"}}}),
            "proxyUrl must be an http(s) URL",
        ),
        (
            json!({"auth": {"appService": {"enabled": true, "proxyUrl": "http://u@auth.internal"}}}),
            "proxyUrl must be an http(s) URL",
        ),
        (
            json!({"auth": {"appService": {"enabled": true, "registrationSecret": {"name": "s", "key": "a/b"}}}}),
            "key must consist of letters",
        ),
    ];
    for (patch, expected) in cases {
        let cr = with_spec(patch.clone());
        let messages = cel_messages(&cr);
        assert!(
            messages.iter().any(|m| m.contains(expected)),
            "{patch}: expected {expected:?}, CEL said {messages:?}"
        );
        assert!(
            validate_rejects(&cr),
            "{patch}: validate accepted what CEL rejects"
        );
    }
}

#[test]
fn the_allowed_counterparts_pass() {
    let cases = [
        json!({"homeservers": {"fullAccess": ["*"]}}),
        json!({"homeservers": {"fullAccess": ["example.com", "example.org"]}}),
        json!({"livekit": {"external": {"url": "wss://sfu.example.net"}}, "credentials": {"secretName": "c"}}),
        json!({"livekit": {"managed": {"replicas": 2, "redis": {"address": "redis:6379"}, "media": {"service": {"externalTrafficPolicy": "Local"}}}}}),
        json!({"livekit": {"managed": {"replicas": 2, "redis": {"address": "redis:6379"}, "media": {"hostNetwork": true, "advertisedIp": {"source": "HostIP"}}}}}),
        json!({"livekit": {"managed": {"replicas": 2, "redis": {"address": "redis:6379"}, "media": {"tcp": {"port": 30001, "exposure": "HostPort"}, "udp": {"range": {"start": 40000, "end": 40099, "exposure": "HostPort"}}}}}}),
        json!({"livekit": {"managed": {"media": {"tcp": {"port": 7881, "exposure": "LoadBalancer"}, "advertisedIp": {"source": "Manual", "address": "192.0.2.1"}}}}}),
        json!({"livekit": {"managed": {"rollout": {"maxSurge": 0, "maxUnavailable": 1, "terminationGracePeriodSeconds": 3600}}}}),
        json!({"livekit": {"managed": {"media": {"advertisedIp": {"source": "Manual", "address": "192.0.2.1"}}}}}),
        json!({"livekit": {"managed": {"media": {"udp": {"range": {"start": 30000, "end": 34999}}}}}}),
        json!({"livekit": {"managed": {"media": {"hostNetwork": true, "tcp": {"port": 7881}}}}}),
        json!({"livekit": {"managed": {"turn": {"domain": "turn.example.com", "udp": {"port": 3478}}}}}),
        json!({"auth": {"replicas": 2, "redis": {"url": "redis://redis:6379"}}}),
        json!({"auth": {"placement": "Sidecar"}}),
        json!({"auth": {"appService": {"enabled": true, "proxyUrl": "https://auth.internal:8443", "registrationSecret": {"name": "synapse-as", "key": "rtc_1.yaml"}}}}),
        json!({"livekit": {"managed": {"replicas": 2, "redis": {"address": "redis:6379"}, "media": {"service": {"externalTrafficPolicy": "Local"}}}}, "auth": {"placement": "Sidecar", "redis": {"url": "redis://redis:6379"}}}),
    ];
    for patch in cases {
        assert_eq!(
            cel_messages(&with_spec(patch.clone())),
            Vec::<String>::new(),
            "{patch}"
        );
    }
}

#[test]
fn every_example_passes_cel() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("examples dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let cr: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).expect("read")).expect("YAML");
        assert_eq!(
            cel_messages(&cr),
            Vec::<String>::new(),
            "{}",
            path.display()
        );
        seen += 1;
    }
    assert!(seen >= 6, "expected the examples, found {seen}");
}
