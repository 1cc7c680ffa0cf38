//! matrixrtc-operator: reconciles `MatrixRTCTransport` into LiveKit plus the MatrixRTC authorisation service.
//!
//! Reconcile is `validate (pure) -> build (pure) -> apply (SSA, dependency order) -> prune -> status`.

pub mod api;
pub mod api_verb;
pub mod apply;
pub mod build;
pub mod controller;
pub mod crdgen;
pub mod credentials;
pub mod defaults;
pub mod event_limit;
pub mod kinds;
pub mod leader;
pub mod port_conflicts;
pub mod render;
pub mod run;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod validate;

#[cfg(test)]
mod fake_api;
