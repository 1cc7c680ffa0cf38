//! "Does the live object already say everything we want to say?" (pure).
//!
//! The operator skips a server-side apply when the live object contains every field of the desired one, so a
//! steady state makes no write requests. The live object is never byte-for-byte what we sent: the API server
//! adds defaults (`terminationMessagePath`, `clusterIP`, ...), drops Go zero values (`readOnly: false`, empty
//! maps), keeps quantities in canonical form (`0.5` CPU reads back as `500m`) and other managers may add
//! fields of their own. The rules below follow from that:
//!
//! - maps: every desired key must be present and contained; extra live keys are fine. A desired zero value
//!   (`false`, `0`, `""`, `null`, `[]`, or a map of zero values) also matches an absent key, because the API
//!   server omits those; `emptyDir: {}` is the exception, since its presence is its meaning.
//! - lists of maps (containers, env, ports, volumes: the keyed lists): the desired items must appear in the
//!   live list in order, each contained in its match; other managers may have added items between them.
//! - lists of scalars (`args`, `command`, `paths`): equal length and element-wise equal.
//! - scalars: equal, except quantities under `limits`/`requests` which are compared by value.
//!
//! Fields we applied earlier and no longer want are not visible from here (they are still "contained"); the
//! caller catches those by comparing a hash of the desired object with the one recorded at the last apply.

use serde_json::Value;

/// Whether `live` contains every field of `desired`, by the rules in the module doc.
pub fn contains(live: &Value, desired: &Value) -> bool {
    contains_at(live, desired, "")
}

/// `key` is the map key under which `desired` sits; it selects the quantity and `emptyDir` rules.
fn contains_at(live: &Value, desired: &Value, key: &str) -> bool {
    match desired {
        Value::Null => true,
        Value::Object(fields) => {
            let Some(live_fields) = live.as_object() else {
                return false;
            };
            fields
                .iter()
                .all(|(field, wanted)| match live_fields.get(field) {
                    Some(found) if !found.is_null() => {
                        if key_holds_quantities(key) {
                            quantity_matches(found, wanted)
                        } else {
                            contains_at(found, wanted, field)
                        }
                    }
                    _ => is_omitted_zero(wanted, field),
                })
        }
        Value::Array(items) => {
            let Some(live_items) = live.as_array() else {
                return items.is_empty() && live.is_null();
            };
            if items.iter().all(Value::is_object) && !items.is_empty() {
                ordered_subsequence(live_items, items)
            } else {
                live_items.len() == items.len()
                    && live_items
                        .iter()
                        .zip(items)
                        .all(|(l, d)| contains_at(l, d, key))
            }
        }
        Value::Number(wanted) => match live {
            Value::Number(found) => numbers_equal(found, wanted),
            _ => false,
        },
        Value::Bool(_) | Value::String(_) => live == desired,
    }
}

/// Each desired item matches a distinct live item, in order.
fn ordered_subsequence(live: &[Value], desired: &[Value]) -> bool {
    let mut remaining = live.iter();
    desired.iter().all(|wanted| {
        remaining
            .by_ref()
            .any(|found| contains_at(found, wanted, ""))
    })
}

fn key_holds_quantities(key: &str) -> bool {
    matches!(key, "limits" | "requests")
}

/// Whether the API server would leave this value out of what it returns.
fn is_omitted_zero(value: &Value, key: &str) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => {
            key != "emptyDir" && fields.iter().all(|(k, v)| is_omitted_zero(v, k))
        }
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (a.as_i64(), b.as_i64()) {
        (Some(a), Some(b)) => a == b,
        _ => a.as_f64() == b.as_f64(),
    }
}

fn quantity_matches(live: &Value, desired: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match (
        text(live).as_deref().and_then(parse_quantity),
        text(desired).as_deref().and_then(parse_quantity),
    ) {
        (Some(a), Some(b)) => {
            a == b || ((a - b).abs() <= f64::EPSILON * 16.0 * a.abs().max(b.abs()))
        }
        _ => live == desired,
    }
}

/// A Kubernetes quantity (`100m`, `1.5Gi`, `2e3`, `128974848`) as a number, or None if it is not one.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let mantissa: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let digits = exponent.strip_prefix(['e', 'E'])?;
            10f64.powi(digits.parse().ok()?)
        }
    };
    Some(mantissa * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_defaults_and_extra_keys_are_contained() {
        let desired = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        let live = json!({"spec": {"replicas": 1, "revisionHistoryLimit": 10, "template": {"spec": {"containers": [
            {"name": "a", "image": "x", "terminationMessagePath": "/dev/termination-log"}
        ]}}}});
        assert!(contains(&live, &desired));
    }

    #[test]
    fn a_changed_scalar_is_not_contained() {
        let desired = json!({"data": {"k": "v"}});
        assert!(!contains(&json!({"data": {"k": "edited"}}), &desired));
        assert!(!contains(&json!({"data": {}}), &desired));
        assert!(!contains(
            &json!({"spec": {"replicas": 2}}),
            &json!({"spec": {"replicas": 1}})
        ));
    }

    #[test]
    fn omitted_zero_values_match_absent_keys() {
        let desired =
            json!({"readOnly": false, "labels": {}, "args": [], "port": 0, "name": "", "x": null});
        assert!(contains(&json!({}), &desired));
        // but a zero value does not match a different present value
        assert!(!contains(
            &json!({"readOnly": true}),
            &json!({"readOnly": false})
        ));
    }

    #[test]
    fn empty_dir_presence_matters() {
        let desired = json!({"volumes": [{"name": "v", "emptyDir": {}}]});
        assert!(contains(
            &json!({"volumes": [{"name": "v", "emptyDir": {}}]}),
            &desired
        ));
        assert!(!contains(
            &json!({"volumes": [{"name": "v", "configMap": {"name": "c"}}]}),
            &desired
        ));
    }

    #[test]
    fn keyed_lists_allow_items_added_by_others_but_not_missing_or_reordered_ones() {
        let desired = json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]});
        let with_extra = json!({"env": [{"name": "A", "value": "1"}, {"name": "X", "value": "9"}, {"name": "B", "value": "2"}]});
        assert!(contains(&with_extra, &desired));
        assert!(!contains(
            &json!({"env": [{"name": "A", "value": "1"}]}),
            &desired
        ));
        assert!(!contains(
            &json!({"env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]}),
            &desired
        ));
        assert!(!contains(
            &json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]}),
            &desired
        ));
    }

    #[test]
    fn scalar_lists_must_be_equal() {
        let desired = json!({"args": ["--config", "/etc/x"]});
        assert!(contains(&json!({"args": ["--config", "/etc/x"]}), &desired));
        assert!(!contains(
            &json!({"args": ["--config", "/etc/x", "--dev"]}),
            &desired
        ));
        assert!(!contains(&json!({"args": ["--config"]}), &desired));
    }

    #[test]
    fn quantities_compare_by_value_only_under_limits_and_requests() {
        let desired = json!({"resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}, "limits": {"memory": "1024Mi"}}});
        let live = json!({"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}});
        assert!(contains(&live, &desired));
        assert!(!contains(
            &json!({"resources": {"requests": {"cpu": "600m", "memory": "1Gi"}}}),
            &desired
        ));
        // elsewhere a string is a string
        assert!(!contains(
            &json!({"value": "500m"}),
            &json!({"value": "0.5"})
        ));
    }

    #[test]
    fn quantity_parsing() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1Ki"), Some(1024.0));
        assert_eq!(parse_quantity("1.5Gi"), Some(1.5 * 1024f64.powi(3)));
        assert_eq!(parse_quantity("2e3"), Some(2000.0));
        assert_eq!(parse_quantity("1E"), Some(1e18));
        assert_eq!(parse_quantity("lots"), None);
        assert_eq!(parse_quantity("1Qi"), None);
    }

    #[test]
    fn type_mismatches_are_not_contained() {
        assert!(!contains(&json!({"a": "1"}), &json!({"a": 1})));
        assert!(!contains(&json!({"a": [1]}), &json!({"a": {"b": 1}})));
        assert!(!contains(
            &json!({"a": {"b": 1}}),
            &json!({"a": [{"b": 1}]})
        ));
    }
}
