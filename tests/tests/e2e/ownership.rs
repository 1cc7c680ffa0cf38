//! Ownership as only a real API server keeps it: server-side apply field managers (an edit by another
//! manager of a field the operator owns is reverted, of a field it does not own is kept) and garbage
//! collection by the controller-manager when the transport is deleted.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use matrixrtc_operator::api::MatrixRTCTransport;
use matrixrtc_operator::apply::FIELD_MANAGER;
use matrixrtc_operator::build::names;
use serde_json::json;

use crate::cluster::{Failure, apply_transport, eventually, labelled_children, transport};
use crate::operator;
use crate::{ACT, on_cluster, ports, wait_for_status};

/// The field manager `kubectl edit` uses.
const EDITOR: &str = "kubectl-edit";
/// An annotation the operator never sets.
const FOREIGN: &str = "e2e.matrixrtc.dev/note";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_by_another_manager_is_reverted_only_where_the_operator_owns_the_field() {
    on_cluster("field ownership", 1, Duration::from_secs(300), edits).await;
}

async fn edits(client: Client, namespaces: Vec<String>) -> Result<(), Failure> {
    let namespace = &namespaces[0];
    let mut operator = operator::start(&namespaces).await?;
    apply_transport(&client, &transport("rtc", namespace, ports::OWNERSHIP)?).await?;
    let transports: Api<MatrixRTCTransport> = Api::namespaced(client.clone(), namespace);
    wait_for_status(&transports, "rtc").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let name = names::livekit("rtc");
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|s| s.replicas);
    let before = deployments.get(&name).await.map_err(|e| e.to_string())?;
    let owned = replicas(&before).ok_or("the operator set no replicas")?;

    // Another manager applying a field the operator owns, without force, is refused by the server.
    let taken = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": owned + 2},
    });
    match deployments
        .patch(
            &name,
            &PatchParams::apply("e2e-other"),
            &Patch::Apply(&taken),
        )
        .await
    {
        Err(kube::Error::Api(status))
            if status.code == 409 && status.message.contains(FIELD_MANAGER) => {}
        other => {
            return Err(format!(
                "applying spec.replicas as another manager: want a 409 conflict with {FIELD_MANAGER}, got {other:?}"
            ));
        }
    }

    // `kubectl edit`: a field the operator does not own, then one it owns.
    let edit = |patch: serde_json::Value| {
        let deployments = deployments.clone();
        let name = name.clone();
        async move {
            deployments
                .patch(
                    &name,
                    &PatchParams {
                        field_manager: Some(EDITOR.into()),
                        ..PatchParams::default()
                    },
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|e| format!("editing {name}: {e}"))
        }
    };
    edit(json!({"metadata": {"annotations": {FOREIGN: "kept"}}})).await?;
    let edited = edit(json!({"spec": {"replicas": owned + 3}})).await?;
    if replicas(&edited) != Some(owned + 3) {
        return Err(format!("the edit did not take: {:?}", replicas(&edited)));
    }
    let repaired = eventually("the operator to revert spec.replicas", ACT, || {
        let deployments = deployments.clone();
        let name = name.clone();
        async move {
            let live = deployments.get(&name).await.ok()?;
            (replicas(&live) == Some(owned)).then_some(live)
        }
    })
    .await?;
    let annotation = repaired
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FOREIGN));
    if annotation.map(String::as_str) != Some("kept") {
        return Err(format!(
            "the operator's repair dropped the other manager's annotation: {:?}",
            repaired.metadata.annotations
        ));
    }
    // And the field is the operator's again, the annotation still the editor's.
    let managers = repaired.metadata.managed_fields.clone().unwrap_or_default();
    let owns = |manager: &str, field: &str| {
        managers.iter().any(|m| {
            m.manager.as_deref() == Some(manager)
                && m.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0.to_string().contains(field))
        })
    };
    if !owns(FIELD_MANAGER, "\"f:replicas\"") || owns(EDITOR, "\"f:replicas\"") {
        return Err(format!(
            "spec.replicas is not back with {FIELD_MANAGER}: {managers:?}"
        ));
    }
    if !owns(EDITOR, FOREIGN) {
        return Err(format!(
            "the annotation lost its manager {EDITOR}: {managers:?}"
        ));
    }
    if !operator.alive() {
        return Err(format!("the operator died; log:\n{}", operator.log_tail()));
    }
    operator.terminate().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_transport_lets_the_garbage_collector_remove_every_child() {
    on_cluster("garbage collection", 1, Duration::from_secs(300), collect).await;
}

async fn collect(client: Client, namespaces: Vec<String>) -> Result<(), Failure> {
    let namespace = &namespaces[0];
    let mut operator = operator::start(&namespaces).await?;
    apply_transport(
        &client,
        &transport("rtc", namespace, ports::GARBAGE_COLLECTION)?,
    )
    .await?;
    let transports: Api<MatrixRTCTransport> = Api::namespaced(client.clone(), namespace);
    wait_for_status(&transports, "rtc").await?;
    let children = labelled_children(&client, namespace, "rtc").await?;
    if !children.keys().any(|k| k.starts_with("Deployment ")) {
        return Err(format!(
            "no Deployment among the children: {:?}",
            children.keys()
        ));
    }
    // The controller-manager's grandchildren: a ReplicaSet per Deployment, owned by it.
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    eventually("ReplicaSets of the Deployments", ACT, || {
        let replica_sets = replica_sets.clone();
        async move {
            let list = replica_sets.list(&ListParams::default()).await.ok()?;
            (!list.items.is_empty()).then_some(())
        }
    })
    .await?;

    transports
        .delete("rtc", &DeleteParams::background())
        .await
        .map_err(|e| format!("deleting the transport: {e}"))?;
    eventually(
        "every child and ReplicaSet to be garbage-collected",
        ACT,
        || {
            let client = client.clone();
            let replica_sets = replica_sets.clone();
            async move {
                let left = labelled_children(&client, namespace, "rtc").await.ok()?;
                let sets = replica_sets.list(&ListParams::default()).await.ok()?;
                (left.is_empty() && sets.items.is_empty()).then_some(())
            }
        },
    )
    .await?;
    // The operator must not bring any of them back for a transport that is gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = labelled_children(&client, namespace, "rtc").await?;
    if !left.is_empty() {
        return Err(format!("recreated after deletion: {:?}", left.keys()));
    }
    if !operator.alive() {
        return Err(format!("the operator died; log:\n{}", operator.log_tail()));
    }
    operator.terminate().await
}
