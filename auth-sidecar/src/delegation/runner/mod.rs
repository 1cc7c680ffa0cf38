//! Runs jobs: one task per job turns signals (webhooks, LiveKit lookups, timers, call outcomes) into
//! homeserver calls, with retries, and with Redis several replicas share the jobs (see
//! [`super::ownership`]). By role:
//!
//! - `handle`: [`Delegation`], what the HTTP layer calls (start, add a job, deliver a webhook's
//!   signal, shut down).
//! - `replicas`: replica coordination: startup recovery, the heartbeat, the takeover scan, the inbox
//!   of forwarded signals, and routing a signal to the replica that drives its job.
//! - `driver`: one job's life, from its first signal to its send (or its end without one).
//! - `keeper`: a job's hold on Redis (its lease and its entry).
//! - `shared`: what the three share; `ports`: the homeserver and LiveKit as traits.
//!
//! Each uses only those listed after it.

mod driver;
mod handle;
mod keeper;
mod ports;
mod replicas;
mod shared;
#[cfg(test)]
mod tests;

pub use handle::{AddJobError, Delegation, StartError};
pub use ports::{DelayedEventApi, DelayedEvents, LookupError, ParticipantLookup};
