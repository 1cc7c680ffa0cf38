//! The Redis layout of delegated-leave jobs and every Redis operation on it (spec §5.6).
//!
//! The reference's layout is kept byte for byte so that a deployment can switch images without losing
//! in-flight jobs, and back:
//!
//! - HASH `lk-jwt:jobs`; field = the JSON array `["<room alias>","<identity>"]` as Go's `json.Marshal`
//!   writes it (HTML-escaped); value = `{"Params":{"DelayId","DelayTimeout"(int64 ns),"ServerName",
//!   "LiveKitRoom","LiveKitIdentity"},"RestartedAt"(RFC 3339, nanoseconds)}`.
//! - Ours on top, ignored by the reference's reader: a `"Generation"` member in the value (absent in
//!   entries the reference wrote, which count as generation ""), a `"Connected": true` member once the
//!   participant was seen (so that a job resumed elsewhere knows a leave must be sent), lease keys
//!   `lk-jwt:lease:<field>`, per-replica heartbeats `lk-jwt:replica:<replica>` and per-replica signal
//!   inboxes `lk-jwt:inbox:<replica>`; see [`super::ownership`] for what they mean. The value's
//!   format is [`super::record`]'s; the scripts here only read its `Generation`.
//!
//! Every write that must not race with another replica is one Lua script, so it is atomic in Redis.
//! The scripts touch keys they derive from hash fields, which a standalone Redis (the reference's only
//! supported kind) allows; Redis Cluster is not supported, as by the reference.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

/// The reference's hash of jobs.
pub const JOBS_KEY: &str = "lk-jwt:jobs";
/// Prefix of a job's lease key; the rest is the job's hash field.
pub const LEASE_PREFIX: &str = "lk-jwt:lease:";
/// Prefix of a replica's list of signals forwarded to it; the rest is the replica ID.
pub const INBOX_PREFIX: &str = "lk-jwt:inbox:";
/// Prefix of a replica's heartbeat key (present while the replica lives); the rest is the replica ID.
pub const HEARTBEAT_PREFIX: &str = "lk-jwt:replica:";

/// Redis went wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid Redis URL: {0}")]
    Url(redis::RedisError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The generation of a stored value, or nil when the value does not look like a job (shared by the
/// scripts below; such entries are left alone, as the reference skips entries it cannot parse).
const LUA_GENERATION_OF: &str = r"
local function generation_of(value)
  local ok, job = pcall(cjson.decode, value)
  if not ok or type(job) ~= 'table' or type(job['Params']) ~= 'table'
     or type(job['RestartedAt']) ~= 'string' then
    return nil
  end
  local generation = job['Generation']
  if generation == nil or generation == cjson.null then return '' end
  if type(generation) ~= 'string' then return nil end
  return generation
end
";

/// KEYS: jobs, lease. ARGV: field, value, holder, ttl ms. Files a new job and its owner in one step,
/// replacing whatever was filed under the field (a replaced job's driver sees the new holder).
const LUA_CREATE: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1
";

/// The replica named in a lease value `<replica>/<generation>`.
const LUA_REPLICA_OF: &str = r"
local function replica_of(holder)
  local at = string.find(holder, '/', 1, true)
  if at then return string.sub(holder, 1, at - 1) end
  return holder
end
";

/// KEYS: jobs, lease. ARGV: field, holder, generation, ttl ms, value, write ('1' or '0'). 1 if the
/// caller still drives the job, 0 if not. When it does, its lease is extended (or re-taken if it lapsed
/// and nobody else took it), the value is written if asked, and re-filed if the entry vanished (a Redis
/// that restarted without its data): a running job is never dropped because Redis forgot it.
const LUA_KEEP: &str = r"
local value = redis.call('HGET', KEYS[1], ARGV[1])
if value and generation_of(value) ~= ARGV[3] then return 0 end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[2] then return 0 end
if not value or ARGV[6] == '1' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[5]) end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
return 1
";

/// KEYS: jobs, lease. ARGV: field, holder, generation. Deletes the job if it is still this generation,
/// and the lease if the caller holds it.
const LUA_FINISH: &str = r"
local deleted = 0
local value = redis.call('HGET', KEYS[1], ARGV[1])
if value and generation_of(value) == ARGV[3] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  deleted = 1
end
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end
return deleted
";

/// KEYS: lease. ARGV: holder. Gives the lease up if the caller holds it.
const LUA_RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Whether a lease value names a replica that is gone: one without a heartbeat (`me` never is).
const LUA_HOLDER_GONE: &str = r"
local function holder_gone(holder, heartbeat_prefix, me)
  local replica = replica_of(holder)
  if replica == me then return false end
  return redis.call('EXISTS', heartbeat_prefix .. replica) == 0
end
";

/// KEYS: jobs. ARGV: lease prefix, replica, ttl ms, heartbeat prefix, own ('1': also jobs leased to
/// this replica ID, at startup). Leases to the caller every job nobody holds, or whose holder has no
/// heartbeat, and returns {{field, value, field, value, ...}, {replicas whose jobs were taken}}.
const LUA_ADOPT_ORPHANS: &str = r"
local adopted, gone, seen = {}, {}, {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local field, value = all[i], all[i + 1]
  local lease = ARGV[1] .. field
  local holder = redis.call('GET', lease)
  local orphan = not holder
  if holder and holder_gone(holder, ARGV[4], ARGV[2]) then
    orphan = true
    local replica = replica_of(holder)
    if not seen[replica] then
      seen[replica] = true
      gone[#gone + 1] = replica
    end
  end
  if holder and ARGV[5] == '1' and replica_of(holder) == ARGV[2] then orphan = true end
  if orphan then
    local generation = generation_of(value)
    if generation then
      redis.call('SET', lease, ARGV[2] .. '/' .. generation, 'PX', ARGV[3])
      adopted[#adopted + 1] = field
      adopted[#adopted + 1] = value
    end
  end
end
return {adopted, gone}
";

/// KEYS: jobs, lease. ARGV: field, replica, ttl ms, heartbeat prefix. Where a signal for the job must go:
/// {} if there is no job, else {holder, value, previous}, after leasing the job to the caller if nobody
/// held it or its holder has no heartbeat (`previous` then names that replica, else is '').
const LUA_ROUTE: &str = r"
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then return {} end
local holder = redis.call('GET', KEYS[2])
local previous = ''
if holder then
  if not holder_gone(holder, ARGV[4], ARGV[2]) then return {holder, value, ''} end
  previous = replica_of(holder)
end
local generation = generation_of(value)
if not generation then return {} end
holder = ARGV[2] .. '/' .. generation
redis.call('SET', KEYS[2], holder, 'PX', ARGV[3])
return {holder, value, previous}
";

/// KEYS: jobs, lease. ARGV: field, value. Deletes the job and its lease if the entry is still `value`.
const LUA_PURGE: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
";

/// KEYS: inbox. Takes every message of a (dead replica's) inbox at once.
const LUA_DRAIN: &str = r"
local messages = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return messages
";

/// Who holds a job when a signal arrives for it.
#[derive(Debug, PartialEq, Eq)]
pub enum Holder {
    /// No job is filed under the field.
    NoJob,
    /// `holder` (possibly the caller, who has just adopted an orphan) holds the job's lease;
    /// `previous` names the replica without a heartbeat it was taken from, if any.
    Held {
        holder: String,
        value: String,
        previous: Option<String>,
    },
}

/// The Redis connection and the scripts.
#[derive(Clone)]
pub struct JobStore {
    connection: ConnectionManager,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    create: Script,
    keep: Script,
    finish: Script,
    release: Script,
    adopt_orphans: Script,
    route: Script,
    purge: Script,
    drain: Script,
}

impl std::fmt::Debug for JobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobStore").finish_non_exhaustive()
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl JobStore {
    /// Connects and checks the connection with PING. The URL is never echoed (it may hold a password).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(StoreError::Url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        let mut connection = client.get_connection_manager_with_config(config).await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await?;
        let with_helper = |body: &str| Script::new(&format!("{LUA_GENERATION_OF}{body}"));
        let with_helpers = |body: &str| {
            Script::new(&format!(
                "{LUA_GENERATION_OF}{LUA_REPLICA_OF}{LUA_HOLDER_GONE}{body}"
            ))
        };
        Ok(Self {
            connection,
            scripts: std::sync::Arc::new(Scripts {
                create: Script::new(LUA_CREATE),
                keep: with_helper(LUA_KEEP),
                finish: with_helper(LUA_FINISH),
                release: Script::new(LUA_RELEASE),
                adopt_orphans: with_helpers(LUA_ADOPT_ORPHANS),
                route: with_helpers(LUA_ROUTE),
                purge: Script::new(LUA_PURGE),
                drain: Script::new(LUA_DRAIN),
            }),
        })
    }

    fn lease_key(field: &str) -> String {
        format!("{LEASE_PREFIX}{field}")
    }

    /// Files a job under `field` and leases it to `holder`, replacing any previous job and lease.
    pub async fn create(
        &self,
        field: &str,
        value: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.scripts
            .create
            .key(JOBS_KEY)
            .key(Self::lease_key(field))
            .arg(field)
            .arg(value)
            .arg(holder)
            .arg(ttl_ms(ttl))
            .invoke_async::<i64>(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    /// Whether `holder` still drives generation `generation` of the job; if so, extends (or re-takes)
    /// the lease and writes `value` when `write` is set or the entry vanished.
    pub async fn keep(
        &self,
        field: &str,
        holder: &str,
        generation: &str,
        ttl: Duration,
        value: &str,
        write: bool,
    ) -> Result<bool, StoreError> {
        let held: i64 = self
            .scripts
            .keep
            .key(JOBS_KEY)
            .key(Self::lease_key(field))
            .arg(field)
            .arg(holder)
            .arg(generation)
            .arg(ttl_ms(ttl))
            .arg(value)
            .arg(if write { "1" } else { "0" })
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(held == 1)
    }

    /// Deletes the job if it is still generation `generation`, and the lease if `holder` holds it.
    pub async fn finish(
        &self,
        field: &str,
        holder: &str,
        generation: &str,
    ) -> Result<bool, StoreError> {
        let deleted: i64 = self
            .scripts
            .finish
            .key(JOBS_KEY)
            .key(Self::lease_key(field))
            .arg(field)
            .arg(holder)
            .arg(generation)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(deleted == 1)
    }

    /// Gives up the lease if `holder` holds it; the job stays filed for someone else to adopt.
    pub async fn release(&self, field: &str, holder: &str) -> Result<(), StoreError> {
        self.scripts
            .release
            .key(Self::lease_key(field))
            .arg(holder)
            .invoke_async::<i64>(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    /// Leases to `replica` every job nobody holds or whose holder has no heartbeat (and, with `own`,
    /// every job leased to `replica` itself); returns them as (field, value), and the replicas whose
    /// jobs were taken.
    pub async fn adopt_orphans(
        &self,
        replica: &str,
        ttl: Duration,
        own: bool,
    ) -> Result<(Vec<(String, String)>, Vec<String>), StoreError> {
        let (flat, gone): (Vec<String>, Vec<String>) = self
            .scripts
            .adopt_orphans
            .key(JOBS_KEY)
            .arg(LEASE_PREFIX)
            .arg(replica)
            .arg(ttl_ms(ttl))
            .arg(HEARTBEAT_PREFIX)
            .arg(if own { "1" } else { "0" })
            .invoke_async(&mut self.connection.clone())
            .await?;
        let mut pairs = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(field), Some(value)) = (items.next(), items.next()) {
            pairs.push((field, value));
        }
        Ok((pairs, gone))
    }

    /// Every stored job as (field, value).
    pub async fn all(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(redis::cmd("HGETALL")
            .arg(JOBS_KEY)
            .query_async(&mut self.connection.clone())
            .await?)
    }

    /// Deletes the job under `field` and its lease if its entry still reads `value`.
    pub async fn purge(&self, field: &str, value: &str) -> Result<bool, StoreError> {
        let purged: i64 = self
            .scripts
            .purge
            .key(JOBS_KEY)
            .key(Self::lease_key(field))
            .arg(field)
            .arg(value)
            .invoke_async(&mut self.connection.clone())
            .await?;
        Ok(purged == 1)
    }

    /// Marks `replica` alive for `ttl`.
    pub async fn heartbeat(&self, replica: &str, ttl: Duration) -> Result<(), StoreError> {
        redis::cmd("SET")
            .arg(format!("{HEARTBEAT_PREFIX}{replica}"))
            .arg("alive")
            .arg("PX")
            .arg(ttl_ms(ttl))
            .query_async::<()>(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    /// Takes every message out of `replica`'s inbox.
    pub async fn drain_inbox(&self, replica: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .scripts
            .drain
            .key(format!("{INBOX_PREFIX}{replica}"))
            .invoke_async(&mut self.connection.clone())
            .await?)
    }

    /// Who holds the job filed under `field`, leasing it to `replica` if nobody (alive) does.
    pub async fn route(
        &self,
        field: &str,
        replica: &str,
        ttl: Duration,
    ) -> Result<Holder, StoreError> {
        let reply: Vec<String> = self
            .scripts
            .route
            .key(JOBS_KEY)
            .key(Self::lease_key(field))
            .arg(field)
            .arg(replica)
            .arg(ttl_ms(ttl))
            .arg(HEARTBEAT_PREFIX)
            .invoke_async(&mut self.connection.clone())
            .await?;
        let mut reply = reply.into_iter();
        Ok(match (reply.next(), reply.next(), reply.next()) {
            (Some(holder), Some(value), previous) => Holder::Held {
                holder,
                value,
                previous: previous.filter(|previous| !previous.is_empty()),
            },
            _ => Holder::NoJob,
        })
    }

    /// Appends a message to `replica`'s inbox; the inbox expires `ttl` after its last message, so the
    /// inbox of a replica that died does not linger.
    pub async fn push_inbox(
        &self,
        replica: &str,
        message: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = format!("{INBOX_PREFIX}{replica}");
        redis::pipe()
            .atomic()
            .cmd("RPUSH")
            .arg(&key)
            .arg(message)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms(ttl))
            .ignore()
            .query_async::<()>(&mut self.connection.clone())
            .await?;
        Ok(())
    }

    /// A connection of its own for blocking reads of an inbox (a blocking command would stall every
    /// other command sharing the main connection).
    pub async fn inbox_reader(url: &str, wait: Duration) -> Result<InboxReader, StoreError> {
        let client = Client::open(url).map_err(StoreError::Url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(wait + Duration::from_secs(5)));
        Ok(InboxReader {
            connection: client.get_connection_manager_with_config(config).await?,
            wait,
        })
    }
}

/// Blocking reads of one replica's inbox.
pub struct InboxReader {
    connection: ConnectionManager,
    wait: Duration,
}

impl InboxReader {
    /// The next message of `replica`'s inbox, or None after waiting for one for a while.
    pub async fn next(&mut self, replica: &str) -> Result<Option<String>, StoreError> {
        let key = format!("{INBOX_PREFIX}{replica}");
        let popped: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&key)
            .arg(self.wait.as_secs_f64())
            .query_async(&mut self.connection)
            .await?;
        Ok(popped.map(|(_, message)| message))
    }
}
