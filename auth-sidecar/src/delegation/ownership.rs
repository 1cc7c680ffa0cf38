//! Several replicas sharing one Redis: exactly one of them drives each job at a time.
//!
//! # Design
//!
//! - **Source of truth.** The reference's hash `lk-jwt:jobs` (see [`super::store`]). Each value carries
//!   an extra `"Generation"`, a random ID per job, so a replaced job can be told from its successor (the
//!   reference's reader ignores the member; entries it wrote have none and count as generation ""), and
//!   `"Connected": true` once its participant was seen, so that whoever resumes it knows a leave is due
//!   when they go.
//! - **Replicas.** A replica is named by `LIVEKIT_REPLICA_ID` (the operator sets the pod name) or, when
//!   that is unset, by a random ID per process. While it lives it keeps a heartbeat key
//!   `lk-jwt:replica:<replica>` (3 s TTL, refreshed every second). A container restarted under the same
//!   name is the same replica: at startup it takes back every job leased to its name at once.
//! - **Leases.** The driver of a job holds `lk-jwt:lease:<field>` = `<replica>/<generation>` with a TTL
//!   (15 s unscaled) and renews it every third of that, also while a `send` waits between retries.
//!   Creating a job writes the hash entry and its lease in one script, so a new job for an existing key
//!   takes the lease away from whoever drove the old one. Adds for one key are serialised within a
//!   replica, so its memory and Redis agree on which generation is current.
//! - **Every homeserver call is gated.** Before each `restart` or `send` attempt, and on every renewal,
//!   one script checks that the lease still names this replica (or lapsed and nobody took it) and that
//!   the hash still holds that generation, extending the lease if so. A driver that fails the check
//!   stops at once and makes no further call; the stored entry then belongs to its successor, so it is
//!   not touched. If the entry vanished altogether (a Redis restarted without its data), the driver
//!   files it again.
//! - **Takeover.** Every replica scans the hash every second (±20 %, and once at startup) and leases to
//!   itself every entry without a lease or whose lease names a replica without a heartbeat: a replica
//!   that died loses its jobs within about 4 s (heartbeat TTL plus one scan), not when its 15 s leases
//!   run out. The adopter then drains the dead replica's inbox and delivers what it finds. An adopted
//!   job resumes like startup recovery in the reference: expired entries are deleted without homeserver
//!   calls; others start over waiting for their participant, with a LiveKit lookup that finds them
//!   again if they are still in the room, except jobs marked `Connected`, which resume connected (an
//!   immediate `restart`) and send the leave as soon as LiveKit says the participant is gone or a
//!   leave webhook arrives.
//! - **Startup.** Before anything else a replica purges every expired entry, whoever's lease it carries
//!   (the homeserver has fired those events on its own), then takes back its own jobs and adopts orphans.
//! - **Signals.** A webhook may reach any replica. A job this replica runs from memory only (its Redis
//!   write failed) gets its signals directly. Otherwise the receiver looks the job's lease up (one
//!   script): if it holds the lease it delivers the signal itself; if a live replica does, it appends
//!   the signal to that replica's inbox list `lk-jwt:inbox:<replica>`, which the owner drains with a
//!   blocking pop; if nobody (alive) does, it adopts the job on the spot, delivers the signal and drains
//!   the dead owner's inbox. If Redis knows no such job but this replica runs one, it is delivered here.
//! - **Failure behaviour.** When Redis cannot be reached, a driver keeps driving rather than let every
//!   call's leave fire early, and a new job runs from memory; when Redis answers again, the job is
//!   written (again) and the deletion of jobs that ended meanwhile is retried, before this replica adopts
//!   anything. MSC4140 makes the worst case of a concurrent adopter harmless (a second `restart` is a
//!   no-op, a `send` after a `send` answers 404, which counts as sent, and a `restart` after a `send`
//!   answers 404, which ends that driver). A job written late (Redis was down when it was added)
//!   overwrites whatever is filed under its key, as the write would have done on time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::job::Signal;
use super::record::JobRecord;
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
    /// This replica drives (or has just adopted) the job; `value` is its stored entry; `previous` is
    /// the replica without a heartbeat it was taken from, whose inbox the caller must drain.
    Here {
        lease: Lease,
        value: String,
        previous: Option<String>,
    },
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
    heartbeat_ttl: Duration,
}

/// What an orphan scan took over.
#[derive(Debug, Default)]
pub struct Adopted {
    /// The jobs now leased to this replica, with their stored values.
    pub jobs: Vec<(Lease, String)>,
    /// Replicas without a heartbeat whose jobs were among them (their inboxes need draining).
    pub gone: Vec<String>,
}

impl Ownership {
    /// `replica` is this replica's stable name (`LIVEKIT_REPLICA_ID`); None picks a random one.
    pub fn new(
        store: JobStore,
        replica: Option<String>,
        lease_ttl: Duration,
        inbox_ttl: Duration,
        heartbeat_ttl: Duration,
    ) -> Self {
        Self {
            store,
            replica: replica.unwrap_or_else(random_id),
            lease_ttl,
            inbox_ttl,
            heartbeat_ttl,
        }
    }

    /// Tells the other replicas this one is alive (for the heartbeat TTL).
    pub async fn heartbeat(&self) -> Result<(), StoreError> {
        self.store
            .heartbeat(&self.replica, self.heartbeat_ttl)
            .await
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

    /// Checks (and extends, or re-takes) the lease before a homeserver call or on renewal; files
    /// `value` again if the entry vanished.
    pub async fn confirm(&self, lease: &Lease, value: &str) -> Standing {
        standing(self.keep(lease, value, false).await, "confirm the lease")
    }

    /// Stores a new value for the job if this replica still drives it.
    pub async fn record(&self, lease: &Lease, value: &str) -> Standing {
        standing(self.keep(lease, value, true).await, "record the restart")
    }

    async fn keep(&self, lease: &Lease, value: &str, write: bool) -> Result<bool, StoreError> {
        self.store
            .keep(
                &lease.field,
                &lease.holder,
                &lease.generation,
                self.lease_ttl,
                value,
                write,
            )
            .await
    }

    /// Deletes a job and its lease, whoever holds it, if its entry still reads `value`.
    pub async fn purge(&self, field: &str, value: &str) -> Result<bool, StoreError> {
        self.store.purge(field, value).await
    }

    /// Every stored job as (field, value).
    pub async fn stored(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.store.all().await
    }

    /// Deletes every stored job that has expired (`restarted_at + timeout <= now`), whoever holds it;
    /// entries that cannot be read are left alone, as the reference skips them. Returns how many.
    pub async fn purge_expired(&self, now: time::OffsetDateTime) -> Result<usize, StoreError> {
        let mut purged = 0;
        for (field, value) in self.stored().await? {
            let Ok(record) = JobRecord::parse(&field, &value) else {
                continue;
            };
            if record.expired(now) && self.purge(&field, &value).await? {
                purged += 1;
            }
        }
        Ok(purged)
    }

    /// Takes every message out of a dead replica's inbox; unreadable ones are skipped.
    pub async fn drain(&self, replica: &str) -> Result<Vec<(String, String, Signal)>, StoreError> {
        Ok(self
            .store
            .drain_inbox(replica)
            .await?
            .iter()
            .filter_map(|message| parse_forwarded(message))
            .collect())
    }

    /// Deletes the finished job (if it is still this generation) and its lease.
    pub async fn finish(&self, lease: &Lease) -> Result<(), StoreError> {
        self.store
            .finish(&lease.field, &lease.holder, &lease.generation)
            .await
            .map(drop)
    }

    /// Gives the lease up, leaving the job for another replica (graceful shutdown, unusable entries).
    pub async fn release(&self, lease: &Lease) {
        if let Err(error) = self.store.release(&lease.field, &lease.holder).await {
            tracing::warn!(%error, "could not release a delegation job lease");
        }
    }

    /// Leases to this replica every job nobody (alive) holds, and with `own` every job leased to this
    /// replica's name (a restarted container taking its jobs back).
    pub async fn adopt_orphans(&self, own: bool) -> Result<Adopted, StoreError> {
        let (jobs, gone) = self
            .store
            .adopt_orphans(&self.replica, self.lease_ttl, own)
            .await?;
        let jobs = jobs
            .into_iter()
            .map(|(field, value)| {
                let generation = generation_of(&value);
                (self.lease_for(field, generation), value)
            })
            .collect();
        Ok(Adopted { jobs, gone })
    }

    /// Where a signal for the job under `field` must go (adopting it if nobody holds it).
    pub async fn route(&self, field: &str) -> Result<Route, StoreError> {
        let holder = self
            .store
            .route(field, &self.replica, self.lease_ttl)
            .await?;
        let Holder::Held {
            holder,
            value,
            previous,
        } = holder
        else {
            return Ok(Route::NoJob);
        };
        let (replica, generation) = holder.split_once('/').unwrap_or((holder.as_str(), ""));
        Ok(if replica == self.replica {
            Route::Here {
                lease: self.lease_for(field.to_owned(), generation.to_owned()),
                value,
                previous,
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
        Ok(parse_forwarded(&message))
    }
}

/// A forwarded signal as (field, generation, signal); None (logged) if it cannot be read.
fn parse_forwarded(message: &str) -> Option<(String, String, Signal)> {
    let parsed = serde_json::from_str::<Forwarded>(message)
        .ok()
        .and_then(|forwarded| {
            let signal = Signal::from_name(&forwarded.signal)?;
            Some((forwarded.field, forwarded.generation, signal))
        });
    if parsed.is_none() {
        tracing::warn!("ignoring an unreadable message in a delegation inbox");
    }
    parsed
}

/// The generation of a stored value ("" when absent; the scripts only hand out values whose
/// Generation is a string or absent).
fn generation_of(value: &str) -> String {
    serde_json::from_str::<GenerationOnly>(value)
        .map(|only| only.generation)
        .unwrap_or_default()
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
