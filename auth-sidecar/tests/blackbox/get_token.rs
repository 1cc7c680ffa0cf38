//! `POST /get_token` (spec §1.2): every row of the error table in order, and the success path.

use serde_json::{Value, json};

use crate::support::body::{
    self, DELAY_PAIR, DELEGATION_REFUSED, DEVICE_ID, MEMBER_ID, ROOM_ID, SLOT_ID, assert_bad_json,
    assert_cors, assert_not_json, assert_unauthorized,
};
use crate::support::jwt::{assert_create_room_token, hash};
use crate::support::{World, assert_token_response, bounded};

const PATH: &str = "/get_token";
const ROOM_OR_SLOT: &str = "The request body is missing `room_id` or `slot_id`";
const MEMBER_FIELD: &str =
    "The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`";
const OPENID_FIELD: &str =
    "The request body `openid_token` is missing a `access_token` or `matrix_server_name`";

/// Row 9: a full-access user gets `{"url","jwt"}` with the hashed identity and alias (§3.3, §4).
#[tokio::test]
async fn full_access_user_gets_a_token_with_hashed_identity_and_alias() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;

        let response = service
            .post_json(
                PATH,
                &body::get_token(&world.hs.server_name(), "token-alice", &user),
            )
            .await;

        let identity = hash(&[&user, DEVICE_ID, MEMBER_ID]);
        let alias = hash(&[ROOM_ID, SLOT_ID]);
        assert_token_response(&response, &world.livekit.ws_url(), &identity, &alias);
        let calls = world.livekit.calls();
        assert_eq!(calls.len(), 1, "one CreateRoom: {calls:?}");
        assert_eq!(calls[0].name.as_deref(), Some(alias.as_str()));
        assert_create_room_token(calls[0].bearer.as_deref());
        assert_eq!(world.hs.lookup_count(), 1);
    })
    .await;
}

/// The alias test vector of the Go tests and the MSC appendix, end to end.
#[tokio::test]
async fn alias_matches_the_spec_test_vector() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;
        let mut request = body::get_token(&world.hs.server_name(), "token-alice", &user);
        request["room_id"] = json!("!roomid:example.com");
        request["slot_id"] = json!("slot1234");

        let response = service.post_json(PATH, &request).await;

        let claims = assert_token_response(
            &response,
            &world.livekit.ws_url(),
            &hash(&[&user, DEVICE_ID, MEMBER_ID]),
            "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc",
        );
        assert_eq!(claims["video"]["room"].as_str().map(str::len), Some(43));
    })
    .await;
}

/// Go serialises `&` as `\u0026` before hashing; canonical JSON keeps it raw. Either is a deliberate
/// choice (spec §4), anything else is a bug.
#[tokio::test]
async fn alias_of_html_special_characters_is_go_or_canonical() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;
        let mut request = body::get_token(&world.hs.server_name(), "token-alice", &user);
        request["room_id"] = json!("!a&b:example.com");

        let response = service.post_json(PATH, &request).await;

        assert_eq!(response.status, 200, "{}", response.text());
        let room = world.livekit.calls()[0].name.clone().unwrap_or_default();
        assert!(
            [
                "BlPHg/JCOxLQr20ttEizBQLd7Bhh5m+r3M8rO3ejvzo",
                "BaxXL6saSq+gSL5me/YDg7iH7KCueJy1DyzHVuUuqCk"
            ]
            .contains(&room.as_str()),
            "alias {room}"
        );
    })
    .await;
}

/// Row 2: anything that does not decode into the request shape is `M_NOT_JSON`, before any lookup.
#[tokio::test]
async fn undecodable_bodies_are_not_json_without_a_lookup() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;
        let valid = body::get_token(&world.hs.server_name(), "token-alice", &user);
        let with = |pointer: &str, key: &str, value: Value| {
            let mut body = valid.clone();
            body.pointer_mut(pointer).expect("pointer")[key] = value;
            serde_json::to_vec(&body).expect("JSON")
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty body", Vec::new()),
            ("malformed", b"{\"room_id\":".to_vec()),
            ("array", b"[]".to_vec()),
            ("string", b"\"room\"".to_vec()),
            ("number", b"42".to_vec()),
            ("unknown top-level key", with("", "extra", json!(1))),
            (
                "unknown key in openid_token",
                with("/openid_token", "extra", json!("x")),
            ),
            (
                "unknown key in member",
                with("/member", "extra", json!("x")),
            ),
            (
                "delay_timeout as a string",
                with("", "delay_timeout", json!("7200000")),
            ),
            (
                "expires_in as a float",
                with("/openid_token", "expires_in", json!(3600.5)),
            ),
            ("room_id as a number", with("", "room_id", json!(1))),
            ("member as a string", with("", "member", json!("alice"))),
        ];
        for (what, bytes) in cases {
            println!("case: {what}");
            let response = service
                .request(http::Method::POST, PATH)
                .header("content-type", "application/json")
                .body(bytes)
                .send()
                .await;
            assert_not_json(&response);
            assert_cors(&response, what);
        }
        assert_eq!(
            world.hs.lookup_count(),
            0,
            "no userinfo lookup before validation"
        );
        assert!(world.livekit.calls().is_empty());
    })
    .await;
}

/// Rows 3a–3d with their exact texts, including which check wins when several fail.
#[tokio::test]
async fn missing_fields_are_bad_json_in_spec_order_without_a_lookup() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;
        let valid = body::get_token(&world.hs.server_name(), "token-alice", &user);
        let edit = |edits: &[(&str, Option<Value>)]| {
            let mut body = valid.clone();
            for (pointer, value) in edits {
                let (parent, key) = pointer.rsplit_once('/').expect("pointer has a key");
                let parent = body.pointer_mut(parent).expect("parent exists");
                match value {
                    Some(value) => parent[key] = value.clone(),
                    None => {
                        parent.as_object_mut().expect("object").remove(key);
                    }
                }
            }
            body
        };
        let empty = || Some(json!(""));
        let cases: Vec<(&str, Value, &str)> = vec![
            ("empty object", json!({}), ROOM_OR_SLOT),
            (
                "empty room_id",
                edit(&[("/room_id", empty())]),
                ROOM_OR_SLOT,
            ),
            ("missing room_id", edit(&[("/room_id", None)]), ROOM_OR_SLOT),
            (
                "empty slot_id",
                edit(&[("/slot_id", empty())]),
                ROOM_OR_SLOT,
            ),
            ("missing slot_id", edit(&[("/slot_id", None)]), ROOM_OR_SLOT),
            (
                "empty member.id",
                edit(&[("/member/id", empty())]),
                MEMBER_FIELD,
            ),
            (
                "empty claimed_user_id",
                edit(&[("/member/claimed_user_id", empty())]),
                MEMBER_FIELD,
            ),
            (
                "empty claimed_device_id",
                edit(&[("/member/claimed_device_id", empty())]),
                MEMBER_FIELD,
            ),
            ("missing member", edit(&[("/member", None)]), MEMBER_FIELD),
            (
                "empty access_token",
                edit(&[("/openid_token/access_token", empty())]),
                OPENID_FIELD,
            ),
            (
                "empty matrix_server_name",
                edit(&[("/openid_token/matrix_server_name", empty())]),
                OPENID_FIELD,
            ),
            (
                "missing openid_token",
                edit(&[("/openid_token", None)]),
                OPENID_FIELD,
            ),
            (
                "delay_id alone",
                edit(&[("/delay_id", Some(json!("d1")))]),
                DELAY_PAIR,
            ),
            (
                "delay_timeout alone",
                edit(&[("/delay_timeout", Some(json!(10_000)))]),
                DELAY_PAIR,
            ),
            (
                "delay_id with zero timeout",
                edit(&[
                    ("/delay_id", Some(json!("d1"))),
                    ("/delay_timeout", Some(json!(0))),
                ]),
                DELAY_PAIR,
            ),
            (
                "delay_id with negative timeout",
                edit(&[
                    ("/delay_id", Some(json!("d1"))),
                    ("/delay_timeout", Some(json!(-5))),
                ]),
                DELAY_PAIR,
            ),
            (
                "room beats member and openid",
                edit(&[
                    ("/room_id", empty()),
                    ("/member", None),
                    ("/openid_token", None),
                ]),
                ROOM_OR_SLOT,
            ),
            (
                "member beats openid and delay",
                edit(&[
                    ("/member/id", empty()),
                    ("/openid_token", None),
                    ("/delay_id", Some(json!("d1"))),
                ]),
                MEMBER_FIELD,
            ),
            (
                "openid beats delay",
                edit(&[
                    ("/openid_token/access_token", empty()),
                    ("/delay_id", Some(json!("d1"))),
                ]),
                OPENID_FIELD,
            ),
        ];
        for (what, request, text) in cases {
            println!("case: {what}");
            let response = service.post_json(PATH, &request).await;
            assert_bad_json(&response, text);
            assert_cors(&response, what);
        }
        assert_eq!(
            world.hs.lookup_count(),
            0,
            "no userinfo lookup before validation"
        );
        assert!(world.livekit.calls().is_empty());
    })
    .await;
}

/// A negative `delay_timeout` without `delay_id` passes the pairing check and means "no delegation"
/// (spec §1.2 note, derived).
#[tokio::test]
async fn negative_delay_timeout_without_delay_id_is_no_delegation() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;
        let mut request = body::get_token(&world.hs.server_name(), "token-alice", &user);
        request["delay_timeout"] = json!(-1);

        let response = service.post_json(PATH, &request).await;

        assert_token_response(
            &response,
            &world.livekit.ws_url(),
            &hash(&[&user, DEVICE_ID, MEMBER_ID]),
            &hash(&[ROOM_ID, SLOT_ID]),
        );
        assert_eq!(world.livekit.calls().len(), 1);
    })
    .await;
}

/// Row 5: `claimed_user_id` must equal the verified `sub` exactly (case-sensitive).
#[tokio::test]
async fn claimed_user_other_than_sub_is_unauthorized() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;
        let server = world.hs.server_name();

        for claimed in [
            world.hs.user("bob"),
            world.hs.user("Alice"),
            format!("{user} "),
        ] {
            let response = service
                .post_json(PATH, &body::get_token(&server, "token-alice", &claimed))
                .await;
            assert_unauthorized(&response);
            assert_cors(&response, "claimed user mismatch");
        }
        assert!(
            world.hs.lookup_count() >= 1,
            "the mismatch is found after the lookup"
        );
        assert!(
            world.livekit.calls().is_empty(),
            "no room for an unauthorised request"
        );
    })
    .await;
}

/// Row 6: a restricted user who asks for delegation gets 400, and no room is created.
#[tokio::test]
async fn restricted_user_cannot_delegate() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world
            .restricted_service()
            .set("LIVEKIT_OUTBOUND_IP_ALLOWLIST", "127.0.0.0/8")
            .start()
            .await;
        let mut request = body::get_token(&world.hs.server_name(), "token-alice", &user);
        request["delay_id"] = json!("syd_abcdef");
        request["delay_timeout"] = json!(30_000);

        let response = service.post_json(PATH, &request).await;

        assert_bad_json(&response, DELEGATION_REFUSED);
        assert_cors(&response, "delegation refused");
        assert_eq!(world.hs.lookup_count(), 1, "refused after the lookup");
        assert!(world.livekit.calls().is_empty());
    })
    .await;
}

/// Row 8a: a full-access user delegating while the client-server API cannot be discovered gets 400, and
/// this is checked before the room is created. The fake homeserver answers 404 to
/// `/.well-known/matrix/client`, which counts as "no client API".
#[tokio::test]
async fn delegation_with_undiscoverable_client_api_is_refused_before_room_creation() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;
        let mut request = body::get_token(&world.hs.server_name(), "token-alice", &user);
        request["delay_id"] = json!("syd_abcdef");
        request["delay_timeout"] = json!(30_000);
        // Ignored by the service (spec §1.2): it must not make the API resolvable.
        request["delay_cs_api_url"] = json!("http://127.0.0.1:9/");

        let response = service.post_json(PATH, &request).await;

        assert_bad_json(&response, "Unable to resolve client-server API");
        assert!(world.livekit.calls().is_empty(), "no room before the check");
        assert_eq!(
            world.hs.other_paths(),
            ["/.well-known/matrix/client"],
            "discovery was attempted (spec §5.4)"
        );
    })
    .await;
}

/// Row 8b: CreateRoom failing gives 500 `M_UNKNOWN`.
#[tokio::test]
async fn room_creation_failure_is_internal_error() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        world.livekit.fail();
        let service = world.service().start().await;

        let response = service
            .post_json(
                PATH,
                &body::get_token(&world.hs.server_name(), "token-alice", &user),
            )
            .await;

        body::assert_matrix_error(&response, 500, "M_UNKNOWN", "Unable to create room on SFU");
        assert_cors(&response, "CreateRoom failure");
        assert_eq!(world.livekit.calls().len(), 1);
    })
    .await;
}
