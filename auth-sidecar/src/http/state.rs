//! What every request handler shares: the clients, limits and metrics built once at startup, and the
//! success body of the token endpoints.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::limits::RateLimits;
use crate::delegation::Delegation;
use crate::go_json;
use crate::livekit::keys::KeySet;
use crate::livekit::twirp::RoomService;
use crate::livekit::webhook::WebhookVerifier;
use crate::matrix::client_api::ClientApi;
use crate::matrix::full_access::FullAccess;
use crate::matrix::openid::OpenIdVerifier;
use crate::matrix::own_homeserver::OwnHomeserver;
use crate::telemetry::Metrics;

/// Verifies an OpenID access token with the homeserver that issued it and returns the user ID it
/// belongs to. The production implementation is [`OpenIdVerifier`]; tests substitute fakes. The error
/// is only logged (it never contains the token).
pub trait OpenIdLookup: Send + Sync {
    fn lookup<'a>(
        &'a self,
        server_name: &'a str,
        access_token: &'a str,
        trusted: bool,
    ) -> BoxFuture<'a, Result<String, String>>;
}

impl OpenIdLookup for OpenIdVerifier {
    fn lookup<'a>(
        &'a self,
        server_name: &'a str,
        access_token: &'a str,
        trusted: bool,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            self.verify(server_name, access_token, trusted)
                .await
                .map_err(|error| error.to_string())
        })
    }
}

/// The body of a successful token response, `{"url":…,"jwt":…}` plus a newline. Everything up to the
/// token is computed once.
#[derive(Debug)]
pub struct TokenResponse {
    prefix: Vec<u8>,
}

impl TokenResponse {
    /// For clients connecting to `livekit_url` (returned verbatim, JSON-escaped as Go does).
    pub fn new(livekit_url: &str) -> Self {
        let mut prefix = b"{\"url\":".to_vec();
        go_json::push_string(&mut prefix, livekit_url);
        prefix.extend_from_slice(b",\"jwt\":\"");
        Self { prefix }
    }

    /// The body carrying `jwt` (a JWT needs no escaping: base64url and dots).
    pub(super) fn body(&self, jwt: &str) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.prefix.len() + jwt.len() + 3);
        body.extend_from_slice(&self.prefix);
        body.extend_from_slice(jwt.as_bytes());
        body.extend_from_slice(b"\"}\n");
        body
    }
}

/// What every request handler shares.
pub struct AppState {
    pub openid: Arc<dyn OpenIdLookup>,
    pub rooms: RoomService,
    pub keys: Arc<KeySet>,
    pub full_access: FullAccess,
    /// The homeservers the SSRF guard trusts, as named entries (see [`crate::config::Config::ssrf_trusted`]).
    pub ssrf_trusted: FullAccess,
    pub limits: RateLimits,
    pub metrics: Arc<Metrics>,
    pub token_response: TokenResponse,
    /// Delegated delayed leaves.
    pub delegation: Delegation,
    /// Where homeservers' client-server APIs are (checked before a job is accepted).
    pub client_api: Arc<ClientApi>,
    /// Verifies `/sfu_webhook` calls.
    pub webhooks: WebhookVerifier,
    /// Our own homeserver, called as its application service (AS mode only).
    pub own_homeserver: Option<Arc<OwnHomeserver>>,
    /// The membership monitor (AS mode with a non-zero interval only).
    pub membership: Option<crate::membership::Monitor>,
}
