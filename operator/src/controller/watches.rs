//! What the controller watches and how it runs: one [`Controller`] per watched namespace (or one for the
//! whole cluster), triggered by its `MatrixRTCTransport`s, by the children the caches' watches see (mapped to
//! their owner) and by the Secrets its transports reference by name ([`referencing`]), so a created, fixed or
//! rotated user Secret is picked up at once. [`run`] starts the children caches, runs every controller until
//! the stop signal, then clears the caches from the [`Context`] again.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};

use super::{Context, Guarded, error_policy, reconcile};
use crate::apply::cache::{ChildCache, ScopeWatches};
use crate::build::{labels, secret_refs};
use crate::kinds::api_in;
use crate::shutdown::Stop;
use crate::validate::{self};

/// Reconciles running at once (per controller); bounds API load when many CRs change together.
const CONCURRENCY: u16 = 8;

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

/// The annotation in which a client-side `kubectl apply` keeps a copy of the whole object.
pub(super) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

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
pub(super) fn managed_selector() -> String {
    format!("{}={}", labels::MANAGED_BY, labels::MANAGER)
}

#[cfg(test)]
mod tests {
    use kube::core::error_boundary::DeserializeGuard;
    use serde_json::{Value, json};

    use super::*;
    use crate::api::MatrixRTCTransport;

    const NS: &str = "calls";

    fn minimal_spec() -> Value {
        json!({"serverName": "example.com", "host": "rtc.example.com"})
    }

    #[test]
    fn secrets_map_to_the_transports_that_reference_them() {
        let (reader, mut writer) = kube::runtime::reflector::store::<Guarded>();
        let make = |name: &str, namespace: &str, patch: Value| {
            let mut spec = minimal_spec();
            if let (Some(spec), Value::Object(patch)) = (spec.as_object_mut(), patch) {
                spec.extend(patch);
            }
            let cr: MatrixRTCTransport = serde_json::from_value(json!({
                "apiVersion": "matrixrtc.dev/v1alpha1", "kind": "MatrixRTCTransport",
                "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}")},
                "spec": spec,
            }))
            .unwrap();
            DeserializeGuard(Ok(cr))
        };
        let shared = || json!({"credentials": {"secretName": "shared"}});
        for object in [
            make("a", NS, shared()),
            make("b", NS, json!({})),
            make("c", "elsewhere", shared()),
            make(
                "d",
                NS,
                json!({"livekit": {"managed": {"turn": {"domain": "turn.example.com", "tls": {"port": 30003, "secretName": "shared"}}}}}),
            ),
            make(
                "e",
                NS,
                json!({"livekit": {"managed": {"replicas": 2, "redis": {"address": "redis:6379", "passwordSecret": {"name": "shared", "key": "p"}}, "media": {"service": {"externalTrafficPolicy": "Local"}}}}}),
            ),
            make(
                "f",
                NS,
                json!({"auth": {"redis": {"urlSecret": {"name": "shared", "key": "url"}}}}),
            ),
            // Invalid (an external LiveKit without credentials): it waits for a spec change instead.
            make(
                "g",
                NS,
                json!({"livekit": {"external": {"url": "wss://sfu.example.net"}}, "auth": {"redis": {"urlSecret": {"name": "shared", "key": "url"}}}}),
            ),
        ] {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(object));
        }
        let mut secret = PartialObjectMeta::<Secret>::default();
        secret.metadata.name = Some("shared".into());
        secret.metadata.namespace = Some(NS.into());
        let mut refs: Vec<String> = referencing(&reader, &secret)
            .into_iter()
            .map(|r| r.name)
            .collect();
        refs.sort();
        assert_eq!(refs, ["a", "d", "e", "f"]);
    }
}
