//! Application-service (AS) mode (as-mode spec): the homeserver authenticates the caller and forwards
//! MSC4195 requests to us with its HS token; we check room membership with MSC4502 `/is_joined` before
//! issuing a token, relay requests for other servers' SFUs through MSC4512 `fed_proxy`, and look up
//! delayed events as the user through AS identity assertion.
//!
//! - [`config`]: the AS variables and their startup errors.
//! - [`homeserver`]: the calls to the own homeserver with the AS token.
//! - [`token`]: the AS identity hash, grants and minting.
//! - [`flows`]: the decision tables of §6, over traits so they are unit-tested.
//! - [`routes`]: the HTTP surface of §4 (the gate: method, HS token, body) mounted beside the
//!   standalone routes, which keep working.
//! - [`standalone`]: `LIVEKIT_REQUIRE_MEMBERSHIP`, a membership check in front of the standalone
//!   token endpoints.
//!
//! The membership monitor (§8) plugs in through [`RoomTracker`]: every token issued for a local user or
//! over federation to us is reported to it.

pub mod flows;
pub mod homeserver;
pub mod routes;
pub mod standalone;
pub mod token;

use std::sync::Arc;

use axum::Router;
use futures::future::BoxFuture;

use self::homeserver::AsClient;
use crate::config::appservice::AppServiceConfig;
use crate::http::AppState;

/// A token the service issued and the monitor should watch (§8.1): C-S local and S-S tokens, never
/// relayed ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackedToken<'a> {
    pub matrix_room_id: &'a str,
    pub matrix_user_id: &'a str,
    /// The LiveKit room name (`H([room_id, slot_id])`).
    pub livekit_room: &'a str,
    /// The LiveKit identity (`H([user_id, member_id])`).
    pub livekit_identity: &'a str,
}

/// Told about every tracked token before the answer goes out. It cannot fail the request: an
/// implementation logs its own errors.
pub trait RoomTracker: Send + Sync {
    fn track<'a>(&'a self, token: TrackedToken<'a>) -> BoxFuture<'a, ()>;
}

/// The tracker while no monitor is wired in.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTracking;

impl RoomTracker for NoTracking {
    fn track<'a>(&'a self, _token: TrackedToken<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// What `server.rs` keeps from the configuration to mount the AS routes once the shared state exists.
pub struct Setup {
    config: AppServiceConfig,
    livekit_url: String,
    tracker: Arc<dyn RoomTracker>,
}

impl Setup {
    /// From the parsed configuration; nothing is contacted.
    pub fn new(config: &crate::config::Config) -> Self {
        Self {
            config: config.appservice.clone(),
            livekit_url: config.livekit_url.clone(),
            tracker: Arc::new(NoTracking),
        }
    }

    /// Reports issued tokens to `tracker` (the membership monitor).
    pub fn with_tracker(mut self, tracker: Arc<dyn RoomTracker>) -> Self {
        self.tracker = tracker;
        self
    }

    /// `router` plus the AS routes when AS mode is on (the registration is configured and the state holds
    /// the own homeserver's client, built from it); `router` unchanged otherwise.
    pub fn mount(self, router: Router, app: &Arc<AppState>) -> Router {
        let (Some(registration), Some(own)) =
            (self.config.registration, app.own_homeserver.clone())
        else {
            return router;
        };
        let homeserver = AsClient::new(own, Arc::clone(&app.client_api) as _);
        let homeserver: Arc<dyn homeserver::Homeserver> = Arc::new(homeserver);
        let router = if self.config.require_membership {
            let membership = standalone::Membership {
                app: Arc::clone(app),
                homeserver: Arc::clone(&homeserver),
                tracker: Arc::clone(&self.tracker),
            };
            router.layer(axum::middleware::from_fn_with_state(
                Arc::new(membership),
                standalone::require_membership,
            ))
        } else {
            router
        };
        tracing::info!(
            server_name = %registration.server_name,
            require_membership = self.config.require_membership,
            "AS mode on"
        );
        let service = routes::AppService {
            app: Arc::clone(app),
            settings: flows::Settings {
                server_name: registration.server_name,
                livekit_url: self.livekit_url,
                can_update_own_metadata: self.config.can_update_own_metadata,
                remote_can_publish: self.config.remote_can_publish,
            },
            hs_token: registration.hs_token,
            homeserver,
            tracker: self.tracker,
        };
        router.merge(routes::router(Arc::new(service)))
    }
}

/// The membership monitor tracks what the AS-mode token flows issue (spec §8.1). The impl lives here, not
/// in `membership`, so that the monitor does not depend on the AS flows (see the layering in lib.rs).
impl RoomTracker for crate::membership::Monitor {
    fn track<'a>(&'a self, token: TrackedToken<'a>) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(crate::membership::Monitor::track(
            self,
            token.matrix_room_id,
            token.matrix_user_id,
            token.livekit_room,
            token.livekit_identity,
        ))
    }
}
