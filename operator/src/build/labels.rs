//! Recommended `app.kubernetes.io/*` labels.
//!
//! Selectors use only `name`, `instance` and `component`, which never change (Deployment selectors
//! are immutable). Pod templates leave out `version`, so upgrading the operator alone does not roll
//! the pods.

use std::collections::BTreeMap;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const VERSION: &str = "app.kubernetes.io/version";

/// Labels the operator sets on pods; `podLabels` may not override them.
pub const RESERVED: [&str; 5] = [NAME, INSTANCE, COMPONENT, PART_OF, MANAGED_BY];

/// Value of `managed-by` on every child.
pub const MANAGER: &str = "matrixrtc-operator";
/// Value of `part-of` on every child.
pub const PART_OF_VALUE: &str = "matrixrtc";

/// Which part of the transport an object belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// LiveKit (the SFU) and its config, Services and keys.
    Sfu,
    /// The authorisation service.
    Auth,
    /// The Ingress and generated credentials, shared by both.
    Transport,
}

impl Component {
    fn app_name(self) -> &'static str {
        match self {
            Component::Sfu => "livekit",
            Component::Auth => "matrixrtc-auth",
            Component::Transport => "matrixrtc",
        }
    }

    fn value(self) -> &'static str {
        match self {
            Component::Sfu => "sfu",
            Component::Auth => "auth",
            Component::Transport => "transport",
        }
    }
}

/// Labels that select a component's pods.
pub fn selector(cr: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), component.app_name().to_owned()),
        (INSTANCE.to_owned(), cr.to_owned()),
        (COMPONENT.to_owned(), component.value().to_owned()),
    ])
}

/// Labels of a pod template: the selector plus `part-of` and `managed-by`.
pub fn pod(cr: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector(cr, component);
    labels.insert(PART_OF.to_owned(), PART_OF_VALUE.to_owned());
    labels.insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels
}

/// Pod template labels: the user's `podLabels` under the operator's (validation rejects clashes,
/// and the operator's are inserted last in any case).
pub fn pod_with(
    cr: &str,
    component: Component,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = extra.clone();
    labels.extend(pod(cr, component));
    labels
}

/// Labels a builder gives an object: the selector plus `part-of` and `version`. The sixth, `managed-by`,
/// marks ownership and is stamped with the owner reference when the object is applied
/// ([`crate::apply::Owner::stamp`]).
pub fn object(cr: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector(cr, component);
    labels.insert(PART_OF.to_owned(), PART_OF_VALUE.to_owned());
    labels.insert(VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned());
    labels
}

/// Label selector listing every object the operator applied for `cr` (for pruning; also check the
/// owner reference's uid, since labels can be copied).
pub fn owned_selector(cr: &str) -> String {
    format!("{INSTANCE}={cr},{MANAGED_BY}={MANAGER}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_labels_carry_the_recommended_keys_but_ownership() {
        let labels = object("demo", Component::Sfu);
        for key in [NAME, INSTANCE, COMPONENT, PART_OF, VERSION] {
            assert!(labels.contains_key(key), "missing {key}");
        }
        assert!(
            !labels.contains_key(MANAGED_BY),
            "stamped by apply, not here"
        );
        assert_eq!(labels[INSTANCE], "demo");
        assert_eq!(pod("demo", Component::Sfu)[MANAGED_BY], MANAGER);
    }

    #[test]
    fn selectors_differ_per_component_and_omit_mutable_labels() {
        let sfu = selector("demo", Component::Sfu);
        let auth = selector("demo", Component::Auth);
        assert_ne!(sfu, auth);
        assert!(!sfu.contains_key(VERSION));
        assert!(!pod("demo", Component::Auth).contains_key(VERSION));
    }

    #[test]
    fn owned_selector_matches_object_labels() {
        let mut labels = object("demo", Component::Auth);
        // What `Owner::stamp` adds.
        labels.insert(MANAGED_BY.to_owned(), MANAGER.to_owned());
        for term in owned_selector("demo").split(',') {
            let (key, value) = term.split_once('=').expect("key=value");
            assert_eq!(labels.get(key).map(String::as_str), Some(value));
        }
    }
}
