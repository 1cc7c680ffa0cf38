//! Watch caches (reflector stores) of the owned children, so a reconcile reads what exists from memory
//! instead of listing each kind from the API server.
//!
//! Why: a label-selected LIST is a quorum read that the API server answers by scanning the whole namespace
//! (or cluster), so with one LIST per kind per reconcile the cost of a reconcile grew with the number of
//! transports, and the total with its square (issue 12). The caches are fed by one watch per kind (per
//! watched namespace) restricted to the `managed-by` label, started before the controllers.
//!
//! - Every owned kind but Secrets ([`crate::kinds`]) is cached with its body (what the "already applied?"
//!   comparison needs), without `managedFields` (the bulk of a live object, never read).
//! - Secrets are cached as metadata only, so no Secret content sits in the operator's memory; the body of
//!   an owned Secret is read with a GET by name when it is about to be compared.
//! - A cache can be behind the API server for a moment after a write; the worst that does is one
//!   server-side apply that changes nothing (which makes no watch event, so it cannot loop).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::{ApiFailure, ApplyError, Observed, Owner};
use crate::kinds::ChildKind;

/// How long a reconcile waits for the caches' first list before giving up (and retrying with backoff).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The caches for one watch scope: a namespace, or all of them (`None`).
#[derive(Clone)]
struct ScopeCache {
    namespace: Option<String>,
    bodies: Vec<(ChildKind, Store<DynamicObject>)>,
    secrets: Store<PartialObjectMeta<Secret>>,
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

impl ChildCache {
    /// Caches for `namespaces` (`None`: all namespaces), watching objects that match `selector`, and the
    /// future that feeds them (runs until dropped).
    pub fn start(
        client: &Client,
        namespaces: &[Option<String>],
        selector: &str,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let config = watcher::Config::default().labels(selector).any_semantic();
        let mut feeds: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
        let mut scopes = Vec::new();
        for namespace in namespaces {
            let mut bodies = Vec::new();
            for kind in body_kinds() {
                let resource = kind.api_resource();
                let api: Api<DynamicObject> = match namespace {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                    None => Api::all_with(client.clone(), &resource),
                };
                let writer = Writer::new(resource);
                bodies.push((kind, writer.as_reader()));
                let feed = watcher(api, config.clone())
                    .default_backoff()
                    .modify(|object: &mut DynamicObject| object.managed_fields_mut().clear())
                    .reflect(writer)
                    .for_each(|_| futures::future::ready(()));
                feeds.push(Box::pin(feed));
            }
            let api: Api<PartialObjectMeta<Secret>> = match namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            };
            let (secrets, writer) = reflector::store();
            let feed = watcher(api, config.clone())
                .default_backoff()
                .modify(|object: &mut PartialObjectMeta<Secret>| {
                    object.managed_fields_mut().clear()
                })
                .reflect(writer)
                .for_each(|_| futures::future::ready(()));
            feeds.push(Box::pin(feed));
            scopes.push(ScopeCache {
                namespace: namespace.clone(),
                bodies,
                secrets,
            });
        }
        let feed = async move {
            futures::future::join_all(feeds).await;
        };
        (Self { scopes }, feed)
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
            ready(*kind, store).await?;
            objects.extend(
                store
                    .state()
                    .into_iter()
                    .filter(|o| {
                        is_match(o.metadata.namespace.as_deref(), o.labels(), owner, &wanted)
                    })
                    .map(|o| (*kind, (*o).clone())),
            );
        }
        ready(ChildKind::Secret, &scope.secrets).await?;
        objects.extend(
            scope
                .secrets
                .state()
                .into_iter()
                .filter(|o| is_match(o.metadata.namespace.as_deref(), o.labels(), owner, &wanted))
                .map(|o| {
                    let object = DynamicObject {
                        types: None,
                        metadata: o.metadata.clone(),
                        data: serde_json::Value::Object(Default::default()),
                    };
                    (ChildKind::Secret, object)
                }),
        );
        Ok(Observed {
            objects,
            metadata_only: vec![ChildKind::Secret],
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
            for o in store.state() {
                add(*kind, &o.metadata);
            }
        }
        for o in scope.secrets.state() {
            add(ChildKind::Secret, &o.metadata);
        }
        all
    }
}

async fn ready<K>(kind: ChildKind, store: &Store<K>) -> Result<(), ApplyError>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    match tokio::time::timeout(READY_TIMEOUT, store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(not_ready(kind)),
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

fn is_match(
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
    owner: &Owner,
    wanted: &Option<Vec<(String, String)>>,
) -> bool {
    namespace == Some(owner.namespace())
        && wanted.as_ref().is_some_and(|terms| {
            terms
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
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
}
