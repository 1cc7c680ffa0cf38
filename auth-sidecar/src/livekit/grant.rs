//! What a LiveKit token says: the room alias and identity hashes (spec §4) and the signed JWTs (§3.3).
//!
//! ## The hash `H`
//! `H(list)` is the unpadded standard base64 of the SHA-256 of `list` as a JSON array of strings with no
//! whitespace. The reference serialises with Go's `json.Marshal`, which HTML-escapes: `<`, `>`, `&`,
//! U+2028 and U+2029 become `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`, where Matrix canonical
//! JSON and `serde_json` write them raw. **We follow Go**, so that every room and participant keeps the
//! name the reference gives it: a mixed deployment (or a rollback) then agrees on aliases and
//! identities, and delegation jobs persisted by the reference still match. The rest of the escaping is
//! Go's too (see [`crate::go_json`]). Inputs are Rust strings, so there is no invalid UTF-8 to replace here; request decoding already
//! turned invalid bytes into U+FFFD the way Go's decoder does.
//!
//! ## Tokens
//! HS256, header `{"alg":"HS256","typ":"JWT"}` exactly as LiveKit's Go SDK writes it. The header segment
//! is a constant and the HMAC key is built once ([`KeySet::signing_key`]), so minting is one small JSON
//! serialisation, one base64 pass and one HMAC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::keys::KeySet;
use crate::go_json;

/// The slot `/sfu/get` hashes every room with: Element Call's only slot.
pub const LEGACY_SLOT_ID: &str = "m.call#ROOM";

/// How long a participant token is valid.
pub const PARTICIPANT_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// `H([room_id, slot_id])`: the LiveKit room name.
pub fn room_alias(room_id: &str, slot_id: &str) -> String {
    hash_json_strings(&[room_id, slot_id])
}

/// `H([user_id, device_id, member_id])`: the LiveKit identity of a `/get_token` participant.
pub fn participant_identity(user_id: &str, device_id: &str, member_id: &str) -> String {
    hash_json_strings(&[user_id, device_id, member_id])
}

/// `H(parts)` with Go's escaping (see the module docs).
pub fn hash_json_strings(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"[");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b",");
        }
        hasher.update(b"\"");
        go_json::escape(part, |piece| hasher.update(piece));
        hasher.update(b"\"");
    }
    hasher.update(b"]");
    STANDARD_NO_PAD.encode(hasher.finalize())
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// Serialising the claims or signing failed (not expected with an HMAC key).
    #[error("could not sign token: {0}")]
    Sign(String),
    /// The clock is before 1970.
    #[error("system clock is before the Unix epoch")]
    Clock,
}

/// The `video` grant of a LiveKit token; absent (`false`/`None`) fields are omitted like Go's `omitempty`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<&'a str>,
    #[serde(skip_serializing_if = "is_false")]
    pub room_create: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub room_join: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub room_admin: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub can_publish: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub can_subscribe: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub can_update_own_metadata: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl<'a> VideoGrant<'a> {
    /// What every participant gets (§3.3), full-access or not. Never `roomCreate`: it would also allow
    /// DeleteRoom.
    pub fn participant(room: &'a str) -> Self {
        Self {
            room: Some(room),
            room_join: true,
            can_publish: true,
            can_subscribe: true,
            can_update_own_metadata: true,
            ..Self::default()
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    nbf: u64,
    exp: u64,
    video: &'a VideoGrant<'a>,
}

/// `base64url({"alg":"HS256","typ":"JWT"})`, the header LiveKit's Go SDK writes.
const HEADER_SEGMENT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Seconds since the Unix epoch.
pub fn unix_seconds(now: SystemTime) -> Result<u64, GrantError> {
    now.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| GrantError::Clock)
}

/// Signs a token for `subject` (none for service tokens) valid from `now` for `ttl`.
pub fn mint(
    keys: &KeySet,
    subject: Option<&str>,
    video: &VideoGrant<'_>,
    now: SystemTime,
    ttl: Duration,
) -> Result<String, GrantError> {
    let nbf = unix_seconds(now)?;
    let claims = Claims {
        iss: keys.signing_key_id(),
        sub: subject,
        nbf,
        exp: nbf + ttl.as_secs(),
        video,
    };
    let json = serde_json::to_vec(&claims).map_err(|e| GrantError::Sign(e.to_string()))?;
    let mut token = String::with_capacity(HEADER_SEGMENT.len() + json.len() * 4 / 3 + 48);
    token.push_str(HEADER_SEGMENT);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&json, &mut token);
    let signature =
        jsonwebtoken::crypto::sign(token.as_bytes(), keys.signing_key(), Algorithm::HS256)
            .map_err(|e| GrantError::Sign(e.to_string()))?;
    token.push('.');
    token.push_str(&signature);
    Ok(token)
}

/// The participant token of §3.3: identity `identity`, room `room`, valid for an hour from `now`.
pub fn participant_token(
    keys: &KeySet,
    identity: &str,
    room: &str,
    now: SystemTime,
) -> Result<String, GrantError> {
    mint(
        keys,
        Some(identity),
        &VideoGrant::participant(room),
        now,
        PARTICIPANT_TOKEN_TTL,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::{Value, json};

    /// Every vector of spec §4 that uses the 2- or 3-string form.
    #[test]
    fn hash_vectors() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["!roomid:example.com", "slot1234"],
                "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc",
            ),
            (
                &["@alice:example.com", "DEVICE123", "memberABC"],
                "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU",
            ),
            (
                &["!room:example.com", "m.call#ROOM"],
                "krj2dgxw2K6EOm9he4GfQJ6JsSVWfJ8a7BkyjZcSmxs",
            ),
            (
                &["!room:example.com", "m.call#"],
                "hrQ0l3fv1RI0sCBUn3Nu59Bu/b3f7hWXbMLLfFMLNOY",
            ),
            (&["", ""], "Q5CD84lWulHs6QYxVSxuojxcKVcNPVcQ5AjnfgG6c3U"),
            (
                &["@user:example.com", "DEVICEID", "memberID"],
                "Ik/9kfPJBhVEfBsL/EX/p+hndA56DqN2BaNJpAlMkzQ",
            ),
            (
                &["@user:example.com", "DEVICE", "member-1"],
                "UR7alejYuNM0ORiaDQL/rfhD2K9O4CeI8ePEaOEgV88",
            ),
            // The 2-tuple identity of the latest MSC (not used by the service, but the same H).
            (
                &["@alice:example.com", "memberABC"],
                "M3VnsLXrkbxIDINXO64u8PZzFyD9ZYFiQULR2dshWYs",
            ),
            // The MSC's salted alias: H over three strings.
            (
                &["!roomid:example.com", "slot123", "random123"],
                "IMeDd+K3MIqJTI20EXBIrepKkhhORvf3q8fx3rlrhTk",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(hash_json_strings(input), *expected, "H({input:?})");
            assert_eq!(expected.len(), 43);
        }
        assert_eq!(
            room_alias("!roomid:example.com", "slot1234"),
            "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc"
        );
        assert_eq!(
            participant_identity("@alice:example.com", "DEVICE123", "memberABC"),
            "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU"
        );
    }

    /// The Go-vs-canonical row: we produce Go's value, not the canonical-JSON one.
    #[test]
    fn html_characters_are_escaped_like_go() {
        let go = "BlPHg/JCOxLQr20ttEizBQLd7Bhh5m+r3M8rO3ejvzo";
        let canonical = "BaxXL6saSq+gSL5me/YDg7iH7KCueJy1DyzHVuUuqCk";
        assert_eq!(room_alias("!a&b:example.com", LEGACY_SLOT_ID), go);
        assert_ne!(room_alias("!a&b:example.com", LEGACY_SLOT_ID), canonical);
        // And the canonical value is what the raw `&` would give.
        assert_eq!(sha_b64(br#"["!a&b:example.com","m.call#ROOM"]"#), canonical);
    }

    /// The old pipe scheme's vector is a plain SHA-256 of the raw string; it pins the encoding step.
    #[test]
    fn pipe_scheme_vector_pins_the_base64_alphabet() {
        assert_eq!(
            sha_b64(b"!roomid:example.com|slot1234"),
            "H+ryzt8DXSOJZff1bhZNq2Tc1P6vn2M/Syv5EOMs5nQ"
        );
    }

    fn sha_b64(bytes: &[u8]) -> String {
        STANDARD_NO_PAD.encode(Sha256::digest(bytes))
    }

    /// Hashing goes through Go's escaping for every special class, not only `&`.
    #[test]
    fn every_html_character_is_escaped_before_hashing() {
        for (raw, go_text) in [
            ("<", r"\u003c"),
            (">", r"\u003e"),
            ("\u{2028}", r"\u2028"),
            ("\u{2029}", r"\u2029"),
        ] {
            let expected = sha_b64(format!(r#"["{go_text}"]"#).as_bytes());
            assert_eq!(hash_json_strings(&[raw]), expected, "escaping of {raw:?}");
        }
    }

    fn decode(token: &str, secret: &str) -> Value {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        validation.validate_nbf = true;
        jsonwebtoken::decode::<Value>(
            token,
            &DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .unwrap()
        .claims
    }

    #[test]
    fn participant_token_has_exactly_the_reference_claims() {
        let keys = KeySet::single("devkey".into(), "devsecret".into()).unwrap();
        let now = SystemTime::now();
        let nbf = unix_seconds(now).unwrap();
        let token = participant_token(&keys, "the-identity", "the-room", now).unwrap();
        let claims = decode(&token, "devsecret");
        assert_eq!(
            claims,
            json!({
                "iss": "devkey",
                "sub": "the-identity",
                "nbf": nbf,
                "exp": nbf + 3600,
                "video": {
                    "room": "the-room",
                    "roomJoin": true,
                    "canPublish": true,
                    "canSubscribe": true,
                    "canUpdateOwnMetadata": true,
                }
            })
        );
        assert!(claims["video"].get("roomCreate").is_none());
        assert!(claims.get("iat").is_none() && claims.get("jti").is_none());
    }

    #[test]
    fn header_is_exactly_the_go_sdk_header() {
        let header = URL_SAFE_NO_PAD.decode(HEADER_SEGMENT).unwrap();
        assert_eq!(header, br#"{"alg":"HS256","typ":"JWT"}"#);
        let keys = KeySet::single("k".into(), "s".into()).unwrap();
        let token = participant_token(&keys, "i", "r", SystemTime::now()).unwrap();
        assert!(token.starts_with(&format!("{HEADER_SEGMENT}.")));
    }

    #[test]
    fn token_signed_with_another_secret_does_not_verify() {
        let keys = KeySet::single("k".into(), "right".into()).unwrap();
        let token = participant_token(&keys, "i", "r", SystemTime::now()).unwrap();
        let validation = Validation::new(Algorithm::HS256);
        assert!(
            jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(b"wrong"), &validation)
                .is_err()
        );
    }

    #[test]
    fn service_token_has_no_subject() {
        let keys = KeySet::single("k".into(), "s".into()).unwrap();
        let video = VideoGrant {
            room_create: true,
            ..VideoGrant::default()
        };
        let now = SystemTime::now();
        let token = mint(&keys, None, &video, now, Duration::from_secs(6 * 3600)).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let nbf = unix_seconds(now).unwrap();
        assert_eq!(
            claims,
            json!({"iss": "k", "nbf": nbf, "exp": nbf + 6 * 3600, "video": {"roomCreate": true}})
        );
    }
}
