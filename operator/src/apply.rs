//! Server-side apply of the desired children, and pruning of the owned children no longer desired.
//!
//! - One field manager, [`FIELD_MANAGER`], always with `force`: the operator is the authority on the fields it
//!   sets, and a conflict with a person's `kubectl edit` must be resolved in favour of the CR (drift repair).
//! - Dependency order: ServiceAccounts, Secrets and ConfigMaps before the Services, Deployments and Ingress that
//!   refer to them ([`ChildKind`]'s declaration order in [`crate::kinds`]), so a new pod never starts against
//!   a missing volume.
//! - Ownership is stamped here ([`Owner::stamp`]), not in the builders: every child gets the CR's namespace,
//!   a controller owner reference to it and the `managed-by` label, so garbage collection, the watches and
//!   pruning never depend on a builder remembering. `render` stamps with the same function.
//! - No write in a steady state: a child is applied only when the live object does not already contain the
//!   desired fields ([`subset::contains`]) or when the desired object changed since it was last applied (the
//!   [`APPLIED_HASH_ANNOTATION`] differs; that catches fields we stopped setting, which server-side apply
//!   then removes).
//! - What exists is read from watch caches ([`cache::ChildCache`]), not listed per reconcile: a steady state
//!   makes no LIST. Pruning considers the cached objects with the CR's labels and deletes only those whose
//!   controller owner reference carries this CR's uid, with a uid precondition, so an object someone else
//!   owns is never touched.
//! - Children of an optional kind the cluster does not serve (a CRD of another project that is not
//!   installed) are left out, everything else is applied, and [`Applied::not_installed`] says what was
//!   left out, for the status.
//! - Secret contents never reach an error message: API and decoding errors about Secrets keep only their
//!   code and reason.

pub mod cache;
mod optional;
mod subset;

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::{Client, Resource, ResourceExt};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::build::Children;
use crate::build::labels::{MANAGED_BY, MANAGER};
/// Kept at this path too: the end-to-end tests name kinds through it.
pub use crate::kinds::ChildKind;
use crate::kinds::{Child, NotInstalled};

pub use subset::parse_quantity;

/// The one server-side apply field manager for everything the operator writes (children and status).
pub const FIELD_MANAGER: &str = "matrixrtc-operator";

/// Hash of the desired object at its last apply; a different hash means the desired object changed.
pub const APPLIED_HASH_ANNOTATION: &str = "matrixrtc.dev/applied-hash";

/// One child by kind and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChildId {
    pub kind: ChildKind,
    pub name: String,
}

impl fmt::Display for ChildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// The CR whose children are applied: where they live, who owns them, how to find them.
#[derive(Clone, Debug)]
pub struct Owner {
    namespace: String,
    uid: String,
    reference: OwnerReference,
    selector: String,
}

impl Owner {
    /// `selector` is the label selector that every child of this owner matches. None when `owner` lacks a
    /// namespace, name or uid, which objects read from the API server always have.
    pub fn new<K: Resource<DynamicType = ()>>(
        owner: &K,
        selector: impl Into<String>,
    ) -> Option<Self> {
        // kube's controller reference leaves `blockOwnerDeletion` unset; the children block their owner's
        // foreground deletion until they are gone (what docs/rbac.md grants `finalizers` for).
        let reference = OwnerReference {
            block_owner_deletion: Some(true),
            ..owner.controller_owner_ref(&())?
        };
        Some(Self {
            namespace: owner.meta().namespace.clone()?,
            uid: reference.uid.clone(),
            reference,
            selector: selector.into(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Mark `child` as this owner's: its namespace, the controller owner reference and the
    /// `managed-by` label the watches select on. The one place ownership is written.
    pub fn stamp(&self, child: &mut Child) {
        let meta = child.metadata_mut();
        meta.namespace = Some(self.namespace.clone());
        meta.owner_references = Some(vec![self.reference.clone()]);
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
    }

    fn controls(&self, object: &DynamicObject) -> bool {
        object
            .owner_references()
            .iter()
            .any(|r| r.controller == Some(true) && r.uid == self.uid)
    }
}

/// What went wrong talking to the API server, without anything that could carry Secret contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiFailure {
    pub code: Option<u16>,
    pub reason: String,
    /// The server's message; dropped for Secrets.
    pub message: Option<String>,
}

impl ApiFailure {
    fn new(kind: ChildKind, error: &kube::Error) -> Self {
        let (code, reason, message) = match error {
            kube::Error::Api(status) => (
                Some(status.code),
                status.reason.clone(),
                Some(status.message.clone()),
            ),
            other => (None, "RequestFailed".to_owned(), Some(other.to_string())),
        };
        let message = if kind == ChildKind::Secret {
            None
        } else {
            message
        };
        Self {
            code,
            reason,
            message,
        }
    }

    /// A failure about a Secret: code and reason only.
    pub fn for_secret(error: &kube::Error) -> Self {
        Self::new(ChildKind::Secret, error)
    }

    /// A failure about an object that holds no secret (the CR itself): with the server's message.
    pub fn for_public(error: &kube::Error) -> Self {
        Self::new(ChildKind::ConfigMap, error)
    }
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "HTTP {code} {}", self.reason)?,
            None => f.write_str(&self.reason)?,
        }
        match &self.message {
            Some(message) if !message.is_empty() => write!(f, ": {message}"),
            _ => Ok(()),
        }
    }
}

/// What went wrong applying or pruning; the errors metric's label is the variant's name in snake case.
#[derive(Debug, thiserror::Error, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ApplyError {
    #[error("listing {kind}s failed: {failure}")]
    List {
        kind: ChildKind,
        failure: ApiFailure,
    },
    #[error("reading {child} failed: {failure}")]
    Get { child: ChildId, failure: ApiFailure },
    #[error("applying {child} failed: {failure}")]
    Apply { child: ChildId, failure: ApiFailure },
    #[error("deleting {child} failed: {failure}")]
    Delete { child: ChildId, failure: ApiFailure },
    #[error(
        "{child} already exists and is not managed by this MatrixRTCTransport; delete or rename it, \
         or label it for this instance so the operator adopts it"
    )]
    Conflict { child: ChildId },
    #[error("a desired {kind} has no name (operator bug)")]
    Unnamed { kind: ChildKind },
    #[error("{child} could not be encoded or decoded{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Codec {
        child: ChildId,
        detail: Option<String>,
    },
}

impl ApplyError {
    fn codec(child: ChildId, error: &serde_json::Error) -> Self {
        // serde messages can quote the offending value, which for a Secret is secret material.
        let detail = (child.kind != ChildKind::Secret).then(|| error.to_string());
        ApplyError::Codec { child, detail }
    }
}

/// The live objects that carry the owner's labels, read before applying.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    objects: Vec<(ChildKind, DynamicObject)>,
    /// Kinds observed as metadata only (Secrets): their body is read by name before comparing.
    metadata_only: Vec<ChildKind>,
    /// Optional kinds the cluster does not serve: none of their children can be applied.
    not_installed: Vec<ChildKind>,
}

impl Observed {
    fn find(&self, id: &ChildId) -> Option<&DynamicObject> {
        self.objects
            .iter()
            .find(|(kind, object)| {
                *kind == id.kind && object.metadata.name.as_deref() == Some(id.name.as_str())
            })
            .map(|(_, object)| object)
    }
}

/// The children after applying, as the API server holds them, in apply order.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub children: Vec<Child>,
    /// The children that needed a write (created, changed or repaired).
    pub written: Vec<ChildId>,
    /// Desired children left out because the cluster does not serve their kind, by kind.
    pub not_installed: Vec<NotInstalled>,
}

impl Applied {
    /// When to look again: soon while a kind is not installed (its watch notices an installed CRD
    /// within [`optional::RECHECK`], but that makes no event for the transport), else `resync`.
    pub fn requeue_after(&self, resync: std::time::Duration) -> std::time::Duration {
        if self.not_installed.is_empty() {
            resync
        } else {
            resync.min(2 * optional::RECHECK)
        }
    }

    pub fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.children.iter().filter_map(|child| match child {
            Child::Deployment(deployment) => Some(deployment),
            _ => None,
        })
    }
}

/// A desired child made ready to send: ownership stamped, hash recorded.
struct Prepared {
    id: ChildId,
    object: Value,
}

/// What to do with one desired child (pure decision).
enum Step<'a> {
    /// The live object already contains it.
    Keep(&'a DynamicObject),
    /// It is ours but differs: apply.
    Apply,
    /// Not among the labelled objects: it may be absent or someone else's; look before applying.
    CheckThenApply,
}

fn decide<'a>(prepared: &Prepared, live: Option<&'a DynamicObject>) -> Step<'a> {
    let Some(live) = live else {
        return Step::CheckThenApply;
    };
    // Items of a LIST carry no apiVersion/kind; the kind is already matched by where they were listed.
    let mut desired = prepared.object.clone();
    if let Some(fields) = desired.as_object_mut() {
        fields.remove("apiVersion");
        fields.remove("kind");
    }
    match serde_json::to_value(live) {
        Ok(live_value) if subset::contains(&live_value, &desired) => Step::Keep(live),
        _ => Step::Apply,
    }
}

fn prepare(owner: &Owner, child: &Child) -> Result<Prepared, ApplyError> {
    let kind = child.kind();
    let name = match child.metadata().name.as_deref() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => return Err(ApplyError::Unnamed { kind }),
    };
    let id = ChildId { kind, name };
    let mut stamped = child.clone();
    owner.stamp(&mut stamped);
    let mut object = stamped
        .to_value()
        .map_err(|e| ApplyError::codec(id.clone(), &e))?;
    let Some(fields) = object.as_object_mut() else {
        return Err(ApplyError::Codec {
            child: id,
            detail: None,
        });
    };
    if kind == ChildKind::Secret {
        fold_string_data(fields);
    }
    if let Some(annotations) = fields
        .get_mut("metadata")
        .and_then(|metadata| metadata.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        annotations.remove(APPLIED_HASH_ANNOTATION);
    }
    let hash = content_hash(&object);
    object["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = Value::String(hash);
    Ok(Prepared { id, object })
}

/// The API server stores `stringData` as `data`; sending `data` makes what we send comparable to what we read.
fn fold_string_data(secret: &mut serde_json::Map<String, Value>) {
    use base64::Engine as _;
    let Some(Value::Object(string_data)) = secret.remove("stringData") else {
        return;
    };
    let data = secret
        .entry("data")
        .or_insert_with(|| Value::Object(Default::default()));
    for (key, value) in string_data {
        let text = value.as_str().unwrap_or_default();
        data[key] = Value::String(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

/// Stable hash of a JSON value (serde_json writes map keys in a fixed order).
fn content_hash(value: &Value) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Apply every desired child in dependency order, skipping those already in place.
pub async fn apply(
    client: &Client,
    owner: &Owner,
    desired: &Children,
    observed: &Observed,
) -> Result<Applied, ApplyError> {
    let mut ordered: Vec<&Child> = desired.0.iter().collect();
    ordered.sort_by_key(|child| child.kind());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = Applied::default();
    for child in ordered {
        let kind = child.kind();
        if observed.not_installed.contains(&kind) {
            let name = child.name().to_owned();
            match applied.not_installed.iter_mut().find(|n| n.kind == kind) {
                Some(entry) => entry.names.push(name),
                None => applied.not_installed.push(NotInstalled {
                    kind,
                    names: vec![name],
                }),
            }
            continue;
        }
        let prepared = prepare(owner, child)?;
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &owner.namespace,
            &prepared.id.kind.api_resource(),
        );
        let cached = observed.find(&prepared.id);
        // A metadata-only cache entry says the object exists; its body is read by name to compare.
        let fetched = match cached {
            Some(_) if observed.metadata_only.contains(&prepared.id.kind) => api
                .get_opt(&prepared.id.name)
                .await
                .map_err(|error| ApplyError::Get {
                    child: prepared.id.clone(),
                    failure: ApiFailure::new(prepared.id.kind, &error),
                })?,
            _ => None,
        };
        let live = match decide(&prepared, fetched.as_ref().or(cached)) {
            Step::Keep(live) => live.clone(),
            step => {
                if matches!(step, Step::CheckThenApply) {
                    let existing =
                        api.get_opt(&prepared.id.name)
                            .await
                            .map_err(|error| ApplyError::Get {
                                child: prepared.id.clone(),
                                failure: ApiFailure::new(prepared.id.kind, &error),
                            })?;
                    if let Some(existing) = existing
                        && !owner.controls(&existing)
                    {
                        return Err(ApplyError::Conflict { child: prepared.id });
                    }
                }
                let result = api
                    .patch(&prepared.id.name, &params, &Patch::Apply(&prepared.object))
                    .await
                    .map_err(|error| ApplyError::Apply {
                        child: prepared.id.clone(),
                        failure: ApiFailure::new(prepared.id.kind, &error),
                    })?;
                tracing::info!(child = %prepared.id, "applied");
                applied.written.push(prepared.id.clone());
                result
            }
        };
        let value =
            serde_json::to_value(&live).map_err(|e| ApplyError::codec(prepared.id.clone(), &e))?;
        let typed = prepared
            .id
            .kind
            .parse(value)
            .map_err(|e| ApplyError::codec(prepared.id.clone(), &e))?;
        applied.children.push(typed);
    }
    Ok(applied)
}

/// The observed children that are ours and no longer desired (pure).
fn prune_candidates<'a>(
    owner: &Owner,
    desired: &Children,
    observed: &'a Observed,
) -> Vec<(ChildId, &'a DynamicObject)> {
    let wanted: BTreeSet<ChildId> = desired
        .0
        .iter()
        .filter_map(|child| {
            Some(ChildId {
                kind: child.kind(),
                name: child.metadata().name.clone()?,
            })
        })
        .collect();
    observed
        .objects
        .iter()
        .filter(|(_, object)| {
            owner.controls(object) && object.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|(kind, object)| {
            let id = ChildId {
                kind: *kind,
                name: object.metadata.name.clone()?,
            };
            (!wanted.contains(&id)).then_some((id, object))
        })
        .collect()
}

/// Delete the children this owner controls that are no longer desired. Returns what was deleted.
pub async fn prune(
    client: &Client,
    owner: &Owner,
    desired: &Children,
    observed: &Observed,
) -> Result<Vec<ChildId>, ApplyError> {
    let mut deleted = Vec::new();
    for (id, object) in prune_candidates(owner, desired, observed) {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &owner.namespace, &id.kind.api_resource());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: object.metadata.uid.clone(),
                resource_version: None,
            }),
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(&id.name, &params).await {
            Ok(_) => {
                tracing::info!(child = %id, "pruned");
                deleted.push(id);
            }
            // Already gone, or replaced by a different object since we listed: nothing of ours to delete.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => {
                return Err(ApplyError::Delete {
                    failure: ApiFailure::new(id.kind, &error),
                    child: id,
                });
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use matrixrtc_test_support::fake_api::FakeApi;
    use std::collections::BTreeMap;

    const NS: &str = "ns";
    const SELECTOR: &str = "app.kubernetes.io/instance=demo";

    fn owner_cm(uid: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("demo".into()),
                namespace: Some(NS.into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn labels() -> Option<BTreeMap<String, String>> {
        Some(BTreeMap::from([(
            "app.kubernetes.io/instance".to_owned(),
            "demo".to_owned(),
        )]))
    }

    fn cm(name: &str, value: &str) -> Child {
        Child::ConfigMap(ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: labels(),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("k".to_owned(), value.to_owned())])),
            ..Default::default()
        })
    }

    fn secret(name: &str) -> Child {
        Child::Secret(Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: labels(),
                ..Default::default()
            },
            string_data: Some(BTreeMap::from([(
                "s".to_owned(),
                "hunter2hunter2".to_owned(),
            )])),
            ..Default::default()
        })
    }

    /// What the watch caches would hold once caught up: every owned kind listed by the owner's labels.
    async fn observe(client: &Client, owner: &Owner) -> Result<Observed, ApplyError> {
        let mut objects = Vec::new();
        let params = kube::api::ListParams::default().labels(&owner.selector);
        for &kind in ChildKind::ALL {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &owner.namespace, &kind.api_resource());
            let list = api.list(&params).await.unwrap();
            objects.extend(list.items.into_iter().map(|object| (kind, object)));
        }
        Ok(Observed {
            objects,
            metadata_only: Vec::new(),
            not_installed: Vec::new(),
        })
    }

    async fn run(fake: &FakeApi, owner: &Owner, desired: &Children) -> (Applied, Vec<ChildId>) {
        let client = fake.client();
        let observed = observe(&client, owner).await.unwrap();
        let applied = apply(&client, owner, desired, &observed).await.unwrap();
        let pruned = prune(&client, owner, desired, &observed).await.unwrap();
        (applied, pruned)
    }

    #[tokio::test]
    async fn applies_in_dependency_order_with_ownership_and_then_stays_quiet() {
        let fake = FakeApi::new();
        let owner = Owner::new(&owner_cm("uid-1"), SELECTOR).unwrap();
        // Given out of order on purpose: the Secret must still go first.
        let desired = Children(vec![cm("config", "1"), secret("creds")]);
        let (applied, _) = run(&fake, &owner, &desired).await;
        assert_eq!(applied.written.len(), 2);
        let patches: Vec<String> = fake
            .writes()
            .iter()
            .filter(|r| r.method == http::Method::PATCH)
            .map(|r| r.path.clone())
            .collect();
        assert_eq!(
            patches,
            vec![
                "/api/v1/namespaces/ns/secrets/creds",
                "/api/v1/namespaces/ns/configmaps/config"
            ]
        );
        assert!(
            fake.writes()
                .iter()
                .all(|r| r.query.contains("fieldManager=matrixrtc-operator")
                    && r.query.contains("force=true"))
        );
        let stored: ConfigMap = fake.get(NS, "config").unwrap();
        assert_eq!(
            stored.metadata.labels.unwrap()[MANAGED_BY],
            MANAGER,
            "the label the watches select on is stamped here"
        );
        let refs = stored.metadata.owner_references.unwrap();
        assert_eq!(
            (
                refs.len(),
                refs[0].uid.as_str(),
                refs[0].controller,
                refs[0].block_owner_deletion
            ),
            (1, "uid-1", Some(true), Some(true))
        );

        fake.clear_requests();
        let (applied, pruned) = run(&fake, &owner, &desired).await;
        assert!(
            fake.writes().is_empty(),
            "steady state wrote: {:?}",
            fake.writes()
        );
        assert!(applied.written.is_empty() && pruned.is_empty());
        assert_eq!(applied.children.len(), 2);
    }

    #[tokio::test]
    async fn changed_desired_state_and_drift_are_applied() {
        let fake = FakeApi::new();
        let owner = Owner::new(&owner_cm("uid-1"), SELECTOR).unwrap();
        run(&fake, &owner, &Children(vec![cm("config", "1")])).await;

        let (applied, _) = run(&fake, &owner, &Children(vec![cm("config", "2")])).await;
        assert_eq!(applied.written.len(), 1);
        assert_eq!(
            fake.get::<ConfigMap>(NS, "config").unwrap().data.unwrap()["k"],
            "2"
        );

        fake.edit::<ConfigMap>(NS, "config", |o| o["data"]["k"] = "tampered".into());
        let (applied, _) = run(&fake, &owner, &Children(vec![cm("config", "2")])).await;
        assert_eq!(applied.written.len(), 1);
        assert_eq!(
            fake.get::<ConfigMap>(NS, "config").unwrap().data.unwrap()["k"],
            "2"
        );
    }

    #[tokio::test]
    async fn a_field_no_longer_desired_is_removed() {
        let fake = FakeApi::new();
        let owner = Owner::new(&owner_cm("uid-1"), SELECTOR).unwrap();
        let Child::ConfigMap(mut two_keys) = cm("config", "1") else {
            unreachable!()
        };
        two_keys
            .data
            .as_mut()
            .unwrap()
            .insert("extra".into(), "x".into());
        run(&fake, &owner, &Children(vec![Child::ConfigMap(two_keys)])).await;
        run(&fake, &owner, &Children(vec![cm("config", "1")])).await;
        let data = fake.get::<ConfigMap>(NS, "config").unwrap().data.unwrap();
        assert!(!data.contains_key("extra"), "stale key kept: {data:?}");
    }

    #[tokio::test]
    async fn prunes_only_what_this_owner_controls() {
        let fake = FakeApi::new();
        let owner = Owner::new(&owner_cm("uid-1"), SELECTOR).unwrap();
        run(
            &fake,
            &owner,
            &Children(vec![cm("keep", "1"), cm("drop", "1")]),
        )
        .await;
        // Same labels, but owned by another CR, and one with no owner at all.
        let other = Owner::new(&owner_cm("uid-2"), SELECTOR).unwrap();
        run(&fake, &other, &Children(vec![cm("theirs", "1")])).await;
        let Child::ConfigMap(unowned) = cm("unowned", "1") else {
            unreachable!()
        };
        fake.insert(&ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(NS.into()),
                ..unowned.metadata
            },
            ..unowned
        });

        let (_, pruned) = run(&fake, &owner, &Children(vec![cm("keep", "1")])).await;
        assert_eq!(
            pruned,
            vec![ChildId {
                kind: ChildKind::ConfigMap,
                name: "drop".into()
            }]
        );
        let names: BTreeSet<String> = fake
            .list::<ConfigMap>(NS)
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["keep".into(), "theirs".into(), "unowned".into()])
        );
    }

    #[tokio::test]
    async fn an_unlabelled_object_of_someone_else_is_a_conflict_not_a_takeover() {
        let fake = FakeApi::new();
        fake.insert(&ConfigMap {
            metadata: ObjectMeta {
                name: Some("config".into()),
                namespace: Some(NS.into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("user".to_owned(), "data".to_owned())])),
            ..Default::default()
        });
        let owner = Owner::new(&owner_cm("uid-1"), SELECTOR).unwrap();
        let client = fake.client();
        let observed = observe(&client, &owner).await.unwrap();
        let error = apply(
            &client,
            &owner,
            &Children(vec![cm("config", "1")]),
            &observed,
        )
        .await
        .unwrap_err();
        assert!(matches!(error, ApplyError::Conflict { .. }), "{error}");
        assert_eq!(
            fake.get::<ConfigMap>(NS, "config").unwrap().data.unwrap()["user"],
            "data"
        );
    }

    #[tokio::test]
    async fn children_of_a_kind_the_cluster_does_not_serve_are_left_out_and_reported() {
        use crate::kinds::third_party::ServiceMonitor;
        let fake = FakeApi::new();
        let owner = Owner::new(&owner_cm("uid-1"), SELECTOR).unwrap();
        let monitor = |name: &str| {
            Child::ServiceMonitor(ServiceMonitor {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    labels: labels(),
                    ..Default::default()
                },
                spec: Default::default(),
            })
        };
        let desired = Children(vec![cm("config", "1"), monitor("a"), monitor("b")]);
        let observed = Observed {
            not_installed: vec![ChildKind::ServiceMonitor],
            ..Observed::default()
        };
        let client = fake.client();
        let applied = apply(&client, &owner, &desired, &observed).await.unwrap();
        let patched: Vec<String> = fake.writes().iter().map(|r| r.path.clone()).collect();
        assert_eq!(patched, ["/api/v1/namespaces/ns/configmaps/config"]);
        assert_eq!(
            applied.not_installed,
            [NotInstalled {
                kind: ChildKind::ServiceMonitor,
                names: vec!["a".into(), "b".into()],
            }]
        );
        let resync = std::time::Duration::from_secs(600);
        assert!(applied.requeue_after(resync) < resync);
        let served = apply(&client, &owner, &desired, &Observed::default())
            .await
            .unwrap();
        assert!(served.not_installed.is_empty());
        assert_eq!(served.requeue_after(resync), resync);
        assert!(
            fake.writes()
                .iter()
                .any(|r| r.path == "/apis/monitoring.coreos.com/v1/namespaces/ns/servicemonitors/a"),
            "a served kind is applied"
        );
    }

    #[tokio::test]
    async fn secret_errors_carry_no_server_message() {
        let fake = FakeApi::new();
        fake.fail_next(http::Method::PATCH, "/secrets/creds", 422);
        let owner = Owner::new(&owner_cm("uid-1"), SELECTOR).unwrap();
        let client = fake.client();
        let observed = observe(&client, &owner).await.unwrap();
        let error = apply(&client, &owner, &Children(vec![secret("creds")]), &observed)
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("Secret creds") && text.contains("422"),
            "{text}"
        );
        assert!(!text.contains("injected failure"), "{text}");
    }

    #[test]
    fn hash_ignores_a_previous_hash_annotation() {
        let owner = Owner::new(&owner_cm("uid-1"), SELECTOR).unwrap();
        let Child::ConfigMap(mut annotated) = cm("config", "1") else {
            unreachable!()
        };
        annotated.metadata.annotations = Some(BTreeMap::from([(
            APPLIED_HASH_ANNOTATION.to_owned(),
            "old".to_owned(),
        )]));
        let Child::ConfigMap(mut plain) = cm("config", "1") else {
            unreachable!()
        };
        plain.metadata.annotations = Some(BTreeMap::new());
        let a = prepare(&owner, &Child::ConfigMap(annotated)).unwrap();
        let b = prepare(&owner, &Child::ConfigMap(plain)).unwrap();
        assert_eq!(a.object, b.object);
    }
}
