//! matrixrtc-operator: reconciles `MatrixRTCTransport` into LiveKit plus the MatrixRTC authorisation service.
//!
//! Reconcile is `validate (pure) -> build (pure) -> apply (SSA, dependency order) -> prune -> status`.

pub mod api;
pub mod build;
pub mod crdgen;
pub mod defaults;
pub mod render;
pub mod validate;
pub mod apply;
pub mod controller;
pub mod credentials;
pub mod leader;
pub mod run;
pub mod shutdown;
pub mod status;
pub mod telemetry;

#[cfg(test)]
mod fake_api;
