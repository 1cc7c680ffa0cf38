//! LiveKit room creation (spec §3.1, §3.2): only for full-access users, on every token request, with
//! 300/20, at the URL derived from `LIVEKIT_URL` with its path kept; and how the full-access list parses.

use crate::support::body::{self, DEVICE_ID, MEMBER_ID, ROOM_ID, SLOT_ID};
use crate::support::jwt::{assert_create_room_token, hash};
use crate::support::livekit::{CREATE_ROOM_PATH, CreateRoomCall};
use crate::support::service::free_port;
use crate::support::{World, assert_token_response, bounded};

const PATH: &str = "/get_token";

/// One CreateRoom per token request, with name = alias, empty_timeout 300, departure_timeout 20, no
/// participant limit and nothing else, authorised by an admin token with `roomCreate`.
#[tokio::test]
async fn full_access_token_requests_create_the_room_each_time() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world.service().start().await;
        let request = body::get_token(&world.hs.server_name(), "token-alice", &user);

        for _ in 0..2 {
            assert_eq!(service.post_json(PATH, &request).await.status, 200);
        }

        let calls = world.livekit.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        for call in &calls {
            assert_eq!(call.path, CREATE_ROOM_PATH);
            assert_eq!(
                call.name.as_deref(),
                Some(hash(&[ROOM_ID, SLOT_ID]).as_str())
            );
            assert_eq!(call.empty_timeout, Some(300));
            assert_eq!(call.departure_timeout, Some(20));
            assert!(
                matches!(call.max_participants, None | Some(0)),
                "unlimited participants: {call:?}"
            );
            assert!(call.other_fields.is_empty(), "nothing else set: {call:?}");
            assert_create_room_token(call.bearer.as_deref());
        }
        assert!(world.livekit.other_paths().is_empty());
    })
    .await;
}

/// A path prefix in `LIVEKIT_URL` is kept for the Twirp call, and the URL is returned verbatim.
#[tokio::test]
async fn livekit_url_path_prefix_is_kept() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let url = format!("{}/livekit/sfu", world.livekit.ws_url());
        let service = world.service().set("LIVEKIT_URL", &url).start().await;

        let response = service
            .post_json(
                PATH,
                &body::get_token(&world.hs.server_name(), "token-alice", &user),
            )
            .await;

        assert_token_response(
            &response,
            &url,
            &hash(&[&user, DEVICE_ID, MEMBER_ID]),
            &hash(&[ROOM_ID, SLOT_ID]),
        );
        assert_one_create_room_at(&world, "/livekit/sfu");
    })
    .await;
}

/// `LIVEKIT_API_URL` (ours) moves the Twirp calls elsewhere, path kept, while clients still get
/// `LIVEKIT_URL` verbatim. Here `LIVEKIT_URL` points at a port nobody listens on, so a room can only be
/// created through `LIVEKIT_API_URL`.
#[tokio::test]
async fn livekit_api_url_takes_the_twirp_calls_and_livekit_url_stays_for_clients() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let public_url = format!("wss://127.0.0.1:{}/sfu", free_port());
        let api_url = format!(
            "{}/internal",
            world.livekit.ws_url().replacen("ws://", "http://", 1)
        );
        let service = world
            .service()
            .set("LIVEKIT_URL", &public_url)
            .set("LIVEKIT_API_URL", &api_url)
            .start()
            .await;

        let response = service
            .post_json(
                PATH,
                &body::get_token(&world.hs.server_name(), "token-alice", &user),
            )
            .await;

        assert_token_response(
            &response,
            &public_url,
            &hash(&[&user, DEVICE_ID, MEMBER_ID]),
            &hash(&[ROOM_ID, SLOT_ID]),
        );
        let call = assert_one_create_room_at(&world, "/internal");
        assert_create_room_token(call.bearer.as_deref());
    })
    .await;
}

/// An unreachable LiveKit is a room-creation failure: 500 `M_UNKNOWN`.
#[tokio::test]
async fn unreachable_livekit_is_internal_error() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world
            .service()
            .set("LIVEKIT_URL", &format!("ws://127.0.0.1:{}", free_port()))
            .start()
            .await;

        let response = service
            .post_json(
                PATH,
                &body::get_token(&world.hs.server_name(), "token-alice", &user),
            )
            .await;

        body::assert_matrix_error(&response, 500, "M_UNKNOWN", "Unable to create room on SFU");
    })
    .await;
}

/// `*` alone makes everyone full-access. It trusts no one, though: the SSRF guard still keeps a wildcard
/// user's homeserver off loopback unless the allowlist says otherwise (otherwise any client could aim the
/// service at an internal address by naming it as its homeserver).
#[tokio::test]
async fn wildcard_alone_grants_full_access_but_no_trust() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let request = body::get_token(&world.hs.server_name(), "token-alice", &user);

        let untrusting = world
            .service()
            .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", "*")
            .start()
            .await;
        let response = untrusting.post_json(PATH, &request).await;
        body::assert_unauthorized(&response);
        assert_eq!(world.hs.connection_count(), 0, "loopback stays off limits");

        let service = world
            .service()
            .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", "*")
            .set("LIVEKIT_OUTBOUND_IP_ALLOWLIST", "127.0.0.0/8")
            .start()
            .await;
        let response = service.post_json(PATH, &request).await;

        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(
            world.livekit.calls().len(),
            1,
            "full access: the room is created"
        );
    })
    .await;
}

/// `LIVEKIT_TRUSTED_HOMESERVERS` (what the operator sets to its own `spec.serverName`) exempts exactly
/// the named homeserver from the SSRF guard, with `*` as with a named list; trust grants no full access.
#[tokio::test]
async fn trusted_homeserver_is_reached_on_loopback_under_the_wildcard() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let request = body::get_token(&world.hs.server_name(), "token-alice", &user);

        let service = world
            .service()
            .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", "*")
            .set(
                "LIVEKIT_TRUSTED_HOMESERVERS",
                &format!("other.example.org, {}", world.hs.server_name()),
            )
            .start()
            .await;
        let response = service.post_json(PATH, &request).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(world.livekit.calls().len(), 1, "full access through `*`");

        let restricted = world
            .restricted_service()
            .set("LIVEKIT_TRUSTED_HOMESERVERS", &world.hs.server_name())
            .start()
            .await;
        let response = restricted.post_json(PATH, &request).await;
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(world.livekit.calls().len(), 1, "trusted, but no room");

        // Another spelling of the same address is another name, and stays guarded.
        let near_miss = world.hs.server_name().replace("127.0.0.1", "localhost");
        let guarded = world
            .service()
            .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", "*")
            .set("LIVEKIT_TRUSTED_HOMESERVERS", &near_miss)
            .start()
            .await;
        let connections = world.hs.connection_count();
        body::assert_unauthorized(&guarded.post_json(PATH, &request).await);
        assert_eq!(
            world.hs.connection_count(),
            connections,
            "loopback stays off limits"
        );
    })
    .await;
}

/// In a longer list `*` is an ordinary entry that matches nothing.
#[tokio::test]
async fn wildcard_in_a_list_is_a_literal() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let service = world
            .service()
            .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", "*,other.example.org")
            .set("LIVEKIT_OUTBOUND_IP_ALLOWLIST", "127.0.0.0/8")
            .start()
            .await;

        let response = service
            .post_json(
                PATH,
                &body::get_token(&world.hs.server_name(), "token-alice", &user),
            )
            .await;

        assert_eq!(response.status, 200, "{}", response.text());
        assert!(world.livekit.calls().is_empty(), "restricted: no room");
    })
    .await;
}

/// Entries are separated by commas and/or whitespace; matching is exact.
#[tokio::test]
async fn full_access_list_splits_on_commas_and_whitespace() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let server = world.hs.server_name();
        let request = body::get_token(&server, "token-alice", &user);

        for list in [
            format!("other.example.org, {server}"),
            format!("other.example.org\t{server}\n"),
            format!(",,{server},"),
        ] {
            let service = world
                .service()
                .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", &list)
                .start()
                .await;
            assert_eq!(
                service.post_json(PATH, &request).await.status,
                200,
                "{list:?}"
            );
        }
        assert_eq!(world.livekit.calls().len(), 3);

        // A prefix or a different port is not a match.
        let near_misses = format!("127.0.0.1, {server}0");
        let service = world
            .service()
            .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", &near_misses)
            .set("LIVEKIT_OUTBOUND_IP_ALLOWLIST", "127.0.0.0/8")
            .start()
            .await;
        assert_eq!(service.post_json(PATH, &request).await.status, 200);
        assert_eq!(world.livekit.calls().len(), 3, "no room for a near miss");
    })
    .await;
}

/// A list that is not empty but has no entries (`" , "`) must never mean "everyone": the service either
/// refuses to start or treats nobody as full-access (spec §3.1, derived).
#[tokio::test]
async fn list_without_entries_grants_nobody() {
    bounded(async {
        let world = World::start().await;
        let user = world.hs.add_user("token-alice", "alice");
        let config = world
            .service()
            .set("LIVEKIT_FULL_ACCESS_HOMESERVERS", " , ")
            .set("LIVEKIT_OUTBOUND_IP_ALLOWLIST", "127.0.0.0/8");

        match config.start_or_exit().await {
            Ok(service) => {
                let request = body::get_token(&world.hs.server_name(), "token-alice", &user);
                let response = service.post_json(PATH, &request).await;
                assert_eq!(response.status, 200, "{}", response.text());
                assert!(world.livekit.calls().is_empty(), "nobody is full-access");
            }
            Err(exited) => assert_eq!(exited.code, Some(1), "{exited:?}"),
        }
    })
    .await;
}

/// Exactly one CreateRoom reached the fake LiveKit, under `prefix`; returns it.
fn assert_one_create_room_at(world: &World, prefix: &str) -> CreateRoomCall {
    let mut calls = world.livekit.calls();
    assert_eq!(
        calls.len(),
        1,
        "{calls:?} / other: {:?}",
        world.livekit.other_paths()
    );
    let call = calls.remove(0);
    assert_eq!(call.path, format!("{prefix}{CREATE_ROOM_PATH}"));
    call
}
