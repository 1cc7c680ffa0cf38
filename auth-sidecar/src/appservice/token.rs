//! What an AS-mode token says (as-mode spec §7): the AS identity hash, the grants, and minting.
//!
//! The room alias is the standalone one ([`grant::room_alias`], Go's HTML-escaping encoding), so a call
//! is in the same LiveKit room whichever endpoint its members used. The AS identity `H([user_id,
//! member_id])` hashes canonical JSON instead (no HTML escaping), as MSC4195 defines it: it names a new
//! kind of participant, so there is no reference encoding to stay compatible with.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use jsonwebtoken::Algorithm;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::livekit::grant::{self, GrantError, PARTICIPANT_TOKEN_TTL};
use crate::livekit::keys::KeySet;

/// `H([user_id, member_id])` over canonical JSON.
pub fn as_identity(user_id: &str, member_id: &str) -> String {
    // Serialising a slice of strings cannot fail; the fallback is unreachable but keeps this total.
    let json = serde_json::to_vec(&[user_id, member_id]).unwrap_or_default();
    STANDARD_NO_PAD.encode(Sha256::digest(json))
}

/// The grants of one AS-mode token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grants {
    pub can_publish: bool,
    pub can_update_own_metadata: bool,
}

/// The `video` grant of an AS-mode token. Unlike the standalone grant, `canPublish` and
/// `canUpdateOwnMetadata` are always written: LiveKit reads an absent `canPublish` as `true`, so a
/// remote user without publishing rights must get an explicit `false`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Video<'a> {
    room: &'a str,
    room_join: bool,
    can_subscribe: bool,
    can_publish: bool,
    can_update_own_metadata: bool,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    nbf: u64,
    exp: u64,
    video: Video<'a>,
}

/// `base64url({"alg":"HS256","typ":"JWT"})`, the header LiveKit's Go SDK writes.
const HEADER_SEGMENT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Signs a participant token: `sub` = `identity`, an hour from `now`, and only `room`, `roomJoin`,
/// `canSubscribe`, `canPublish`, `canUpdateOwnMetadata` (never `roomCreate` or `roomAdmin`).
pub fn mint(
    keys: &KeySet,
    identity: &str,
    room: &str,
    grants: Grants,
    now: SystemTime,
) -> Result<String, GrantError> {
    let nbf = grant::unix_seconds(now)?;
    let claims = Claims {
        iss: keys.signing_key_id(),
        sub: identity,
        nbf,
        exp: nbf + PARTICIPANT_TOKEN_TTL.as_secs(),
        video: Video {
            room,
            room_join: true,
            can_subscribe: true,
            can_publish: grants.can_publish,
            can_update_own_metadata: grants.can_update_own_metadata,
        },
    };
    let json = serde_json::to_vec(&claims).map_err(|e| GrantError::Sign(e.to_string()))?;
    let mut token = format!("{HEADER_SEGMENT}.");
    URL_SAFE_NO_PAD.encode_string(&json, &mut token);
    let signature =
        jsonwebtoken::crypto::sign(token.as_bytes(), keys.signing_key(), Algorithm::HS256)
            .map_err(|e| GrantError::Sign(e.to_string()))?;
    token.push('.');
    token.push_str(&signature);
    Ok(token)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::livekit::grant::room_alias;

    #[test]
    fn spec_vectors() {
        assert_eq!(
            room_alias("!roomid:example.com", "slot1234"),
            "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc"
        );
        assert_eq!(
            as_identity("@alice:example.com", "memberABC"),
            "M3VnsLXrkbxIDINXO64u8PZzFyD9ZYFiQULR2dshWYs"
        );
        // Canonical JSON: `&` stays raw (Go would write \u0026 and hash something else).
        assert_eq!(
            as_identity("@alice:example.com", "m&1"),
            "5bASIupfp8iAmBJL5y56XrEc4noGHcwliyuwvqSLmLE"
        );
        assert_ne!(
            as_identity("@alice:example.com", "m&1"),
            grant::hash_json_strings(&["@alice:example.com", "m&1"])
        );
    }

    #[test]
    fn minted_claims() {
        let keys = KeySet::single("key".into(), "secret".into()).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for grants in [
            Grants {
                can_publish: true,
                can_update_own_metadata: false,
            },
            Grants {
                can_publish: false,
                can_update_own_metadata: true,
            },
        ] {
            let jwt = mint(&keys, "ident", "room", grants, now).unwrap();
            assert!(jwt.starts_with(HEADER_SEGMENT));
            let payload = jwt.split('.').nth(1).unwrap();
            let claims: serde_json::Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(claims["sub"], "ident");
            assert_eq!(claims["iss"], "key");
            assert_eq!(claims["nbf"], 1_700_000_000);
            assert_eq!(claims["exp"], 1_700_003_600);
            let video = claims["video"].as_object().unwrap();
            assert_eq!(video["room"], "room");
            assert_eq!(video["roomJoin"], true);
            assert_eq!(video["canSubscribe"], true);
            // Always explicit: LiveKit reads a missing canPublish as true.
            assert_eq!(video["canPublish"], grants.can_publish);
            assert_eq!(
                video["canUpdateOwnMetadata"],
                grants.can_update_own_metadata
            );
            assert!(video.get("roomCreate").is_none() && video.get("roomAdmin").is_none());
        }
    }
}
