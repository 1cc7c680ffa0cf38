//! Leader election on a `coordination.k8s.io/v1` Lease, so two or more operator replicas can run and only one
//! reconciles.
//!
//! [`lead`] waits until this replica holds the Lease, runs the work (the controllers) with a [`Stop`] that fires
//! when the lease is lost or the process shuts down, and waits again after a loss. On shutdown it releases the
//! Lease so a standby takes over at once instead of after the lease duration.
//!
//! The Lease is kept by kube-lease-manager: created if missing (verb `create`), read (`get`) and renewed with
//! patches (`patch`). Each replica uses its own field manager (`kube-lease-manager-<identity>`): the crate
//! detects a competing holder through server-side apply conflicts, which needs distinct managers. This is the
//! one place the operator writes with a field manager other than [`crate::apply::FIELD_MANAGER`].
//!
//! Limitation: while the API server is unreachable the lease manager cannot renew, and this replica only learns
//! it lost the lease once the server answers again; in that window its own writes fail as well.

use std::future::Future;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};

use crate::shutdown::{self, Stop};

/// Which Lease to hold, as whom, and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// Unique per replica (the pod name plus a random suffix).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub duration_seconds: u64,
    /// How long before expiry the holder renews.
    pub grace_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lease timing is invalid: need 0 < grace ({grace}s) < duration ({duration}s)")]
    Timing { duration: u64, grace: u64 },
    #[error("could not set up the Lease {namespace}/{name}: {source}")]
    Setup {
        namespace: String,
        name: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("the lease manager stopped unexpectedly")]
    ManagerStopped,
    #[error("the controllers stopped while this replica was leading")]
    WorkEnded,
}

/// Runs `work` each time this replica becomes the leader, until `shutdown` fires.
///
/// `work` receives a [`Stop`] that fires when leadership is lost or on shutdown, and must return soon after.
/// `on_leadership` is told about every change (for the leader metric).
pub async fn lead<W, F>(
    client: Client,
    settings: &LeaseSettings,
    shutdown: Stop,
    on_leadership: impl Fn(bool),
    mut work: W,
) -> Result<(), LeaderError>
where
    W: FnMut(Stop) -> F,
    F: Future<Output = ()>,
{
    if settings.grace_seconds == 0 || settings.grace_seconds >= settings.duration_seconds {
        return Err(LeaderError::Timing {
            duration: settings.duration_seconds,
            grace: settings.grace_seconds,
        });
    }
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(settings.grace_seconds)
        .build()
        .await
        .map_err(|source| LeaderError::Setup {
            namespace: settings.namespace.clone(),
            name: settings.name.clone(),
            source,
        })?;
    let (mut leading, manager_task) = manager.watch().await;
    tracing::info!(lease = %settings.name, namespace = %settings.namespace, identity = %settings.identity, "waiting for leadership");

    let outcome = loop {
        // Standby: wait to become the leader.
        if !*leading.borrow_and_update() {
            tokio::select! {
                _ = shutdown.wait() => break Ok(()),
                changed = leading.changed() => {
                    if changed.is_err() {
                        break Err(LeaderError::ManagerStopped);
                    }
                    continue;
                }
            }
        }

        tracing::info!("became the leader; reconciling");
        on_leadership(true);
        let (end_term, term) = shutdown::channel();
        let running = work(term);
        tokio::pin!(running);
        let term_result = loop {
            tokio::select! {
                _ = &mut running => break Err(LeaderError::WorkEnded),
                _ = shutdown.wait() => {
                    end_term.fire();
                    (&mut running).await;
                    break Ok(true);
                }
                changed = leading.changed() => {
                    if changed.is_err() {
                        end_term.fire();
                        (&mut running).await;
                        break Err(LeaderError::ManagerStopped);
                    }
                    if !*leading.borrow_and_update() {
                        tracing::warn!("lost the leader lease; stopping reconciliation");
                        end_term.fire();
                        (&mut running).await;
                        break Ok(false);
                    }
                }
            }
        };
        on_leadership(false);
        match term_result {
            Ok(true) => break Ok(()),
            Ok(false) => continue,
            Err(error) => break Err(error),
        }
    };

    // Closing the channel makes the manager release the lease (if held) and finish.
    drop(leading);
    match manager_task.await {
        Ok(Ok(_)) => tracing::info!("leader lease released"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "releasing the leader lease failed; it expires by itself")
        }
        Err(error) => tracing::warn!(%error, "the lease manager task failed"),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::Lease;
    use matrixrtc_test_support::fake_api::FakeApi;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn settings(identity: &str) -> LeaseSettings {
        LeaseSettings {
            name: "matrixrtc-operator".into(),
            namespace: "ops".into(),
            identity: identity.into(),
            duration_seconds: 3,
            grace_seconds: 1,
        }
    }

    #[tokio::test]
    async fn invalid_timing_is_an_error_not_a_panic() {
        let fake = FakeApi::new();
        let (_trigger, stop) = shutdown::channel();
        let mut bad = settings("a");
        bad.grace_seconds = 3;
        let result = lead(fake.client(), &bad, stop, |_| {}, |_| async {}).await;
        assert!(matches!(result, Err(LeaderError::Timing { .. })));
        assert!(fake.requests().is_empty());
    }

    #[tokio::test]
    async fn only_one_replica_works_and_the_standby_takes_over_after_shutdown() {
        let fake = FakeApi::new();
        let active = Arc::new(AtomicUsize::new(0));
        let worked = Arc::new(AtomicUsize::new(0));
        let replica = |identity: &'static str| {
            let (trigger, stop) = shutdown::channel();
            let client = fake.client();
            let active = active.clone();
            let worked = worked.clone();
            let task = tokio::spawn(async move {
                lead(
                    client,
                    &settings(identity),
                    stop,
                    |_| {},
                    move |term: Stop| {
                        let active = active.clone();
                        let worked = worked.clone();
                        async move {
                            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                            assert_eq!(now, 1, "two replicas led at once");
                            worked.fetch_add(1, Ordering::SeqCst);
                            term.wait().await;
                            active.fetch_sub(1, Ordering::SeqCst);
                        }
                    },
                )
                .await
            });
            (trigger, task)
        };

        let (stop_a, a) = replica("replica-a");
        let until = |n: usize| {
            let worked = worked.clone();
            async move {
                while worked.load(Ordering::SeqCst) < n {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), until(1))
            .await
            .expect("a leader within 10 s");
        let (stop_b, b) = replica("replica-b");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            worked.load(Ordering::SeqCst),
            1,
            "the standby must not work while the lease is held"
        );
        let holder = fake
            .get::<Lease>("ops", "matrixrtc-operator")
            .and_then(|l| l.spec?.holder_identity);
        assert_eq!(holder.as_deref(), Some("replica-a"));

        stop_a.fire();
        tokio::time::timeout(Duration::from_secs(10), a)
            .await
            .expect("a stops")
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(15), until(2))
            .await
            .expect("b takes over");
        let holder = fake
            .get::<Lease>("ops", "matrixrtc-operator")
            .and_then(|l| l.spec?.holder_identity);
        assert_eq!(holder.as_deref(), Some("replica-b"));

        stop_b.fire();
        tokio::time::timeout(Duration::from_secs(10), b)
            .await
            .expect("b stops")
            .unwrap()
            .unwrap();
        assert_eq!(active.load(Ordering::SeqCst), 0);
    }
}
