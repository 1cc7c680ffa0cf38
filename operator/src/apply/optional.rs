//! The watch of an optional kind ([`crate::kinds::ChildKind::is_optional`]): a kind of another project
//! whose CRD the cluster may not have.
//!
//! A plain watch of a kind the API server does not serve fails its list with 404 and retries forever,
//! and its cache never becomes ready, so every reconcile would wait for it and fail. This watch instead
//! turns "not served" into an empty, ready cache (the events `Init`, `InitDone`) and records it in a
//! flag the apply step reads ([`Served`]); it looks again every [`RECHECK`], so a CRD installed later
//! is picked up without a restart, and a CRD removed later empties the cache again. Other errors pass
//! through unchanged (the inner watch backs off and retries them as for every kind).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use kube::runtime::watcher::{self, Event};

/// How long a kind the cluster does not serve stays unserved before the watch looks again (one LIST
/// request per optional kind and watched namespace).
pub const RECHECK: Duration = Duration::from_secs(30);

/// Whether the cluster served the kind at the watch's last look. Shared between the watch (writer)
/// and the cache (reader).
#[derive(Clone, Debug, Default)]
pub struct Served(Arc<AtomicBool>);

impl Served {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, served: bool) {
        self.0.store(served, Ordering::Release);
    }
}

type Events<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// Whether `error` says that the API server does not serve the kind (no such resource: 404).
fn not_served(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 404,
        watcher::Error::WatchError(status) => status.code == 404,
        _ => false,
    }
}

/// The events of the watches `start` makes, with "not served" turned into an empty, ready cache and
/// a new watch every `recheck` until the kind is served.
pub fn events<K, F>(mut start: F, served: Served, recheck: Duration) -> Events<K>
where
    K: Send + 'static,
    F: FnMut() -> Events<K> + Send + 'static,
{
    let first = start();
    // (how to make a watch, the current watch (None: waiting to look again), whether the cache was
    // already emptied for this absence)
    stream::unfold(
        (start, Some(first), false),
        move |(mut start, watch, emptied)| {
            let served = served.clone();
            async move {
                let Some(mut watch) = watch else {
                    tokio::time::sleep(recheck).await;
                    let watch = start();
                    return Some((Vec::new(), (start, Some(watch), emptied)));
                };
                match watch.next().await? {
                    Err(error) if not_served(&error) => {
                        served.set(false);
                        // The watch is dropped; the next one starts after `recheck`.
                        let out = if emptied {
                            Vec::new()
                        } else {
                            tracing::info!(%error, "the cluster does not serve an optional kind; its cache stays empty");
                            vec![Ok(Event::Init), Ok(Event::InitDone)]
                        };
                        Some((out, (start, None, true)))
                    }
                    item => {
                        // The list answered: the kind is served (set before the cache sees the list
                        // end). Not at `Init`: a watch announces `Init` before its list is even sent,
                        // so an unserved kind starts every look with one.
                        let emptied = if matches!(item, Ok(Event::InitApply(_) | Event::InitDone)) {
                            served.set(true);
                            false
                        } else {
                            emptied
                        };
                        Some((vec![item], (start, Some(watch), emptied)))
                    }
                }
            }
        },
    )
    .flat_map(stream::iter)
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The pause between looks in these tests (the real one is [`RECHECK`]).
    const QUICK: Duration = Duration::from_millis(5);

    fn not_found() -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Api(
            kube::core::Status::failure(
                "the server could not find the requested resource",
                "NotFound",
            )
            .with_code(404)
            .boxed(),
        ))
    }

    fn forbidden() -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Api(
            kube::core::Status::failure("forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        ))
    }

    /// Watches that play `scripts` in turn (each one a watch's events), counting how many were made.
    fn scripted(
        scripts: Vec<Vec<Result<Event<u32>, watcher::Error>>>,
    ) -> (
        impl FnMut() -> Events<u32> + Send + 'static,
        Arc<Mutex<usize>>,
    ) {
        let made = Arc::new(Mutex::new(0));
        let counter = made.clone();
        let scripts = Arc::new(Mutex::new(scripts.into_iter()));
        let start = move || {
            *counter.lock().unwrap() += 1;
            let events = scripts.lock().unwrap().next().unwrap_or_default();
            // A watch that has nothing more to say stays open, as a real one does.
            stream::iter(events).chain(stream::pending()).boxed()
        };
        (start, made)
    }

    /// A watch's first list of a served kind holding one object, `item`.
    fn served_list(item: u32) -> Vec<Result<Event<u32>, watcher::Error>> {
        vec![
            Ok(Event::Init),
            Ok(Event::InitApply(item)),
            Ok(Event::InitDone),
        ]
    }

    fn kinds(events: &[Result<Event<u32>, watcher::Error>]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Ok(Event::Init) => "Init".to_owned(),
                Ok(Event::InitApply(n)) => format!("InitApply({n})"),
                Ok(Event::InitDone) => "InitDone".to_owned(),
                Ok(Event::Apply(n)) => format!("Apply({n})"),
                Ok(Event::Delete(n)) => format!("Delete({n})"),
                Err(error) => format!("Err({error})"),
            })
            .collect()
    }

    #[tokio::test]
    async fn an_unserved_kind_is_an_empty_ready_cache_until_it_is_served() {
        let (start, made) = scripted(vec![
            vec![Err(not_found())],
            vec![Err(not_found())],
            served_list(7),
        ]);
        let served = Served::default();
        let mut events = events(start, served.clone(), QUICK);

        let first: Vec<_> = events.by_ref().take(2).collect().await;
        assert_eq!(kinds(&first), ["Init", "InitDone"]);
        assert!(!served.get());
        // The next looks are `recheck` apart; a second 404 does not empty the cache again.
        let later: Vec<_> = events.by_ref().take(3).collect().await;
        assert_eq!(kinds(&later), ["Init", "InitApply(7)", "InitDone"]);
        assert!(served.get());
        assert_eq!(*made.lock().unwrap(), 3);
    }

    /// What a real watch of an unserved kind does: `Init` (before the list is sent), then the 404.
    #[tokio::test]
    async fn a_look_that_begins_with_init_and_ends_in_404_empties_the_cache_once() {
        let (start, made) = scripted(vec![
            vec![Ok(Event::Init), Err(not_found())],
            vec![Ok(Event::Init), Err(not_found())],
            served_list(7),
        ]);
        let served = Served::default();
        let mut events = events(start, served.clone(), QUICK);
        let first: Vec<_> = events.by_ref().take(3).collect().await;
        assert_eq!(kinds(&first), ["Init", "Init", "InitDone"]);
        assert!(!served.get());
        // The second look's `Init` passes (the store keeps its state), its 404 adds nothing (nor another
        // log line); the third look is served.
        let later: Vec<_> = events.by_ref().take(4).collect().await;
        assert_eq!(kinds(&later), ["Init", "Init", "InitApply(7)", "InitDone"]);
        assert!(served.get());
        assert_eq!(*made.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn a_kind_that_goes_away_empties_the_cache() {
        let mut script = served_list(1);
        script.push(Err(not_found()));
        let (start, _) = scripted(vec![script]);
        let served = Served::default();
        let seen: Vec<_> = events(start, served.clone(), QUICK).take(5).collect().await;
        assert_eq!(
            kinds(&seen),
            ["Init", "InitApply(1)", "InitDone", "Init", "InitDone"]
        );
        assert!(!served.get());
    }

    /// The cache, against an API server without the ServiceMonitor CRD: ready, and reporting the kind as
    /// not installed, while the served kinds (cert-manager's here) are not.
    #[tokio::test]
    async fn the_children_cache_reports_an_unserved_kind_instead_of_waiting_for_it() {
        use crate::apply::Owner;
        use crate::apply::cache::ChildCache;
        use crate::kinds::ChildKind;
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::ObjectMeta;
        use matrixrtc_test_support::fake_api::FakeApi;

        let fake = FakeApi::new();
        fake.unserve("monitoring.coreos.com/v1");
        let (cache, watches) = ChildCache::start(
            &fake.client(),
            &[Some("ns".to_owned())],
            "app.kubernetes.io/managed-by=matrixrtc-operator",
        );
        let driving = tokio::spawn(async move {
            futures::future::join_all(watches.into_iter().map(|w| w.drive())).await
        });
        let owner = Owner::new(
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("demo".into()),
                    namespace: Some("ns".into()),
                    uid: Some("u-1".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
            "app.kubernetes.io/instance=demo",
        )
        .expect("an owner");
        let observed = tokio::time::timeout(Duration::from_secs(10), cache.observe(&owner))
            .await
            .expect("the caches get ready although one kind is not served")
            .expect("observed");
        assert_eq!(observed.not_installed, [ChildKind::ServiceMonitor]);
        driving.abort();
    }

    #[tokio::test]
    async fn other_errors_pass_through_to_the_inner_retry() {
        let (start, made) = scripted(vec![vec![
            Err(forbidden()),
            Ok(Event::Init),
            Ok(Event::InitDone),
        ]]);
        let seen: Vec<_> = events(start, Served::default(), QUICK)
            .take(3)
            .collect()
            .await;
        assert!(kinds(&seen)[0].starts_with("Err("), "{:?}", kinds(&seen));
        assert_eq!(*made.lock().unwrap(), 1, "a 403 is not an absent kind");
    }
}
