//! A cloneable "stop now" signal: SIGTERM/SIGINT for the process, or the end of a leadership term.

use std::future::Future;

use tokio::sync::watch;

/// Fires once; every clone sees it.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

/// The side that fires a [`Stop`]. Dropping it without firing leaves the [`Stop`] pending forever.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// A new signal and its trigger.
pub fn channel() -> (Trigger, Stop) {
    let (sender, receiver) = watch::channel(false);
    (Trigger(sender), Stop(receiver))
}

impl Trigger {
    pub fn fire(&self) {
        // `send_replace` succeeds even when no `Stop` is left.
        self.0.send_replace(true);
    }
}

impl Stop {
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the signal fired. `Send + Sync + 'static` so kube's controller can hold it.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut receiver = self.0.clone();
        async move {
            if receiver.wait_for(|stopped| *stopped).await.is_err() {
                // The trigger was dropped without firing: never stop because of it.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A [`Stop`] that fires on SIGTERM or SIGINT (Ctrl+C). Fails only if the signal handlers cannot be installed.
pub fn on_signal() -> std::io::Result<Stop> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (trigger, stop) = channel();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
        }
        trigger.fire();
    });
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_clone_sees_the_signal() {
        let (trigger, stop) = channel();
        let other = stop.clone();
        assert!(!stop.is_stopped());
        let waiting = tokio::spawn(other.wait());
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(stop.is_stopped());
        // Waiting after the fact resolves at once.
        tokio::time::timeout(Duration::from_secs(1), stop.wait())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_dropped_trigger_never_stops() {
        let (trigger, stop) = channel();
        drop(trigger);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), stop.wait())
                .await
                .is_err()
        );
    }
}
