"""The authorisation service against a real Synapse: OpenID tokens minted by Synapse, verified over
federation TLS (checked against a test CA, not skipped), LiveKit tokens checked with livekit-api's own
TokenVerifier, and room creation observed at a fake LiveKit Twirp API."""

import json
import uuid

import pytest
from livekit.api import TokenVerifier

from fake_livekit import LIVEKIT_KEY, LIVEKIT_SECRET
from hashes import h, identity, room_alias
from processes import HttpResponse, MatrixUser, Synapse

SLOT_ID = "m.call#ROOM"
UNAUTHORIZED = b'{"errcode":"M_UNAUTHORIZED","error":"The request could not be authorised."}\n'


def element_call_body(room_id: str, openid: dict, user: MatrixUser, claimed_user_id: str = "") -> dict:
    """A /get_token body as Element Call sends it: the OpenID token exactly as Synapse returned it."""
    return {
        "room_id": room_id,
        "slot_id": SLOT_ID,
        "openid_token": openid,
        "member": {
            "id": uuid.uuid4().hex,
            "claimed_user_id": claimed_user_id or user.user_id,
            "claimed_device_id": user.device_id,
        },
    }


def verified_claims(response: HttpResponse, livekit_url: str):
    assert response.status == 200, response.body
    body = json.loads(response.body)
    assert list(body) == ["url", "jwt"], "url first, then jwt"
    assert response.body.endswith(b"}\n")
    assert body["url"] == livekit_url
    return TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(body["jwt"])


def assert_participant_grants(claims, expected_identity: str, expected_room: str) -> None:
    assert claims.identity == expected_identity
    video = claims.video
    assert video.room == expected_room
    assert video.room_join is True
    assert video.can_publish is True
    assert video.can_subscribe is True
    assert video.can_update_own_metadata is True
    assert not video.room_create, "participants must not be able to create (or delete) rooms"
    assert not video.room_admin


@pytest.fixture(scope="module")
def alice(synapse: Synapse) -> MatrixUser:
    return synapse.register(f"alice{uuid.uuid4().hex[:8]}")


def test_hash_helper_matches_spec_vectors() -> None:
    assert room_alias("!roomid:example.com", "slot1234") == "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc"
    assert identity("@alice:example.com", "DEVICE123", "memberABC") == "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU"
    assert h("!room:example.com", "m.call#ROOM") == "krj2dgxw2K6EOm9he4GfQJ6JsSVWfJ8a7BkyjZcSmxs"


def test_full_access_user_gets_a_verified_token_and_a_room(synapse, alice, livekit, auth_service) -> None:
    room_id = synapse.create_room(alice)
    openid = synapse.openid_token(alice)
    assert openid["matrix_server_name"] == synapse.server_name
    service = auth_service(full_access=synapse.server_name)

    request = element_call_body(room_id, openid, alice)
    claims = verified_claims(service.post("/get_token", request), livekit.ws_url)

    alias = room_alias(room_id, SLOT_ID)
    member_id = request["member"]["id"]
    assert_participant_grants(claims, identity(alice.user_id, alice.device_id, member_id), alias)
    calls = livekit.snapshot()
    assert len(calls) == 1, calls
    assert calls[0].name == alias
    assert (calls[0].empty_timeout, calls[0].departure_timeout, calls[0].max_participants) == (300, 20, 0)
    assert calls[0].bearer, "CreateRoom is authorised"
    admin = TokenVerifier(LIVEKIT_KEY, LIVEKIT_SECRET).verify(calls[0].bearer)
    assert admin.video.room_create is True


def test_legacy_endpoint_uses_the_unhashed_identity(synapse, alice, livekit, auth_service) -> None:
    room_id = synapse.create_room(alice)
    service = auth_service(full_access=synapse.server_name)

    response = service.post(
        "/sfu/get", {"room": room_id, "openid_token": synapse.openid_token(alice), "device_id": alice.device_id}
    )

    claims = verified_claims(response, livekit.ws_url)
    assert_participant_grants(claims, f"{alice.user_id}:{alice.device_id}", room_alias(room_id, SLOT_ID))
    assert [call.name for call in livekit.snapshot()] == [room_alias(room_id, SLOT_ID)]


def test_restricted_homeserver_user_gets_a_token_but_no_room(synapse, alice, livekit, auth_service) -> None:
    room_id = synapse.create_room(alice)
    # Synapse listens on loopback, which the SSRF guard only lets through for restricted servers when the
    # allowlist says so.
    service = auth_service(full_access="other.example.org", LIVEKIT_OUTBOUND_IP_ALLOWLIST="127.0.0.0/8")

    request = element_call_body(room_id, synapse.openid_token(alice), alice)
    claims = verified_claims(service.post("/get_token", request), livekit.ws_url)

    assert_participant_grants(
        claims,
        identity(alice.user_id, alice.device_id, request["member"]["id"]),
        room_alias(room_id, SLOT_ID),
    )
    assert livekit.snapshot() == [], "no CreateRoom for a restricted user"


def test_claimed_user_other_than_the_token_owner_is_unauthorised(synapse, alice, livekit, auth_service) -> None:
    room_id = synapse.create_room(alice)
    service = auth_service(full_access=synapse.server_name)

    request = element_call_body(
        room_id, synapse.openid_token(alice), alice, claimed_user_id=f"@mallory:{synapse.server_name}"
    )
    response = service.post("/get_token", request)

    assert (response.status, response.body) == (401, UNAUTHORIZED)
    assert livekit.snapshot() == []


def test_bogus_openid_token_is_unauthorised(synapse, alice, livekit, auth_service) -> None:
    service = auth_service(full_access=synapse.server_name)
    openid = dict(synapse.openid_token(alice), access_token="not-a-token-synapse-issued")

    response = service.post("/get_token", element_call_body("!room:example.org", openid, alice))

    assert (response.status, response.body) == (401, UNAUTHORIZED)
    assert livekit.snapshot() == []


def test_synapse_certificate_is_verified(synapse, alice, livekit, auth_service) -> None:
    """Without the test CA the very same request fails: the successes above did verify TLS."""
    service = auth_service(full_access=synapse.server_name, trust_ca=False)

    response = service.post("/get_token", element_call_body("!room:example.org", synapse.openid_token(alice), alice))

    assert (response.status, response.body) == (401, UNAUTHORIZED)
