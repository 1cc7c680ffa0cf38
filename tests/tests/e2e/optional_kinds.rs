//! The operands' operational surface on a real API server: the LiveKit PodDisruptionBudget, and the
//! optional kinds of other projects (ServiceMonitor, cert-manager Certificate), with and without their
//! CRDs (the minimal fixture CRDs in `tests/fixtures/optional-crds`, not the upstream ones).
//!
//! 1. Without the CRDs: the operator applies everything else (the budget included) and reports
//!    `Degraded` with reason `KindNotInstalled`, naming both kinds, in the status and a Warning Event.
//! 2. The CRDs installed: without a restart, the operator creates the ServiceMonitors and the
//!    Certificate, and `Degraded` clears.
//! 3. cert-manager "issues" and then "renews" the Secret (the test writes it): the LiveKit pods roll.
//! 4. One replica, no monitoring, no TURN: the budget, the ServiceMonitors and the Certificate are pruned.
//!
//! CRDs are cluster-wide, so this test and the examples test (which installs the fixtures for its example)
//! share the nextest test group `cluster-crds` (at most one at a time; `.config/nextest.toml`). Only CRDs
//! carrying the fixture label are ever deleted: on a cluster with the real CRDs the first step is skipped.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use matrixrtc_operator::api::MatrixRTCTransport;
use matrixrtc_operator::apply::ChildKind;
use matrixrtc_operator::build::HASH_ANNOTATION;
use serde_json::json;

use crate::cluster::{
    Failure, TEST_MANAGER, apply_transport, current_condition, eventually, warnings_about,
};
use crate::{ACT, on_cluster, operator, ports};

/// The label of the fixture CRDs; only CRDs with it are deleted.
const FIXTURE_LABEL: &str = "matrixrtc.dev/e2e-fixture";
/// Names of the fixture CRDs.
const FIXTURE_CRDS: [&str; 2] = [
    "servicemonitors.monitoring.coreos.com",
    "certificates.cert-manager.io",
];
/// Upper bound of the whole test.
const LIMIT: Duration = Duration::from_secs(8 * 60);
/// An installed CRD is noticed within the operator's recheck (30 s) and acted on at its next reconcile
/// (at most 60 s after the last one while a kind is missing).
const NOTICE: Duration = Duration::from_secs(150);

/// Install the fixture CRDs (idempotent) and wait until they are established.
pub async fn install_fixture_crds(client: &Client) -> Result<Vec<String>, Failure> {
    crate::cluster::install_crds(
        client,
        &operator::workspace_root().join("tests/fixtures/optional-crds"),
    )
    .await
}

/// Delete the fixture CRDs and wait until they are gone. False (nothing deleted) when one of those CRDs
/// is not a fixture: a real installation is never touched.
async fn remove_fixture_crds(client: &Client) -> Result<bool, Failure> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for name in FIXTURE_CRDS {
        if let Some(crd) = api.get_opt(name).await.map_err(|e| e.to_string())?
            && crd.labels().get(FIXTURE_LABEL).map(String::as_str) != Some("true")
        {
            eprintln!(
                "optional kinds: {name} is installed and not a test fixture; skipping the phase without it"
            );
            return Ok(false);
        }
    }
    for name in FIXTURE_CRDS {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(format!("deleting CRD {name}: {e}")),
        }
    }
    eventually(
        "the fixture CRDs to be gone",
        Duration::from_secs(90),
        || {
            let api = api.clone();
            async move {
                for name in FIXTURE_CRDS {
                    if api.get_opt(name).await.ok()?.is_some() {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await?;
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_kinds_follow_the_spec_and_the_installed_crds() {
    on_cluster(
        "optional kinds",
        1,
        LIMIT,
        |client, namespaces| async move { scenario(client, &namespaces[0]).await },
    )
    .await;
}

fn spec(namespace: &str) -> Result<MatrixRTCTransport, Failure> {
    let (tcp, udp) = ports::OPTIONAL_KINDS;
    serde_json::from_value(json!({
        "apiVersion": "matrixrtc.dev/v1alpha1",
        "kind": "MatrixRTCTransport",
        "metadata": {"name": "rtc", "namespace": namespace},
        "spec": {
            "serverName": "example.com",
            "host": "rtc.example.com",
            "livekit": {"managed": {
                "replicas": 2,
                "redis": {"address": "redis:6379"},
                "media": {
                    "tcp": {"port": tcp},
                    "udp": {"mux": {"port": udp}},
                    "service": {"externalTrafficPolicy": "Local"},
                },
                "turn": {"domain": "turn.example.com", "tls": {
                    "port": 443,
                    "exposure": "LoadBalancer",
                    "certManager": {"issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}},
                }},
            }},
            "monitoring": {"serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}}},
        },
    }))
    .map_err(|e| format!("test transport: {e}"))
}

fn api_of(client: &Client, namespace: &str, kind: ChildKind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &kind.api_resource())
}

/// The optional children and the budget, as "Kind name" of those that exist now.
async fn operational(client: &Client, namespace: &str) -> Vec<String> {
    let wanted = [
        (ChildKind::PodDisruptionBudget, "rtc-livekit"),
        (ChildKind::ServiceMonitor, "rtc-livekit"),
        (ChildKind::ServiceMonitor, "rtc-auth"),
        (ChildKind::Certificate, "rtc-turn-tls"),
    ];
    let mut found = Vec::new();
    for (kind, name) in wanted {
        if let Ok(Some(_)) = api_of(client, namespace, kind).get_opt(name).await {
            found.push(format!("{kind} {name}"));
        }
    }
    found
}

async fn livekit_hash(client: &Client, namespace: &str) -> Option<String> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get_opt("rtc-livekit")
        .await
        .ok()??;
    deployment
        .spec?
        .template
        .metadata?
        .annotations?
        .get(HASH_ANNOTATION)
        .cloned()
}

/// Write the TURN Secret as cert-manager would (issue or renew).
async fn issue(client: &Client, namespace: &str, serial: &str) -> Result<(), Failure> {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "rtc-turn-tls", "namespace": namespace},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": format!("certificate {serial}"), "tls.key": format!("key {serial}")},
    }))
    .map_err(|e| e.to_string())?;
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            "rtc-turn-tls",
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|e| format!("writing the TURN Secret: {e}"))?;
    Ok(())
}

async fn scenario(client: Client, namespace: &str) -> Result<(), Failure> {
    let without_crds = remove_fixture_crds(&client).await?;
    let mut process = operator::start(&[namespace.to_owned()]).await?;
    let result = phases(&client, namespace, without_crds).await;
    let result = match result {
        Ok(()) if !process.alive() => Err("the operator died".to_owned()),
        other => other,
    };
    if let Err(failure) = result {
        return Err(format!(
            "{failure}\n--- operator log (tail) ---\n{}",
            process.log_tail()
        ));
    }
    process.terminate().await
}

async fn phases(client: &Client, namespace: &str, without_crds: bool) -> Result<(), Failure> {
    let transports: Api<MatrixRTCTransport> = Api::namespaced(client.clone(), namespace);
    apply_transport(client, &spec(namespace)?).await?;

    if without_crds {
        let message = eventually("Degraded with reason KindNotInstalled", ACT, || {
            let transports = transports.clone();
            async move {
                let cr = transports.get("rtc").await.ok()?;
                let degraded = current_condition(&cr, "Degraded")?;
                (degraded.status == "True" && degraded.reason == "KindNotInstalled")
                    .then(|| degraded.message.clone())
            }
        })
        .await?;
        for part in [
            "monitoring.coreos.com/v1 ServiceMonitor is not installed",
            "rtc-livekit, rtc-auth were not created",
            "cert-manager.io/v1 Certificate is not installed",
        ] {
            if !message.contains(part) {
                return Err(format!("the Degraded message lacks {part:?}: {message}"));
            }
        }
        // Everything else is applied: the budget and both workloads.
        let present = operational(client, namespace).await;
        if present != ["PodDisruptionBudget rtc-livekit"] {
            return Err(format!(
                "without the CRDs, expected only the budget, found {present:?}"
            ));
        }
        for name in ["rtc-livekit", "rtc-auth"] {
            Api::<Deployment>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(|e| format!("Deployment {name}: {e}"))?;
        }
        eventually("a KindNotInstalled Warning Event", ACT, || async {
            let warnings = warnings_about(client, namespace, "rtc").await.ok()?;
            warnings
                .iter()
                .any(|(reason, note)| {
                    reason == "KindNotInstalled" && note.contains("ServiceMonitor")
                })
                .then_some(())
        })
        .await?;
        eprintln!(
            "optional kinds: without the CRDs the rest is applied and KindNotInstalled reported"
        );
        install_fixture_crds(client).await?;
    } else {
        install_fixture_crds(client).await?;
    }

    let all = [
        "PodDisruptionBudget rtc-livekit",
        "ServiceMonitor rtc-livekit",
        "ServiceMonitor rtc-auth",
        "Certificate rtc-turn-tls",
    ];
    eventually(
        "the ServiceMonitors and the Certificate",
        NOTICE,
        || async { (operational(client, namespace).await == all).then_some(()) },
    )
    .await?;
    eventually("Degraded to clear", ACT, || {
        let transports = transports.clone();
        async move {
            let cr = transports.get("rtc").await.ok()?;
            (current_condition(&cr, "Degraded")?.status == "False").then_some(())
        }
    })
    .await?;
    let pdb = api_of(client, namespace, ChildKind::PodDisruptionBudget)
        .get("rtc-livekit")
        .await
        .map_err(|e| e.to_string())?;
    if pdb.data["spec"]["maxUnavailable"] != json!(1) {
        return Err(format!("budget spec: {}", pdb.data["spec"]));
    }
    let certificate = api_of(client, namespace, ChildKind::Certificate)
        .get("rtc-turn-tls")
        .await
        .map_err(|e| e.to_string())?;
    let expected = json!({"secretName": "rtc-turn-tls", "dnsNames": ["turn.example.com"], "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}});
    if certificate.data["spec"] != expected {
        return Err(format!("Certificate spec: {}", certificate.data["spec"]));
    }
    let monitor = api_of(client, namespace, ChildKind::ServiceMonitor)
        .get("rtc-auth")
        .await
        .map_err(|e| e.to_string())?;
    if monitor.labels().get("release").map(String::as_str) != Some("prometheus")
        || monitor.data["spec"]["endpoints"][0]["path"] != json!("/metrics")
    {
        return Err(format!("ServiceMonitor rtc-auth: {:?}", monitor));
    }
    eprintln!("optional kinds: created once the CRDs were installed");

    // cert-manager issues, then renews: each is a new version of a Secret the pods mount.
    let before = livekit_hash(client, namespace).await;
    for serial in ["1", "2"] {
        let previous = livekit_hash(client, namespace).await;
        issue(client, namespace, serial).await?;
        eventually(
            &format!("LiveKit to roll for certificate {serial}"),
            ACT,
            || async {
                let now = livekit_hash(client, namespace).await?;
                (Some(&now) != previous.as_ref()).then_some(())
            },
        )
        .await?;
    }
    if livekit_hash(client, namespace).await == before {
        return Err("the LiveKit pod template never changed".to_owned());
    }

    // Turned off: one replica, no monitoring, no TURN.
    transports
        .patch(
            "rtc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {
                "livekit": {"managed": {"replicas": 1, "turn": null}},
                "monitoring": null,
            }})),
        )
        .await
        .map_err(|e| format!("turning the operational surface off: {e}"))?;
    eventually(
        "the budget, ServiceMonitors and Certificate to be pruned",
        ACT,
        || async {
            operational(client, namespace)
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await?;
    eprintln!("optional kinds: pruned when turned off");
    Ok(())
}
