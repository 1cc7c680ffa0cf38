//! The controller: what it watches, the [`reconcile`] pipeline and the [`error_policy`].
//!
//! Pipeline per `MatrixRTCTransport`:
//! `validate (pure) -> credentials (read, or generate once) -> versions of the other referenced Secrets
//! (metadata) -> build (pure) -> apply (SSA) -> prune -> status`.
//!
//! - An invalid spec applies nothing: status `Degraded` with every problem, one Warning Event, then the
//!   controller waits for the spec to change.
//! - A failure later on (credentials Secret missing, apply refused, ...) is also written to `Degraded`, with an
//!   Event when the problem is new, and retried with per-object exponential backoff ([`backoff`]).
//! - The status is patched only when it changed, and children only when they differ (see [`crate::apply`]):
//!   a steady state makes no writes, so the status patch's own watch event ends in a read-only reconcile.
//! - A CR that does not deserialise (e.g. written against a newer CRD) is wrapped in kube's
//!   [`DeserializeGuard`] so it cannot stop the watch; it gets a `Degraded` status and an Event.
//!
//! Watches (per watched namespace, or cluster-wide): the CRs; every owned kind ([`crate::kinds`]) filtered
//! by the `managed-by` label (metadata only, mapped to the owner through the controller owner reference); and Secret
//! metadata mapped to the CRs whose pods reference them by name (credentials, Redis, TURN certificate), so a
//! created, fixed or rotated user Secret is picked up at once and rolls the pods that read it. A successful
//! reconcile is also requeued about every [`RESYNC`] as a safety net (reads only), each transport at its own
//! offset ([`resync_after`]) so that many transports started together do not resync together.
//!
//! What exists of the children is read from watch caches ([`ChildCache`], started with the controllers), so
//! a reconcile in a steady state makes no LIST request; the requests reconciles make are counted by verb in
//! the metrics. Events are rate-limited per object ([`EventLimiter`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::core::error_boundary::{DeserializeGuard, InvalidObject};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::api::{MatrixRTCTransport, MatrixRTCTransportStatus};
use crate::app_service::{self, AppServiceError};
use crate::apply::cache::{ChildCache, ScopeWatches};
use crate::apply::{self, ApiFailure, ApplyError, FIELD_MANAGER, Owner};
use crate::build::{self, BuildError, BuildInput, labels, names, secret_refs};
use crate::credentials::{self, ResolveError};
use crate::defaults::OperatorDefaults;
use crate::event_limit::EventLimiter;
use crate::kinds::api_in;
use crate::plan::Validated;
use crate::port_conflicts::{self, Claimant, Clash, PortRange};
use crate::shutdown::Stop;
use crate::status::{self, Discovery, Outcome, Rollout};
use crate::telemetry::{Metrics, RequestSource};
use crate::validate::{self};

/// Read-only resync of a healthy transport (a safety net behind the watches).
pub const RESYNC: Duration = Duration::from_secs(600);
/// First retry after a failure; doubles per consecutive failure up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Reconciles running at once (per controller); bounds API load when many CRs change together.
const CONCURRENCY: u16 = 8;
/// The annotation in which a client-side `kubectl apply` keeps a copy of the whole object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// `events.k8s.io` notes are limited to 1 kB.
const EVENT_NOTE_LIMIT: usize = 1000;

type Guarded = DeserializeGuard<MatrixRTCTransport>;

/// The NodePorts of one transport and the generation they were read from.
type ClaimsAt = (Option<i64>, Vec<PortRange>);

/// Source of credential randomness (replaced in tests to make generated credentials predictable).
pub type RandomBytes = fn() -> [u8; build::credentials::RANDOM_BYTES];

/// Everything a reconcile needs, shared by all of them.
pub struct Context {
    /// For reconciles: counts its requests as `source="reconcile"`.
    client: Client,
    /// For the watches: counts its requests as `source="watch"`.
    watch_client: Client,
    /// The children caches of the running controllers (none while not leading).
    cache: std::sync::RwLock<Option<ChildCache>>,
    /// The CR stores of the running controllers: every transport, to find NodePort clashes.
    transports: std::sync::RwLock<Vec<Store<Guarded>>>,
    /// NodePorts of each transport by uid, at the generation they were read from (validating every other
    /// transport on every reconcile would make a reconcile cost grow with their number).
    claims: Mutex<HashMap<String, ClaimsAt>>,
    events: EventLimiter,
    /// Who publishes Events. A fresh `Recorder` per Event: kube's recorder folds repeats by reason into the
    /// first Event and keeps its note, which would show a stale message for a new problem. The controller
    /// already publishes only on changes, so there is nothing to fold.
    reporter: Reporter,
    defaults: OperatorDefaults,
    metrics: Metrics,
    random: RandomBytes,
    /// Consecutive failures per object (`namespace/name`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Generation whose validation warnings were already published, per object: warnings are Events,
    /// and repeating them on every resync would be a write in a steady state.
    warned: Mutex<HashMap<String, i64>>,
}

impl Context {
    pub fn new(
        client: Client,
        defaults: OperatorDefaults,
        metrics: Metrics,
        reporter: Reporter,
    ) -> Self {
        Self {
            reporter,
            client: metrics.counted(client.clone(), RequestSource::Reconcile),
            watch_client: metrics.counted(client, RequestSource::Watch),
            cache: std::sync::RwLock::default(),
            transports: std::sync::RwLock::default(),
            claims: Mutex::default(),
            events: EventLimiter::default(),
            defaults,
            metrics,
            random: credentials::random_bytes,
            failures: Mutex::default(),
            warned: Mutex::default(),
        }
    }

    /// Use another randomness source for generated credentials (tests).
    pub fn with_random(mut self, random: RandomBytes) -> Self {
        self.random = random;
        self
    }

    /// Use these caches of the children (set while the controllers run).
    pub fn set_cache(&self, cache: Option<ChildCache>) {
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = cache;
    }

    fn cache(&self) -> Option<ChildCache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The CR stores of the running controllers (empty while not leading).
    pub fn set_transports(&self, stores: Vec<Store<Guarded>>) {
        *self.transports.write().unwrap_or_else(|p| p.into_inner()) = stores;
    }

    /// Every known transport (but `except`) with the NodePorts it asks for.
    fn other_claimants(&self, except: &str) -> Vec<Claimant> {
        let stores = self
            .transports
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let objects: Vec<Arc<Guarded>> = stores.iter().flat_map(|store| store.state()).collect();
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        if claims.len() > 2 * objects.len() + 16 {
            let live: std::collections::HashSet<&str> = objects
                .iter()
                .filter_map(|o| o.meta().uid.as_deref())
                .collect();
            claims.retain(|uid, _| live.contains(uid.as_str()));
        }
        objects
            .iter()
            .filter_map(|object| {
                let transport = object.0.as_ref().ok()?;
                if transport.metadata.uid.as_deref() == Some(except) {
                    return None;
                }
                let uid = transport.metadata.uid.clone()?;
                let generation = transport.metadata.generation;
                let node_ports = match claims.get(&uid) {
                    Some((seen, ports)) if *seen == generation => ports.clone(),
                    _ => {
                        // An invalid transport applies nothing, so it claims nothing.
                        let ports = validate::validate(transport)
                            .map(|v| port_conflicts::node_ports(&v))
                            .unwrap_or_default();
                        claims.insert(uid, (generation, ports.clone()));
                        ports
                    }
                };
                Some(Claimant {
                    namespace: transport.metadata.namespace.clone()?,
                    name: transport.metadata.name.clone()?,
                    created: transport.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    node_ports,
                })
            })
            .filter(|c| !c.node_ports.is_empty())
            .collect()
    }

    fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    fn forget_failures(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// True the first time it is asked for this object at this generation.
    fn first_warning_for(&self, key: &str, generation: i64) -> bool {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        warned.insert(key.to_owned(), generation) != Some(generation)
    }
}

#[derive(Debug, thiserror::Error)]
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
    /// Label for the errors metric.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            ReconcileError::Credentials(_) => "credentials",
            ReconcileError::AppService(_) => "app_service",
            ReconcileError::Build(_) => "build",
            ReconcileError::Apply(error) => error.reason(),
            ReconcileError::Status(_) => "status",
            ReconcileError::Incomplete => "incomplete",
            ReconcileError::PortConflict(_) => "port_conflict",
        }
    }

    /// `Degraded` condition reason.
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

/// When to resync a healthy transport: [`RESYNC`] give or take a quarter, at a fixed offset per object (a
/// hash of `key`), so transports created or restarted together spread their resyncs over half a period
/// instead of all requeueing at once.
pub fn resync_after(key: &str) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    let spread = RESYNC / 2;
    let offset = u128::from(hasher.finish()) * spread.as_millis() / (u128::from(u64::MAX) + 1);
    RESYNC - RESYNC / 4 + Duration::from_millis(u64::try_from(offset).unwrap_or_default())
}

/// Delay before retry number `failures` (1-based): 5 s, 10 s, 20 s, ... capped at 5 min.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BASE_BACKOFF.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// Reconcile one `MatrixRTCTransport` (or report why it cannot be read).
pub async fn reconcile(object: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let _timer = ctx.metrics.reconcile_started();
    match &object.0 {
        Ok(transport) => reconcile_transport(transport, &ctx).await,
        Err(invalid) => report_unreadable(&object, invalid, &ctx).await,
    }
}

/// Called by the runtime when [`reconcile`] failed: count it and retry with backoff.
pub fn error_policy(object: Arc<Guarded>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error.metric_reason());
    let key = key_of(object.meta());
    let delay = backoff(ctx.record_failure(&key));
    tracing::warn!(object = %key, %error, retry_in_seconds = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_transport(
    transport: &MatrixRTCTransport,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let key = key_of(&transport.metadata);
    let validated = match validate::validate(transport) {
        Ok(validated) => validated,
        Err(invalid) => {
            tracing::info!(object = %key, problems = invalid.problems().len(), "spec is invalid; nothing applied");
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
        Ok(applied) => {
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
            };
            write_status(transport, &outcome, ctx).await?;
            ctx.forget_failures(&key);
            Ok(Action::requeue(resync_after(&key)))
        }
        Err(error) => {
            let outcome = Outcome::Failed {
                reason: error.condition_reason(),
                message: error.to_string(),
                discovery: Some(discovery),
            };
            if let Err(status_error) = write_status(transport, &outcome, ctx).await {
                tracing::warn!(object = %key, error = %status_error, "could not record the failure in the status");
            }
            Err(error)
        }
    }
}

/// NodePort clash check, credentials, build, apply, prune.
async fn apply_validated(
    transport: &MatrixRTCTransport,
    validated: &Validated,
    ctx: &Context,
) -> Result<apply::Applied, ReconcileError> {
    // Before anything is written (even generated credentials): the loser of a clash applies nothing.
    if let Some(clash) = port_clash(transport, validated, ctx) {
        return Err(ReconcileError::PortConflict(clash));
    }
    let resolved = credentials::resolve(
        &ctx.client,
        validated.namespace(),
        validated.credentials_source(),
        ctx.random,
    )
    .await?;
    if resolved.generated_now {
        tracing::info!(object = %key_of(&transport.metadata), "generated LiveKit API credentials");
    }
    let app_service =
        app_service::resolve(&ctx.client, validated, app_service::random_bytes).await?;
    if app_service.as_ref().is_some_and(|r| r.generated_now) {
        tracing::info!(object = %key_of(&transport.metadata), "generated application-service tokens");
    }
    let secrets = credentials::observe_references(
        &ctx.client,
        validated.namespace(),
        &secret_refs::all(validated),
        resolved.observed,
    )
    .await?;
    let children = build::build(
        validated,
        &BuildInput {
            defaults: &ctx.defaults,
            credentials: &resolved.credentials,
            secrets: &secrets,
            app_service: app_service.as_ref().map(|r| &r.tokens),
        },
    )?;
    let owner = Owner::new(transport, labels::owned_selector(validated.name()))
        .ok_or(ReconcileError::Incomplete)?;
    let observed = ctx
        .cache()
        .ok_or_else(ChildCache::not_running)?
        .observe(&owner)
        .await?;
    let applied = apply::apply(&ctx.client, &owner, &children, &observed).await?;
    let pruned = apply::prune(&ctx.client, &owner, &children, &observed).await?;
    if !applied.written.is_empty() || !pruned.is_empty() {
        let mut note = String::new();
        if !applied.written.is_empty() {
            note.push_str("applied ");
            note.push_str(&join(&applied.written));
        }
        if !pruned.is_empty() {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str("deleted ");
            note.push_str(&join(&pruned));
        }
        publish(
            ctx,
            &transport.object_ref(&()),
            EventType::Normal,
            "Reconciled",
            "Apply",
            note,
        )
        .await;
    }
    Ok(applied)
}

/// The NodePort clash this transport loses, if any (see [`port_conflicts`]).
fn port_clash(
    transport: &MatrixRTCTransport,
    validated: &Validated,
    ctx: &Context,
) -> Option<Clash> {
    let node_ports = port_conflicts::node_ports(validated);
    if node_ports.is_empty() {
        return None;
    }
    let me = Claimant {
        namespace: validated.namespace().to_owned(),
        name: validated.name().to_owned(),
        created: transport.metadata.creation_timestamp.as_ref().map(|t| t.0),
        node_ports,
    };
    let others = ctx.other_claimants(transport.metadata.uid.as_deref().unwrap_or_default());
    port_conflicts::losing_clash(&me, &others)
}

fn join(ids: &[apply::ChildId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Patch the status if it changed; publish a Warning Event when a (new) problem appears.
async fn write_status(
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

/// Validation warnings (e.g. LiveKit config keys the operator overrides), once per generation.
async fn publish_warnings(transport: &MatrixRTCTransport, validated: &Validated, ctx: &Context) {
    if validated.warnings().is_empty() {
        return;
    }
    let generation = transport.metadata.generation.unwrap_or_default();
    if !ctx.first_warning_for(&key_of(&transport.metadata), generation) {
        return;
    }
    let note = validated.warnings().join("; ");
    publish(
        ctx,
        &transport.object_ref(&()),
        EventType::Warning,
        "SpecWarning",
        "Validate",
        note,
    )
    .await;
}

/// A CR whose spec does not deserialise: mark it `Degraded` (raw status patch) and wait for a change.
async fn report_unreadable(
    object: &Guarded,
    invalid: &InvalidObject,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let key = key_of(object.meta());
    let message = format!(
        "the object cannot be read by this operator version: {}",
        invalid.error
    );
    tracing::warn!(object = %key, error = %invalid.error, "unreadable MatrixRTCTransport");
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

/// Publish an Event; a failure is logged, never fatal (Events are best effort).
async fn publish(
    ctx: &Context,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let key = format!(
        "{}/{}",
        regarding.namespace.as_deref().unwrap_or_default(),
        regarding.name.as_deref().unwrap_or_default()
    );
    if !ctx.events.allow(&key, std::time::Instant::now()) {
        tracing::debug!(object = %key, reason, "Event dropped: this object published too many");
        return;
    }
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncate(note, EVENT_NOTE_LIMIT)),
        action: action.to_owned(),
        secondary: None,
    };
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(error) = recorder.publish(&event, regarding).await {
        tracing::warn!(%error, reason, "could not publish an Event");
    }
}

fn truncate(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut cut = limit.saturating_sub(3);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// Which namespaces the controller watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchScope {
    AllNamespaces,
    Namespaces(Vec<String>),
}

/// The CRs in `store` whose pods reference `secret` by name (credentials, Redis, TURN certificate), so
/// that creating, fixing or changing it reconciles them at once (and rolls their pods). An invalid CR
/// waits for its spec to change anyway, so it is not mapped.
fn referencing(
    store: &Store<Guarded>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<Guarded>> {
    let (Some(name), Some(namespace)) = (
        secret.metadata.name.as_deref(),
        secret.metadata.namespace.as_deref(),
    ) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter(|object| object.meta().namespace.as_deref() == Some(namespace))
        .filter(|object| {
            object
                .0
                .as_ref()
                .ok()
                .and_then(|t| validate::validate(t).ok())
                .is_some_and(|v| secret_refs::all(&v).iter().any(|r| r.name == name))
        })
        .map(|object| ObjectRef::from_obj(object.as_ref()))
        .collect()
}

/// The controller for the namespace of `watches` (or all of them), triggered by the children those
/// watches see (they also feed the children caches) and by the Secrets its transports reference.
fn controller_for(client: &Client, watches: ScopeWatches) -> Controller<Guarded> {
    let namespace = watches.namespace().map(str::to_owned);
    let namespace = namespace.as_deref();
    // What `Controller::new` does, but the store keeps the transports without what a reconcile never
    // reads: `managedFields` and the client-side apply copy of the whole object (at 1,000 transports
    // these were a large part of the operator's memory, issue 12).
    let writer = Writer::<Guarded>::default();
    let store = writer.as_reader();
    let transports = watcher(
        api_in::<Guarded>(client, namespace),
        watcher::Config::default().any_semantic(),
    )
    .modify(strip_unread_metadata)
    .reflect(writer)
    .applied_objects();
    let controller = Controller::for_stream(transports, store)
        .with_config(controller::Config::default().concurrency(CONCURRENCY));
    let controller = watches.trigger(controller);
    let store = controller.store();
    controller.watches(
        api_in::<PartialObjectMeta<Secret>>(client, namespace),
        watcher::Config::default(),
        move |secret| referencing(&store, &secret),
    )
}

/// Drops the metadata of a transport that no reconcile reads, before it is stored.
fn strip_unread_metadata(transport: &mut Guarded) {
    let meta = transport.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// Run the controllers for `scope` until `stop` fires (then finish in-flight reconciles and return).
pub async fn run(ctx: Arc<Context>, scope: &WatchScope, stop: Stop) {
    let client = ctx.watch_client.clone();
    let namespaces: Vec<Option<String>> = match scope {
        WatchScope::AllNamespaces => vec![None],
        WatchScope::Namespaces(list) => list.iter().cloned().map(Some).collect(),
    };
    let (cache, watches) = ChildCache::start(&client, &namespaces, &managed_selector());
    ctx.set_cache(Some(cache));
    let controllers: Vec<Controller<Guarded>> = watches
        .into_iter()
        .map(|watches| controller_for(&client, watches))
        .collect();
    ctx.set_transports(controllers.iter().map(Controller::store).collect());
    let streams = controllers.into_iter().map(|controller| {
        controller
            .graceful_shutdown_on(stop.wait())
            .run(reconcile, error_policy, ctx.clone())
            .boxed()
    });
    futures::stream::select_all(streams)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
                // Failed reconciles are logged by `error_policy`.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => tracing::warn!(%error, "controller"),
            }
        })
        .await;
    ctx.set_cache(None);
    ctx.set_transports(Vec::new());
    tracing::info!("controllers stopped");
}

/// The label every child carries; the watches of the children select on it.
fn managed_selector() -> String {
    format!("{}={}", labels::MANAGED_BY, labels::MANAGER)
}

#[cfg(test)]
mod tests;
