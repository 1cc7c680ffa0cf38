//! matrixrtc-operator: reconciles `MatrixRTCTransport` into LiveKit plus the MatrixRTC authorisation service.
//!
//! Reconcile is `validate (pure) -> dereference (read what the spec refers to) -> build (pure) -> apply (SSA,
//! dependency order) -> prune -> status`, one module per step under [`controller`].
//!
//! Layering (a module uses only those on its left; no cycles):
//! `api -> plan -> kinds -> build -> validate -> apply, status -> controller, render -> run`.
//! - `api`: the CRD types. `plan`: what a valid spec asks for ([`plan::Validated`]) and the children's
//!   names, used by both halves below. `kinds`: the owned kinds, declared once.
//! - `build` turns a plan into objects and sees no validation; `validate` makes the plan and asks the
//!   builders what they reserve (ports, volumes, labels, the config keys they set), so each of those is
//!   defined once, by whoever sets it. (Only the builders' unit tests call `validate`, to make a plan
//!   from YAML.)
//! - `apply` stamps ownership and talks to the API server; `controller` runs the pipeline, and its
//!   `dereference` step reads the Secrets the spec refers to (credentials, AS tokens) so `build` stays pure.

pub mod api;
pub mod api_verb;
pub mod apply;
pub mod build;
pub mod controller;
pub mod crdgen;
pub mod defaults;
pub mod event_limit;
pub mod kinds;
#[cfg(test)]
mod layering;
pub mod leader;
pub mod plan;
pub mod port_conflicts;
pub mod render;
pub mod run;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod validate;
