//! Recently verified OpenID tokens, so that a token presented again does not cost a homeserver round
//! trip (a client typically asks for a token on every join and reconnect).
//!
//! Entries are keyed by SHA-256 of (server name, token): the raw token is never stored. All entries live
//! for the same TTL, so insertion order is expiry order and a queue is enough to evict the oldest when
//! the cache is full or entries have expired.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::lock;

/// A cache key: the digest of a server name and a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key([u8; 32]);

impl Key {
    pub(crate) fn new(server_name: &str, access_token: &str) -> Self {
        let mut digest = Sha256::new();
        // The length prefix keeps ("a", "bc") and ("ab", "c") apart.
        digest.update((server_name.len() as u64).to_be_bytes());
        digest.update(server_name.as_bytes());
        digest.update(access_token.as_bytes());
        Self(digest.finalize().into())
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // A digest is already uniformly distributed: eight of its bytes are a perfect hash.
        let mut head = [0; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(head));
    }
}

/// Passes [`Key`]'s precomputed hash through instead of hashing it again.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than `write_u64` is hashed; fold the bytes in.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

struct Entry {
    sub: Box<str>,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry, BuildHasherDefault<KeyHasher>>,
    /// Keys in insertion (and so expiry) order, with the expiry they were inserted with.
    order: VecDeque<(Key, Instant)>,
}

/// A bounded map from token digests to verified user IDs.
pub(crate) struct TokenCache {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

impl TokenCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            inner: Mutex::default(),
        }
    }

    /// The user ID verified for `key`, if that was less than the TTL ago.
    pub(crate) fn get(&self, key: &Key, now: Instant) -> Option<String> {
        let inner = lock(&self.inner);
        let entry = inner.entries.get(key)?;
        (entry.expires > now).then(|| entry.sub.to_string())
    }

    /// Remembers that `key` was verified as `sub` at `now`.
    pub(crate) fn insert(&self, key: Key, sub: &str, now: Instant) {
        let expires = now + self.ttl;
        let mut inner = lock(&self.inner);
        while let Some(&(oldest, oldest_expires)) = inner.order.front() {
            if oldest_expires > now && inner.order.len() < self.capacity {
                break;
            }
            inner.order.pop_front();
            // A key inserted again since has a later expiry; only its own queue entry removes it.
            if inner
                .entries
                .get(&oldest)
                .is_some_and(|entry| entry.expires == oldest_expires)
            {
                inner.entries.remove(&oldest);
            }
        }
        inner.entries.insert(
            key,
            Entry {
                sub: sub.into(),
                expires,
            },
        );
        inner.order.push_back((key, expires));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn keys_depend_on_both_parts_and_on_where_they_split() {
        let key = Key::new("example.com", "token");
        assert_eq!(key, Key::new("example.com", "token"));
        assert_ne!(key, Key::new("example.com", "token2"));
        assert_ne!(key, Key::new("example.org", "token"));
        assert_ne!(Key::new("a", "bc"), Key::new("ab", "c"));
    }

    #[test]
    fn remembers_for_the_ttl_only() {
        let cache = TokenCache::new(TTL, 10);
        let now = Instant::now();
        let key = Key::new("hs", "t");
        assert_eq!(cache.get(&key, now), None);
        cache.insert(key, "@u:hs", now);
        assert_eq!(cache.get(&key, now + TTL / 2).as_deref(), Some("@u:hs"));
        assert_eq!(cache.get(&key, now + TTL), None);
    }

    #[test]
    fn evicts_the_oldest_entry_when_full_and_expired_ones_on_insert() {
        let cache = TokenCache::new(TTL, 3);
        let now = Instant::now();
        let keys: Vec<Key> = (0..4).map(|i| Key::new("hs", &format!("t{i}"))).collect();
        for (i, key) in keys.iter().enumerate() {
            cache.insert(
                *key,
                &format!("@u{i}:hs"),
                now + Duration::from_secs(i as u64),
            );
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.get(&keys[0], now),
            None,
            "the oldest entry is evicted"
        );
        assert_eq!(cache.get(&keys[3], now).as_deref(), Some("@u3:hs"));

        // Long after, one insert sweeps every expired entry.
        cache.insert(Key::new("hs", "late"), "@late:hs", now + 10 * TTL);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_reinserted_key_survives_the_sweep_of_its_older_queue_entry() {
        let cache = TokenCache::new(TTL, 10);
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let key = Key::new("hs", "t");
        // Two concurrent misses for one token both insert it.
        cache.insert(key, "@u:hs", now);
        cache.insert(key, "@u:hs", now + second);
        // Sweeping the first queue entry must not drop the entry the second insert made.
        cache.insert(Key::new("hs", "other"), "@o:hs", now + TTL + second / 2);
        assert_eq!(
            cache.get(&key, now + TTL + second / 2).as_deref(),
            Some("@u:hs")
        );
        assert_eq!(cache.get(&key, now + TTL + second), None);
    }
}
