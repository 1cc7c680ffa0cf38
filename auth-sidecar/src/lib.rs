//! MatrixRTC authorisation service: issues LiveKit tokens to Matrix users (MSC4195).
//!
//! A drop-in replacement for element-hq/lk-jwt-service: same endpoints, environment, claims and hashes.
//! Without the default `server` feature only [`contract`] is compiled, which is all the operator needs.
//!
//! # Layering
//!
//! Each module uses only modules on its own level's left or on lower levels; no two modules use each
//! other, and within a directory the parent module (`mod.rs`) only declares, re-exports and routes, so
//! its children never reach back into it for shared items (those live in a sibling module):
//!
//! 1. [`contract`], [`go_json`], [`telemetry`]: names, encodings, logs and metrics; they use nothing.
//! 2. [`outbound`]: TLS, DNS and the HTTP clients.
//! 3. [`livekit`], [`matrix`]: the two outside worlds the service talks to (tokens, webhooks and the
//!    RoomService; discovery, OpenID, the SSRF guard, the client-server API, the own homeserver as its
//!    application service). Neither uses the other.
//! 4. [`delegation`]: delegated leave jobs, driven through `matrix` (delayed events) and `livekit`
//!    (participant lookups).
//! 5. [`config`]: the environment, parsed into the settings types of the levels below (AS mode's and the
//!    membership monitor's settings too: `config::appservice`, `config::membership`).
//! 6. [`membership`]: the AS-mode membership monitor (sweeps through `matrix`, kicks through `livekit`,
//!    tracking in the `delegation` store, removed participants' jobs discarded through `delegation`).
//! 7. [`http`]: the endpoints, over the shared state built from all of the above.
//! 8. [`appservice`]: AS mode's routes and flows, built on the endpoints' shared steps; it feeds the
//!    monitor what it issues.
//! 9. [`server`], [`healthcheck`]: wiring, serving and the container's health probe.

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
#[cfg(all(test, feature = "server"))]
mod layering;
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
