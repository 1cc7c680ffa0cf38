//! The controller: the [`reconcile`] pipeline, the [`error_policy`], and a module per step.
//!
//! Pipeline per `MatrixRTCTransport`, one module per step:
//!
//! | Step | Where |
//! |---|---|
//! | validate the spec (pure) | [`crate::validate`], called by [`reconcile`] |
//! | NodePort clashes with other transports | [`port_claims`] |
//! | dereference: credentials (read, or generate once), AS tokens, versions of referenced Secrets | [`dereference`] |
//! | build the children (pure) | [`crate::build`] |
//! | apply (SSA), prune, the `Reconciled` Event | [`apply_step`] |
//! | status and Warning Events | [`status_step`], [`events`] |
//! | when to reconcile again | [`requeue`] |
//! | what triggers a reconcile, running the controllers | [`watches`] |
//! | what every reconcile shares | [`context`] |
//!
//! - An invalid spec applies nothing: status `Degraded` with every problem, one Warning Event, then the
//!   controller waits for the spec to change.
//! - A failure later on (credentials Secret missing, apply refused, ...) is also written to `Degraded`, with an
//!   Event when the problem is new, and retried with per-object exponential backoff ([`backoff`]).
//! - The status is patched only when it changed, and children only when they differ (see [`crate::apply`]):
//!   a steady state makes no writes, so the status patch's own watch event ends in a read-only reconcile.
//! - A CR that does not deserialise (e.g. written against a newer CRD) is wrapped in kube's
//!   [`DeserializeGuard`] so it cannot stop the watch; it gets a `Degraded` status and an Event.
//! - Logs: a reconcile runs in a `reconcile` span naming the transport (`namespace`, `transport`,
//!   `generation`) and each step in a span of its own, so log lines do not repeat which object they are
//!   about.
//!
//! Watches (per watched namespace, or cluster-wide): the CRs; every owned kind ([`crate::kinds`]) filtered
//! by the `managed-by` label (metadata only, mapped to the owner through the controller owner reference); and Secret
//! metadata mapped to the CRs whose pods reference them by name (credentials, Redis, TURN certificate), so a
//! created, fixed or rotated user Secret is picked up at once and rolls the pods that read it. A successful
//! reconcile is also requeued about every [`RESYNC`] as a safety net (reads only), each transport at its own
//! offset ([`resync_after`]) so that many transports started together do not resync together.
//!
//! What exists of the children is read from watch caches ([`ChildCache`](crate::apply::cache::ChildCache),
//! started with the controllers), so a reconcile in a steady state makes no LIST request; the requests
//! reconciles make are counted by verb in the metrics. Events are rate-limited per object
//! ([`EventLimiter`](crate::event_limit::EventLimiter)).

mod apply_step;
mod context;
pub mod dereference;
mod events;
mod port_claims;
mod requeue;
mod status_step;
mod watches;

use std::sync::Arc;

use kube::Resource;
use kube::ResourceExt;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action;

pub use self::context::{Context, RandomBytes};
use self::dereference::app_service::AppServiceError;
use self::dereference::credentials::ResolveError;
use self::events::publish_warnings;
use self::port_claims::port_clash;
pub use self::requeue::{BASE_BACKOFF, MAX_BACKOFF, RESYNC, backoff, resync_after};
use self::status_step::{report_unreadable, write_status};
pub use self::watches::{WatchScope, run};
use crate::api::MatrixRTCTransport;
use crate::apply::{self, ApiFailure, ApplyError};
use crate::build::{self, BuildError, names};
use crate::plan::Validated;
use crate::port_conflicts::Clash;
use crate::status::{Discovery, Outcome, Rollout};
use crate::validate::{self};

type Guarded = DeserializeGuard<MatrixRTCTransport>;

/// Why a reconcile failed: mapped once to the `Degraded` condition reason users see
/// ([`condition_reason`](ReconcileError::condition_reason)) and to the errors metric's label
/// ([`metric_reason`](ReconcileError::metric_reason)).
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ReconcileError {
    #[error(transparent)]
    Credentials(#[from] ResolveError),
    #[error(transparent)]
    AppService(#[from] AppServiceError),
    #[error("building the desired objects failed: {0}")]
    Build(#[from] BuildError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("writing the status failed: {0}")]
    Status(ApiFailure),
    #[error("the object has no namespace or uid")]
    Incomplete,
    #[error("{0}")]
    PortConflict(Clash),
}

impl ReconcileError {
    /// Label for the errors metric: the variant's name in snake case (`PortConflict` is `port_conflict`),
    /// and for a failed apply the [`ApplyError`]'s (`apply`, `conflict`, `delete`, ...).
    pub fn metric_reason(&self) -> &'static str {
        match self {
            ReconcileError::Apply(error) => error.into(),
            other => other.into(),
        }
    }

    /// `Degraded` condition reason: API-visible and documented in docs/troubleshooting.md, so listed
    /// rather than derived from the variant names.
    fn condition_reason(&self) -> &'static str {
        match self {
            ReconcileError::Credentials(error) => error.reason(),
            ReconcileError::AppService(error) => error.reason(),
            ReconcileError::Build(_) => "BuildFailed",
            ReconcileError::Apply(ApplyError::Conflict { .. }) => "ChildConflict",
            ReconcileError::Apply(ApplyError::Delete { .. }) => "PruneFailed",
            ReconcileError::Apply(_) => "ApplyFailed",
            ReconcileError::Status(_) => "StatusFailed",
            ReconcileError::Incomplete => "Incomplete",
            ReconcileError::PortConflict(_) => "PortConflict",
        }
    }
}

fn key_of(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Reconcile one `MatrixRTCTransport` (or report why it cannot be read).
///
/// Every line logged during a reconcile, its steps' included, is inside this span, which names the
/// transport: `namespace`, `transport` (not `name`: JSON lines already use that key for the span's own
/// name) and `generation`. The span is at `error` level so that it is enabled whenever any of its lines
/// is: under a `warn` filter a warning still says which transport it is about.
#[tracing::instrument(
    level = "error",
    skip_all,
    fields(
        namespace = object.meta().namespace.as_deref(),
        transport = object.meta().name.as_deref(),
        generation = object.meta().generation,
    )
)]
pub async fn reconcile(object: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let _timer = ctx.metrics.reconcile_started();
    match &object.0 {
        Ok(transport) => reconcile_transport(transport, &ctx).await,
        Err(invalid) => report_unreadable(&object, invalid, &ctx).await,
    }
}

/// Called by the runtime when [`reconcile`] failed: count it and retry with backoff. Its line is in a
/// span like [`reconcile`]'s (same name and fields), so filtering the logs on a transport finds it too.
#[tracing::instrument(
    name = "reconcile",
    level = "error",
    skip_all,
    fields(
        namespace = object.meta().namespace.as_deref(),
        transport = object.meta().name.as_deref(),
    )
)]
pub fn error_policy(object: Arc<Guarded>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error.metric_reason());
    let key = key_of(object.meta());
    let delay = backoff(ctx.record_failure(&key));
    tracing::warn!(%error, retry_in_seconds = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_transport(
    transport: &MatrixRTCTransport,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let key = key_of(&transport.metadata);
    let validated = match tracing::info_span!("validate").in_scope(|| validate::validate(transport))
    {
        Ok(validated) => validated,
        Err(invalid) => {
            tracing::info!(
                problems = invalid.problems().len(),
                "spec is invalid; nothing applied"
            );
            let outcome = Outcome::InvalidSpec {
                message: invalid.to_string(),
            };
            write_status(transport, &outcome, ctx).await?;
            ctx.forget_failures(&key);
            return Ok(Action::await_change());
        }
    };
    publish_warnings(transport, &validated, ctx).await;
    let discovery = Discovery {
        livekit_service_url: build::discovery::livekit_service_url(&validated),
        well_known_client: build::discovery::well_known_client_json(&validated),
        synapse_config: build::discovery::synapse_config_yaml(&validated),
        app_service: build::discovery::app_service_status(&validated),
    };

    match apply_validated(transport, &validated, ctx).await {
        Ok(mut applied) => {
            let requeue = applied.requeue_after(resync_after(&key));
            let not_installed = std::mem::take(&mut applied.not_installed);
            let rollout = |name: String| {
                applied
                    .deployments()
                    .find(|d| d.name_any() == name)
                    .map(Rollout::of)
            };
            let outcome = Outcome::Applied {
                livekit: validated
                    .is_managed_livekit()
                    .then(|| rollout(names::livekit(validated.name())))
                    .flatten(),
                auth: (!validated.auth_is_sidecar())
                    .then(|| rollout(names::auth(validated.name())))
                    .flatten(),
                auth_is_sidecar: validated.auth_is_sidecar(),
                discovery,
                not_installed,
            };
            write_status(transport, &outcome, ctx).await?;
            ctx.forget_failures(&key);
            Ok(Action::requeue(requeue))
        }
        Err(error) => {
            let outcome = Outcome::Failed {
                reason: error.condition_reason(),
                message: error.to_string(),
                discovery: Some(discovery),
            };
            if let Err(status_error) = write_status(transport, &outcome, ctx).await {
                tracing::warn!(error = %status_error, "could not record the failure in the status");
            }
            Err(error)
        }
    }
}

/// The steps after validation, in order: NodePort clash check, dereference, build, apply and prune.
async fn apply_validated(
    transport: &MatrixRTCTransport,
    validated: &Validated,
    ctx: &Context,
) -> Result<apply::Applied, ReconcileError> {
    // Before anything is written (even generated credentials): the loser of a clash applies nothing.
    if let Some(clash) = port_clash(transport, validated, ctx) {
        return Err(ReconcileError::PortConflict(clash));
    }
    let references = dereference::dereference(validated, ctx).await?;
    let children = tracing::info_span!("build")
        .in_scope(|| build::build(validated, &references.build_input(&ctx.defaults)))?;
    apply_step::apply_children(transport, validated, &children, ctx).await
}

#[cfg(test)]
mod tests;
