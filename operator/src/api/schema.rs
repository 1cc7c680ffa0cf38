//! Defaults and hand-written schemas the derives of the API types refer to by name.

use schemars::{Schema, SchemaGenerator, json_schema};
use serde_json::Value;

use super::*;

pub(super) fn default_one() -> i32 {
    1
}

pub(super) fn default_true() -> bool {
    true
}

pub(super) fn default_tcp() -> MediaPort {
    MediaPort {
        port: 30001,
        exposure: None,
    }
}

pub(super) fn default_turn_tls_port() -> i32 {
    443
}

pub(super) fn default_relay_range() -> PortRange {
    PortRange {
        start: 20000,
        end: 29999,
    }
}

pub(super) fn default_registration_key() -> String {
    "matrixrtc-auth.yaml".to_owned()
}

pub(super) fn default_api_key_field() -> String {
    "api-key".to_owned()
}

pub(super) fn default_api_secret_field() -> String {
    "api-secret".to_owned()
}

/// For an optional enum field: drop the enum's own description, so that the field's doc comment is
/// what the CRD shows. (kube hoists an `Option<Enum>`'s inner schema over the field's, and its
/// description would win.)
pub(super) fn field_description_wins(schema: &mut Schema) {
    if let Some(Value::Array(variants)) = schema.get_mut("anyOf") {
        for variant in variants {
            if let Some(variant) = variant.as_object_mut() {
                variant.remove("description");
            }
        }
    }
}

/// Any object; the API server keeps unknown fields.
pub(super) fn free_form_object_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A list of objects whose fields the API server checks when the operator applies the pod spec.
pub(super) fn object_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    })
}

/// Objects with a `name` (volumes, volume mounts), the rest checked when the pod spec is applied.
pub(super) fn named_object_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {
                "type": "string",
                "minLength": 1,
                "maxLength": 63,
                "description": "Name of the volume (for a mount: the volume it mounts); the operator's own names are rejected.",
            }},
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// Container environment entries: `name` is checked here, the rest when the pod spec is applied.
pub(super) fn env_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 128,
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {
                "type": "string",
                "minLength": 1,
                "description": "Name of the variable; those the operator sets are rejected.",
            }},
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// `limits` and `requests` maps of quantities (`claims` is left out: dynamic resource allocation is
/// not something the transport uses).
pub(super) fn resources_schema(_: &mut SchemaGenerator) -> Schema {
    let quantities = |description: &str| {
        serde_json::json!({
            "type": "object",
            "additionalProperties": {"x-kubernetes-int-or-string": true},
            "description": description,
        })
    };
    json_schema!({
        "type": "object",
        "properties": {
            "limits": quantities("Most the container may use, per resource (e.g. `memory: 4Gi`)."),
            "requests": quantities("What the scheduler reserves for the container, per resource (e.g. `cpu: 100m`)."),
        },
    })
}

/// The standard `metav1.Condition` list, a map keyed by `type`.
pub(super) fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {"type": "string", "format": "date-time", "description": "When the status last changed."},
                "message": {"type": "string", "maxLength": 32768, "description": "What happened, for people (for Degraded: every problem, one per line)."},
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0, "description": "The metadata.generation the condition was computed for."},
                "reason": {"type": "string", "maxLength": 1024, "minLength": 1, "description": "Why, as one CamelCase word (troubleshooting.md lists every reason)."},
                "status": {"type": "string", "enum": ["True", "False", "Unknown"], "description": "Whether the condition holds."},
                "type": {"type": "string", "maxLength": 316, "description": "Ready, Progressing or Degraded."},
            },
        },
    })
}
