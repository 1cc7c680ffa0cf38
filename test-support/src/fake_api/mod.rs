//! An in-memory Kubernetes API server for tests: a real `kube::Client` whose requests it serves, or a loopback
//! HTTP endpoint for another process (the operator binary).
//!
//! Why not `kube-fake-client` 0.3: it is built on kube 4.2 and k8s-openapi 0.28, so its `Client` is a different
//! type from ours (kube 5) and cannot be handed to our code. This fake is the small part we need, served to a
//! real `kube::Client` through a `tower` service, so every request our code makes goes through kube's own
//! URL and body encoding:
//!
//! - objects are stored as JSON by (group/version, plural, namespace, name) ([`store`]);
//! - GET one, LIST (with an equality/existence `labelSelector`, [`selector`]), POST, PATCH, DELETE (with a
//!   uid precondition) on the object and PATCH on its `/status` subresource ([`routing`]);
//! - PATCH: server-side apply approximated for a single field manager, merge and strategic merge treated as
//!   JSON merge ([`patch`]);
//! - `resourceVersion` is bumped only when a write changed something, as the real server does;
//! - list items without `apiVersion`/`kind`, as the real server sends them;
//! - a little server-side defaulting (a Service `clusterIP`, Deployment and container defaults, Secret
//!   `stringData` folded into `data`) so the operator's "already applied?" comparison is exercised against
//!   objects that are not byte-for-byte what it sent;
//! - WATCH (`?watch=true`) as a stream of the changes after the given resourceVersion, so the real
//!   controller runtime can run against the fake ([`watch`]);
//! - every request is recorded (method, path, query, body) so a test can assert "no writes".
//!
//! It knows no custom resource: every kind is stored as JSON and addressed through `kube::Resource`, so this
//! crate does not depend on the operator, whose unit tests use it as a dev-dependency.

mod patch;
mod routing;
mod selector;
mod store;
mod watch;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response};
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Notify;

pub use store::Recorded;
use store::{State, create_object, key_for, key_of};

/// The fake server. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    /// Woken on every change, for watches.
    changed: Arc<Notify>,
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic in another test thread holding the lock poisons it; the data is still usable for asserting.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A real kube client whose every request is served by this fake.
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.serve(request).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The requests so far that could change state.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_write)
            .collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Make the next request with this method whose path ends with `path_suffix` fail with `code`.
    pub fn fail_next(&self, method: Method, path_suffix: &str, code: u16) {
        self.lock()
            .failures
            .push((method, path_suffix.to_owned(), code));
    }

    /// Stop serving the API group/version `api_version` (e.g. `monitoring.coreos.com/v1`), as a cluster without
    /// its CRD: every request under it gets 404. [`FakeApi::serve_again`] undoes it.
    pub fn unserve(&self, api_version: &str) {
        self.lock().unserved.push(format!("/apis/{api_version}"));
    }

    /// Serve `api_version` again (its CRD "installed").
    pub fn serve_again(&self, api_version: &str) {
        let prefix = format!("/apis/{api_version}");
        self.lock().unserved.retain(|p| *p != prefix);
        self.changed.notify_waiters();
    }

    /// Store an object as if another client had created it (uid, resourceVersion and defaults are filled in).
    pub fn insert<K: Resource<DynamicType = ()> + Serialize>(&self, object: &K) -> Value {
        let value = serde_json::to_value(object).unwrap_or(Value::Null);
        let key = key_of::<K>(&value);
        let mut state = self.lock();
        let stored = create_object(&mut state, &key, value);
        state.put(key, stored.clone(), "ADDED");
        drop(state);
        self.changed.notify_waiters();
        stored
    }

    /// The stored object, typed.
    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<K> {
        self.get_value::<K>(namespace, name)
            .and_then(|v| serde_json::from_value(v).ok())
    }

    /// The stored object as JSON.
    pub fn get_value<K: Resource<DynamicType = ()>>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let key = key_for::<K>(namespace, name);
        self.lock().objects.get(&key).cloned()
    }

    /// Every stored object of kind `K` in `namespace`, typed.
    pub fn list<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        namespace: &str,
    ) -> Vec<K> {
        let probe = key_for::<K>(namespace, "");
        self.lock()
            .objects
            .iter()
            .filter(|(k, _)| {
                k.group_version == probe.group_version
                    && k.plural == probe.plural
                    && k.namespace == probe.namespace
            })
            .filter_map(|(_, v)| serde_json::from_value(v.clone()).ok())
            .collect()
    }

    /// Change a stored object as another client would (bumps its resourceVersion). Returns false if absent.
    pub fn edit<K: Resource<DynamicType = ()>>(
        &self,
        namespace: &str,
        name: &str,
        edit: impl FnOnce(&mut Value),
    ) -> bool {
        let key = key_for::<K>(namespace, name);
        let mut state = self.lock();
        let rv = state.next_resource_version();
        let Some(mut object) = state.objects.get(&key).cloned() else {
            return false;
        };
        edit(&mut object);
        object["metadata"]["resourceVersion"] = Value::String(rv);
        state.put(key, object, "MODIFIED");
        drop(state);
        self.changed.notify_waiters();
        true
    }

    /// Delete a stored object as another client would. Returns false if absent.
    pub fn remove<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) -> bool {
        let key = key_for::<K>(namespace, name);
        let removed = self.lock().delete(&key).is_some();
        self.changed.notify_waiters();
        removed
    }

    /// (group/version, plural, name, resourceVersion) of every stored object in `namespace` that carries
    /// the label `key=value`: what a label-selected watch cache holds once it has caught up.
    pub fn labelled_versions(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
    ) -> BTreeSet<(String, String, String, String)> {
        self.lock()
            .objects
            .iter()
            .filter(|(k, v)| {
                k.namespace == namespace && v["metadata"]["labels"][key].as_str() == Some(value)
            })
            .map(|(k, v)| {
                (
                    k.group_version.clone(),
                    k.plural.clone(),
                    k.name.clone(),
                    v["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }

    /// Every stored object, as JSON (for "is this secret anywhere it should not be" scans).
    pub fn all_values(&self) -> Vec<Value> {
        self.lock().objects.values().cloned().collect()
    }

    /// Serve this fake over HTTP on a loopback port, for clients in other processes (the operator binary).
    pub async fn listen(
        &self,
    ) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let fake = self.clone();
        let app = axum::Router::new().fallback(move |request: Request<Body>| {
            let fake = fake.clone();
            async move { fake.serve(request).await }
        });
        let task = tokio::spawn(async move {
            // Ends only when the test's runtime shuts down.
            let _ = axum::serve(listener, app).await;
        });
        Ok((address, task))
    }

    async fn serve<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: axum::body::HttpBody<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let response = self.respond(request).await;
        // Wake watches after every request: cheap, and it covers every kind of write.
        self.changed.notify_waiters();
        response
    }
}

#[cfg(test)]
mod tests;
