//! The stored objects, the change log that watches replay, and the request log; what the API server fills in
//! on create (uid, resourceVersion, generation) and a few of its defaults.

use std::collections::BTreeMap;

use http::Method;
use kube::Resource;
use serde_json::{Map, Value, json};

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

/// Where an object is stored: what its URL path names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    pub(super) group_version: String,
    pub(super) plural: String,
    pub(super) namespace: String,
    pub(super) name: String,
}

/// One change, as a watch reports it.
pub(super) struct Change {
    pub(super) resource_version: u64,
    pub(super) key: Key,
    pub(super) type_: &'static str,
    pub(super) object: Value,
}

/// Everything the fake holds, behind one lock.
#[derive(Default)]
pub(super) struct State {
    pub(super) objects: BTreeMap<Key, Value>,
    /// Every change in order, replayed to watches.
    pub(super) changes: Vec<Change>,
    /// What the last server-side apply of each object contained (to drop fields it stopped sending).
    pub(super) last_applied: BTreeMap<Key, Value>,
    pub(super) requests: Vec<Recorded>,
    pub(super) resource_version: u64,
    uid: u64,
    /// Injected failures: (method, path suffix, status code), consumed once each.
    pub(super) failures: Vec<(Method, String, u16)>,
    /// API group/version paths (`/apis/<group>/<version>`) the server does not serve (a CRD that is not
    /// installed): every request under one gets 404.
    pub(super) unserved: Vec<String>,
}

impl State {
    pub(super) fn next_resource_version(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }

    fn next_uid(&mut self) -> String {
        self.uid += 1;
        format!("00000000-0000-4000-8000-{:012}", self.uid)
    }

    /// Store `object` (whose resourceVersion is already set) and log the change for watches.
    pub(super) fn put(&mut self, key: Key, object: Value, type_: &'static str) {
        self.changes.push(Change {
            resource_version: self.resource_version,
            key: key.clone(),
            type_,
            object: object.clone(),
        });
        self.objects.insert(key, object);
    }

    pub(super) fn delete(&mut self, key: &Key) -> Option<Value> {
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

/// The key of the object `namespace/name` of kind `K`.
pub(super) fn key_for<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> Key {
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

/// The key of `object`, of kind `K` (namespace `default` when it names none).
pub(super) fn key_of<K: Resource<DynamicType = ()>>(object: &Value) -> Key {
    key_for::<K>(
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default"),
        object["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

/// Fill in what the API server sets on create, then defaults.
pub(super) fn create_object(state: &mut State, key: &Key, mut object: Value) -> Value {
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

/// The map at `object[field]`, made a map (and `object` too) if it is not one.
pub(super) fn object_entry<'a>(object: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
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
pub(super) fn apply_defaults(plural: &str, object: &mut Value) {
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
