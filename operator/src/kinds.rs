//! The kinds of object the operator owns, declared once, in apply order.
//!
//! [`owned_kinds!`] turns the one list at the bottom of this module into [`Child`] (one owned object)
//! and [`ChildKind`] (its kind, ordered as listed, which is the apply order; the one watch per kind
//! that feeds both the children caches and the controller goes through [`ChildKind::ALL`], see
//! [`crate::apply::cache`]). Everything that handles children (apply, prune, the watch
//! caches, render, the 1.28 field check) works through these, generically over the object type, so
//! adding a kind means writing its builder and adding one line here: there is no per-kind match arm
//! elsewhere to find.
//!
//! Why a declaration and not a struct of children destructured without `..` (as zookeeper-operator's
//! apply step does): the struct makes the compiler point at every place a new kind must be handled, but
//! the newcomer still edits each of them (apply, prune, caches, render, the field check, the watch). Here
//! those places are generic over the object type, so they need no edit at all. Behaviour that really is
//! per kind stays explicit where it belongs: Secrets are cached as metadata only and never quoted in
//! errors (`apply`), Deployments feed the rollout status (`status`).
//!
//! A kind marked `[optional]` belongs to another project (its types, with only the fields the operator
//! sets, are in [`third_party`]): the cluster may lack its CRD. Its watch then holds nothing instead of
//! failing, and its children are left out and reported ([`NotInstalled`]) instead of applied.

pub mod third_party;

use std::fmt;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ApiResource, ObjectMeta};
use kube::{Client, Resource};
use serde_json::Value;

/// An API for `K` in one namespace, or in all of them.
pub fn api_in<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Declares the owned kinds: `Variant => Type`, in apply order; `[optional]` after the type marks a
/// kind of another project whose CRD the cluster may lack (see [`ChildKind::is_optional`]).
macro_rules! owned_kinds {
    (@optional optional) => { true };
    (@optional) => { false };
    ($($kind:ident => $ty:ty $([$flag:ident])?),+ $(,)?) => {
        /// One object the operator owns. The set of kinds is closed so that pruning knows what to list.
        // A handful of children are built per reconcile; boxing the large variants would only add noise.
        #[allow(clippy::large_enum_variant)]
        #[derive(Clone, Debug, PartialEq)]
        pub enum Child {
            $($kind($ty)),+
        }

        /// The kinds the operator owns; their order is the apply order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum ChildKind {
            $($kind),+
        }

        impl ChildKind {
            /// Every owned kind, in apply order.
            pub const ALL: &'static [ChildKind] = &[$(ChildKind::$kind),+];

            pub fn api_resource(self) -> ApiResource {
                match self {
                    $(ChildKind::$kind => ApiResource::erase::<$ty>(&()),)+
                }
            }

            /// A kind of another project (a custom resource): the cluster may not serve it. Its
            /// watch then holds nothing instead of failing ([`crate::apply::cache`]), and its desired
            /// children are left out and reported instead of applied ([`crate::apply`]).
            pub fn is_optional(self) -> bool {
                match self {
                    $(ChildKind::$kind => owned_kinds!(@optional $($flag)?),)+
                }
            }

            /// The kind as in `kind:`.
            pub fn name(self) -> &'static str {
                match self {
                    $(ChildKind::$kind => stringify!($kind),)+
                }
            }

            /// A child of this kind from its JSON (as read from the API server).
            pub fn parse(self, value: Value) -> Result<Child, serde_json::Error> {
                Ok(match self {
                    $(ChildKind::$kind => Child::$kind(serde_json::from_value(value)?),)+
                })
            }
        }

        impl Child {
            pub fn kind(&self) -> ChildKind {
                match self {
                    $(Child::$kind(_) => ChildKind::$kind,)+
                }
            }

            pub fn metadata(&self) -> &ObjectMeta {
                match self {
                    $(Child::$kind(o) => &o.metadata,)+
                }
            }

            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(Child::$kind(o) => &mut o.metadata,)+
                }
            }

            pub fn to_value(&self) -> serde_json::Result<Value> {
                match self {
                    $(Child::$kind(o) => serde_json::to_value(o),)+
                }
            }

            pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
                match self {
                    $(Child::$kind(o) => serde_yaml::to_string(o),)+
                }
            }
        }
    };
}

owned_kinds! {
    ServiceAccount => k8s_openapi::api::core::v1::ServiceAccount,
    Secret => k8s_openapi::api::core::v1::Secret,
    ConfigMap => k8s_openapi::api::core::v1::ConfigMap,
    Certificate => third_party::Certificate [optional],
    Service => k8s_openapi::api::core::v1::Service,
    Deployment => k8s_openapi::api::apps::v1::Deployment,
    PodDisruptionBudget => k8s_openapi::api::policy::v1::PodDisruptionBudget,
    Ingress => k8s_openapi::api::networking::v1::Ingress,
    ServiceMonitor => third_party::ServiceMonitor [optional],
}

impl Child {
    /// `metadata.name` (always set by the builders).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }
}

impl ChildKind {
    /// The kind of `child` (the same as [`Child::kind`]; the end-to-end tests use this form).
    pub fn of(child: &Child) -> Self {
        child.kind()
    }
}

impl fmt::Display for ChildKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Desired children of an optional kind that the cluster does not serve (its CRD is not installed),
/// left out of the apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotInstalled {
    pub kind: ChildKind,
    /// The children of that kind that were not created, by name.
    pub names: Vec<String>,
}

impl fmt::Display for NotInstalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = self.kind.api_resource();
        write!(
            f,
            "{} {} is not installed in this cluster, so {} {} {} not created; install its CRD \
             (the operator notices within about a minute) or stop asking for it in the spec",
            resource.api_version,
            resource.kind,
            resource.kind,
            self.names.join(", "),
            if self.names.len() == 1 { "was" } else { "were" },
        )
    }
}
