"""AS mode (as-mode spec) against a real Synapse 1.163 with `msc4502_enabled`, `msc4512_enabled` and our
registration: Synapse authenticates the user and forwards `rtc/livekit/*` to the service with its HS token;
the service asks Synapse `/is_joined` with the AS token. Tokens are checked with livekit-api's own verifier,
room creation is observed at the fake LiveKit Twirp API."""

import base64
import hashlib
import hmac
import json
import os
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import jwt
import pytest
from livekit.api import TokenVerifier

from as_support import AS_ID, AsSynapse, PortedAuthService, request, start_as_service
from fake_livekit import LIVEKIT_KEY, LIVEKIT_SECRET, FakeLiveKit
from hashes import h, identity, room_alias
import processes
from processes import MatrixUser

SLOT_ID = "m.call#ROOM"
VERSIONS = ["v1", "unstable/io.element.msc4195"]


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory, pki: processes.TestPki) -> Iterator[AsSynapse]:
    server = AsSynapse(tmp_path_factory.mktemp("as-synapse"), pki)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def service(tmp_path: Path, pki: processes.TestPki, hs: AsSynapse, livekit: FakeLiveKit) -> Iterator[Callable[..., PortedAuthService]]:
    """Starts the service in AS mode on the registration's port: `service(**extra_env)`."""
    started: list[PortedAuthService] = []

    def start(**extra_env: str) -> PortedAuthService:
        log = tmp_path / f"auth-{len(started)}.log"
        instance = start_as_service(hs, livekit.ws_url, log, SSL_CERT_FILE=str(pki.ca_file), **extra_env)
        started.append(instance)
        return instance

    try:
        yield start
    finally:
        for instance in started:
            instance.close()


@pytest.fixture(scope="module")
def alice(hs: AsSynapse) -> MatrixUser:
    return hs.register(f"alice{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def bob(hs: AsSynapse) -> MatrixUser:
    return hs.register(f"bob{uuid.uuid4().hex[:8]}")


def public_room(hs: AsSynapse, user: MatrixUser) -> str:
    response = hs.client("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, token=user.access_token)
    assert response.status == 200, response.body
    return response.json()["room_id"]


def membership(hs: AsSynapse, user: MatrixUser, room_id: str, action: str) -> None:
    room = urllib.parse.quote(room_id, safe="")
    response = hs.client("POST", f"/_matrix/client/v3/rooms/{room}/{action}", {}, token=user.access_token)
    assert response.status == 200, response.body


def get_token(hs: AsSynapse, user: MatrixUser, body: dict, version: str = "v1"):
    return hs.client("POST", f"/_matrix/client/{version}/rtc/livekit/get_token", body, token=user.access_token)


def token_body(livekit: FakeLiveKit, room_id: str, **extra) -> dict:
    return {"url": livekit.ws_url, "room_id": room_id, "slot_id": SLOT_ID, "member_id": uuid.uuid4().hex, **extra}


def test_identity_vectors_of_the_spec() -> None:
    assert h("@alice:example.com", "memberABC") == "M3VnsLXrkbxIDINXO64u8PZzFyD9ZYFiQULR2dshWYs"
    assert h("@alice:example.com", "m&1") == "5bASIupfp8iAmBJL5y56XrEc4noGHcwliyuwvqSLmLE"


@pytest.mark.parametrize("version", VERSIONS)
def test_member_gets_a_verified_token_through_synapse(hs, alice, livekit, service, version) -> None:
    service()
    room_id = hs.create_room(alice)
    body = token_body(livekit, room_id)

    response = get_token(hs, alice, body, version)

    assert response.status == 200, response.body
    answer = response.json()
    assert list(answer) == ["jwt"], "AS answers carry no url"
    claims = TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(answer["jwt"])
    assert claims.identity == h(alice.user_id, body["member_id"])
    video = claims.video
    assert video.room == room_alias(room_id, SLOT_ID)
    assert (video.room_join, video.can_subscribe, video.can_publish) == (True, True, True)
    assert not video.room_create and not video.room_admin
    assert [call.name for call in livekit.snapshot()] == [room_alias(room_id, SLOT_ID)], "one CreateRoom"


def test_non_members_are_forbidden_and_membership_is_not_cached(hs, alice, bob, livekit, service) -> None:
    service()
    room_id = public_room(hs, alice)
    not_a_member = {"errcode": "M_FORBIDDEN", "error": "The requesting user is not a member of the room"}

    response = get_token(hs, bob, token_body(livekit, room_id))
    assert (response.status, response.json()) == (403, not_a_member), "never joined"

    membership(hs, bob, room_id, "join")
    assert get_token(hs, bob, token_body(livekit, room_id)).status == 200, "joined"
    membership(hs, bob, room_id, "leave")
    response = get_token(hs, bob, token_body(livekit, room_id))
    assert (response.status, response.json()) == (403, not_a_member), "left: asked again, not cached"

    response = get_token(hs, alice, token_body(livekit, f"!unknown{uuid.uuid4().hex[:8]}:{hs.server_name}"))
    assert (response.status, response.json()) == (403, not_a_member), "unknown room"
    assert [call.name for call in livekit.snapshot()] == [room_alias(room_id, SLOT_ID)], "only bob's token made a room"


def test_wrong_url_is_an_invalid_param(hs, alice, livekit, service) -> None:
    service()
    room_id = hs.create_room(alice)

    response = get_token(hs, alice, token_body(livekit, room_id, url="wss://not-our-sfu.example"))

    assert response.status == 400
    assert response.json() == {"errcode": "M_INVALID_PARAM", "error": "The url is not an SFU of this server"}
    assert livekit.snapshot() == []


def test_direct_calls_need_the_hs_token(hs, alice, livekit, service) -> None:
    instance = service()
    room_id = hs.create_room(alice)
    body = token_body(livekit, room_id)
    user = {"X-Matrix-User-Identifier": alice.user_id}
    for version in VERSIONS:
        path = f"/_matrix/client/{version}/rtc/livekit/get_token"
        missing = instance.post(path, body, user)
        assert (missing.status, missing.json()["errcode"]) == (401, "M_MISSING_TOKEN")
        wrong = instance.post(path, body, {**user, "Authorization": f"Bearer {hs.registration.hs_token}x"})
        assert (wrong.status, wrong.json()) == (401, {"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token"})
        # The AS token is not the HS token.
        wrong = instance.post(path, body, {**user, "Authorization": f"Bearer {hs.registration.as_token}"})
        assert wrong.status == 401
        federation = instance.post(f"/_matrix/federation/{version}/rtc/livekit/get_token", {}, {"X-Matrix-Origin": "x"})
        assert (federation.status, federation.json()["errcode"]) == (401, "M_MISSING_TOKEN")
    # With the HS token but no user header (Synapse always sends one).
    response = instance.post(
        "/_matrix/client/v1/rtc/livekit/get_token", body, {"Authorization": f"Bearer {hs.registration.hs_token}"}
    )
    assert (response.status, response.json()["errcode"]) == (401, "M_UNAUTHORIZED")
    assert livekit.snapshot() == []


def test_synapse_pings_the_service(hs, service) -> None:
    instance = service()
    response = hs.client(
        "POST", f"/_matrix/client/v1/appservice/{AS_ID}/ping", {"transaction_id": "t1"}, token=hs.registration.as_token
    )
    assert response.status == 200, response.body
    assert "duration_ms" in response.json()
    wrong = request(
        "POST", f"{instance.url}/_matrix/app/v1/ping", {}, {"Authorization": f"Bearer {hs.registration.as_token}"}
    )
    assert (wrong.status, wrong.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    txn = request(
        "PUT",
        f"{instance.url}/_matrix/app/v1/transactions/1",
        {"events": []},
        {"Authorization": f"Bearer {hs.registration.hs_token}"},
    )
    assert (txn.status, txn.json()) == (200, {})


def test_standalone_endpoints_keep_working(hs, alice, livekit, service) -> None:
    instance = service()
    room_id = hs.create_room(alice)
    body = {
        "room_id": room_id,
        "slot_id": SLOT_ID,
        "openid_token": hs.openid_token(alice),
        "member": {"id": "m1", "claimed_user_id": alice.user_id, "claimed_device_id": alice.device_id},
    }
    response = instance.post("/get_token", body)
    assert response.status == 200, response.body
    claims = TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(response.json()["jwt"])
    assert claims.identity == identity(alice.user_id, alice.device_id, "m1")


def delayed_leave(hs: AsSynapse, user: MatrixUser, room_id: str) -> str:
    """Schedules a delayed call-member state event (MSC4140) and returns its delay ID."""
    room = urllib.parse.quote(room_id, safe="")
    state_key = urllib.parse.quote(f"_{user.user_id}_{user.device_id}", safe="")
    response = hs.client(
        "PUT",
        f"/_matrix/client/v3/rooms/{room}/state/org.matrix.msc3401.call.member/{state_key}"
        "?org.matrix.msc4140.delay=60000",
        {},
        token=user.access_token,
    )
    assert response.status == 200, response.body
    return response.json()["delay_id"]


def test_delegated_leave_is_looked_up_as_the_user(hs, alice, bob, livekit, service) -> None:
    service()
    room_id = public_room(hs, alice)
    other_room = hs.create_room(alice)
    delay_id = delayed_leave(hs, alice, room_id)
    path = "/_matrix/client/v1/rtc/livekit/delegate_delayed_leave"

    def delegate(user: MatrixUser, **overrides):
        body = {**token_body(livekit, room_id), "delay_id": delay_id, **overrides}
        return hs.client("POST", path, body, token=user.access_token)

    unknown = {"errcode": "M_INVALID_PARAM", "error": "Unknown `delay_id`"}
    for response in [
        delegate(alice, delay_id="syd_doesnotexist"),
        delegate(alice, room_id=other_room),
        delegate(bob),  # alice's delay ID, looked up as bob: not his
    ]:
        assert (response.status, response.json()) == (400, unknown)
    response = delegate(alice)
    assert (response.status, response.json()) == (200, {})
    assert livekit.snapshot() == [], "delegation creates no room"


def call_member_state(hs: AsSynapse, user: MatrixUser, room_id: str) -> int:
    """The status of the user's call-member state event (404 until the delayed leave was sent)."""
    room = urllib.parse.quote(room_id, safe="")
    state_key = urllib.parse.quote(f"_{user.user_id}_{user.device_id}", safe="")
    return hs.client(
        "GET", f"/_matrix/client/v3/rooms/{room}/state/org.matrix.msc3401.call.member/{state_key}", token=user.access_token
    ).status


def test_delegated_leave_is_restarted_and_sent_as_the_user(hs, alice, livekit, service) -> None:
    """Spec §5.3: an AS job's `restart` and `send` go to our homeserver with the AS token and `?user_id=`.
    Synapse limits unauthenticated delayed-event management per client address (one call here, see
    as_support.py); the asserted calls are the AS's, which is not rate-limited."""
    instance = service()
    room_id = public_room(hs, alice)
    delay_id = delayed_leave(hs, alice, room_id)
    assert call_member_state(hs, alice, room_id) == 404, "not sent yet"
    # Use up the per-address allowance of unauthenticated calls, from the service's address.
    unauthenticated = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/syd_nothing/restart"
    statuses = [hs.client("POST", unauthenticated, {}).status for _ in range(2)]
    assert statuses[-1] == 429, statuses
    body = {**token_body(livekit, room_id), "delay_id": delay_id}
    response = hs.client(
        "POST", "/_matrix/client/v1/rtc/livekit/delegate_delayed_leave", body, token=alice.access_token
    )
    assert (response.status, response.json()) == (200, {})
    participant = {
        "room": {"sid": "RM_fake", "name": room_alias(room_id, SLOT_ID)},
        "participant": {"sid": "PA_alice", "identity": h(alice.user_id, body["member_id"])},
        "createdAt": str(int(time.time())),
    }
    signed_webhook(instance, {"event": "participant_joined", "id": "EV_1", **participant})
    time.sleep(0.5)  # the job restarts the delayed event on connecting
    left = {**participant, "participant": {**participant["participant"], "disconnectReason": "CLIENT_INITIATED"}}
    signed_webhook(instance, {"event": "participant_left", "id": "EV_2", **left})

    deadline = time.monotonic() + 10  # the event's own delay is 60 s
    while time.monotonic() < deadline and call_member_state(hs, alice, room_id) == 404:
        time.sleep(0.2)
    assert call_member_state(hs, alice, room_id) == 200, instance.log.read_text()[-3000:]


def test_required_membership_on_the_standalone_endpoints(hs, alice, bob, livekit, service) -> None:
    instance = service(LIVEKIT_REQUIRE_MEMBERSHIP="true")
    room_id = hs.create_room(alice)

    def standalone(user: MatrixUser):
        return instance.post(
            "/get_token",
            {
                "room_id": room_id,
                "slot_id": SLOT_ID,
                "openid_token": hs.openid_token(user),
                "member": {"id": "m1", "claimed_user_id": user.user_id, "claimed_device_id": user.device_id},
            },
        )

    response = standalone(bob)
    assert response.status == 403, response.body
    assert response.json() == {"errcode": "M_FORBIDDEN", "error": "The requesting user is not a member of the room"}
    assert response.headers.get("access-control-allow-origin") == "*"
    assert livekit.snapshot() == []
    assert standalone(alice).status == 200
    assert len(livekit.snapshot()) == 1


# --- Federation: two Synapses on loopback, federating over TLS --------------------------------------


@pytest.fixture(scope="module")
def hs_b(tmp_path_factory: pytest.TempPathFactory, pki: processes.TestPki) -> Iterator[AsSynapse]:
    server = AsSynapse(tmp_path_factory.mktemp("as-synapse-b"), pki)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def service_b(tmp_path: Path, pki: processes.TestPki, hs_b: AsSynapse) -> Iterator[PortedAuthService]:
    """B's own service, with its own fake LiveKit."""
    livekit_b = FakeLiveKit()
    instance = start_as_service(hs_b, livekit_b.ws_url, tmp_path / "auth-b.log")
    instance.livekit = livekit_b
    try:
        yield instance
    finally:
        instance.close()
        livekit_b.close()


def join_over_federation(hs_b: AsSynapse, user: MatrixUser, room_id: str, via: str) -> None:
    room = urllib.parse.quote(room_id, safe="")
    response = hs_b.client(
        "POST", f"/_matrix/client/v3/join/{room}?server_name={urllib.parse.quote(via)}", {}, token=user.access_token
    )
    assert response.status == 200, response.body


def test_user_of_b_gets_a_token_for_the_sfu_of_a(hs, hs_b, alice, livekit, service, service_b) -> None:
    service_a = service()
    bob = hs_b.register(f"bob{uuid.uuid4().hex[:8]}")
    room_id = public_room(hs, alice)
    join_over_federation(hs_b, bob, room_id, hs.server_name)
    body = token_body(livekit, room_id, server_name=hs.server_name)

    response = get_token(hs_b, bob, body)

    assert response.status == 200, f"{response.body!r}\nA: {service_a.log.read_text()[-3000:]}"
    claims = TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(response.json()["jwt"])
    assert claims.identity == h(bob.user_id, body["member_id"])
    assert claims.video.room == room_alias(room_id, SLOT_ID)
    assert claims.video.can_publish is False, "B is not in LIVEKIT_REMOTE_CAN_PUBLISH_HOMESERVERS"
    assert [call.name for call in livekit.snapshot()] == [room_alias(room_id, SLOT_ID)], "room on A"
    assert service_b.livekit.snapshot() == [], "no room on B"

    # A's 400 is relayed.
    response = get_token(hs_b, bob, {**body, "url": "wss://not-a-sfu.example"})
    assert (response.status, response.json()) == (
        400,
        {"errcode": "M_INVALID_PARAM", "error": "The url is not an SFU of this server"},
    )

    # A room A is not in: B answers 403 itself, nothing is relayed.
    b_room = public_room(hs_b, bob)
    response = get_token(hs_b, bob, {**body, "room_id": b_room})
    assert (response.status, response.json()) == (
        403,
        {"errcode": "M_FORBIDDEN", "error": "The target server is not joined to the room"},
    )

    # A's service down: Synapse A answers the federation request with an error, mapped to 502.
    service_a.close()
    response = get_token(hs_b, bob, body)
    assert (response.status, response.json()) == (
        502,
        {"errcode": "M_UNKNOWN", "error": "Unable to reach the specified homeserver"},
    )


def test_direct_federation_request_for_a_user_of_another_origin(hs, livekit, service) -> None:
    instance = service()
    response = instance.post(
        "/_matrix/federation/v1/rtc/livekit/get_token",
        {"user_id": "@mallory:evil.example", **token_body(livekit, f"!r:{hs.server_name}")},
        {"Authorization": f"Bearer {hs.registration.hs_token}", "X-Matrix-Origin": "other.example"},
    )
    assert (response.status, response.json()) == (
        403,
        {"errcode": "M_FORBIDDEN", "error": "The user does not belong to the requesting server"},
    )


def test_without_the_is_joined_scope_membership_is_unknown(tmp_path_factory, tmp_path, pki, livekit) -> None:
    """lk-jwt-service's README spells the scope key `io.element.msc4502.scope`: Synapse 1.163 ignores it, so
    `/is_joined` answers 403 and every token request is 502, never a token without a membership check."""
    hs_no_scope = AsSynapse(tmp_path_factory.mktemp("as-synapse-no-scope"), pki, scope_key="io.element.msc4502.scope")
    instance = None
    try:
        instance = start_as_service(hs_no_scope, livekit.ws_url, tmp_path / "auth-no-scope.log")
        carol = hs_no_scope.register(f"carol{uuid.uuid4().hex[:8]}")
        room_id = hs_no_scope.create_room(carol)

        response = get_token(hs_no_scope, carol, token_body(livekit, room_id))

        assert (response.status, response.json()) == (
            502,
            {"errcode": "M_UNKNOWN", "error": "Unable to verify room membership"},
        )
        assert livekit.snapshot() == []
    finally:
        if instance is not None:
            instance.close()
        hs_no_scope.close()


def signed_webhook(service: PortedAuthService, event: dict) -> None:
    """Posts `event` to `/sfu_webhook` signed as our LiveKit signs (HS256; `sha256` of the exact body)."""
    body = json.dumps(event).encode()  # the bytes `request` sends
    now = int(time.time())
    claims = {
        "iss": LIVEKIT_KEY,
        "nbf": now - 5,
        "exp": now + 300,
        "sha256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
        "video": {},
    }
    token = jwt.encode(claims, LIVEKIT_SECRET, algorithm="HS256")
    response = service.post("/sfu_webhook", event, {"Authorization": token})
    assert response.status == 200, response.body


def test_monitor_removes_a_participant_who_left_the_matrix_room(hs, alice, bob, livekit, service) -> None:
    instance = service(LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS="1")
    room_id = public_room(hs, alice)
    membership(hs, bob, room_id, "join")
    body = token_body(livekit, room_id)
    response = get_token(hs, bob, body)
    assert response.status == 200, response.body
    livekit_room = room_alias(room_id, SLOT_ID)
    bob_identity = h(bob.user_id, body["member_id"])
    signed_webhook(
        instance,
        {
            "event": "participant_joined",
            "room": {"sid": "RM_fake", "name": livekit_room},
            "participant": {"sid": "PA_bob", "identity": bob_identity},
            "id": "EV_joined",
            "createdAt": str(int(time.time())),
        },
    )

    # Still a member: sweeps remove nobody.
    time.sleep(2.5)
    assert livekit.removals() == []

    membership(hs, bob, room_id, "leave")
    deadline = time.monotonic() + 10  # interval 1 s: the first sweep after the leave kicks
    while time.monotonic() < deadline and not livekit.removals():
        time.sleep(0.2)
    assert livekit.removals() == [(livekit_room, bob_identity)]


def joined_webhook(instance: PortedAuthService, livekit_room: str, identity_: str) -> None:
    signed_webhook(
        instance,
        {
            "event": "participant_joined",
            "room": {"sid": "RM_fake", "name": livekit_room},
            "participant": {"sid": f"PA_{identity_[:6]}", "identity": identity_},
            "id": f"EV_{uuid.uuid4().hex[:8]}",
            "createdAt": str(int(time.time())),
        },
    )


def wait_for_removal(livekit: FakeLiveKit) -> list[tuple[str, str]]:
    deadline = time.monotonic() + 10  # interval 1 s: a few sweeps
    while time.monotonic() < deadline and not livekit.removals():
        time.sleep(0.2)
    return livekit.removals()


def ban(hs: AsSynapse, admin: MatrixUser, user: MatrixUser, room_id: str) -> None:
    room = urllib.parse.quote(room_id, safe="")
    response = hs.client(
        "POST", f"/_matrix/client/v3/rooms/{room}/ban", {"user_id": user.user_id}, token=admin.access_token
    )
    assert response.status == 200, response.body


def test_a_banned_member_is_removed_and_refused(hs, alice, livekit, service) -> None:
    """§10.2 and §10.5: a ban is a leave to the monitor (only that user is removed), and no token after it."""
    instance = service(LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS="1")
    carol = hs.register(f"carol{uuid.uuid4().hex[:8]}")
    dave = hs.register(f"dave{uuid.uuid4().hex[:8]}")
    room_id = public_room(hs, alice)
    livekit_room = room_alias(room_id, SLOT_ID)
    identities = {}
    for user in (carol, dave):
        membership(hs, user, room_id, "join")
        body = token_body(livekit, room_id)
        assert get_token(hs, user, body).status == 200
        identities[user.user_id] = h(user.user_id, body["member_id"])
        joined_webhook(instance, livekit_room, identities[user.user_id])
    time.sleep(2.5)
    assert livekit.removals() == [], "members stay"

    ban(hs, alice, carol, room_id)

    assert wait_for_removal(livekit) == [(livekit_room, identities[carol.user_id])]
    response = get_token(hs, carol, token_body(livekit, room_id))
    assert (response.status, response.json()) == (
        403,
        {"errcode": "M_FORBIDDEN", "error": "The requesting user is not a member of the room"},
    )
    time.sleep(2.5)
    assert livekit.removals() == [(livekit_room, identities[carol.user_id])], "dave stays"


def test_standalone_tokens_are_tracked_when_membership_is_required(hs, alice, bob, livekit, service) -> None:
    """§8.1: with LIVEKIT_REQUIRE_MEMBERSHIP=true a standalone token is tracked, so its user leaving the
    Matrix room removes them from LiveKit (without it they are not tracked at all)."""
    instance = service(LIVEKIT_REQUIRE_MEMBERSHIP="true", LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS="1")
    room_id = public_room(hs, alice)
    membership(hs, bob, room_id, "join")
    response = instance.post(
        "/get_token",
        {
            "room_id": room_id,
            "slot_id": SLOT_ID,
            "openid_token": hs.openid_token(bob),
            "member": {"id": "m1", "claimed_user_id": bob.user_id, "claimed_device_id": bob.device_id},
        },
    )
    assert response.status == 200, response.body
    livekit_room = room_alias(room_id, SLOT_ID)
    bob_identity = identity(bob.user_id, bob.device_id, "m1")
    joined_webhook(instance, livekit_room, bob_identity)
    time.sleep(2.5)
    assert livekit.removals() == []

    membership(hs, bob, room_id, "leave")

    assert wait_for_removal(livekit) == [(livekit_room, bob_identity)]


def register_admin(hs: AsSynapse) -> MatrixUser:
    """An admin through the shared-secret registration API (for the rate-limit override)."""
    url = f"{hs.client_url}/_synapse/admin/v1/register"
    nonce = processes.http("GET", url).json()["nonce"]
    localpart, password = f"admin{uuid.uuid4().hex[:8]}", os.urandom(12).hex()
    mac = hmac.new(hs.shared_secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join(part.encode() for part in (nonce, localpart, password, "admin")))
    body = {"nonce": nonce, "username": localpart, "password": password, "admin": True, "mac": mac.hexdigest()}
    response = processes.http("POST", url, body)
    assert response.status == 200, response.body
    answer = response.json()
    return MatrixUser(answer["user_id"], answer["device_id"], answer["access_token"])


def test_a_burst_meets_synapses_rate_limit_not_ours(hs, alice, livekit, service) -> None:
    """§4 (no per-IP limit on AS routes: every request comes from the homeserver's address) and §10.5: a
    burst is limited by Synapse's own per-user limit in front of the proxy; what it lets through, we answer."""
    service(LIVEKIT_RATE_LIMIT_PER_IP="2/h")
    erin = hs.register(f"erin{uuid.uuid4().hex[:8]}")
    room_id = hs.create_room(erin)
    admin = register_admin(hs)
    user = urllib.parse.quote(erin.user_id, safe="")
    response = hs.client(
        "POST",
        f"/_synapse/admin/v1/users/{user}/override_ratelimit",
        {"messages_per_second": 1, "burst_count": 4},
        token=admin.access_token,
    )
    assert response.status == 200, response.body
    time.sleep(4.5)  # at one a second, the creation of the room is forgotten and the burst of four is whole

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: get_token(hs, erin, token_body(livekit, room_id)), range(10)))
    took = time.monotonic() - started

    statuses = sorted(answer.status for answer in answers)
    passed = statuses.count(200)
    # Four at once, then one a second: more than our per-IP limit of 2 would let through.
    assert 4 <= passed <= 4 + int(took) + 1, (statuses, took)
    assert passed < 10, "the burst met Synapse's limit"
    assert statuses == [200] * passed + [429] * (10 - passed), [answer.body for answer in answers]
    limited = [answer.json() for answer in answers if answer.status == 429]
    assert {answer["errcode"] for answer in limited} == {"M_LIMIT_EXCEEDED"}
    assert all("retry_after_ms" in answer for answer in limited), "Synapse's 429, not ours"
    assert len(livekit.snapshot()) == passed, "only what Synapse let through reached the service"
