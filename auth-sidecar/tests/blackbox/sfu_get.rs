//! Legacy `POST /sfu/get` (spec §1.3): its own validation texts, the unhashed identity, the alias with the
//! hard-coded slot, and no claimed-user check.

use serde_json::json;

use crate::support::body::{
    self, DELAY_PAIR, DELEGATION_REFUSED, DEVICE_ID, ROOM_ID, SLOT_ID, assert_bad_json,
    assert_cors, assert_not_json, assert_unauthorized,
};
use crate::support::jwt::{assert_create_room_token, hash};
use crate::support::{World, assert_token_response, bounded};

const PATH: &str = "/sfu/get";
const MISSING_ROOM: &str = "Missing room parameter";
const MISSING_OPENID: &str = "Missing OpenID token parameters";

/// Success: identity `<sub>:<device_id>` (not hashed), alias `H([room, "m.call#ROOM"])`, CreateRoom.
#[tokio::test]
async fn full_access_user_gets_a_token_with_legacy_identity() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;

        let response = service
            .post_json(
                PATH,
                &body::sfu_get(&world.hs.server_name(), "token-alice", DEVICE_ID),
            )
            .await;

        let alias = hash(&[ROOM_ID, SLOT_ID]);
        assert_eq!(
            alias, "krj2dgxw2K6EOm9he4GfQJ6JsSVWfJ8a7BkyjZcSmxs",
            "spec §4 vector"
        );
        assert_token_response(
            &response,
            &world.livekit.ws_url(),
            &format!("{user}:{DEVICE_ID}"),
            &alias,
        );
        let calls = world.livekit.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].name.as_deref(), Some(alias.as_str()));
        assert_create_room_token(calls[0].bearer.as_deref());
    })
    .await;
}

/// `device_id` is optional: empty or absent gives `<sub>:`.
#[tokio::test]
async fn device_id_may_be_empty_or_absent() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;
        let with_empty = body::sfu_get(&world.hs.server_name(), "token-alice", "");
        let mut without = with_empty.clone();
        without.as_object_mut().expect("object").remove("device_id");

        for request in [with_empty, without] {
            let response = service.post_json(PATH, &request).await;
            assert_token_response(
                &response,
                &world.livekit.ws_url(),
                &format!("{user}:"),
                &hash(&[ROOM_ID, SLOT_ID]),
            );
        }
    })
    .await;
}

/// Decode failures, including a `/get_token`-shaped body, are `M_NOT_JSON` with no lookup.
#[tokio::test]
async fn undecodable_bodies_are_not_json_without_a_lookup() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;
        let server = world.hs.server_name();
        let valid = body::sfu_get(&server, "token-alice", DEVICE_ID);
        let mut unknown_key = valid.clone();
        unknown_key["slot_id"] = json!(SLOT_ID);
        let mut unknown_openid_key = valid.clone();
        unknown_openid_key["openid_token"]["extra"] = json!(true);
        let mut string_timeout = valid.clone();
        string_timeout["delay_timeout"] = json!("1000");

        let cases = [
            (
                "new-shape body",
                body::get_token(&server, "token-alice", &user),
            ),
            ("unknown key", unknown_key),
            ("unknown key in openid_token", unknown_openid_key),
            ("delay_timeout as a string", string_timeout),
            ("array", json!([valid])),
        ];
        for (what, request) in cases {
            println!("case: {what}");
            let response = service.post_json(PATH, &request).await;
            assert_not_json(&response);
            assert_cors(&response, what);
        }
        let response = service
            .request(http::Method::POST, PATH)
            .body("{\"room\":")
            .send()
            .await;
        assert_not_json(&response);
        assert_eq!(world.hs.lookup_count(), 0);
    })
    .await;
}

/// The legacy validation texts, in order: room, then OpenID fields, then the delay pair.
#[tokio::test]
async fn missing_fields_are_bad_json_with_legacy_texts() {
    bounded(async {
        let world = World::start().await;
        world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;
        let valid = body::sfu_get(&world.hs.server_name(), "token-alice", DEVICE_ID);
        let edited = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut request = valid.clone();
            edit(&mut request);
            request
        };
        let cases = [
            ("empty object", json!({}), MISSING_ROOM),
            (
                "empty room",
                edited(&|b| b["room"] = json!("")),
                MISSING_ROOM,
            ),
            (
                "room beats openid",
                edited(&|b| {
                    b["room"] = json!("");
                    b["openid_token"] = json!({});
                }),
                MISSING_ROOM,
            ),
            (
                "missing openid_token",
                edited(&|b| {
                    b.as_object_mut().expect("object").remove("openid_token");
                }),
                MISSING_OPENID,
            ),
            (
                "empty access_token",
                edited(&|b| b["openid_token"]["access_token"] = json!("")),
                MISSING_OPENID,
            ),
            (
                "empty matrix_server_name",
                edited(&|b| b["openid_token"]["matrix_server_name"] = json!("")),
                MISSING_OPENID,
            ),
            (
                "openid beats delay",
                edited(&|b| {
                    b["openid_token"]["access_token"] = json!("");
                    b["delay_id"] = json!("d1");
                }),
                MISSING_OPENID,
            ),
            (
                "delay_id alone",
                edited(&|b| b["delay_id"] = json!("d1")),
                DELAY_PAIR,
            ),
            (
                "delay_timeout alone",
                edited(&|b| b["delay_timeout"] = json!(1000)),
                DELAY_PAIR,
            ),
        ];
        for (what, request, text) in cases {
            println!("case: {what}");
            let response = service.post_json(PATH, &request).await;
            assert_bad_json(&response, text);
            assert_cors(&response, what);
        }
        assert_eq!(world.hs.lookup_count(), 0);
        assert!(world.livekit.calls().is_empty());
    })
    .await;
}

/// A failed lookup is 401 here too.
#[tokio::test]
async fn unknown_openid_token_is_unauthorized() {
    bounded(async {
        let world = World::start().await;
        let service = world.service().start().await;

        let response = service
            .post_json(
                PATH,
                &body::sfu_get(&world.hs.server_name(), "no-such-token", DEVICE_ID),
            )
            .await;

        assert_unauthorized(&response);
        assert_cors(&response, "401");
        assert_eq!(world.hs.lookup_count(), 1);
        assert!(world.livekit.calls().is_empty());
    })
    .await;
}

/// Restricted users get a token but no room, and cannot delegate.
#[tokio::test]
async fn restricted_user_gets_a_token_but_no_room_and_no_delegation() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world
            .restricted_service()
            .set("LIVEKIT_OUTBOUND_IP_ALLOWLIST", "127.0.0.0/8")
            .start()
            .await;
        let request = body::sfu_get(&world.hs.server_name(), "token-alice", DEVICE_ID);

        let response = service.post_json(PATH, &request).await;
        assert_token_response(
            &response,
            &world.livekit.ws_url(),
            &format!("{user}:{DEVICE_ID}"),
            &hash(&[ROOM_ID, SLOT_ID]),
        );

        let mut delegating = request;
        delegating["delay_id"] = json!("syd_abcdef");
        delegating["delay_timeout"] = json!(30_000);
        let response = service.post_json(PATH, &delegating).await;
        assert_bad_json(&response, DELEGATION_REFUSED);

        assert!(
            world.livekit.calls().is_empty(),
            "no room for restricted users"
        );
    })
    .await;
}

/// CreateRoom failing gives 500 on the legacy endpoint too.
#[tokio::test]
async fn room_creation_failure_is_internal_error() {
    bounded(async {
        let world = World::start().await;
        world.hs.add_user("token-alice", "alice");
        world.livekit.fail();
        let service = world.service().start().await;

        let response = service
            .post_json(
                PATH,
                &body::sfu_get(&world.hs.server_name(), "token-alice", DEVICE_ID),
            )
            .await;

        body::assert_matrix_error(&response, 500, "M_UNKNOWN", "Unable to create room on SFU");
        assert_cors(&response, "CreateRoom failure");
    })
    .await;
}
