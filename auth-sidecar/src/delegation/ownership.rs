//! Several replicas sharing one Redis: exactly one of them drives each job at a time.
//!
//! # Design
//!
//! - **Source of truth.** The reference's hash `lk-jwt:jobs` (see [`super::store`]). Each value carries
//!   an extra `"Generation"`, a random ID per job, so a replaced job can be told from its successor (the
//!   reference's reader ignores the member; entries it wrote have none and count as generation "").
//! - **Leases.** The driver of a job holds `lk-jwt:lease:<field>` = `<replica>/<generation>` with a TTL
//!   (15 s unscaled) and renews it every third of that. Creating a job writes the hash entry and its lease
//!   in one script, so a new job for an existing key takes the lease away from whoever drove the old one.
//! - **Every homeserver call is gated.** Before each `restart` or `send` attempt, and on every renewal,
//!   one script checks that the lease still names this replica and generation and that the hash still
//!   holds that generation, extending the lease if so. A driver that fails the check stops at once and
//!   makes no further call; the stored entry then belongs to its successor, so it is not touched.
//! - **Takeover.** Every replica scans the hash periodically (and once at startup) and leases to itself
//!   every entry without a lease: the entries of a replica that died once its leases have expired, or the
//!   ones a replica released on graceful shutdown. An adopted job resumes like startup recovery in the
//!   reference: expired entries are deleted without homeserver calls, others start over waiting for
//!   their participant, with a LiveKit lookup that finds them again if they are still in the room.
//! - **Signals.** A webhook may reach any replica. The receiver looks the job's lease up (one script): if
//!   it holds the lease it delivers the signal itself; if another replica does, it appends the signal to
//!   that replica's inbox list `lk-jwt:inbox:<replica>`, which the owner drains with a blocking pop; if
//!   nobody does (the owner just died), it adopts the job on the spot and delivers the signal.
//! - **Failure behaviour.** When Redis cannot be reached, a driver keeps driving rather than let every
//!   call's leave fire early; MSC4140 makes the worst case of a concurrent adopter harmless (a second
//!   `restart` is a no-op, a `send` after a `send` answers 404, which counts as sent, and a `restart` after
//!   a `send` answers 404, which ends that driver). A signal forwarded to a replica that dies before
//!   reading it is lost; the adopter's LiveKit lookup and its waiting timer still end the job (a leave
//!   then fires at min(1 h, timeout) instead of at once).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::job::Signal;
use super::store::{Holder, InboxReader, JobStore, StoreError};

/// A random identifier (128 bits, hex): replica IDs and job generations.
pub fn random_id() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// The right to drive one generation of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The job's hash field.
    pub field: String,
    /// The job's generation.
    pub generation: String,
    /// The lease key's value: `<replica>/<generation>`.
    holder: String,
}

/// Whether a driver may go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The lease is ours (or Redis could not say otherwise).
    Held,
    /// Another replica or a newer job owns the key now.
    Lost,
}

/// Where a signal for a job goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// There is no such job: the signal is dropped.
    NoJob,
    /// This replica drives (or has just adopted) the job; `value` is its stored entry.
    Here { lease: Lease, value: String },
    /// Another replica drives it.
    Elsewhere { replica: String, generation: String },
}

/// A signal on its way to the replica that drives the job.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    pub field: String,
    pub generation: String,
    pub signal: String,
}

/// Only the generation of a stored value.
#[derive(Deserialize)]
struct GenerationOnly {
    #[serde(rename = "Generation", default)]
    generation: String,
}

/// Lease bookkeeping of this replica.
#[derive(Clone, Debug)]
pub struct Ownership {
    store: JobStore,
    replica: String,
    lease_ttl: Duration,
    inbox_ttl: Duration,
}

impl Ownership {
    pub fn new(store: JobStore, lease_ttl: Duration, inbox_ttl: Duration) -> Self {
        Self {
            store,
            replica: random_id(),
            lease_ttl,
            inbox_ttl,
        }
    }

    /// This replica's ID.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The lease this replica holds on `generation` of the job under `field`.
    pub fn lease_for(&self, field: String, generation: String) -> Lease {
        let holder = format!("{}/{generation}", self.replica);
        Lease {
            field,
            generation,
            holder,
        }
    }

    /// Files a new job (replacing any older one under the same field) and takes its lease.
    pub async fn claim(&self, lease: &Lease, value: &str) -> Result<(), StoreError> {
        self.store
            .create(&lease.field, value, &lease.holder, self.lease_ttl)
            .await
    }

    /// Checks (and extends) the lease before a homeserver call or on renewal.
    pub async fn confirm(&self, lease: &Lease) -> Standing {
        let result = self
            .store
            .confirm(
                &lease.field,
                &lease.holder,
                &lease.generation,
                self.lease_ttl,
            )
            .await;
        standing(result, "confirm the lease")
    }

    /// Stores a new value for the job if this replica still drives it.
    pub async fn record(&self, lease: &Lease, value: &str) -> Standing {
        let result = self
            .store
            .update(&lease.field, &lease.holder, &lease.generation, value)
            .await;
        standing(result, "record the restart")
    }

    /// Deletes the finished job (if it is still this generation) and its lease.
    pub async fn finish(&self, lease: &Lease) {
        if let Err(error) = self
            .store
            .finish(&lease.field, &lease.holder, &lease.generation)
            .await
        {
            tracing::warn!(%error, "could not delete a finished delegation job from Redis");
        }
    }

    /// Gives the lease up, leaving the job for another replica (graceful shutdown, unusable entries).
    pub async fn release(&self, lease: &Lease) {
        if let Err(error) = self.store.release(&lease.field, &lease.holder).await {
            tracing::warn!(%error, "could not release a delegation job lease");
        }
    }

    /// Leases every job nobody holds to this replica; returns their leases and stored values.
    pub async fn adopt_orphans(&self) -> Result<Vec<(Lease, String)>, StoreError> {
        let adopted = self
            .store
            .adopt_orphans(&self.replica, self.lease_ttl)
            .await?;
        Ok(adopted
            .into_iter()
            .map(|(field, value)| {
                // The script only adopts JSON objects whose Generation is a string or absent.
                let generation = serde_json::from_str::<GenerationOnly>(&value)
                    .map(|only| only.generation)
                    .unwrap_or_default();
                (self.lease_for(field, generation), value)
            })
            .collect())
    }

    /// Where a signal for the job under `field` must go (adopting it if nobody holds it).
    pub async fn route(&self, field: &str) -> Result<Route, StoreError> {
        let holder = self
            .store
            .route(field, &self.replica, self.lease_ttl)
            .await?;
        let Holder::Held { holder, value } = holder else {
            return Ok(Route::NoJob);
        };
        let (replica, generation) = holder.split_once('/').unwrap_or((holder.as_str(), ""));
        Ok(if replica == self.replica {
            Route::Here {
                lease: self.lease_for(field.to_owned(), generation.to_owned()),
                value,
            }
        } else {
            Route::Elsewhere {
                replica: replica.to_owned(),
                generation: generation.to_owned(),
            }
        })
    }

    /// Hands a signal to the replica that drives the job.
    pub async fn forward(
        &self,
        replica: &str,
        field: &str,
        generation: &str,
        signal: Signal,
    ) -> Result<(), StoreError> {
        let message = Forwarded {
            field: field.to_owned(),
            generation: generation.to_owned(),
            signal: signal.as_str().to_owned(),
        };
        // Serialising three strings cannot fail.
        let message = serde_json::to_string(&message).unwrap_or_default();
        self.store
            .push_inbox(replica, &message, self.inbox_ttl)
            .await
    }

    /// A reader of this replica's inbox on a connection of its own.
    pub async fn inbox(&self, url: &str, wait: Duration) -> Result<Inbox, StoreError> {
        Ok(Inbox {
            reader: JobStore::inbox_reader(url, wait).await?,
            replica: self.replica.clone(),
        })
    }
}

/// This replica's inbox of forwarded signals.
pub struct Inbox {
    reader: InboxReader,
    replica: String,
}

impl Inbox {
    /// The next forwarded signal, None after a quiet wait. Unreadable messages are skipped.
    pub async fn next(&mut self) -> Result<Option<(String, String, Signal)>, StoreError> {
        let Some(message) = self.reader.next(&self.replica).await? else {
            return Ok(None);
        };
        let parsed = serde_json::from_str::<Forwarded>(&message)
            .ok()
            .and_then(|forwarded| {
                let signal = Signal::from_name(&forwarded.signal)?;
                Some((forwarded.field, forwarded.generation, signal))
            });
        if parsed.is_none() {
            tracing::warn!("ignoring an unreadable message in this replica's delegation inbox");
        }
        Ok(parsed)
    }
}

/// A definite "no" loses the job; a Redis error does not (see the module doc).
fn standing(result: Result<bool, StoreError>, what: &str) -> Standing {
    match result {
        Ok(true) => Standing::Held,
        Ok(false) => Standing::Lost,
        Err(error) => {
            tracing::warn!(%error, "could not {what} in Redis; carrying on");
            Standing::Held
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_hex() {
        let (a, b) = (random_id(), random_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn redis_errors_keep_the_job_and_answers_decide() {
        assert_eq!(standing(Ok(true), "x"), Standing::Held);
        assert_eq!(standing(Ok(false), "x"), Standing::Lost);
        let error = StoreError::Redis(redis::RedisError::from((
            redis::ErrorKind::Io,
            "connection refused",
        )));
        assert_eq!(standing(Err(error), "x"), Standing::Held);
    }

    #[test]
    fn forwarded_messages_round_trip() {
        let message = Forwarded {
            field: r#"["r","i"]"#.into(),
            generation: "g".into(),
            signal: Signal::ParticipantConnectionAborted.as_str().into(),
        };
        let text = serde_json::to_string(&message).expect("serialise");
        assert_eq!(
            serde_json::from_str::<Forwarded>(&text).expect("parse"),
            message
        );
    }
}
