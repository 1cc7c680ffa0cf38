//! The last step of a reconcile: the `MatrixRTCTransport`'s status. [`write_status`] computes it from the
//! [`Outcome`] (see [`crate::status`]), patches it only when it changed (so a steady state writes nothing)
//! and publishes a Warning Event when a new problem appears. [`report_unreadable`] does the same for a CR
//! that does not deserialise, writing only the conditions it can read back.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::events::publish;
use super::{Context, Guarded, ReconcileError};
use crate::api::{MatrixRTCTransport, MatrixRTCTransportStatus};
use crate::apply::{ApiFailure, FIELD_MANAGER};
use crate::status::{self, Outcome};

/// Patch the status if it changed; publish a Warning Event when a (new) problem appears.
#[tracing::instrument(skip_all)]
pub(super) async fn write_status(
    transport: &MatrixRTCTransport,
    outcome: &Outcome,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let previous = transport.status.as_ref();
    let next = status::compute(
        transport.metadata.generation,
        previous,
        outcome,
        Timestamp::now(),
    );
    if previous == Some(&next) {
        return Ok(());
    }
    let namespace = transport
        .metadata
        .namespace
        .as_deref()
        .ok_or(ReconcileError::Incomplete)?;
    let api: Api<MatrixRTCTransport> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": MatrixRTCTransport::api_version(&()),
        "kind": MatrixRTCTransport::kind(&()),
        "status": next,
    });
    api.patch_status(
        &transport.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|error| ReconcileError::Status(ApiFailure::for_public(&error)))?;

    let before = status::degraded(previous);
    if let Some(now) = status::degraded(Some(&next))
        && before.map(|c| (&c.reason, &c.message)) != Some((&now.reason, &now.message))
    {
        let note = now.message.clone();
        let reason = now.reason.clone();
        publish(
            ctx,
            &transport.object_ref(&()),
            EventType::Warning,
            &reason,
            "Reconcile",
            note,
        )
        .await;
    }
    Ok(())
}

/// A CR whose spec does not deserialise: mark it `Degraded` (raw status patch) and wait for a change.
#[tracing::instrument(skip_all)]
pub(super) async fn report_unreadable(
    object: &Guarded,
    invalid: &InvalidObject,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let message = format!(
        "the object cannot be read by this operator version: {}",
        invalid.error
    );
    tracing::warn!(error = %invalid.error, "unreadable MatrixRTCTransport");
    let namespace = object
        .meta()
        .namespace
        .as_deref()
        .ok_or(ReconcileError::Incomplete)?;
    let resource = ApiResource::erase::<MatrixRTCTransport>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    let current = api
        .get_opt(&object.name_any())
        .await
        .map_err(|error| ReconcileError::Status(ApiFailure::for_public(&error)))?;
    let Some(current) = current else {
        return Ok(Action::await_change());
    };
    // Only `status.conditions` is read: the rest of the status may be as unreadable as the spec.
    let previous = MatrixRTCTransportStatus {
        conditions: current
            .data
            .pointer("/status/conditions")
            .cloned()
            .and_then(|c| serde_json::from_value(c).ok())
            .unwrap_or_default(),
        ..MatrixRTCTransportStatus::default()
    };
    let outcome = Outcome::Failed {
        reason: "UnreadableSpec",
        message,
        discovery: None,
    };
    let next = status::compute(
        object.meta().generation,
        Some(&previous),
        &outcome,
        Timestamp::now(),
    );
    let unchanged = status::degraded(Some(&previous)).map(|c| (&c.reason, &c.message))
        == status::degraded(Some(&next)).map(|c| (&c.reason, &c.message));
    if !unchanged {
        let patch = json!({
            "apiVersion": resource.api_version,
            "kind": resource.kind,
            "status": {"observedGeneration": next.observed_generation, "conditions": next.conditions},
        });
        api.patch_status(
            &object.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|error| ReconcileError::Status(ApiFailure::for_public(&error)))?;
        let note = status::degraded(Some(&next))
            .map(|c| c.message.clone())
            .unwrap_or_default();
        publish(
            ctx,
            &object.object_ref(&()),
            EventType::Warning,
            "UnreadableSpec",
            "Reconcile",
            note,
        )
        .await;
    }
    ctx.metrics.reconcile_failed("unreadable");
    Ok(Action::await_change())
}
