//! PATCH on an object or its `/status`: server-side apply approximated for a single field manager (fields that
//! the previous apply set and the new one omits are removed, then the new object is merged in: maps
//! recursively, lists replaced whole), and JSON merge patch (RFC 7386) for the other patch types. Creates on
//! apply, bumps `generation` when anything but metadata and status changed, and `resourceVersion` only when
//! anything changed.

use axum::body::Body;
use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::routing::{json_response, not_found, status_response};
use super::store::{Key, State, apply_defaults, create_object, object_entry};

/// Apply `patch` (of `content_type`) to the object at `key`, or to its `subresource`.
pub(super) fn patch_object(
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
