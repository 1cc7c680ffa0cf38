//! Where the monitor keeps its entries: upstream's Redis hash (see [`super::entry`]) shared by every
//! replica, or memory when there is no Redis (as upstream); and the per-room sweep leases.
//!
//! Webhooks on any replica, token requests and sweeps all change entries, so every write is a
//! compare-and-set on the whole stored value (one Lua script): a write based on a stale read fails and the
//! caller reads again. The sweep lease of a Matrix room is the delegation engine's lease mechanism
//! (`lk-jwt:lease:` keys holding the replica's name with a TTL) under `lk-jwt:lease:monitor:<room_id>`:
//! taken with `SET NX PX` (or re-taken by the replica that already holds it, so that a lone replica sweeps
//! every interval), renewed while the room is being worked on, never deleted (left to expire, so that the
//! room is swept about once per interval whichever replica ticks first). The delegation job scripts cannot be
//! used as they are: they tie each lease to a job entry and its generation.
//!
//! A call whose connection turns out to have dropped (Redis restarted) is made once more: the connection
//! manager only reconnects after a call failed, and without the second try that call (say, tracking the
//! first token issued after a restart) would be lost. Every call is safe to repeat: reads, and the two
//! scripts, whose effect is the same when applied twice (a repeated compare-and-set that had applied
//! reports a conflict, and the caller reads again).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Cmd, FromRedisValue, RedisResult, Script, ScriptInvocation};

use super::entry::{Entry, Key, PARTICIPANTS_KEY};
use crate::delegation::store::{LEASE_PREFIX, StoreError};

/// The lease key of a Matrix room's sweeps.
pub fn lease_key(matrix_room_id: &str) -> String {
    format!("{LEASE_PREFIX}monitor:{matrix_room_id}")
}

/// KEYS: hash. ARGV: field, expected value ('' = absent), new value ('' = delete). 1 if applied.
const LUA_COMPARE_AND_SET: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then current = '' end
if current ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
return 1
";

/// KEYS: lease. ARGV: holder, ttl ms. Takes the lease if nobody or the caller holds it. 1 if taken.
const LUA_LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// A stored entry with the exact value it was read as (the compare-and-set's expectation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub entry: Entry,
    pub raw: String,
}

/// Every entry, and how many stored values could not be read.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub entries: Vec<Stored>,
    pub unreadable: usize,
}

/// Memory or Redis. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    Memory(Arc<Mutex<HashMap<String, String>>>),
    Redis(RedisStore),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Memory(_) => "Store::Memory",
            Self::Redis(_) => "Store::Redis",
        })
    }
}

/// The Redis connection and scripts.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    compare_and_set: Arc<Script>,
    lease: Arc<Script>,
}

impl RedisStore {
    async fn query<T: FromRedisValue>(&self, command: &Cmd) -> RedisResult<T> {
        again_if_dropped(|| {
            let mut connection = self.connection.clone();
            async move { command.query_async(&mut connection).await }
        })
        .await
    }

    async fn invoke<T: FromRedisValue>(&self, script: &ScriptInvocation<'_>) -> RedisResult<T> {
        again_if_dropped(|| {
            let mut connection = self.connection.clone();
            async move { script.invoke_async(&mut connection).await }
        })
        .await
    }
}

/// `call`, and once more if its connection had dropped (by then the manager is reconnecting).
async fn again_if_dropped<T, F, Fut>(mut call: F) -> RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    match call().await {
        Err(error) if error.is_connection_dropped() => call().await,
        other => other,
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Store {
    pub fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    /// Connects and checks the connection with PING. The URL is never echoed (it may hold a password).
    pub async fn redis(url: &str) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(StoreError::Url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let mut connection = client.get_connection_manager_with_config(config).await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await?;
        Ok(Self::Redis(RedisStore {
            connection,
            compare_and_set: Arc::new(Script::new(LUA_COMPARE_AND_SET)),
            lease: Arc::new(Script::new(LUA_LEASE)),
        }))
    }

    fn memory_map(
        map: &Mutex<HashMap<String, String>>,
    ) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // Every critical section is a single map operation: a poisoned map is still consistent.
        map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every stored entry.
    pub async fn all(&self) -> Result<Snapshot, StoreError> {
        let pairs: Vec<(String, String)> = match self {
            Self::Memory(map) => Self::memory_map(map)
                .iter()
                .map(|(field, value)| (field.clone(), value.clone()))
                .collect(),
            Self::Redis(redis) => {
                redis
                    .query(redis::cmd("HGETALL").arg(PARTICIPANTS_KEY))
                    .await?
            }
        };
        let mut snapshot = Snapshot::default();
        for (field, raw) in pairs {
            match Entry::parse(&field, &raw) {
                Ok(entry) => snapshot.entries.push(Stored { entry, raw }),
                Err(_) => snapshot.unreadable += 1,
            }
        }
        Ok(snapshot)
    }

    /// The entry stored for `key`; None if there is none (or it cannot be read, which a write replaces).
    pub async fn get(&self, key: &Key) -> Result<Option<Stored>, StoreError> {
        let field = key.field();
        let raw: Option<String> = match self {
            Self::Memory(map) => Self::memory_map(map).get(&field).cloned(),
            Self::Redis(redis) => {
                redis
                    .query(redis::cmd("HGET").arg(PARTICIPANTS_KEY).arg(&field))
                    .await?
            }
        };
        Ok(raw.and_then(|raw| {
            Entry::parse(&field, &raw)
                .ok()
                .map(|entry| Stored { entry, raw })
        }))
    }

    /// The raw value under `key`, readable or not ("" when absent): what a compare-and-set expects.
    pub async fn raw(&self, key: &Key) -> Result<String, StoreError> {
        let field = key.field();
        Ok(match self {
            Self::Memory(map) => Self::memory_map(map).get(&field).cloned(),
            Self::Redis(redis) => {
                redis
                    .query::<Option<String>>(redis::cmd("HGET").arg(PARTICIPANTS_KEY).arg(&field))
                    .await?
            }
        }
        .unwrap_or_default())
    }

    /// Writes `new` (None: deletes) under `key` if the stored value is still `expected` ("" = absent).
    pub async fn compare_and_set(
        &self,
        key: &Key,
        expected: &str,
        new: Option<&Entry>,
    ) -> Result<bool, StoreError> {
        let field = key.field();
        let new = new.map(Entry::to_json).unwrap_or_default();
        match self {
            Self::Memory(map) => {
                let mut map = Self::memory_map(map);
                if map.get(&field).map_or("", String::as_str) != expected {
                    return Ok(false);
                }
                if new.is_empty() {
                    map.remove(&field);
                } else {
                    map.insert(field, new);
                }
                Ok(true)
            }
            Self::Redis(redis) => {
                let applied: i64 = redis
                    .invoke(
                        redis
                            .compare_and_set
                            .key(PARTICIPANTS_KEY)
                            .arg(field)
                            .arg(expected)
                            .arg(new),
                    )
                    .await?;
                Ok(applied == 1)
            }
        }
    }

    /// Takes (or renews) the sweep lease of a Matrix room for `holder`. Without Redis there is one
    /// replica, which always holds it.
    pub async fn lease(
        &self,
        matrix_room_id: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Memory(_) => Ok(true),
            Self::Redis(redis) => {
                let taken: i64 = redis
                    .invoke(
                        redis
                            .lease
                            .key(lease_key(matrix_room_id))
                            .arg(holder)
                            .arg(ttl_ms(ttl)),
                    )
                    .await?;
                Ok(taken == 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn entry(identity: &str) -> Entry {
        Entry::new(
            "!r:hs",
            "@u:hs",
            Key {
                livekit_room: "lk".into(),
                livekit_identity: identity.into(),
            },
            datetime!(2026-07-23 10:00 UTC),
        )
    }

    #[tokio::test]
    async fn memory_compare_and_set() {
        let store = Store::memory();
        let first = entry("a");
        assert!(
            store
                .compare_and_set(&first.key, "", Some(&first))
                .await
                .unwrap()
        );
        assert!(
            !store
                .compare_and_set(&first.key, "", Some(&first))
                .await
                .unwrap(),
            "no longer absent"
        );
        let stored = store.get(&first.key).await.unwrap().unwrap();
        assert_eq!(stored.entry, first);
        let mut connected = first.clone();
        connected.connected_at = Some(datetime!(2026-07-23 10:01 UTC));
        assert!(
            store
                .compare_and_set(&first.key, &stored.raw, Some(&connected))
                .await
                .unwrap()
        );
        assert!(
            !store
                .compare_and_set(&first.key, &stored.raw, None)
                .await
                .unwrap(),
            "stale"
        );
        assert_eq!(store.all().await.unwrap().entries[0].entry, connected);
        let raw = store.raw(&first.key).await.unwrap();
        assert!(store.compare_and_set(&first.key, &raw, None).await.unwrap());
        assert!(store.all().await.unwrap().entries.is_empty());
        assert!(
            store
                .lease("!r:hs", "me", Duration::from_secs(1))
                .await
                .unwrap()
        );
    }

    /// A redis-server on `port` with no persistence, or None when it is not installed (outside CI).
    fn redis_server(port: u16) -> Option<std::process::Child> {
        let spawned = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => Some(child),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "redis-server is not installed"
                );
                eprintln!("SKIP: redis-server is not installed");
                None
            }
            Err(error) => panic!("could not start redis-server: {error}"),
        }
    }

    async fn answering(port: u16) {
        let url = format!("redis://127.0.0.1:{port}");
        for _ in 0..100 {
            if Store::redis(&url).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on {port} did not answer within 5 s");
    }

    #[tokio::test]
    async fn the_first_write_after_a_redis_restart_is_not_lost() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let Some(mut server) = redis_server(port) else {
            return;
        };
        answering(port).await;
        let store = Store::redis(&format!("redis://127.0.0.1:{port}"))
            .await
            .unwrap();
        let first = entry("a");
        assert!(
            store
                .compare_and_set(&first.key, "", Some(&first))
                .await
                .unwrap()
        );

        // Killed and started again at once: the store's connection is now a dead one.
        server.kill().unwrap();
        server.wait().unwrap();
        let mut server = redis_server(port).unwrap();
        answering(port).await;

        let second = entry("b");
        let written = store.compare_and_set(&second.key, "", Some(&second)).await;
        let read = store.get(&second.key).await;
        server.kill().unwrap();
        server.wait().unwrap();
        assert!(written.unwrap(), "the write after the restart applied");
        assert_eq!(read.unwrap().unwrap().entry, second);
    }

    #[test]
    fn lease_keys_sit_beside_the_delegation_leases() {
        assert_eq!(lease_key("!r:hs"), "lk-jwt:lease:monitor:!r:hs");
    }
}
