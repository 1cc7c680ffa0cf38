//! The two outside services a job talks to, as traits so that the runner's tests substitute fakes: the
//! homeserver's delayed-event API and LiveKit's participant lookup.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::delegation::job::JobParams;
use crate::livekit::twirp::RoomService;
use crate::matrix::client_api::{ClientApi, ClientApiError};
use crate::matrix::delayed_event::{Action, Reply};
use crate::matrix::own_homeserver::OwnHomeserver;

/// The homeserver's delayed-event API: one attempt of an action on a job's delayed event.
pub trait DelayedEventApi: Send + Sync {
    /// `Err` means the client-server API of the job's server could not be found.
    fn attempt<'a>(
        &'a self,
        params: &'a JobParams,
        action: Action,
    ) -> BoxFuture<'a, Result<Reply, ClientApiError>>;
}

/// The production [`DelayedEventApi`]. A standalone job's call goes, without credentials, to the
/// client-server API of its user's homeserver (spec §5.5: the delay ID is the capability). An AS-mode
/// job's call goes to our own homeserver as its user, with the AS token and `?user_id=` (as-mode spec
/// §5.3), through [`OwnHomeserver`].
pub struct DelayedEvents {
    client_api: Arc<ClientApi>,
    /// In AS mode only.
    own: Option<Arc<OwnHomeserver>>,
}

impl DelayedEvents {
    pub fn new(client_api: Arc<ClientApi>, own: Option<Arc<OwnHomeserver>>) -> Self {
        Self { client_api, own }
    }
}

impl DelayedEventApi for DelayedEvents {
    fn attempt<'a>(
        &'a self,
        params: &'a JobParams,
        action: Action,
    ) -> BoxFuture<'a, Result<Reply, ClientApiError>> {
        Box::pin(async move {
            let (server_name, delay_id) = (params.server_name.as_str(), params.delay_id.as_str());
            let own = self
                .own
                .as_ref()
                .filter(|own| own.server_name() == server_name);
            match (&params.as_user, own) {
                (Some(user_id), Some(own)) => {
                    let base = self.client_api.resolve(server_name).await?;
                    own.delayed_event_as(&base.url, delay_id, user_id, action)
                        .await
                }
                (Some(_), None) => {
                    // An AS job resumed by a replica without AS mode for its server (a configuration
                    // change, or a mixed rollout): the unauthenticated call, which Synapse also takes
                    // (rate-limited per address), is the best left.
                    tracing::warn!(
                        %server_name,
                        "an AS-mode delegation job runs on a replica without AS mode for its server; calling without identity assertion"
                    );
                    self.client_api
                        .delayed_event(server_name, delay_id, action)
                        .await
                }
                (None, _) => {
                    self.client_api
                        .delayed_event(server_name, delay_id, action)
                        .await
                }
            }
        })
    }
}

/// A LiveKit participant lookup failed for another reason than "not found".
#[derive(Debug, thiserror::Error)]
#[error("participant lookup failed: {0}")]
pub struct LookupError(pub String);

/// LiveKit's `GetParticipant`.
pub trait ParticipantLookup: Send + Sync {
    /// `Ok(false)` when LiveKit says the participant (or room) is not there.
    fn is_present<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<bool, LookupError>>;
}

impl ParticipantLookup for RoomService {
    fn is_present<'a>(
        &'a self,
        room: &'a str,
        identity: &'a str,
    ) -> BoxFuture<'a, Result<bool, LookupError>> {
        Box::pin(async move {
            self.get_participant(room, identity)
                .await
                .map(|participant| participant.is_some())
                .map_err(|error| LookupError(error.to_string()))
        })
    }
}

/// [`DelayedEvents`] against a fake homeserver: which calls assert the user, and with what.
#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use axum::extract::{Request, State};
    use http::header::AUTHORIZATION;

    use super::*;
    use crate::delegation::job::JobKey;
    use crate::matrix::client_api::Reach;
    use crate::matrix::full_access::FullAccess;
    use crate::matrix::guard::Guard;
    use crate::outbound::{Outbound, OutboundSettings};
    use crate::telemetry::Metrics;

    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

    async fn fake_homeserver() -> (String, Seen) {
        let seen = Seen::default();
        let app = axum::Router::new()
            .fallback(|State(seen): State<Seen>, request: Request| async move {
                let auth = request
                    .headers()
                    .get(AUTHORIZATION)
                    .map(|value| value.to_str().unwrap().to_owned());
                seen.lock().unwrap().push((request.uri().to_string(), auth));
                "{}"
            })
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    fn params(server_name: &str, as_user: Option<&str>) -> JobParams {
        let params = JobParams::new(
            JobKey {
                room: "room".into(),
                identity: "identity".into(),
            },
            server_name.into(),
            "syd_1".into(),
            Duration::from_secs(60),
        )
        .unwrap();
        match as_user {
            Some(user) => params.asserted_as(user),
            None => params,
        }
    }

    #[tokio::test]
    async fn only_as_jobs_of_our_server_assert_their_user() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (url, seen) = fake_homeserver().await;
        let metrics = Arc::new(Metrics::new());
        let outbound = Outbound::new(&OutboundSettings::default()).unwrap();
        let reach = Reach::new(
            &outbound,
            Arc::new(Guard::default()),
            metrics,
            FullAccess::parse("hs.example"),
        )
        .unwrap();
        let overrides = [
            ("hs.example".to_owned(), url.clone()),
            ("other.example".to_owned(), url),
        ];
        let client_api = Arc::new(ClientApi::new(
            reach,
            overrides.into(),
            ClientApi::CACHE_TTL,
        ));
        let own = OwnHomeserver::new(outbound.client_builder(), "as-secret", "hs.example").unwrap();
        let events = DelayedEvents::new(client_api, Some(Arc::new(own)));

        for (params, action) in [
            (params("hs.example", None), Action::Restart),
            (
                params("hs.example", Some("@alice:hs.example")),
                Action::Restart,
            ),
            (
                params("hs.example", Some("@alice:hs.example")),
                Action::Send,
            ),
            // A job asserted for a server this replica is not the AS of: no AS token goes elsewhere.
            (
                params("other.example", Some("@bob:other.example")),
                Action::Send,
            ),
        ] {
            assert_eq!(
                events.attempt(&params, action).await.unwrap(),
                Reply::Success
            );
        }
        let base = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/syd_1";
        let token = Some("Bearer as-secret".to_owned());
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (format!("{base}/restart"), None),
                (
                    format!("{base}/restart?user_id=%40alice%3Ahs.example"),
                    token.clone()
                ),
                (format!("{base}/send?user_id=%40alice%3Ahs.example"), token),
                (format!("{base}/send"), None),
            ]
        );
    }
}
