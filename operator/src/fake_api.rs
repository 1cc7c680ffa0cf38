//! An in-memory Kubernetes API server for reconcile tests (test-only).
//!
//! Why not `kube-fake-client` 0.3: it is built on kube 4.2 and k8s-openapi 0.28, so its `Client` is a different
//! type from ours (kube 5) and cannot be handed to our code. This fake is the small part we need, served to a
//! real `kube::Client` through a `tower` service, so every request our code makes goes through kube's own
//! URL and body encoding:
//!
//! - objects are stored as JSON by (group/version, plural, namespace, name);
//! - GET one, LIST (with an equality/existence `labelSelector`), POST, PATCH (server-side apply, merge and
//!   strategic merge treated as JSON merge) on the object and on its `/status` subresource, DELETE (with a uid
//!   precondition);
//! - `resourceVersion` is bumped only when a write changed something, as the real server does;
//! - list items without `apiVersion`/`kind`, as the real server sends them;
//! - a little server-side defaulting (a Service `clusterIP`, Deployment and container defaults, Secret
//!   `stringData` folded into `data`) so the operator's "already applied?" comparison is exercised against
//!   objects that are not byte-for-byte what it sent;
//! - WATCH (`?watch=true`) as a stream of the changes after the given resourceVersion, so the real
//!   controller runtime can run against the fake;
//! - every request is recorded (method, path, query, body) so a test can assert "no writes".
//!
//! Server-side apply is approximated for a single field manager: fields that the previous apply set and the
//! new one omits are removed, then the new object is merged in (maps recursively, lists replaced whole).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Option<Value>,
}

impl Recorded {
    /// Whether the request could change state (everything but GET).
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    group_version: String,
    plural: String,
    namespace: String,
    name: String,
}

/// One change, as a watch reports it.
struct Change {
    resource_version: u64,
    key: Key,
    type_: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    /// Every change in order, replayed to watches.
    changes: Vec<Change>,
    /// What the operator's last server-side apply of each object contained (to drop fields it stopped sending).
    last_applied: BTreeMap<Key, Value>,
    requests: Vec<Recorded>,
    resource_version: u64,
    uid: u64,
    /// Injected failures: (method, path suffix, status code), consumed once each.
    failures: Vec<(Method, String, u16)>,
}

impl State {
    fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn next_uid(&mut self) -> String {
        self.uid += 1;
        format!("00000000-0000-4000-8000-{:012}", self.uid)
    }

    /// Store `object` (whose resourceVersion is already set) and log the change for watches.
    fn put(&mut self, key: Key, object: Value, type_: &'static str) {
        self.changes.push(Change {
            resource_version: self.resource_version,
            key: key.clone(),
            type_,
            object: object.clone(),
        });
        self.objects.insert(key, object);
    }

    fn delete(&mut self, key: &Key) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        self.last_applied.remove(key);
        let rv = self.next_resource_version();
        object["metadata"]["resourceVersion"] = Value::String(rv);
        self.changes.push(Change {
            resource_version: self.resource_version,
            key: key.clone(),
            type_: "DELETED",
            object: object.clone(),
        });
        Some(object)
    }
}

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
    ) -> std::collections::BTreeSet<(String, String, String, String)> {
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

    /// A watch: newline-delimited events for changes after `since` (for `since == 0`, the current objects
    /// first), until the client hangs up.
    fn watch(&self, filter: WatchFilter, since: u64) -> Response<Body> {
        let events = futures::stream::unfold(
            (self.clone(), since, since == 0),
            move |(fake, cursor, initial)| {
                let filter = filter.clone();
                async move {
                    let changed = fake.changed.clone();
                    loop {
                        // Registered before looking, so a change between the look and the wait is not missed.
                        let notified = changed.notified();
                        tokio::pin!(notified);
                        notified.as_mut().enable();
                        let (lines, next) = {
                            let state = fake.lock();
                            let mut lines = String::new();
                            let mut push = |type_: &str, object: &Value| {
                                lines.push_str(
                                    &json!({"type": type_, "object": object}).to_string(),
                                );
                                lines.push('\n');
                            };
                            if initial {
                                for (key, object) in &state.objects {
                                    if filter.matches(key, object) {
                                        push("ADDED", object);
                                    }
                                }
                            } else {
                                for change in
                                    state.changes.iter().filter(|c| c.resource_version > cursor)
                                {
                                    if filter.matches(&change.key, &change.object) {
                                        push(change.type_, &change.object);
                                    }
                                }
                            }
                            (lines, state.resource_version)
                        };
                        if !lines.is_empty() {
                            return Some((
                                Ok::<_, Infallible>(Bytes::from(lines)),
                                (fake, next, false),
                            ));
                        }
                        if initial {
                            return Some((Ok(Bytes::new()), (fake, next, false)));
                        }
                        notified.await;
                    }
                }
            },
        );
        Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(events))
            .unwrap_or_else(|_| Response::new(Body::empty()))
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

    async fn respond<B>(&self, request: Request<B>) -> Response<Body>
    where
        B: axum::body::HttpBody<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = request.into_parts();
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                return status_response(StatusCode::BAD_REQUEST, "BadRequest", &error.to_string());
            }
        };
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(value) => Some(value),
                Err(error) => {
                    return status_response(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &error.to_string(),
                    );
                }
            }
        };
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();

        let mut state = self.lock();
        state.requests.push(Recorded {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: body.clone(),
        });
        if let Some(index) = state.failures.iter().position(|(method, suffix, _)| {
            *method == parts.method && path.ends_with(suffix.as_str())
        }) {
            let (_, _, code) = state.failures.remove(index);
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let reason = match code.as_u16() {
                403 => "Forbidden",
                404 => "NotFound",
                409 => "Conflict",
                422 => "Invalid",
                _ => "InternalError",
            };
            return status_response(code, reason, "injected failure");
        }
        let Some(route) = Route::parse(&path) else {
            return status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no route for {path}"),
            );
        };
        let params = parse_query(&query);
        if parts.method == Method::GET
            && params.get("watch").map(String::as_str) == Some("true")
            && let Route::Collection {
                group_version,
                plural,
                namespace,
            } = route
        {
            drop(state);
            let filter = WatchFilter {
                group_version,
                plural,
                namespace,
                selector: params.get("labelSelector").cloned().unwrap_or_default(),
            };
            let since = params
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return self.watch(filter, since);
        }
        match (parts.method.clone(), route) {
            (
                Method::GET,
                Route::Collection {
                    group_version,
                    plural,
                    namespace,
                },
            ) => list(
                &state,
                &group_version,
                &plural,
                namespace.as_deref(),
                params.get("labelSelector"),
            ),
            (Method::GET, Route::Object { key, .. }) => match state.objects.get(&key) {
                Some(object) => json_response(StatusCode::OK, object),
                None => not_found(&key),
            },
            (
                Method::POST,
                Route::Collection {
                    group_version,
                    plural,
                    namespace,
                },
            ) => {
                let Some(mut object) = body else {
                    return status_response(StatusCode::BAD_REQUEST, "BadRequest", "empty body");
                };
                let namespace = namespace.unwrap_or_default();
                let generate = object["metadata"]["generateName"]
                    .as_str()
                    .map(str::to_owned);
                let name = match (object["metadata"]["name"].as_str(), generate) {
                    (Some(name), _) => name.to_owned(),
                    (None, Some(prefix)) => format!("{prefix}{}", state.resource_version + 1),
                    (None, None) => {
                        return status_response(StatusCode::BAD_REQUEST, "BadRequest", "no name");
                    }
                };
                object["metadata"]["name"] = Value::String(name.clone());
                let key = Key {
                    group_version,
                    plural,
                    namespace,
                    name,
                };
                if state.objects.contains_key(&key) {
                    return status_response(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        "already exists",
                    );
                }
                let stored = create_object(&mut state, &key, object);
                state.put(key, stored.clone(), "ADDED");
                json_response(StatusCode::CREATED, &stored)
            }
            (Method::PATCH, Route::Object { key, subresource }) => {
                let Some(patch) = body else {
                    return status_response(StatusCode::BAD_REQUEST, "BadRequest", "empty body");
                };
                patch_object(
                    &mut state,
                    key,
                    subresource.as_deref(),
                    &content_type,
                    patch,
                )
            }
            (Method::DELETE, Route::Object { key, .. }) => {
                let wanted_uid = body
                    .as_ref()
                    .and_then(|b| b["preconditions"]["uid"].as_str())
                    .map(str::to_owned);
                match state.objects.get(&key) {
                    None => not_found(&key),
                    Some(object) => {
                        if let Some(uid) = wanted_uid
                            && object["metadata"]["uid"].as_str() != Some(uid.as_str())
                        {
                            return status_response(
                                StatusCode::CONFLICT,
                                "Conflict",
                                "uid precondition failed",
                            );
                        }
                        let object = state.delete(&key).unwrap_or_default();
                        json_response(StatusCode::OK, &object)
                    }
                }
            }
            (method, _) => status_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{method} is not supported by the fake"),
            ),
        }
    }
}

/// Which changes a watch reports.
#[derive(Clone)]
struct WatchFilter {
    group_version: String,
    plural: String,
    namespace: Option<String>,
    selector: String,
}

impl WatchFilter {
    fn matches(&self, key: &Key, object: &Value) -> bool {
        key.group_version == self.group_version
            && key.plural == self.plural
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
            && matches(object, &parse_selector(&self.selector))
    }
}

enum Route {
    Collection {
        group_version: String,
        plural: String,
        namespace: Option<String>,
    },
    Object {
        key: Key,
        subresource: Option<String>,
    },
}

impl Route {
    /// `/api/v1/...` or `/apis/<group>/<version>/...`, then `namespaces/<ns>/<plural>[/<name>[/<subresource>]]`
    /// or a cluster-wide `<plural>` collection.
    fn parse(path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group_version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ((*version).to_owned(), rest),
            ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
            _ => return None,
        };
        match rest {
            ["namespaces", namespace, plural] => Some(Route::Collection {
                group_version,
                plural: (*plural).to_owned(),
                namespace: Some((*namespace).to_owned()),
            }),
            ["namespaces", namespace, plural, name, subresource @ ..] if subresource.len() <= 1 => {
                Some(Route::Object {
                    key: Key {
                        group_version,
                        plural: (*plural).to_owned(),
                        namespace: (*namespace).to_owned(),
                        name: (*name).to_owned(),
                    },
                    subresource: subresource.first().map(|s| (*s).to_owned()),
                })
            }
            [plural] => Some(Route::Collection {
                group_version,
                plural: (*plural).to_owned(),
                namespace: None,
            }),
            _ => None,
        }
    }
}

fn key_for<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> Key {
    let group = K::group(&());
    let version = K::version(&());
    let group_version = if group.is_empty() {
        version.into_owned()
    } else {
        format!("{group}/{version}")
    };
    Key {
        group_version,
        plural: K::plural(&()).into_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

fn key_of<K: Resource<DynamicType = ()>>(object: &Value) -> Key {
    key_for::<K>(
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default"),
        object["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    url_decode_pairs(query).into_iter().collect()
}

fn url_decode_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .map(|hex| u8::from_str_radix(hex, 16))
                {
                    Ok(Ok(byte)) => {
                        out.push(byte);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One requirement of an equality-based label selector.
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

fn parse_selector(selector: &str) -> Vec<Requirement> {
    selector
        .split(',')
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .map(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = term.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_owned())
            } else {
                Requirement::Exists(term.to_owned())
            }
        })
        .collect()
}

fn matches(object: &Value, requirements: &[Requirement]) -> bool {
    let labels = &object["metadata"]["labels"];
    requirements.iter().all(|requirement| match requirement {
        Requirement::Equals(k, v) => labels[k].as_str() == Some(v.as_str()),
        Requirement::NotEquals(k, v) => labels[k].as_str() != Some(v.as_str()),
        Requirement::Exists(k) => labels.get(k).is_some(),
        Requirement::NotExists(k) => labels.get(k).is_none(),
    })
}

fn list(
    state: &State,
    group_version: &str,
    plural: &str,
    namespace: Option<&str>,
    selector: Option<&String>,
) -> Response<Body> {
    let requirements = selector.map(|s| parse_selector(s)).unwrap_or_default();
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|(k, _)| k.group_version == group_version && k.plural == plural)
        .filter(|(k, _)| namespace.is_none_or(|ns| ns == k.namespace))
        .filter(|(_, v)| matches(v, &requirements))
        .map(|(_, v)| v.clone())
        .collect();
    let kind = items
        .first()
        .and_then(|item| item["kind"].as_str())
        .map(|kind| format!("{kind}List"))
        .unwrap_or_else(|| "List".to_owned());
    // Like the real API server, items of a list carry no apiVersion/kind (the list does).
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut item| {
            if let Some(fields) = item.as_object_mut() {
                fields.remove("apiVersion");
                fields.remove("kind");
            }
            item
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": group_version,
            "kind": kind,
            "metadata": {"resourceVersion": state.resource_version.to_string()},
            "items": items,
        }),
    )
}

/// Fill in what the API server sets on create, then defaults.
fn create_object(state: &mut State, key: &Key, mut object: Value) -> Value {
    let uid = state.next_uid();
    let rv = state.next_resource_version();
    let metadata = object_entry(&mut object, "metadata");
    metadata.insert("namespace".into(), Value::String(key.namespace.clone()));
    metadata.insert("uid".into(), Value::String(uid));
    metadata.insert("resourceVersion".into(), Value::String(rv));
    metadata.insert("generation".into(), json!(1));
    metadata.insert("creationTimestamp".into(), json!("2024-01-01T00:00:00Z"));
    apply_defaults(&key.plural, &mut object);
    object
}

fn patch_object(
    state: &mut State,
    key: Key,
    subresource: Option<&str>,
    content_type: &str,
    patch: Value,
) -> Response<Body> {
    let is_apply = content_type.starts_with("application/apply-patch");
    let existing = state.objects.get(&key).cloned();
    let mut object = match (existing, is_apply, subresource) {
        (Some(object), _, _) => object,
        // Server-side apply creates; the other patch types need an object.
        (None, true, None) => {
            let fresh = json!({"apiVersion": patch["apiVersion"], "kind": patch["kind"], "metadata": {"name": key.name}});
            create_object(state, &key, fresh)
        }
        (None, _, _) => return not_found(&key),
    };
    let before = object.clone();
    let created = !state.objects.contains_key(&key);

    match (subresource, is_apply) {
        (Some("status"), true) => {
            let status = patch.get("status").cloned().unwrap_or(Value::Null);
            object_entry(&mut object, "status");
            if let Some(slot) = object.get_mut("status") {
                *slot = status;
            }
        }
        (Some("status"), false) => {
            if let Some(status) = patch.get("status") {
                let slot = object
                    .as_object_mut()
                    .map(|o| o.entry("status").or_insert_with(|| json!({})));
                if let Some(slot) = slot {
                    merge_patch(slot, status);
                }
            }
        }
        (Some(other), _) => {
            return status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("no subresource {other}"),
            );
        }
        (None, true) => {
            let mut applied = patch.clone();
            if let Some(map) = applied.as_object_mut() {
                map.remove("status");
            }
            if let Some(previous) = state.last_applied.get(&key) {
                remove_dropped_fields(&mut object, previous, &applied);
            }
            deep_merge(&mut object, &applied);
            state.last_applied.insert(key.clone(), applied);
        }
        (None, false) => {
            let mut patch = patch.clone();
            if let Some(map) = patch.as_object_mut() {
                map.remove("status");
            }
            merge_patch(&mut object, &patch);
        }
    }
    apply_defaults(&key.plural, &mut object);

    if created || object != before {
        if !created {
            let spec_changed = strip_volatile(&object) != strip_volatile(&before);
            if spec_changed {
                let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
                object["metadata"]["generation"] = json!(generation + 1);
            }
        }
        let rv = state.next_resource_version();
        object["metadata"]["resourceVersion"] = Value::String(rv);
        state.put(
            key,
            object.clone(),
            if created { "ADDED" } else { "MODIFIED" },
        );
    }
    json_response(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &object,
    )
}

/// The object without metadata and status: what `generation` tracks.
fn strip_volatile(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

/// Remove from `object` the map fields that `previous` set and `next` no longer sets.
fn remove_dropped_fields(object: &mut Value, previous: &Value, next: &Value) {
    let (Some(object), Some(previous)) = (object.as_object_mut(), previous.as_object()) else {
        return;
    };
    for (field, previous_value) in previous {
        match next.get(field) {
            None => {
                object.remove(field);
            }
            Some(next_value) => {
                if let Some(child) = object.get_mut(field) {
                    remove_dropped_fields(child, previous_value, next_value);
                }
            }
        }
    }
}

/// Merge `patch` into `target`: maps recursively, everything else replaced.
fn deep_merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (field, value) in patch {
                match target.get_mut(field) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        deep_merge(existing, value)
                    }
                    _ => {
                        target.insert(field.clone(), value.clone());
                    }
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Some(target) = target.as_object_mut() {
        for (field, value) in patch {
            if value.is_null() {
                target.remove(field);
            } else {
                merge_patch(target.entry(field.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn object_entry<'a>(object: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let map = object
        .as_object_mut()
        .map(|o| o.entry(field.to_owned()).or_insert_with(|| json!({})));
    match map {
        Some(value) => {
            if !value.is_object() {
                *value = json!({});
            }
            value
                .as_object_mut()
                .unwrap_or_else(|| unreachable!("just made an object"))
        }
        None => unreachable!("just made an object"),
    }
}

/// A few of the defaults a real API server adds, so objects read back differ from what was sent.
fn apply_defaults(plural: &str, object: &mut Value) {
    match plural {
        "secrets" => {
            if let Some(string_data) = object.get("stringData").and_then(Value::as_object).cloned()
            {
                use base64::Engine as _;
                let data = object_entry(object, "data");
                for (k, v) in string_data {
                    let text = v.as_str().unwrap_or_default();
                    data.insert(
                        k,
                        Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
                    );
                }
                if let Some(map) = object.as_object_mut() {
                    map.remove("stringData");
                }
            }
            if object.get("type").is_none() {
                object["type"] = json!("Opaque");
            }
        }
        "services" => {
            let spec = object_entry(object, "spec");
            spec.entry("clusterIP").or_insert(json!("10.96.0.10"));
            spec.entry("type").or_insert(json!("ClusterIP"));
            spec.entry("sessionAffinity").or_insert(json!("None"));
        }
        "deployments" => {
            let spec = object_entry(object, "spec");
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("progressDeadlineSeconds").or_insert(json!(600));
            if let Some(containers) = spec
                .get_mut("template")
                .and_then(|t| t.get_mut("spec"))
                .and_then(|s| s.get_mut("containers"))
                .and_then(Value::as_array_mut)
            {
                for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                    container
                        .entry("terminationMessagePath")
                        .or_insert(json!("/dev/termination-log"));
                    container
                        .entry("imagePullPolicy")
                        .or_insert(json!("IfNotPresent"));
                }
            }
        }
        _ => {}
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

fn not_found(key: &Key) -> Response<Body> {
    status_response(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{}\" not found", key.plural, key.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

    fn config_map(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": "ns",
                "labels": labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<Map<_, _>>(),
            },
            "data": data.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect::<Map<_, _>>(),
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn apply_creates_then_identical_apply_keeps_resource_version() {
        let fake = FakeApi::new();
        let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
        let params = PatchParams::apply("test").force();
        let desired = config_map("a", &[], &[("k", "v")]);
        let first = api
            .patch("a", &params, &Patch::Apply(&desired))
            .await
            .unwrap();
        let second = api
            .patch("a", &params, &Patch::Apply(&desired))
            .await
            .unwrap();
        assert_eq!(
            first.metadata.resource_version,
            second.metadata.resource_version
        );
        let changed = config_map("a", &[], &[("k", "w")]);
        let third = api
            .patch("a", &params, &Patch::Apply(&changed))
            .await
            .unwrap();
        assert_ne!(
            second.metadata.resource_version,
            third.metadata.resource_version
        );
        assert_eq!(third.data.unwrap()["k"], "w");
    }

    #[tokio::test]
    async fn apply_drops_fields_the_previous_apply_set() {
        let fake = FakeApi::new();
        let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
        let params = PatchParams::apply("test").force();
        api.patch(
            "a",
            &params,
            &Patch::Apply(&config_map("a", &[], &[("x", "1"), ("y", "2")])),
        )
        .await
        .unwrap();
        let after = api
            .patch(
                "a",
                &params,
                &Patch::Apply(&config_map("a", &[], &[("x", "1")])),
            )
            .await
            .unwrap();
        assert_eq!(after.data.unwrap().keys().collect::<Vec<_>>(), vec!["x"]);
    }

    #[tokio::test]
    async fn list_filters_by_label_selector_and_records_requests() {
        let fake = FakeApi::new();
        fake.insert(&config_map("mine", &[("app", "x"), ("tier", "a")], &[]));
        fake.insert(&config_map("other", &[("app", "y")], &[]));
        let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
        let names = |list: kube::core::ObjectList<ConfigMap>| {
            list.items
                .into_iter()
                .map(|c| c.metadata.name.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(
                api.list(&ListParams::default().labels("app=x"))
                    .await
                    .unwrap()
            ),
            vec!["mine"]
        );
        assert_eq!(
            names(
                api.list(&ListParams::default().labels("app!=x"))
                    .await
                    .unwrap()
            ),
            vec!["other"]
        );
        assert_eq!(
            names(
                api.list(&ListParams::default().labels("tier"))
                    .await
                    .unwrap()
            ),
            vec!["mine"]
        );
        assert_eq!(
            names(api.list(&ListParams::default()).await.unwrap()).len(),
            2
        );
        assert!(fake.writes().is_empty());
        assert_eq!(fake.requests().len(), 4);
    }

    #[tokio::test]
    async fn delete_honours_uid_precondition_and_404s_when_absent() {
        let fake = FakeApi::new();
        fake.insert(&config_map("a", &[], &[]));
        let api: Api<ConfigMap> = Api::namespaced(fake.client(), "ns");
        let wrong = DeleteParams::default().preconditions(kube::api::Preconditions {
            uid: Some("not-it".into()),
            resource_version: None,
        });
        assert!(api.delete("a", &wrong).await.is_err());
        api.delete("a", &DeleteParams::default()).await.unwrap();
        let missing = api.get("a").await.unwrap_err();
        assert!(matches!(missing, kube::Error::Api(status) if status.is_not_found()));
    }

    #[tokio::test]
    async fn serves_over_loopback_http_including_watches() {
        use futures::StreamExt as _;
        let fake = FakeApi::new();
        let (address, server) = fake.listen().await.unwrap();
        let config = kube::Config::new(format!("http://{address}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let api: Api<ConfigMap> = Api::namespaced(client, "ns");
        let watch = api
            .watch(&kube::api::WatchParams::default(), "0")
            .await
            .unwrap();
        tokio::pin!(watch);
        fake.insert(&config_map("seen", &[], &[]));
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        assert!(
            matches!(event, kube::api::WatchEvent::Added(cm) if cm.metadata.name.as_deref() == Some("seen"))
        );
        server.abort();
    }

    #[test]
    fn percent_decoding_handles_selectors() {
        assert_eq!(percent_decode("a%3Db%2Cc%21%3Dd"), "a=b,c!=d");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
