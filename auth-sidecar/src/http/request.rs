//! Request bodies: strict decoding (400 `M_NOT_JSON`) and validation (400 `M_BAD_JSON`), in the
//! reference's order and with its texts. Nothing here makes a call; a request that passes is a value in
//! which every required field is present.
//!
//! ## Decoding, and where we differ from Go's `encoding/json`
//! Like the reference: an unknown key at any level, a type mismatch (a string `delay_timeout`,
//! `expires_in: 3600.5`), an empty body, a non-object and malformed JSON are all `M_NOT_JSON`; `null`
//! anywhere (the whole body included) leaves the empty value, so it fails validation instead; invalid
//! UTF-8 inside strings becomes U+FFFD, one per bad byte, as Go's decoder does.
//! Unlike the reference, deliberately:
//! - keys are **case-sensitive**: `ROOM_ID` is an unknown key (Go matches it to `room_id`);
//! - a **duplicate key** is rejected (Go keeps the last value): two readers of one body must not
//!   disagree about it;
//! - **bytes after the JSON value** are rejected (Go ignores `{...}garbage`);
//! - an unpaired UTF-16 surrogate escape (`"\ud800"`) is rejected (Go decodes it to U+FFFD).
//!
//! No client we know of sends any of these.

use std::borrow::Cow;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::error::MatrixError;

/// 3a of `/get_token`.
pub const MISSING_ROOM_OR_SLOT: &str = "The request body is missing `room_id` or `slot_id`";
/// 3b of `/get_token` (with the reference's "a").
pub const MISSING_MEMBER_FIELD: &str =
    "The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`";
/// 3c of `/get_token`.
pub const MISSING_OPENID_FIELD: &str =
    "The request body `openid_token` is missing a `access_token` or `matrix_server_name`";
/// 3d, on both token endpoints.
pub const MISSING_DELAY_PAIR: &str = "The request body is missing `delay_id` or `delay_timeout`";
/// `/sfu/get`: empty `room`.
pub const MISSING_ROOM: &str = "Missing room parameter";
/// `/sfu/get`: empty `access_token` or `matrix_server_name`.
pub const MISSING_OPENID: &str = "Missing OpenID token parameters";

/// Decodes `body` strictly (see the module docs).
pub fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, MatrixError> {
    let text = go_lossy_utf8(body);
    // serde reads a struct from an array too (`[]` would be an empty request); Go does not. No request
    // field is an array, so any array is a type mismatch.
    if has_array(&text) {
        return Err(MatrixError::not_json());
    }
    // `Option` turns a top-level `null` into the empty value, as Go's decoder leaves its target alone.
    serde_json::from_str::<Option<T>>(&text)
        .map(Option::unwrap_or_default)
        .map_err(|_| MatrixError::not_json())
}

/// Whether `json` has a `[` outside string literals.
fn has_array(json: &str) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if byte == b'[' {
            return true;
        }
    }
    false
}

/// The body as text; each byte that is not part of valid UTF-8 becomes U+FFFD, as Go's decoder reads
/// strings. Borrowed (no copy) in the usual case of valid UTF-8.
fn go_lossy_utf8(mut bytes: &[u8]) -> Cow<'_, str> {
    let mut fixed = String::new();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) if fixed.is_empty() => return Cow::Borrowed(valid),
            Ok(valid) => {
                fixed.push_str(valid);
                return Cow::Owned(fixed);
            }
            Err(error) => {
                let (valid, rest) = bytes.split_at(error.valid_up_to());
                // `valid_up_to` guarantees this prefix is UTF-8.
                fixed.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = error.error_len().unwrap_or(rest.len());
                fixed.extend(std::iter::repeat_n('\u{FFFD}', bad));
                bytes = &rest[bad..];
            }
        }
    }
}

/// `null` as the empty value, as Go leaves a field alone when it reads `null`.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// `openid_token` as the homeserver returned it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenIdTokenBody {
    #[serde(deserialize_with = "nullable")]
    pub access_token: String,
    /// Ignored.
    #[serde(deserialize_with = "nullable")]
    pub token_type: String,
    #[serde(deserialize_with = "nullable")]
    pub matrix_server_name: String,
    /// Ignored, but must be an integer.
    #[serde(deserialize_with = "nullable")]
    pub expires_in: i64,
}

/// The MatrixRTC member of a `/get_token` request.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemberBody {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub claimed_user_id: String,
    #[serde(deserialize_with = "nullable")]
    pub claimed_device_id: String,
}

/// The body of `POST /get_token` (and, later, `/delegate_delayed_leave`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GetTokenBody {
    #[serde(deserialize_with = "nullable")]
    pub room_id: String,
    #[serde(deserialize_with = "nullable")]
    pub slot_id: String,
    #[serde(deserialize_with = "nullable")]
    pub openid_token: OpenIdTokenBody,
    #[serde(deserialize_with = "nullable")]
    pub member: MemberBody,
    #[serde(deserialize_with = "nullable")]
    pub delay_id: String,
    /// Milliseconds.
    #[serde(deserialize_with = "nullable")]
    pub delay_timeout: i64,
    /// Ignored: the client-server API is discovered, never taken from the client.
    #[serde(deserialize_with = "nullable")]
    pub delay_cs_api_url: String,
}

/// The body of the legacy `POST /sfu/get`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SfuGetBody {
    #[serde(deserialize_with = "nullable")]
    pub room: String,
    #[serde(deserialize_with = "nullable")]
    pub openid_token: OpenIdTokenBody,
    /// May be empty.
    #[serde(deserialize_with = "nullable")]
    pub device_id: String,
    #[serde(deserialize_with = "nullable")]
    pub delay_id: String,
    #[serde(deserialize_with = "nullable")]
    pub delay_timeout: i64,
    /// Ignored.
    #[serde(deserialize_with = "nullable")]
    pub delay_cs_api_url: String,
}

/// The OpenID token, both parts present.
#[derive(Debug, PartialEq, Eq)]
pub struct OpenId {
    pub access_token: String,
    /// The homeserver asked to vouch for the token; also the full-access key.
    pub server_name: String,
}

/// A request to hand the client's delayed leave event over to the service (deprecated delay fields).
#[derive(Debug, PartialEq, Eq)]
pub struct Delegation {
    pub delay_id: String,
    /// Positive.
    pub delay_timeout: Duration,
}

/// A `/get_token` request that passed validation.
#[derive(Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub room_id: String,
    pub slot_id: String,
    pub openid: OpenId,
    pub member_id: String,
    pub claimed_user_id: String,
    pub claimed_device_id: String,
    pub delegation: Option<Delegation>,
}

/// A `/sfu/get` request that passed validation.
#[derive(Debug, PartialEq, Eq)]
pub struct LegacyRequest {
    pub room: String,
    pub openid: OpenId,
    pub device_id: String,
    pub delegation: Option<Delegation>,
}

/// The delay pair rule (3d): both or neither. A non-positive timeout counts as absent, so a negative
/// `delay_timeout` with an empty `delay_id` is simply no delegation.
fn delegation(delay_id: String, delay_timeout_ms: i64) -> Result<Option<Delegation>, MatrixError> {
    match (delay_id.is_empty(), u64::try_from(delay_timeout_ms)) {
        (true, Ok(0) | Err(_)) => Ok(None),
        (false, Ok(ms)) if ms > 0 => Ok(Some(Delegation {
            delay_id,
            delay_timeout: Duration::from_millis(ms),
        })),
        _ => Err(MatrixError::bad_json(MISSING_DELAY_PAIR)),
    }
}

impl GetTokenBody {
    /// Rows 3a–3d of `/get_token`, in order.
    pub fn validate(self) -> Result<TokenRequest, MatrixError> {
        if self.room_id.is_empty() || self.slot_id.is_empty() {
            return Err(MatrixError::bad_json(MISSING_ROOM_OR_SLOT));
        }
        let member = self.member;
        if member.id.is_empty()
            || member.claimed_user_id.is_empty()
            || member.claimed_device_id.is_empty()
        {
            return Err(MatrixError::bad_json(MISSING_MEMBER_FIELD));
        }
        let token = self.openid_token;
        if token.access_token.is_empty() || token.matrix_server_name.is_empty() {
            return Err(MatrixError::bad_json(MISSING_OPENID_FIELD));
        }
        Ok(TokenRequest {
            delegation: delegation(self.delay_id, self.delay_timeout)?,
            room_id: self.room_id,
            slot_id: self.slot_id,
            openid: OpenId {
                access_token: token.access_token,
                server_name: token.matrix_server_name,
            },
            member_id: member.id,
            claimed_user_id: member.claimed_user_id,
            claimed_device_id: member.claimed_device_id,
        })
    }
}

impl SfuGetBody {
    /// The legacy validation: room, then OpenID, then the delay pair.
    pub fn validate(self) -> Result<LegacyRequest, MatrixError> {
        if self.room.is_empty() {
            return Err(MatrixError::bad_json(MISSING_ROOM));
        }
        let token = self.openid_token;
        if token.access_token.is_empty() || token.matrix_server_name.is_empty() {
            return Err(MatrixError::bad_json(MISSING_OPENID));
        }
        Ok(LegacyRequest {
            delegation: delegation(self.delay_id, self.delay_timeout)?,
            room: self.room,
            openid: OpenId {
                access_token: token.access_token,
                server_name: token.matrix_server_name,
            },
            device_id: self.device_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn valid_get_token() -> Value {
        json!({
            "room_id": "!room:example.com",
            "slot_id": "m.call#ROOM",
            "openid_token": {
                "access_token": "token",
                "token_type": "Bearer",
                "matrix_server_name": "example.com",
                "expires_in": 3600
            },
            "member": {"id": "member", "claimed_user_id": "@u:example.com", "claimed_device_id": "DEV"}
        })
    }

    fn valid_sfu_get() -> Value {
        json!({
            "room": "!room:example.com",
            "openid_token": {"access_token": "token", "matrix_server_name": "example.com"},
            "device_id": "DEV"
        })
    }

    fn get_token(body: &Value) -> Result<TokenRequest, MatrixError> {
        decode::<GetTokenBody>(body.to_string().as_bytes())?.validate()
    }

    fn sfu_get(body: &Value) -> Result<LegacyRequest, MatrixError> {
        decode::<SfuGetBody>(body.to_string().as_bytes())?.validate()
    }

    fn with(mut body: Value, pointer: &str, value: Value) -> Value {
        *body.pointer_mut(pointer).unwrap() = value;
        body
    }

    fn with_key(mut body: Value, pointer: &str, key: &str, value: Value) -> Value {
        body.pointer_mut(pointer)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .insert(key.into(), value);
        body
    }

    #[test]
    fn valid_get_token_request() {
        let request = get_token(&valid_get_token()).unwrap();
        assert_eq!(
            request,
            TokenRequest {
                room_id: "!room:example.com".into(),
                slot_id: "m.call#ROOM".into(),
                openid: OpenId {
                    access_token: "token".into(),
                    server_name: "example.com".into()
                },
                member_id: "member".into(),
                claimed_user_id: "@u:example.com".into(),
                claimed_device_id: "DEV".into(),
                delegation: None,
            }
        );
    }

    #[test]
    fn decode_failures_are_not_json() {
        let valid = valid_get_token();
        let bad_bodies: Vec<String> = vec![
            String::new(),
            "   ".into(),
            "[]".into(),
            "\"text\"".into(),
            "42".into(),
            "{".into(),
            "{\"room_id\": }".into(),
            // Unknown keys at every level.
            with_key(valid.clone(), "", "extra", json!(1)).to_string(),
            with_key(valid.clone(), "/openid_token", "extra", json!("x")).to_string(),
            with_key(valid.clone(), "/member", "extra", json!(null)).to_string(),
            // Type mismatches.
            with_key(valid.clone(), "", "delay_timeout", json!("7200000")).to_string(),
            with_key(valid.clone(), "", "delay_timeout", json!(1.5)).to_string(),
            with(valid.clone(), "/openid_token/expires_in", json!(3600.5)).to_string(),
            with(valid.clone(), "/openid_token/expires_in", json!("3600")).to_string(),
            with(valid.clone(), "/room_id", json!(42)).to_string(),
            with(valid.clone(), "/member", json!("member")).to_string(),
            with(valid.clone(), "/openid_token", json!([])).to_string(),
            with(valid.clone(), "/member", json!(["a", "b", "c"])).to_string(),
            with_key(valid.clone(), "", "delay_id", json!(["d"])).to_string(),
            "[null]".into(),
            r#"{"delay_timeout": 1e3}"#.into(),
            r#"{"delay_timeout": 99999999999999999999}"#.into(),
            // Our deliberate differences from Go.
            r#"{"ROOM_ID": "!r:x"}"#.into(),
            r#"{"room_id": "a", "room_id": "b"}"#.into(),
            format!("{valid}garbage"),
            format!("{valid}{{}}"),
            r#"{"room_id": "\ud800"}"#.into(),
        ];
        for body in bad_bodies {
            assert_eq!(
                decode::<GetTokenBody>(body.as_bytes()).unwrap_err(),
                MatrixError::not_json(),
                "body {body:?}"
            );
        }
        // The legacy endpoint rejects the new shape as unknown keys.
        assert_eq!(
            decode::<SfuGetBody>(valid.to_string().as_bytes()).unwrap_err(),
            MatrixError::not_json()
        );
    }

    #[test]
    fn null_is_the_empty_value() {
        // The whole body: decodes, then fails validation like `{}`.
        assert_eq!(
            decode::<GetTokenBody>(b"null")
                .and_then(GetTokenBody::validate)
                .unwrap_err(),
            MatrixError::bad_json(MISSING_ROOM_OR_SLOT)
        );
        assert_eq!(
            get_token(&with(valid_get_token(), "/room_id", json!(null))).unwrap_err(),
            MatrixError::bad_json(MISSING_ROOM_OR_SLOT)
        );
        assert_eq!(
            get_token(&with(valid_get_token(), "/member", json!(null))).unwrap_err(),
            MatrixError::bad_json(MISSING_MEMBER_FIELD)
        );
        assert_eq!(
            get_token(&with(valid_get_token(), "/openid_token", json!(null))).unwrap_err(),
            MatrixError::bad_json(MISSING_OPENID_FIELD)
        );
        // Optional fields may be null.
        let body = with(valid_get_token(), "/openid_token/expires_in", json!(null));
        let body = with_key(body, "", "delay_timeout", json!(null));
        let body = with_key(body, "", "delay_cs_api_url", json!(null));
        assert!(get_token(&body).is_ok());
    }

    #[test]
    fn brackets_inside_strings_are_not_arrays() {
        let body = with(
            valid_get_token(),
            "/room_id",
            json!("![weird]:example.com \\\" ["),
        );
        assert_eq!(
            get_token(&body).unwrap().room_id,
            "![weird]:example.com \\\" ["
        );
        assert!(has_array(r#"{"a":"\\", "b": []}"#));
        assert!(!has_array(r#"{"a":"\"[\""}"#));
    }

    #[test]
    fn whitespace_around_the_value_is_fine() {
        let body = format!(" \n{}\n ", valid_get_token());
        assert!(decode::<GetTokenBody>(body.as_bytes()).is_ok());
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters_per_byte() {
        let mut body = br#"{"room_id":"a"#.to_vec();
        body.extend_from_slice(&[0xE2, 0x82, b'b', 0xFF]);
        body.extend_from_slice(br#"","slot_id":"s"}"#);
        let decoded = decode::<GetTokenBody>(&body).unwrap();
        assert_eq!(decoded.room_id, "a\u{FFFD}\u{FFFD}b\u{FFFD}");
        assert_eq!(go_lossy_utf8(b"ok"), Cow::Borrowed("ok"));
        assert_eq!(go_lossy_utf8(&[b'x', 0xF0, 0x9F]), "x\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn get_token_validation_rows_in_order() {
        let valid = valid_get_token();
        let rows: Vec<(Value, &str)> = vec![
            // 3a
            (
                with(valid.clone(), "/room_id", json!("")),
                MISSING_ROOM_OR_SLOT,
            ),
            (
                with(valid.clone(), "/slot_id", json!("")),
                MISSING_ROOM_OR_SLOT,
            ),
            (json!({}), MISSING_ROOM_OR_SLOT),
            // 3a wins over everything after it.
            (
                with(
                    with(valid.clone(), "/room_id", json!("")),
                    "/member/id",
                    json!(""),
                ),
                MISSING_ROOM_OR_SLOT,
            ),
            // 3b
            (
                with(valid.clone(), "/member/id", json!("")),
                MISSING_MEMBER_FIELD,
            ),
            (
                with(valid.clone(), "/member/claimed_user_id", json!("")),
                MISSING_MEMBER_FIELD,
            ),
            (
                with(valid.clone(), "/member/claimed_device_id", json!("")),
                MISSING_MEMBER_FIELD,
            ),
            (
                with(
                    with(valid.clone(), "/member/id", json!("")),
                    "/openid_token/access_token",
                    json!(""),
                ),
                MISSING_MEMBER_FIELD,
            ),
            // 3c
            (
                with(valid.clone(), "/openid_token/access_token", json!("")),
                MISSING_OPENID_FIELD,
            ),
            (
                with(valid.clone(), "/openid_token/matrix_server_name", json!("")),
                MISSING_OPENID_FIELD,
            ),
            (
                with_key(
                    with(valid.clone(), "/openid_token/access_token", json!("")),
                    "",
                    "delay_id",
                    json!("d"),
                ),
                MISSING_OPENID_FIELD,
            ),
            // 3d: exactly one of the pair.
            (
                with_key(valid.clone(), "", "delay_id", json!("d")),
                MISSING_DELAY_PAIR,
            ),
            (
                with_key(
                    with_key(valid.clone(), "", "delay_id", json!("d")),
                    "",
                    "delay_timeout",
                    json!(0),
                ),
                MISSING_DELAY_PAIR,
            ),
            (
                with_key(
                    with_key(valid.clone(), "", "delay_id", json!("d")),
                    "",
                    "delay_timeout",
                    json!(-5),
                ),
                MISSING_DELAY_PAIR,
            ),
            (
                with_key(valid.clone(), "", "delay_timeout", json!(1000)),
                MISSING_DELAY_PAIR,
            ),
        ];
        for (body, text) in rows {
            assert_eq!(
                get_token(&body).unwrap_err(),
                MatrixError::bad_json(text),
                "{body}"
            );
        }
        assert_eq!(
            MISSING_MEMBER_FIELD,
            "The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`"
        );
        assert_eq!(
            MISSING_OPENID_FIELD,
            "The request body `openid_token` is missing a `access_token` or `matrix_server_name`"
        );
    }

    #[test]
    fn delay_pair_accepted_forms() {
        let valid = valid_get_token();
        // Both: delegation.
        let body = with_key(
            with_key(valid.clone(), "", "delay_id", json!("syd_abc")),
            "",
            "delay_timeout",
            json!(7_200_000),
        );
        assert_eq!(
            get_token(&body).unwrap().delegation,
            Some(Delegation {
                delay_id: "syd_abc".into(),
                delay_timeout: Duration::from_secs(7200)
            })
        );
        // Negative timeout, no id: no delegation.
        let body = with_key(valid.clone(), "", "delay_timeout", json!(-1));
        assert_eq!(get_token(&body).unwrap().delegation, None);
        // Zero timeout, empty id, and the ignored URL: no delegation.
        let body = with_key(
            with_key(valid.clone(), "", "delay_timeout", json!(0)),
            "",
            "delay_id",
            json!(""),
        );
        let body = with_key(body, "", "delay_cs_api_url", json!("https://ignored"));
        assert_eq!(get_token(&body).unwrap().delegation, None);
    }

    #[test]
    fn sfu_get_validation_rows_in_order() {
        let valid = valid_sfu_get();
        let request = sfu_get(&valid).unwrap();
        assert_eq!(request.room, "!room:example.com");
        assert_eq!(request.device_id, "DEV");
        assert_eq!(request.openid.server_name, "example.com");
        // device_id may be empty or absent.
        assert_eq!(
            sfu_get(&with(valid.clone(), "/device_id", json!("")))
                .unwrap()
                .device_id,
            ""
        );
        let mut without = valid.clone();
        without.as_object_mut().unwrap().remove("device_id");
        assert!(sfu_get(&without).is_ok());

        let rows: Vec<(Value, &str)> = vec![
            (json!({}), MISSING_ROOM),
            (json!({"room": ""}), MISSING_ROOM),
            (
                with(
                    with(valid.clone(), "/room", json!("")),
                    "/openid_token/access_token",
                    json!(""),
                ),
                MISSING_ROOM,
            ),
            (
                with(valid.clone(), "/openid_token/access_token", json!("")),
                MISSING_OPENID,
            ),
            (
                with(valid.clone(), "/openid_token/matrix_server_name", json!("")),
                MISSING_OPENID,
            ),
            (json!({"room": "!r:x"}), MISSING_OPENID),
            (
                with_key(valid.clone(), "", "delay_id", json!("d")),
                MISSING_DELAY_PAIR,
            ),
            (
                with_key(valid.clone(), "", "delay_timeout", json!(5)),
                MISSING_DELAY_PAIR,
            ),
        ];
        for (body, text) in rows {
            assert_eq!(
                sfu_get(&body).unwrap_err(),
                MatrixError::bad_json(text),
                "{body}"
            );
        }
        let body = with_key(
            with_key(valid.clone(), "", "delay_id", json!("d")),
            "",
            "delay_timeout",
            json!(5),
        );
        assert!(sfu_get(&body).unwrap().delegation.is_some());
        let body = with_key(valid, "", "delay_timeout", json!(-5));
        assert!(sfu_get(&body).unwrap().delegation.is_none());
        // Unknown keys inside openid_token are rejected here too.
        assert_eq!(
            decode::<SfuGetBody>(br#"{"room":"r","openid_token":{"x":1}}"#).unwrap_err(),
            MatrixError::not_json()
        );
    }
}
