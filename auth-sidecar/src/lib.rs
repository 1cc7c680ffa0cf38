//! MatrixRTC authorisation service: issues LiveKit tokens to Matrix users (MSC4195).
//!
//! A drop-in replacement for element-hq/lk-jwt-service: same endpoints, environment, claims and hashes.
//! Without the default `server` feature only [`contract`] is compiled, which is all the operator needs.

pub mod contract;

#[cfg(feature = "server")]
pub mod appservice;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod delegation;
#[cfg(feature = "server")]
pub mod go_json;
#[cfg(feature = "server")]
pub mod healthcheck;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod livekit;
#[cfg(feature = "server")]
pub mod matrix;
#[cfg(feature = "server")]
pub mod membership;
#[cfg(feature = "server")]
pub mod outbound;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod telemetry;
