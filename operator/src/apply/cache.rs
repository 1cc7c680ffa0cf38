//! Watch caches (reflector stores) of the owned children, so a reconcile reads what exists from memory
//! instead of listing each kind from the API server.
//!
//! Why: a label-selected LIST is a quorum read that the API server answers by scanning the whole namespace
//! (or cluster), so with one LIST per kind per reconcile the cost of a reconcile grew with the number of
//! transports, and the total with its square (issue 12). The caches are fed by one watch per kind (per
//! watched namespace) restricted to the `managed-by` label, and the same watch is the controller's trigger
//! for that kind ([`ScopeWatches::trigger`]): one watch per kind, not one for the cache and one for
//! `Controller::owns` (which also decoded every Secret's data just to find its owner).
//!
//! - Every owned kind but Secrets ([`crate::kinds`]) is cached whole (what the "already applied?"
//!   comparison needs), without `managedFields` (the bulk of a live object, never read), as its JSON text
//!   ([`CachedChild`]), parsed back only for the few children of the transport being reconciled; parsed
//!   are only the metadata the store and the owner triggers read, and the labels as a short list. Why: a
//!   parsed map (a `serde_json::Value` object, or the labels of an `ObjectMeta`) spends a B-tree node of
//!   over half a kilobyte on every small map; at 1,000 transports the parsed bodies made most of the
//!   operator's 155 MiB resident memory, and the parsed metadata most of what was left (docs/benchmark.md).
//! - Secrets are cached as metadata only, so no Secret content sits in the operator's memory; the body of
//!   an owned Secret is read with a GET by name when it is about to be compared.
//! - An optional kind (a CRD of another project, [`ChildKind::is_optional`]) the cluster does not serve
//!   is cached as empty and reported as not installed ([`super::optional`]), instead of a watch that
//!   never completes its first list.
//! - A cache can be behind the API server for a moment after a write; the worst that does is one
//!   server-side apply that changes nothing (which makes no watch event, so it cannot loop).

use std::borrow::Cow;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta};
use kube::core::{DynamicResourceScope, PartialObjectMeta};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use super::optional::{self, Served};
use super::{ApiFailure, ApplyError, Observed, Owner};
use crate::kinds::ChildKind;

/// How long a reconcile waits for the caches' first list before giving up (and retrying with backoff).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A cached child: the few metadata fields the store and the owner triggers read, parsed; its labels
/// as a short list (what selection reads); the whole object, `managedFields` aside, kept as the JSON
/// text it arrived as (a fraction of the memory of the parsed tree).
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "DynamicObject")]
pub struct CachedChild {
    /// Name, namespace, uid, resourceVersion and owner references only.
    metadata: ObjectMeta,
    labels: Box<[(Box<str>, Box<str>)]>,
    object: Box<str>,
}

impl From<DynamicObject> for CachedChild {
    fn from(mut object: DynamicObject) -> Self {
        object.metadata.managed_fields = None;
        let full = &object.metadata;
        let metadata = ObjectMeta {
            name: full.name.clone(),
            namespace: full.namespace.clone(),
            uid: full.uid.clone(),
            resource_version: full.resource_version.clone(),
            owner_references: full.owner_references.clone(),
            ..ObjectMeta::default()
        };
        let labels = full
            .labels
            .iter()
            .flatten()
            .map(|(key, value)| (key.as_str().into(), value.as_str().into()))
            .collect();
        // Serialising a `DynamicObject` cannot fail: it is JSON already.
        let object = serde_json::to_string(&object).unwrap_or_default();
        Self {
            metadata,
            labels,
            object: object.into_boxed_str(),
        }
    }
}

impl CachedChild {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, value)| &**value)
    }

    /// The object as the apply step compares it. The text is what `serde_json` printed, so parsing it
    /// back fails only past its nesting limit, which no object of an owned kind reaches.
    fn to_dynamic(&self, kind: ChildKind) -> Result<DynamicObject, ApplyError> {
        serde_json::from_str(&self.object).map_err(|error| ApplyError::List {
            kind,
            failure: ApiFailure {
                code: None,
                reason: "CacheUnreadable".to_owned(),
                message: Some(format!("a cached {kind:?} could not be read back: {error}")),
            },
        })
    }
}

impl Resource for CachedChild {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(resource: &ApiResource) -> Cow<'_, str> {
        DynamicObject::kind(resource)
    }

    fn group(resource: &ApiResource) -> Cow<'_, str> {
        DynamicObject::group(resource)
    }

    fn version(resource: &ApiResource) -> Cow<'_, str> {
        DynamicObject::version(resource)
    }

    fn api_version(resource: &ApiResource) -> Cow<'_, str> {
        DynamicObject::api_version(resource)
    }

    fn plural(resource: &ApiResource) -> Cow<'_, str> {
        DynamicObject::plural(resource)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The caches for one watch scope: a namespace, or all of them (`None`).
#[derive(Clone)]
struct ScopeCache {
    namespace: Option<String>,
    bodies: Vec<(ChildKind, Cached<CachedChild>)>,
    secrets: Cached<PartialObjectMeta<Secret>>,
    /// Whether the cluster serves each optional kind.
    served: Vec<(ChildKind, Served)>,
}

/// Caches of every owned kind, for every watched scope. Cheap to clone (shared stores).
#[derive(Clone)]
pub struct ChildCache {
    scopes: Vec<ScopeCache>,
}

/// The kinds cached with their body: every owned kind but Secrets, the one metadata-only kind.
fn body_kinds() -> impl Iterator<Item = ChildKind> {
    ChildKind::ALL
        .iter()
        .copied()
        .filter(|kind| *kind != ChildKind::Secret)
}

/// A watch of touched children: every object applied or deleted, after it reached the cache.
type Touched<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The watches that feed one scope's caches. They do nothing until polled: hand them to that scope's
/// controller ([`ScopeWatches::trigger`]), which polls them as its owned-children triggers.
pub struct ScopeWatches {
    namespace: Option<String>,
    bodies: Vec<(ApiResource, Touched<CachedChild>)>,
    secrets: Touched<PartialObjectMeta<Secret>>,
}

impl ScopeWatches {
    /// The namespace these watches cover (`None`: all).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// `controller` reconciles the owner of every child these watches see change or go away (what
    /// `Controller::owns` does), and by polling them keeps the caches current.
    pub fn trigger<K>(self, controller: Controller<K>) -> Controller<K>
    where
        K: Clone + Resource<DynamicType = ()> + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let controller = self
            .bodies
            .into_iter()
            .fold(controller, |controller, (resource, touched)| {
                controller.owns_stream_with(touched, resource)
            });
        controller.owns_stream(self.secrets)
    }

    /// Polls the watches without a controller, until dropped (tests that call `reconcile` directly).
    #[cfg(test)]
    pub async fn drive(self) {
        let mut all: Vec<BoxStream<'static, ()>> = vec![self.secrets.map(|_| ()).boxed()];
        all.extend(self.bodies.into_iter().map(|(_, s)| s.map(|_| ()).boxed()));
        futures::stream::select_all(all)
            .for_each(|()| futures::future::ready(()))
            .await;
    }
}

impl ChildCache {
    /// Caches for `namespaces` (`None`: all namespaces), watching objects that match `selector`, and the
    /// watches that feed them, one [`ScopeWatches`] per namespace in the same order.
    pub fn start(
        client: &Client,
        namespaces: &[Option<String>],
        selector: &str,
    ) -> (Self, Vec<ScopeWatches>) {
        let config = watcher::Config::default().labels(selector).any_semantic();
        let mut watches = Vec::new();
        let mut scopes = Vec::new();
        for namespace in namespaces {
            let mut bodies = Vec::new();
            let mut body_watches = Vec::new();
            let mut served = Vec::new();
            for kind in body_kinds() {
                let resource = kind.api_resource();
                let api: Api<CachedChild> = match namespace {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                    None => Api::all_with(client.clone(), &resource),
                };
                let writer = Writer::new(resource.clone());
                bodies.push((kind, Cached::new(writer.as_reader())));
                let events = if kind.is_optional() {
                    let flag = Served::default();
                    served.push((kind, flag.clone()));
                    let config = config.clone();
                    let start = move || {
                        watcher(api.clone(), config.clone())
                            .default_backoff()
                            .boxed()
                    };
                    optional::events(start, flag, optional::RECHECK)
                } else {
                    watcher(api, config.clone()).default_backoff().boxed()
                };
                let touched = events.reflect(writer).touched_objects().boxed();
                body_watches.push((resource, touched));
            }
            let api: Api<PartialObjectMeta<Secret>> = match namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let (secrets, writer) = reflector::store();
            let secret_watch = watcher(api, config.clone())
                .default_backoff()
                .modify(|object: &mut PartialObjectMeta<Secret>| {
                    object.managed_fields_mut().clear()
                })
                .reflect(writer)
                .touched_objects()
                .boxed();
            scopes.push(ScopeCache {
                namespace: namespace.clone(),
                bodies,
                secrets: Cached::new(secrets),
                served,
            });
            watches.push(ScopeWatches {
                namespace: namespace.clone(),
                bodies: body_watches,
                secrets: secret_watch,
            });
        }
        (Self { scopes }, watches)
    }

    /// The error of a reconcile that runs while no cache does (between leadership terms).
    pub fn not_running() -> ApplyError {
        not_ready(ChildKind::ServiceAccount)
    }

    fn scope_of(&self, namespace: &str) -> Option<&ScopeCache> {
        self.scopes
            .iter()
            .find(|s| s.namespace.as_deref().is_none_or(|ns| ns == namespace))
    }

    /// The cached children matching `owner`'s selector in its namespace (no API request once the caches
    /// have their first list).
    pub async fn observe(&self, owner: &Owner) -> Result<Observed, ApplyError> {
        let scope = self
            .scope_of(owner.namespace())
            .ok_or_else(|| not_ready(ChildKind::ServiceAccount))?;
        let wanted = selector_terms(&owner.selector);
        let mut objects = Vec::new();
        for (kind, store) in &scope.bodies {
            store.ready(*kind).await?;
            for cached in store.store.state() {
                if is_match(
                    cached.metadata.namespace.as_deref(),
                    |key| cached.label(key),
                    owner,
                    &wanted,
                ) {
                    objects.push((*kind, cached.to_dynamic(*kind)?));
                }
            }
        }
        scope.secrets.ready(ChildKind::Secret).await?;
        objects.extend(
            scope
                .secrets
                .store
                .state()
                .into_iter()
                .filter(|o| {
                    let labels = o.labels();
                    is_match(
                        o.metadata.namespace.as_deref(),
                        |key| labels.get(key).map(String::as_str),
                        owner,
                        &wanted,
                    )
                })
                .map(|o| {
                    let object = DynamicObject {
                        types: None,
                        metadata: o.metadata.clone(),
                        data: serde_json::Value::Object(Default::default()),
                    };
                    (ChildKind::Secret, object)
                }),
        );
        // Read after the stores are ready: the flags are set before a store sees its list end.
        let not_installed = scope
            .served
            .iter()
            .filter(|(_, served)| !served.get())
            .map(|(kind, _)| *kind)
            .collect();
        Ok(Observed {
            objects,
            metadata_only: vec![ChildKind::Secret],
            not_installed,
        })
    }

    /// Every cached child in `namespace` as (kind, name, resourceVersion), for tests that wait for the
    /// caches to catch up with the API server.
    #[cfg(test)]
    pub fn versions(
        &self,
        namespace: &str,
    ) -> std::collections::BTreeSet<(ChildKind, String, String)> {
        let mut all = std::collections::BTreeSet::new();
        let Some(scope) = self.scope_of(namespace) else {
            return all;
        };
        let mut add = |kind: ChildKind, meta: &kube::api::ObjectMeta| {
            if meta.namespace.as_deref() == Some(namespace) {
                all.insert((
                    kind,
                    meta.name.clone().unwrap_or_default(),
                    meta.resource_version.clone().unwrap_or_default(),
                ));
            }
        };
        for (kind, store) in &scope.bodies {
            for o in store.store.state() {
                add(*kind, &o.metadata);
            }
        }
        for o in scope.secrets.store.state() {
            add(ChildKind::Secret, &o.metadata);
        }
        all
    }
}

/// A cache's store and its readiness, which many reconciles may await at once.
///
/// Why not `Store::wait_until_ready` directly: it polls one oneshot receiver, which keeps only the last
/// poller's waker, so of several reconciles waiting together for a store's first list only one woke up
/// and the others waited for [`READY_TIMEOUT`] (a 30 s stall of a fresh start, issue 12). Here one waiter
/// at a time polls the store and the others wait on a tokio `OnceCell`, which wakes them all.
#[derive(Clone)]
struct Cached<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    ready: Arc<OnceCell<()>>,
}

impl<K: Resource + Clone + 'static> Cached<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn new(store: Store<K>) -> Self {
        Self {
            store,
            ready: Arc::default(),
        }
    }

    /// Waits (at most [`READY_TIMEOUT`]) until the store has its first list.
    async fn ready(&self, kind: ChildKind) -> Result<(), ApplyError> {
        let first_list = self.ready.get_or_try_init(|| self.store.wait_until_ready());
        match tokio::time::timeout(READY_TIMEOUT, first_list).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(not_ready(kind)),
        }
    }
}

fn not_ready(kind: ChildKind) -> ApplyError {
    ApplyError::List {
        kind,
        failure: ApiFailure {
            code: None,
            reason: "CacheNotReady".to_owned(),
            message: Some("the watch of this kind has not completed its first list".to_owned()),
        },
    }
}

/// The `key=value` terms of an equality selector (the only form [`Owner`] selectors use); `None` if some
/// term has another form, which then matches nothing rather than too much.
fn selector_terms(selector: &str) -> Option<Vec<(String, String)>> {
    selector
        .split(',')
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .map(|term| {
            let (key, value) = term.split_once('=')?;
            (!key.ends_with('!') && !value.starts_with('='))
                .then(|| (key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

fn is_match<'a>(
    namespace: Option<&str>,
    label: impl Fn(&str) -> Option<&'a str>,
    owner: &Owner,
    wanted: &Option<Vec<(String, String)>>,
) -> bool {
    namespace == Some(owner.namespace())
        && wanted.as_ref().is_some_and(|terms| {
            terms
                .iter()
                .all(|(key, value)| label(key) == Some(value.as_str()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_terms_accept_only_equalities() {
        assert_eq!(
            selector_terms("a=b, c=d"),
            Some(vec![("a".into(), "b".into()), ("c".into(), "d".into())])
        );
        assert_eq!(selector_terms("a!=b"), None);
        assert_eq!(selector_terms("a==b"), None);
        assert_eq!(selector_terms("a"), None);
    }

    #[test]
    fn a_cached_child_reads_back_as_the_object_it_was() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "demo", "namespace": "ns", "labels": {"a": "b"}, "uid": "u-1",
                         "annotations": {"note": "kept"},
                         "managedFields": [{"manager": "m", "operation": "Apply"}]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "c", "image": "i", "ports": [{"containerPort": 7880, "protocol": "TCP"}],
                 "resources": {}, "env": [{"name": "X", "value": "ü \" \\ \n"}]}
            ]}}},
            "status": {"readyReplicas": 1}
        }))
        .expect("a valid object");
        let cached: CachedChild =
            serde_json::from_value(serde_json::to_value(&object).expect("serialisable"))
                .expect("a cached child deserialises like a dynamic object");
        assert_eq!(cached.metadata.name, object.metadata.name);
        assert_eq!(cached.metadata.uid, object.metadata.uid);
        assert_eq!(cached.metadata.labels, None, "labels are kept apart");
        assert_eq!(cached.label("a"), Some("b"));
        assert_eq!(cached.label("c"), None);
        let back = cached
            .to_dynamic(ChildKind::Deployment)
            .expect("reads back");
        assert_eq!(back.types, object.types);
        let mut without_managed_fields = object.metadata.clone();
        without_managed_fields.managed_fields = None;
        assert_eq!(back.metadata, without_managed_fields);
        assert_eq!(back.data, object.data);
    }

    #[tokio::test]
    async fn every_reconcile_waiting_for_a_first_list_wakes_when_it_ends() {
        let (store, mut writer) = reflector::store::<PartialObjectMeta<Secret>>();
        let cached = Cached::new(store);
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let cached = cached.clone();
                tokio::spawn(async move { cached.ready(ChildKind::Secret).await })
            })
            .collect();
        // Let every waiter poll the store before its list ends.
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        // All of them, well before READY_TIMEOUT (with `Store::wait_until_ready` awaited by each, only
        // the last poller woke and the other three waited the full 30 s).
        let all = futures::future::join_all(waiters);
        let results = tokio::time::timeout(Duration::from_secs(2), all)
            .await
            .expect("every waiter wakes up");
        for result in results {
            assert!(result.expect("the waiter did not panic").is_ok());
        }
    }
}
