//! The CRD's CEL rules as one table of cases, read by both places that evaluate them: the operator's unit
//! tests (`operator/src/api/cel_tests.rs`, client-side with kube-cel, plus `validate`, which must refuse what
//! CEL refuses) and the end-to-end test against a real API server (`tests/tests/e2e/cel.rs`, server-side dry
//! runs). One table, so the two cannot drift: a rule that kube's CEL and the API server evaluate differently
//! fails one of them.
//!
//! Every case is a patch merged into the `spec` of a minimal transport ([`transport`]).

use serde_json::{Value, json};

/// How many `rule`s the CRD has: a rule added or lost must come with cases here.
pub const RULES: usize = 21;

/// Specs that break a rule, each with a part of the message the rule gives.
pub fn refused() -> Vec<(Value, &'static str)> {
    vec![
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
            json!({"livekit": {"managed": {"replicas": 2, "redis": {"address": "redis:6379"}}}}),
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
        (
            json!({"livekit": {"managed": {"turn": {"domain": "t.example.com", "tls": {"secretName": "mine", "certManager": {"issuerRef": {"name": "le"}}}}}}}),
            "tls takes secretName or certManager, not both",
        ),
    ]
}

/// Specs every rule allows: the counterparts of [`refused`], and the widest lists the schema allows (the
/// runtime cost of `'*' in self` at its maximum).
pub fn allowed() -> Vec<Value> {
    let widest: Vec<String> = (0..64)
        .map(|i| format!("{i:03}{}", "a".repeat(250)))
        .collect();
    vec![
        json!({}),
        json!({"homeservers": {"fullAccess": ["*"]}}),
        json!({"homeservers": {"fullAccess": ["example.com", "example.org"]}}),
        json!({"homeservers": {"fullAccess": widest}}),
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
        json!({"livekit": {"managed": {"turn": {"domain": "turn.example.com", "tls": {"certManager": {"issuerRef": {"name": "le", "kind": "ClusterIssuer"}}}}}}}),
        json!({"auth": {"replicas": 2, "redis": {"url": "redis://redis:6379"}}}),
        json!({"auth": {"placement": "Sidecar"}}),
        json!({"auth": {"appService": {"enabled": true, "proxyUrl": "https://auth.internal:8443", "registrationSecret": {"name": "synapse-as", "key": "rtc_1.yaml"}}}}),
        json!({"livekit": {"managed": {"replicas": 2, "redis": {"address": "redis:6379"}, "media": {"service": {"externalTrafficPolicy": "Local"}}}}, "auth": {"placement": "Sidecar", "redis": {"url": "redis://redis:6379"}}}),
    ]
}

/// A minimal transport named `cel` in `namespace`, with `spec_patch` merged into its spec (maps
/// recursively, everything else replaced).
pub fn transport(namespace: &str, spec_patch: &Value) -> Value {
    fn merge(into: &mut Value, patch: &Value) {
        match (into, patch) {
            (Value::Object(into), Value::Object(patch)) => {
                for (k, v) in patch {
                    merge(into.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (slot, patch) => *slot = patch.clone(),
        }
    }
    let mut cr = json!({
        "apiVersion": "matrixrtc.dev/v1alpha1",
        "kind": "MatrixRTCTransport",
        "metadata": {"name": "cel", "namespace": namespace},
        "spec": {"serverName": "example.com", "host": "rtc.example.com"},
    });
    merge(&mut cr["spec"], spec_patch);
    cr
}
