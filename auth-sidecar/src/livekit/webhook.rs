//! LiveKit webhooks (spec §1.6): verification the way LiveKit signs them, and the participant changes the
//! delegation engine cares about.
//!
//! LiveKit puts a raw API JWT (no `Bearer `) in `Authorization`. Its `iss` names the API key whose secret
//! signed it (HS256); its `sha256` claim is the padded standard base64 SHA-256 of the exact body. The body
//! is a protobuf-JSON `livekit.WebhookEvent`; fields we do not know are ignored, as protobuf-JSON readers
//! configured to discard unknown fields do.
//!
//! Where the reference dereferences a missing `room` or `participant` and drops the connection, this
//! module reports a [`WebhookError::Malformed`] instead; the endpoint answers 200 either way.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::keys::KeySet;

/// `livekit.DisconnectReason.CLIENT_INITIATED`.
const CLIENT_INITIATED_NAME: &str = "CLIENT_INITIATED";
const CLIENT_INITIATED_NUMBER: i64 = 1;

/// Why a webhook was not turned into a notification.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("no Authorization header")]
    MissingAuthorization,
    #[error("the Authorization header is not a JWT: {0}")]
    NotAToken(jsonwebtoken::errors::Error),
    #[error("the token names no API key or an unknown one")]
    UnknownKey,
    #[error("signature or time claims rejected: {0}")]
    Rejected(jsonwebtoken::errors::Error),
    #[error("the token's sha256 claim does not match the body")]
    BodyMismatch,
    #[error("signed body is not a usable webhook event: {0}")]
    Malformed(String),
}

impl WebhookError {
    /// True when the sender could not prove it is our LiveKit (as opposed to a signed but odd event).
    pub fn is_verification_failure(&self) -> bool {
        !matches!(self, Self::Malformed(_))
    }
}

/// How a participant's presence changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParticipantChange {
    /// `participant_joined`.
    Joined,
    /// Left or aborted with `CLIENT_INITIATED`: the user hung up.
    LeftIntentionally,
    /// Left or aborted for any other reason (signal closed, join failure, server shutdown, ...).
    LeftAbnormally,
}

/// A verified participant event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// `event.room.name`: the room alias.
    pub room: String,
    /// `event.participant.identity`.
    pub identity: String,
    pub change: ParticipantChange,
}

/// Checks webhook signatures against the API keys LiveKit may sign with.
#[derive(Debug)]
pub struct WebhookVerifier {
    keys: Arc<KeySet>,
    validation: Validation,
}

/// The claims of a LiveKit webhook token that matter here.
#[derive(Deserialize)]
struct WebhookClaims {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    sha256: String,
}

impl WebhookVerifier {
    /// A verifier that accepts tokens issued by any of the service's API keys.
    pub fn new(keys: Arc<KeySet>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // LiveKit's tokens carry exp and nbf; both are checked when present, with the usual minute of
        // leeway for clock skew. Nothing else is required: `iss` selects the key and `sha256` is below.
        validation.required_spec_claims.clear();
        validation.validate_nbf = true;
        Self { keys, validation }
    }

    /// Verifies a webhook and extracts the participant change it reports, if any. `Ok(None)` is a valid
    /// event of a kind the service ignores.
    pub fn verify(
        &self,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<Option<Notification>, WebhookError> {
        let token = authorization
            .filter(|value| !value.is_empty())
            .ok_or(WebhookError::MissingAuthorization)?;
        // Unverified read of `iss` only to pick the secret; everything is verified just below.
        let unverified: WebhookClaims = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(WebhookError::NotAToken)?;
        let secret = self
            .keys
            .secret_for(&unverified.iss)
            .ok_or(WebhookError::UnknownKey)?;
        let secret = DecodingKey::from_secret(secret.as_bytes());
        let claims = jsonwebtoken::decode::<WebhookClaims>(token, &secret, &self.validation)
            .map_err(WebhookError::Rejected)?
            .claims;
        if claims.sha256 != STANDARD.encode(Sha256::digest(body)) {
            return Err(WebhookError::BodyMismatch);
        }
        parse_event(body)
    }
}

/// The parts of `livekit.WebhookEvent` used here. Protobuf-JSON writers use lowerCamelCase names and
/// readers also accept the proto names, hence the aliases.
#[derive(Deserialize)]
struct WebhookEvent {
    #[serde(default)]
    event: String,
    room: Option<Room>,
    participant: Option<Participant>,
}

#[derive(Deserialize)]
struct Room {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Participant {
    #[serde(default)]
    identity: String,
    #[serde(default, rename = "disconnectReason", alias = "disconnect_reason")]
    disconnect_reason: Option<EnumValue>,
}

/// A protobuf enum in JSON: its name, or its number.
#[derive(Deserialize)]
#[serde(untagged)]
enum EnumValue {
    Name(String),
    Number(i64),
}

impl EnumValue {
    fn is_client_initiated(&self) -> bool {
        match self {
            Self::Name(name) => name == CLIENT_INITIATED_NAME,
            Self::Number(number) => *number == CLIENT_INITIATED_NUMBER,
        }
    }
}

fn parse_event(body: &[u8]) -> Result<Option<Notification>, WebhookError> {
    let event: WebhookEvent =
        serde_json::from_slice(body).map_err(|error| WebhookError::Malformed(error.to_string()))?;
    let change = match event.event.as_str() {
        "participant_joined" => ParticipantChange::Joined,
        "participant_left" | "participant_connection_aborted" => {
            let intentional = event
                .participant
                .as_ref()
                .and_then(|participant| participant.disconnect_reason.as_ref())
                .is_some_and(EnumValue::is_client_initiated);
            if intentional {
                ParticipantChange::LeftIntentionally
            } else {
                ParticipantChange::LeftAbnormally
            }
        }
        _ => return Ok(None),
    };
    let room = event
        .room
        .ok_or_else(|| WebhookError::Malformed(format!("{} without a room", event.event)))?;
    let participant = event
        .participant
        .ok_or_else(|| WebhookError::Malformed(format!("{} without a participant", event.event)))?;
    Ok(Some(Notification {
        room: room.name,
        identity: participant.identity,
        change,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const KEY: &str = "APIkey";
    const SECRET: &[u8] = b"a-secret-of-reasonable-length-000";
    const OTHER_SECRET: &[u8] = b"another-secret";

    fn now() -> i64 {
        i64::try_from(jsonwebtoken::get_current_timestamp()).expect("timestamp fits i64")
    }

    fn verifier() -> WebhookVerifier {
        let yaml = format!(
            "{KEY}: {}\nsecond: {}\n",
            String::from_utf8_lossy(SECRET),
            String::from_utf8_lossy(OTHER_SECRET)
        );
        WebhookVerifier::new(Arc::new(KeySet::from_yaml(&yaml).expect("keys")))
    }

    fn token_with(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("sign")
    }

    fn sign(body: &str) -> String {
        token_with(
            json!({
                "iss": KEY,
                "nbf": now() - 5,
                "exp": now() + 300,
                "sha256": STANDARD.encode(Sha256::digest(body.as_bytes())),
                "video": {},
            }),
            SECRET,
        )
    }

    fn verify_signed(body: &str) -> Result<Option<Notification>, WebhookError> {
        verifier().verify(Some(&sign(body)), body.as_bytes())
    }

    fn participant_event(event: &str, reason: serde_json::Value) -> String {
        json!({
            "event": event,
            "room": {"sid": "RM_x", "name": "the-room", "emptyTimeout": 300},
            "participant": {"sid": "PA_y", "identity": "the-identity", "disconnectReason": reason},
            "id": "EV_z",
            "createdAt": "1700000000",
            "somethingNew": {"nested": true},
        })
        .to_string()
    }

    fn change(event: &str, reason: serde_json::Value) -> Option<ParticipantChange> {
        verify_signed(&participant_event(event, reason))
            .expect("verified")
            .map(|notification| {
                assert_eq!(notification.room, "the-room");
                assert_eq!(notification.identity, "the-identity");
                notification.change
            })
    }

    #[test]
    fn maps_participant_events() {
        use ParticipantChange::*;
        assert_eq!(
            change("participant_joined", json!("UNKNOWN_REASON")),
            Some(Joined)
        );
        for event in ["participant_left", "participant_connection_aborted"] {
            assert_eq!(
                change(event, json!("CLIENT_INITIATED")),
                Some(LeftIntentionally)
            );
            assert_eq!(
                change(event, json!(1)),
                Some(LeftIntentionally),
                "enum number"
            );
            for other in ["SIGNAL_CLOSE", "JOIN_FAILURE", "SERVER_SHUTDOWN"] {
                assert_eq!(change(event, json!(other)), Some(LeftAbnormally), "{other}");
            }
            assert_eq!(change(event, json!(9)), Some(LeftAbnormally));
            assert_eq!(change(event, json!(null)), Some(LeftAbnormally));
        }
    }

    #[test]
    fn accepts_proto_field_names() {
        let body = json!({
            "event": "participant_left",
            "room": {"name": "r"},
            "participant": {"identity": "i", "disconnect_reason": "CLIENT_INITIATED"},
        })
        .to_string();
        assert_eq!(
            verify_signed(&body).expect("verified"),
            Some(Notification {
                room: "r".into(),
                identity: "i".into(),
                change: ParticipantChange::LeftIntentionally
            })
        );
    }

    #[test]
    fn ignores_other_events() {
        for event in ["room_started", "room_finished", "track_published", ""] {
            let body = participant_event(event, json!("CLIENT_INITIATED"));
            assert!(verify_signed(&body).expect("verified").is_none(), "{event}");
        }
    }

    #[test]
    fn signed_but_malformed_events_are_errors_not_panics() {
        for body in [
            "not json".to_owned(),
            "[]".to_owned(),
            json!({"event": "participant_joined", "participant": {"identity": "i"}}).to_string(),
            json!({"event": "participant_left", "room": {"name": "r"}}).to_string(),
            json!({"event": "participant_joined", "room": "not an object"}).to_string(),
        ] {
            let error = verify_signed(&body).expect_err(&body);
            assert!(
                matches!(error, WebhookError::Malformed(_)),
                "{body}: {error}"
            );
            assert!(!error.is_verification_failure());
        }
    }

    #[test]
    fn rejects_missing_and_prefixed_tokens() {
        let body = participant_event("participant_joined", json!(0));
        let verifier = verifier();
        assert!(matches!(
            verifier.verify(None, body.as_bytes()),
            Err(WebhookError::MissingAuthorization)
        ));
        assert!(matches!(
            verifier.verify(Some(""), body.as_bytes()),
            Err(WebhookError::MissingAuthorization)
        ));
        let bearer = format!("Bearer {}", sign(&body));
        let error = verifier
            .verify(Some(&bearer), body.as_bytes())
            .expect_err("Bearer prefix");
        assert!(error.is_verification_failure(), "{error}");
    }

    #[test]
    fn rejects_unknown_keys_wrong_secrets_and_bad_times() {
        let body = participant_event("participant_joined", json!(0));
        let hash = STANDARD.encode(Sha256::digest(body.as_bytes()));
        let claims = |iss: &str, nbf: i64, exp: i64| json!({"iss": iss, "nbf": nbf, "exp": exp, "sha256": hash, "video": {}});
        let cases = [
            (
                "unknown key",
                token_with(claims("stranger", now(), now() + 60), SECRET),
            ),
            (
                "wrong secret",
                token_with(claims(KEY, now(), now() + 60), b"not-the-secret"),
            ),
            (
                "expired",
                token_with(claims(KEY, now() - 900, now() - 600), SECRET),
            ),
            (
                "not yet valid",
                token_with(claims(KEY, now() + 600, now() + 900), SECRET),
            ),
            ("garbage", "a.b.c".to_owned()),
        ];
        for (case, token) in cases {
            let error = verifier()
                .verify(Some(&token), body.as_bytes())
                .expect_err(case);
            assert!(error.is_verification_failure(), "{case}: {error}");
        }
        // The second configured key verifies too.
        let other = token_with(claims("second", now(), now() + 60), OTHER_SECRET);
        assert!(verifier().verify(Some(&other), body.as_bytes()).is_ok());
    }

    #[test]
    fn rejects_a_body_that_does_not_match_the_hash() {
        let body = participant_event("participant_joined", json!(0));
        let token = sign(&body);
        let tampered = body.replace("the-identity", "someone-else");
        assert!(matches!(
            verifier().verify(Some(&token), tampered.as_bytes()),
            Err(WebhookError::BodyMismatch)
        ));
        // Unpadded or URL-safe encodings of the right hash are not what LiveKit sends.
        let unpadded = token_with(
            json!({
                "iss": KEY, "exp": now() + 60,
                "sha256": STANDARD.encode(Sha256::digest(body.as_bytes())).trim_end_matches('='),
            }),
            SECRET,
        );
        assert!(matches!(
            verifier().verify(Some(&unpadded), body.as_bytes()),
            Err(WebhookError::BodyMismatch)
        ));
    }
}
