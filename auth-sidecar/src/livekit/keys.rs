//! The LiveKit API keys the service holds: one signs every JWT it issues, all of them verify what LiveKit
//! sends back (webhooks).
//!
//! A key set never prints its secrets: `Debug` shows the key names only.

use std::fmt;

use jsonwebtoken::EncodingKey;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

/// Why a key set could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeysError {
    /// A key name or a secret is empty.
    #[error("API key and secret must not be empty")]
    Empty,
    /// The keys file holds no entry.
    #[error("the file contains no keys")]
    NoKeys,
    /// The keys file is not a YAML map of strings.
    #[error("expected a YAML map of `key: secret` lines: {0}")]
    Yaml(String),
    /// A key name appears twice in the keys file.
    #[error("key {0:?} appears more than once")]
    Duplicate(String),
}

/// One API key and its secret. Both are non-empty.
struct ApiKey {
    key: String,
    secret: String,
}

/// The API keys, in file order; the first one signs.
pub struct KeySet {
    keys: Vec<ApiKey>,
    /// HMAC key of the first entry, built once: it signs every token the service issues.
    signing: EncodingKey,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet")
            .field(
                "keys",
                &self.keys.iter().map(|k| &k.key).collect::<Vec<_>>(),
            )
            .field("secrets", &"<redacted>")
            .finish()
    }
}

impl KeySet {
    /// A key set with a single key (`LIVEKIT_KEY` / `LIVEKIT_SECRET` and their file variants).
    pub fn single(key: String, secret: String) -> Result<Self, KeysError> {
        Self::from_pairs(vec![(key, secret)])
    }

    /// Parses a LiveKit `keys.yaml`: a map of `key: secret`. The first entry in file order signs.
    pub fn from_yaml(text: &str) -> Result<Self, KeysError> {
        let pairs = serde_yaml::from_str::<OrderedPairs>(text)
            .map_err(|e| KeysError::Yaml(e.to_string()))?
            .0;
        Self::from_pairs(pairs)
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, KeysError> {
        let mut keys: Vec<ApiKey> = Vec::with_capacity(pairs.len());
        for (key, secret) in pairs {
            if key.is_empty() || secret.is_empty() {
                return Err(KeysError::Empty);
            }
            if keys.iter().any(|k| k.key == key) {
                return Err(KeysError::Duplicate(key));
            }
            keys.push(ApiKey { key, secret });
        }
        let first = keys.first().ok_or(KeysError::NoKeys)?;
        let signing = EncodingKey::from_secret(first.secret.as_bytes());
        Ok(Self { keys, signing })
    }

    /// The key that signs issued tokens (their `iss`).
    pub fn signing_key_id(&self) -> &str {
        // `from_pairs` refuses an empty list, so the first entry exists.
        &self.keys[0].key
    }

    /// The HMAC key that signs issued tokens.
    pub fn signing_key(&self) -> &EncodingKey {
        &self.signing
    }

    /// The secret of `key`, if the service knows that key (to verify tokens LiveKit signed).
    pub fn secret_for(&self, key: &str) -> Option<&str> {
        self.keys
            .iter()
            .find(|k| k.key == key)
            .map(|k| k.secret.as_str())
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a key set holds at least one key. Here because clippy pairs it with `len`.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A YAML map read as pairs in document order (a `HashMap` would lose which key comes first).
struct OrderedPairs(Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedPairs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = OrderedPairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of API key to secret")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedPairs, A::Error> {
                let mut pairs = Vec::new();
                // Scalars are read as their literal text, as LiveKit's own loader does.
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(OrderedPairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_key_signs_and_verifies() {
        let keys = KeySet::single("devkey".into(), "devsecret".into()).unwrap();
        assert_eq!(keys.signing_key_id(), "devkey");
        assert_eq!(keys.secret_for("devkey"), Some("devsecret"));
        assert_eq!(keys.secret_for("other"), None);
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn empty_key_or_secret_is_refused() {
        assert_eq!(
            KeySet::single(String::new(), "s".into()).unwrap_err(),
            KeysError::Empty
        );
        assert_eq!(
            KeySet::single("k".into(), String::new()).unwrap_err(),
            KeysError::Empty
        );
    }

    #[test]
    fn yaml_keeps_file_order_and_every_key() {
        let keys = KeySet::from_yaml("zkey: zsecret\nakey: asecret\nmkey: 12345\n").unwrap();
        assert_eq!(keys.signing_key_id(), "zkey");
        assert_eq!(keys.len(), 3);
        assert_eq!(keys.secret_for("akey"), Some("asecret"));
        // A secret that looks like a number keeps its literal text.
        assert_eq!(keys.secret_for("mkey"), Some("12345"));
    }

    #[test]
    fn yaml_errors() {
        assert_eq!(KeySet::from_yaml("{}").unwrap_err(), KeysError::NoKeys);
        assert_eq!(KeySet::from_yaml("").unwrap_err(), KeysError::NoKeys);
        assert_eq!(
            KeySet::from_yaml("# only a comment\n").unwrap_err(),
            KeysError::NoKeys
        );
        assert!(matches!(
            KeySet::from_yaml("- a\n- b\n"),
            Err(KeysError::Yaml(_))
        ));
        assert!(matches!(
            KeySet::from_yaml("k: [1, 2]\n"),
            Err(KeysError::Yaml(_))
        ));
        assert_eq!(KeySet::from_yaml("k: ''\n").unwrap_err(), KeysError::Empty);
        assert!(matches!(
            KeySet::from_yaml("k: a\nk: b\n"),
            Err(KeysError::Yaml(_) | KeysError::Duplicate(_))
        ));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let keys = KeySet::from_yaml("key1: topsecret1\nkey2: topsecret2\n").unwrap();
        let printed = format!("{keys:?}");
        assert!(printed.contains("key1") && printed.contains("key2"));
        assert!(!printed.contains("topsecret"), "{printed}");
    }
}
