//! Delegated delayed leaves (spec §5): the Redis layout and leases (`store`), one service (`service`),
//! and several replicas sharing a Redis (`replicas`).
//!
//! The services run with the hidden test-only `MATRIXRTC_AUTH_TIME_SCALE=0.1`, which shrinks the
//! service's own intervals (the 1 h waiting cap, backoff, leases, scans) tenfold; delay timeouts come
//! from the requests and are simply short (1–3 s).

mod replicas;
mod service;
mod store;

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::support::World;
use crate::support::body::{DEVICE_ID, ROOM_ID, SLOT_ID, openid_token};
use crate::support::client_server::FakeClientServerApi;
use crate::support::jwt::hash;
use crate::support::redis::RedisServer;
use crate::support::service::ServiceConfig;

/// The service's own intervals are a tenth of the real ones.
const TIME_SCALE: &str = "0.1";
/// Generous bound for "this call happens soon".
const SOON: Duration = Duration::from_secs(5);

/// Fakes of everything a delegating service talks to.
pub struct Setup {
    pub world: World,
    pub cs: FakeClientServerApi,
    pub redis: Option<RedisServer>,
}

impl Setup {
    /// Without Redis.
    pub async fn start() -> Self {
        Self {
            world: World::start().await,
            cs: FakeClientServerApi::start().await,
            redis: None,
        }
    }

    /// With a real redis-server; None (after a loud SKIP line) if it is not installed.
    pub async fn with_redis(test: &str) -> Option<Self> {
        let redis = RedisServer::start_or_skip(test).await?;
        Some(Self {
            redis: Some(redis),
            ..Self::start().await
        })
    }

    /// A full-access service whose homeserver's client-server API is the fake, by override.
    pub fn service(&self) -> ServiceConfig {
        let mut config = self
            .world
            .service()
            .set(
                "LIVEKIT_CS_API_URL_OVERRIDES",
                &format!("{}={}", self.world.hs.server_name(), self.cs.base_url()),
            )
            .set("MATRIXRTC_AUTH_TIME_SCALE", TIME_SCALE);
        if let Some(redis) = &self.redis {
            config = config.set("LIVEKIT_REDIS_URL", &redis.url());
        }
        config
    }

    /// Registers a user of the fake homeserver behind `token`.
    pub fn user(&self, token: &str, localpart: &str) -> String {
        self.world.hs.add_user(token, localpart)
    }

    /// A `/delegate_delayed_leave` (or `/get_token`) body for `user` as member `member_id`.
    pub fn body(
        &self,
        token: &str,
        user: &str,
        member_id: &str,
        delay_id: &str,
        timeout_ms: u64,
    ) -> Value {
        json!({
            "room_id": ROOM_ID,
            "slot_id": SLOT_ID,
            "openid_token": openid_token(&self.world.hs.server_name(), token),
            "member": {"id": member_id, "claimed_user_id": user, "claimed_device_id": DEVICE_ID},
            "delay_id": delay_id,
            "delay_timeout": timeout_ms,
        })
    }

    /// A connection to the Redis of this setup.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.redis
            .as_ref()
            .expect("a setup with Redis")
            .connect()
            .await
    }

    /// The stored jobs, field → parsed value.
    pub async fn stored_jobs(&self) -> Vec<(String, Value)> {
        let mut connection = self.redis().await;
        let all: Vec<(String, String)> = connection.hgetall("lk-jwt:jobs").await.expect("HGETALL");
        all.into_iter()
            .map(|(field, value)| (field, serde_json::from_str(&value).expect("stored JSON")))
            .collect()
    }
}

/// The room alias every test call uses.
pub fn room() -> String {
    hash(&[ROOM_ID, SLOT_ID])
}

/// The LiveKit identity of `user` as member `member_id` (on the test device).
pub fn identity(user: &str, member_id: &str) -> String {
    hash(&[user, DEVICE_ID, member_id])
}

/// The reference's hash field for a participant.
pub fn field(identity: &str) -> String {
    serde_json::to_string(&[room(), identity.to_owned()]).expect("field JSON")
}

/// Sleeps (tests that assert something does *not* happen).
pub async fn pause(seconds: f64) {
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
}
