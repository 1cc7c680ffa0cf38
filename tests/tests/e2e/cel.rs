//! The CRD's CEL rules on the real API server: the CRD is accepted (the server estimates every rule's cost
//! against its budget when the CRD is written, and refuses one that could exceed it), a transport breaking a
//! rule is refused with the rule's message, and the allowed counterparts, including lists at their maximum
//! size (the worst case of the runtime cost), are accepted. Server-side dry runs: nothing is stored.
//!
//! The cases mirror the client-side table in `operator/src/api/cel_tests.rs` (kube-cel), so a rule that kube's
//! CEL and the API server's evaluate differently fails here.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use matrixrtc_operator::api::MatrixRTCTransport;
use serde_json::{Value, json};

use crate::cluster::Failure;
use crate::on_cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_accepts_the_crd_and_its_cel_rules_refuse_what_they_should() {
    on_cluster("CEL", 1, Duration::from_secs(120), |client, namespaces| {
        rules(client, namespaces)
    })
    .await;
}

fn with_spec(namespace: &str, patch: Value) -> Value {
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
    let mut cr = json!({
        "apiVersion": "matrixrtc.dev/v1alpha1",
        "kind": "MatrixRTCTransport",
        "metadata": {"name": "cel", "namespace": namespace},
        "spec": {"serverName": "example.com", "host": "rtc.example.com"},
    });
    merge(&mut cr["spec"], patch);
    cr
}

/// A server-side dry-run create: Ok, or the server's (code, message).
async fn dry_run(api: &Api<DynamicObject>, cr: Value) -> Result<(), (u16, String)> {
    let object: DynamicObject =
        serde_json::from_value(cr).map_err(|e| (0, format!("test object: {e}")))?;
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match api.create(&params, &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err((status.code, status.message)),
        Err(other) => Err((0, other.to_string())),
    }
}

async fn rules(client: Client, namespaces: Vec<String>) -> Result<(), Failure> {
    let namespace = &namespaces[0];
    // Every rule of the checked-in CRD is on the server (none was dropped on the way in).
    let served = Api::<CustomResourceDefinition>::all(client.clone())
        .get("matrixrtctransports.matrixrtc.dev")
        .await
        .map_err(|e| e.to_string())?;
    let rule_count = |crd: &Value| crd.to_string().matches("\"rule\":").count();
    let local = serde_json::to_value(<MatrixRTCTransport as kube::CustomResourceExt>::crd())
        .map_err(|e| e.to_string())?;
    let on_server = serde_json::to_value(&served).map_err(|e| e.to_string())?;
    if rule_count(&local) == 0 || rule_count(&local) != rule_count(&on_server) {
        return Err(format!(
            "the CRD has {} CEL rules, the server {}",
            rule_count(&local),
            rule_count(&on_server)
        ));
    }

    let api: Api<DynamicObject> = Api::namespaced_with(
        client,
        namespace,
        &ApiResource::erase::<MatrixRTCTransport>(&()),
    );
    let refused: [(Value, &str); 19] = [
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
    ];
    let mut problems = Vec::new();
    for (patch, expected) in refused {
        match dry_run(&api, with_spec(namespace, patch.clone())).await {
            Err((422, message)) if message.contains(expected) => {}
            other => problems.push(format!(
                "{patch}: want 422 with {expected:?}, got {other:?}"
            )),
        }
    }

    // The widest lists the schema allows: the runtime cost of `'*' in self` at its maximum.
    let widest: Vec<String> = (0..64)
        .map(|i| format!("{i:03}{}", "a".repeat(250)))
        .collect();
    let allowed = [
        json!({}),
        json!({"homeservers": {"fullAccess": ["*"]}}),
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
        json!({"auth": {"replicas": 2, "redis": {"url": "redis://redis:6379"}}}),
        json!({"auth": {"placement": "Sidecar"}}),
        json!({"livekit": {"managed": {"replicas": 2, "redis": {"address": "redis:6379"}, "media": {"service": {"externalTrafficPolicy": "Local"}}}}, "auth": {"placement": "Sidecar", "redis": {"url": "redis://redis:6379"}}}),
    ];
    for patch in allowed {
        let shown = patch.to_string();
        if let Err(refusal) = dry_run(&api, with_spec(namespace, patch)).await {
            problems.push(format!("{shown:.200}: refused {refusal:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}
