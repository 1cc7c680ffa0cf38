//! Delegated delayed leaves (MSC4140 via the reference's `/delegate_delayed_leave`, spec §5).
//!
//! A client schedules a delayed "leave" event on its homeserver and hands its delay ID to us; we keep
//! the event from firing while the participant is in the LiveKit room and fire it when they leave.
//!
//! - [`job`]: what a job is and its state machine, pure.
//! - [`retry`]: what a homeserver's reply means for a job and how long to wait before trying again, pure.
//! - [`runner`]: one task per job that turns signals and timers into homeserver calls.
//! - [`record`]: a job as the reference stores it, pure.
//! - [`store`]: the reference's Redis layout and every Redis operation, so jobs survive restarts and
//!   image swaps.
//! - [`ownership`]: leases that let several replicas share the jobs, one driver per job.
//! - [`settings`]: the engine's intervals and set-up.

pub mod job;
pub mod ownership;
pub mod record;
pub mod retry;
pub mod runner;
pub mod settings;
pub mod store;

pub use job::{InvalidDelayTimeout, JobKey, JobParams, Signal};
pub use runner::{
    AddJobError, DelayedEventApi, DelayedEvents, Delegation, LookupError, ParticipantLookup,
    StartError,
};
pub use settings::{Settings, TIME_SCALE_ENV, Timing};
