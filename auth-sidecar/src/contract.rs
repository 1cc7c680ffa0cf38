//! The authorisation service's contract with whoever deploys it: environment variable names, defaults,
//! the port and the HTTP paths.
//!
//! This module compiles without the `server` feature so that the operator can depend on it alone: a
//! renamed variable then breaks the operator's build instead of a deployment. Names shared with
//! element-hq/lk-jwt-service keep its spelling so that a deployment can swap the reference image for ours.

/// Environment variables, in the reference's spelling where the reference has them.
pub mod env {
    // --- Shared with lk-jwt-service -------------------------------------------------------------
    /// WebSocket URL of the SFU, returned verbatim to clients; also the base of the Twirp API unless
    /// [`LIVEKIT_API_URL`] is set.
    pub const LIVEKIT_URL: &str = "LIVEKIT_URL";
    /// API key (the JWT `iss`).
    pub const LIVEKIT_KEY: &str = "LIVEKIT_KEY";
    /// API secret.
    pub const LIVEKIT_SECRET: &str = "LIVEKIT_SECRET";
    /// Path of a file whose contents replace `LIVEKIT_KEY`.
    pub const LIVEKIT_KEY_FROM_FILE: &str = "LIVEKIT_KEY_FROM_FILE";
    /// Path of a file whose contents replace `LIVEKIT_SECRET`.
    pub const LIVEKIT_SECRET_FROM_FILE: &str = "LIVEKIT_SECRET_FROM_FILE";
    /// Path of a `key:secret` file; takes precedence over the four variables above.
    pub const LIVEKIT_KEY_FILE: &str = "LIVEKIT_KEY_FILE";
    /// Comma or whitespace separated homeservers whose users may create rooms; `*` alone means everyone.
    pub const LIVEKIT_FULL_ACCESS_HOMESERVERS: &str = "LIVEKIT_FULL_ACCESS_HOMESERVERS";
    /// Listen address, `host:port` or `:port`.
    pub const LIVEKIT_JWT_BIND: &str = "LIVEKIT_JWT_BIND";
    /// Deprecated listen port; exclusive with `LIVEKIT_JWT_BIND`.
    pub const LIVEKIT_JWT_PORT: &str = "LIVEKIT_JWT_PORT";
    /// Only [`INSECURE_SKIP_VERIFY_TLS_VALUE`] disables certificate verification on outbound calls.
    pub const LIVEKIT_INSECURE_SKIP_VERIFY_TLS: &str = "LIVEKIT_INSECURE_SKIP_VERIFY_TLS";
    /// Seconds between checks that a connected participant is still in the room; 0 disables.
    pub const LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS: &str = "LIVEKIT_SANITY_CHECK_INTERVAL_SECONDS";
    /// `server_name=url,...`: client-server API base URLs that skip `.well-known` discovery.
    pub const LIVEKIT_CS_API_URL_OVERRIDES: &str = "LIVEKIT_CS_API_URL_OVERRIDES";
    /// Redis URL for delegated-leave jobs.
    pub const LIVEKIT_REDIS_URL: &str = "LIVEKIT_REDIS_URL";
    /// `debug`, `info`, `warn`, `error`.
    pub const LIVEKIT_LOG_LEVEL: &str = "LIVEKIT_LOG_LEVEL";

    // --- Ours (the reference has no equivalent) ------------------------------------------------
    /// Base URL of LiveKit's server API for the Twirp calls (`CreateRoom`, `GetParticipant`), e.g. an
    /// in-cluster address that spares the trip out through the public host; `http`, `https`, `ws` or
    /// `wss`, path kept. Default: `LIVEKIT_URL` with `ws` -> `http` and `wss` -> `https`.
    pub const LIVEKIT_API_URL: &str = "LIVEKIT_API_URL";
    /// Path of a LiveKit-style `key: secret` YAML map with one or more keys; the first signs, all verify.
    pub const LIVEKIT_KEYS_FILE: &str = "LIVEKIT_KEYS_FILE";
    /// `text` (default) or `json`.
    pub const LIVEKIT_LOG_FORMAT: &str = "LIVEKIT_LOG_FORMAT";
    /// CIDR ranges that outbound calls to non-full-access homeservers may reach despite the SSRF guard.
    pub const LIVEKIT_OUTBOUND_IP_ALLOWLIST: &str = "LIVEKIT_OUTBOUND_IP_ALLOWLIST";
    /// Connect timeout of every outbound call, seconds (default 5).
    pub const LIVEKIT_OUTBOUND_CONNECT_TIMEOUT_SECONDS: &str =
        "LIVEKIT_OUTBOUND_CONNECT_TIMEOUT_SECONDS";
    /// Total timeout of every outbound call, seconds (default 10).
    pub const LIVEKIT_OUTBOUND_TIMEOUT_SECONDS: &str = "LIVEKIT_OUTBOUND_TIMEOUT_SECONDS";
    /// How long a verified OpenID token is remembered, seconds (default 60; 0 disables).
    pub const LIVEKIT_OPENID_CACHE_SECONDS: &str = "LIVEKIT_OPENID_CACHE_SECONDS";
    /// Per client IP rate limit on the token endpoints, `N/s`, `N/m` or `N/h`; unset disables.
    pub const LIVEKIT_RATE_LIMIT_PER_IP: &str = "LIVEKIT_RATE_LIMIT_PER_IP";
    /// Per `matrix_server_name` rate limit on the token endpoints, same format; unset disables.
    pub const LIVEKIT_RATE_LIMIT_PER_HOMESERVER: &str = "LIVEKIT_RATE_LIMIT_PER_HOMESERVER";
    /// CIDR ranges of reverse proxies whose `X-Forwarded-For` names the client for per-IP limits.
    pub const LIVEKIT_TRUSTED_PROXIES: &str = "LIVEKIT_TRUSTED_PROXIES";

    /// Comma-separated server names that the SSRF guard trusts like homeservers named in
    /// `LIVEKIT_FULL_ACCESS_HOMESERVERS` (exact match). The operator sets it to the resource's own
    /// `spec.serverName`, so that the deployment's homeserver stays reachable at a private address when
    /// the full-access list is `*`.
    pub const LIVEKIT_TRUSTED_HOMESERVERS: &str = "LIVEKIT_TRUSTED_HOMESERVERS";
    // --- Serving (ours) ----------------------------------------------------------------------------
    /// Threads that serve requests and make outbound calls, 1 to 64 (default 1). One thread answers
    /// tens of thousands of token requests a second with the fewest wake-ups per request (lowest CPU per
    /// request and memory, measured in docs/benchmark-auth.md); more only help a replica whose one core
    /// is saturated. Scale out with replicas first.
    pub const LIVEKIT_WORKER_THREADS: &str = "LIVEKIT_WORKER_THREADS";
    // --- Delegation across replicas (ours) ------------------------------------------------------
    /// This replica's stable name in Redis (leases, heartbeat, inbox), e.g. the pod name: a restarted
    /// container with the same name reclaims its delegation jobs at once. 1 to 128 characters of
    /// `A-Z a-z 0-9 . _ -`; unique among the replicas sharing one Redis. Default: a random name per
    /// process.
    pub const LIVEKIT_REPLICA_ID: &str = "LIVEKIT_REPLICA_ID";

    // --- Application-service (AS) mode, lk-jwt-service's names (as-mode spec §2) ----------------
    /// Token the service sends to its homeserver.
    pub const LIVEKIT_AS_TOKEN: &str = "LIVEKIT_AS_TOKEN";
    /// Token the homeserver sends to the service.
    pub const LIVEKIT_HS_TOKEN: &str = "LIVEKIT_HS_TOKEN";
    /// Path of the registration YAML; its top-level `as_token` and `hs_token` win over the two above.
    pub const LIVEKIT_AS_REGISTRATION_FILE: &str = "LIVEKIT_AS_REGISTRATION_FILE";
    /// The server the service is registered with; its users are "local".
    pub const LIVEKIT_HS_SERVER_NAME: &str = "LIVEKIT_HS_SERVER_NAME";
    /// Seconds between membership sweeps (default 30; 0 disables).
    pub const LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS: &str =
        "LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS";
    /// Rooms and LiveKit calls in flight during a sweep (ours, default 8).
    pub const LIVEKIT_MEMBERSHIP_CHECK_CONCURRENCY: &str = "LIVEKIT_MEMBERSHIP_CHECK_CONCURRENCY";
    /// Exactly `true` grants `canUpdateOwnMetadata` on AS tokens.
    pub const LIVEKIT_CAN_UPDATE_OWN_METADATA: &str = "LIVEKIT_CAN_UPDATE_OWN_METADATA";
    /// Origins whose users may publish with a server-to-server token (`*` = all).
    pub const LIVEKIT_REMOTE_CAN_PUBLISH_HOMESERVERS: &str =
        "LIVEKIT_REMOTE_CAN_PUBLISH_HOMESERVERS";
    /// Exactly `true`: the standalone token endpoints also check room membership (needs AS mode).
    pub const LIVEKIT_REQUIRE_MEMBERSHIP: &str = "LIVEKIT_REQUIRE_MEMBERSHIP";
}

/// The one value of [`env::LIVEKIT_INSECURE_SKIP_VERIFY_TLS`] that disables verification.
pub const INSECURE_SKIP_VERIFY_TLS_VALUE: &str = "YES_I_KNOW_WHAT_I_AM_DOING";

/// Port the service listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8080;

/// HTTP paths the service serves.
pub mod path {
    /// MSC4195 token endpoint.
    pub const GET_TOKEN: &str = "/get_token";
    /// Legacy token endpoint.
    pub const SFU_GET: &str = "/sfu/get";
    /// Delegation of a delayed leave event.
    pub const DELEGATE_DELAYED_LEAVE: &str = "/delegate_delayed_leave";
    /// LiveKit webhook receiver.
    pub const SFU_WEBHOOK: &str = "/sfu_webhook";
    /// Liveness and readiness.
    pub const HEALTHZ: &str = "/healthz";
    /// Prometheus metrics.
    pub const METRICS: &str = "/metrics";

    /// Paths a public Ingress routes to the service (health, metrics and the webhook stay internal).
    pub const PUBLIC: [&str; 3] = [GET_TOKEN, SFU_GET, DELEGATE_DELAYED_LEAVE];
}

/// The allowlist entry that, alone, makes every homeserver full-access.
pub const FULL_ACCESS_WILDCARD: &str = "*";
