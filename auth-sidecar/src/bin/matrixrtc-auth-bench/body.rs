//! The shape of the load: which user a request is for, and its Element-Call-shaped `/get_token` body.
//!
//! User `N` presents the OpenID token `tok<N>`, which the fake homeserver vouches for as
//! `@utok<N>:<server name>`; the body claims exactly that user, so every request should get a token.
//! Rooms cycle through a fixed number of room IDs.

use std::fmt::Write;

/// The user ID the fake homeserver answers for the token of `user`.
pub fn user_id(user: u64, server_name: &str) -> String {
    format!("@utok{user}:{server_name}")
}

/// Appends the `/get_token` body of `user` in room `room` to `out`.
pub fn write_get_token(out: &mut String, user: u64, room: u64, server_name: &str) {
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        concat!(
            r#"{{"room_id":"!room{room}:{hs}","slot_id":"m.call#ROOM","#,
            r#""openid_token":{{"access_token":"tok{user}","token_type":"Bearer","#,
            r#""matrix_server_name":"{hs}","expires_in":3600}},"#,
            r#""member":{{"id":"@utok{user}:{hs}:DEV{user}","claimed_user_id":"@utok{user}:{hs}","#,
            r#""claimed_device_id":"DEV{user}"}}}}"#
        ),
        room = room,
        user = user,
        hs = server_name,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_claims_the_user_the_token_belongs_to() {
        let mut out = String::new();
        write_get_token(&mut out, 42, 7, "127.0.0.1:8448");
        let body: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(body["room_id"], "!room7:127.0.0.1:8448");
        assert_eq!(body["openid_token"]["access_token"], "tok42");
        assert_eq!(body["openid_token"]["matrix_server_name"], "127.0.0.1:8448");
        assert_eq!(
            body["member"]["claimed_user_id"],
            user_id(42, "127.0.0.1:8448")
        );
        assert_eq!(body["member"]["claimed_device_id"], "DEV42");
    }
}
