//! The membership monitor (as-mode spec §8): removes LiveKit participants whose user left the Matrix room,
//! and deletes a LiveKit room once our homeserver left its Matrix room. MSC4195 says the service SHOULD
//! remove on leave or ban; upstream has this only on an open pull request (lk-jwt-service #235).
//!
//! - [`config`]: its variables.
//! - [`entry`]: a tracked participant and upstream's Redis layout (pure).
//! - [`decide`]: what a sweep does given the answers it got (pure, fail-open).
//! - [`homeserver`]: `joined_members` and `/is_joined`, asked as the application service.
//! - [`jobs`]: the delegated leaves of removed participants, discarded.
//! - [`sfu`]: the LiveKit calls and their retries.
//! - [`store`]: Redis (shared by replicas) or memory, and the per-room sweep leases.
//! - [`metrics`]: kicks, sweep duration, failures, tracked entries.
//! - [`monitor`]: the [`Monitor`] handle: tracking, webhooks, the periodic sweep.
//!
//! Rooms become tracked when a token is issued ([`Monitor::track`], spec §8.1): C-S local and S-S AS-mode
//! tokens, standalone ones only with `LIVEKIT_REQUIRE_MEMBERSHIP=true`, relayed ones never.

pub mod decide;
pub mod entry;
pub mod homeserver;
pub mod jobs;
pub mod monitor;
pub mod sfu;
pub mod store;

#[cfg(test)]
mod sweep_tests;

pub use monitor::{Monitor, Settings, SweepReport};
