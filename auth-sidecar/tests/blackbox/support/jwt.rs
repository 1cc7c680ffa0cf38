//! LiveKit token checks and the MSC4195 hash derivation, computed here independently of the service.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The API key every test service runs with (the JWT `iss`).
pub const KEY: &str = "blackbox-api-key";
/// The API secret every test service runs with; distinctive so that a leak into logs is easy to grep.
pub const SECRET: &str = "blackbox-secret-0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// `H(list)` of spec §4: unpadded standard base64 of SHA-256 over the compact JSON array of the strings.
/// Go escapes `<`, `>`, `&`, U+2028 and U+2029 when serialising; the tests only feed this inputs without
/// those, for which serde_json writes the same bytes.
pub fn hash(parts: &[&str]) -> String {
    let json = serde_json::to_string(parts).expect("serialise array");
    STANDARD_NO_PAD.encode(Sha256::digest(json.as_bytes()))
}

/// A token whose signature verified, with its header and claims as raw JSON.
#[derive(Debug)]
pub struct Verified {
    pub header: Value,
    pub claims: Value,
}

/// Verifies an HS256 token signed with `secret`, issued by `key`, not expired and already valid
/// (5 s leeway); `required` names claims that must be present. Panics with the reason otherwise.
pub fn verify(token: &str, key: &str, secret: &str, required: &[&str]) -> Verified {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[key]);
    validation.validate_nbf = true;
    validation.leeway = 5;
    validation.set_required_spec_claims(required);
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .unwrap_or_else(|e| panic!("token does not verify ({e}): {token}"));
    // Re-read the parts raw, so that tests see exactly what was signed.
    let mut parts = token.split('.');
    let mut segment = || {
        let text = parts.next().expect("JWT segment");
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .expect("JWT segment is base64url");
        serde_json::from_slice::<Value>(&bytes).expect("JWT segment is JSON")
    };
    let header = segment();
    let claims = segment();
    Verified { header, claims }
}

/// Checks the admin token the service sends to LiveKit's RoomService for CreateRoom (spec §3.2):
/// signed with our secret, `iss` = key, `video.roomCreate` true, and no `sub`.
pub fn assert_create_room_token(bearer: Option<&str>) {
    let bearer = bearer.expect("CreateRoom carries `Authorization: Bearer <jwt>`");
    let token = verify(bearer, KEY, SECRET, &["exp", "iss"]);
    assert_eq!(token.header["alg"], "HS256");
    assert_eq!(
        token.claims["video"]["roomCreate"],
        Value::Bool(true),
        "admin token grants roomCreate: {}",
        token.claims
    );
    assert!(
        token.claims.get("sub").is_none(),
        "admin token has no sub: {}",
        token.claims
    );
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_secs()).expect("seconds fit i64")
}
