//! The CRD's CEL rules on the real API server: the CRD is accepted (the server estimates every rule's cost
//! against its budget when the CRD is written, and refuses one that could exceed it), a transport breaking a
//! rule is refused with the rule's message, and the allowed counterparts, including lists at their maximum
//! size (the worst case of the runtime cost), are accepted. Server-side dry runs: nothing is stored.
//!
//! The cases are [`matrixrtc_test_support::cel_cases`], the table the client-side evaluation in
//! `operator/src/api/cel_tests.rs` (kube-cel) reads too, so a rule that kube's CEL and the API server's
//! evaluate differently fails here.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use matrixrtc_operator::api::MatrixRTCTransport;
use matrixrtc_test_support::cel_cases;
use serde_json::Value;

use crate::cluster::Failure;
use crate::on_cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_accepts_the_crd_and_its_cel_rules_refuse_what_they_should() {
    on_cluster("CEL", 1, Duration::from_secs(120), |client, namespaces| {
        rules(client, namespaces)
    })
    .await;
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
    if rule_count(&local) != cel_cases::RULES || rule_count(&local) != rule_count(&on_server) {
        return Err(format!(
            "the CRD has {} CEL rules (the cases cover {}), the server {}",
            rule_count(&local),
            cel_cases::RULES,
            rule_count(&on_server)
        ));
    }

    let api: Api<DynamicObject> = Api::namespaced_with(
        client,
        namespace,
        &ApiResource::erase::<MatrixRTCTransport>(&()),
    );
    let mut problems = Vec::new();
    for (patch, expected) in cel_cases::refused() {
        match dry_run(&api, cel_cases::transport(namespace, &patch)).await {
            Err((422, message)) if message.contains(expected) => {}
            other => problems.push(format!(
                "{patch}: want 422 with {expected:?}, got {other:?}"
            )),
        }
    }

    for patch in cel_cases::allowed() {
        let shown = patch.to_string();
        if let Err(refusal) = dry_run(&api, cel_cases::transport(namespace, &patch)).await {
            problems.push(format!("{shown:.200}: refused {refusal:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}
