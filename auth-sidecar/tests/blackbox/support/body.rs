//! Request bodies shaped like the ones Element Call sends, and the exact responses the spec prescribes.

use serde_json::{Value, json};

use super::client::Response;

pub const ROOM_ID: &str = "!room:example.com";
/// Element Call's slot; also the slot `/sfu/get` hard-codes into its alias.
pub const SLOT_ID: &str = "m.call#ROOM";
pub const MEMBER_ID: &str = "member-1";
pub const DEVICE_ID: &str = "DEVICE";

/// A valid `/get_token` body (spec §1.2) for a user of `server_name`.
pub fn get_token(server_name: &str, access_token: &str, claimed_user_id: &str) -> Value {
    json!({
        "room_id": ROOM_ID,
        "slot_id": SLOT_ID,
        "openid_token": openid_token(server_name, access_token),
        "member": {
            "id": MEMBER_ID,
            "claimed_user_id": claimed_user_id,
            "claimed_device_id": DEVICE_ID,
        },
    })
}

/// A valid legacy `/sfu/get` body (spec §1.3).
pub fn sfu_get(server_name: &str, access_token: &str, device_id: &str) -> Value {
    json!({
        "room": ROOM_ID,
        "openid_token": openid_token(server_name, access_token),
        "device_id": device_id,
    })
}

/// The `openid_token` object exactly as a homeserver hands it out.
pub fn openid_token(server_name: &str, access_token: &str) -> Value {
    json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "matrix_server_name": server_name,
        "expires_in": 3600,
    })
}

/// The four headers every response of the POST endpoints carries (spec §1.1).
pub const CORS_HEADERS: [(&str, &str); 4] = [
    ("content-type", "application/json"),
    ("access-control-allow-origin", "*"),
    ("access-control-allow-methods", "POST"),
    (
        "access-control-allow-headers",
        "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token",
    ),
];

/// Asserts the CORS and JSON headers of spec §1.1, and that there is no Max-Age and no Allow header.
pub fn assert_cors(response: &Response, what: &str) {
    for (name, value) in CORS_HEADERS {
        assert_eq!(
            response.header(name).as_deref(),
            Some(value),
            "{what}: header {name} (status {})",
            response.status
        );
    }
    for absent in ["access-control-max-age", "allow"] {
        assert_eq!(response.header(absent), None, "{what}: no {absent} header");
    }
}

/// Asserts the exact Matrix error of spec §1.1: status, then the body
/// `{"errcode":"<code>","error":"<text>"}` and a newline, byte for byte.
pub fn assert_matrix_error(response: &Response, status: u16, errcode: &str, error: &str) {
    let expected = format!(
        "{}\n",
        serde_json::to_string(&json!({ "errcode": errcode, "error": error }))
            .expect("serialise error")
    );
    assert_eq!(
        (response.status, response.text()),
        (status, expected),
        "expected {status} {errcode} {error:?}"
    );
}

pub const NOT_JSON: (&str, &str) = ("M_NOT_JSON", "Error reading request");
pub const UNAUTHORIZED: (&str, &str) = ("M_UNAUTHORIZED", "The request could not be authorised.");
pub const DELEGATION_REFUSED: &str =
    "Delegation of delayed events is only supported for full access users";
pub const DELAY_PAIR: &str = "The request body is missing `delay_id` or `delay_timeout`";

/// Asserts a 401 `M_UNAUTHORIZED` with the spec's text.
pub fn assert_unauthorized(response: &Response) {
    assert_matrix_error(response, 401, UNAUTHORIZED.0, UNAUTHORIZED.1);
}

/// Asserts a 400 `M_NOT_JSON` with the spec's text.
pub fn assert_not_json(response: &Response) {
    assert_matrix_error(response, 400, NOT_JSON.0, NOT_JSON.1);
}

/// Asserts a 400 `M_BAD_JSON` with the given text.
pub fn assert_bad_json(response: &Response, error: &str) {
    assert_matrix_error(response, 400, "M_BAD_JSON", error);
}
