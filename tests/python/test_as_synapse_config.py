"""AS mode (as-mode spec §10.2, §10.3) against Synapse 1.163 configured in ways the admin may get wrong or
choose: `msc4502_enabled` off, the stable registration keys of lk-jwt-service's README, and
`federation_domain_whitelist` on either side of a relayed request. Each needs a Synapse of its own (the
settings are read at start), so they live apart from test_as_mode.py's shared homeservers."""

import urllib.parse
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from as_support import AsSynapse, PortedAuthService, start_as_service
from fake_livekit import FakeLiveKit
import processes
from processes import MatrixUser

SLOT_ID = "m.call#ROOM"
FLAGS_ON = {"msc4502_enabled": True, "msc4512_enabled": True}


def start_service(hs: AsSynapse, livekit: FakeLiveKit, log: Path, pki: processes.TestPki) -> PortedAuthService:
    """The service in AS mode on the port `hs`'s registration names."""
    return start_as_service(hs, livekit.ws_url, log, SSL_CERT_FILE=str(pki.ca_file))


def token_body(livekit: FakeLiveKit, room_id: str, **extra) -> dict:
    return {"url": livekit.ws_url, "room_id": room_id, "slot_id": SLOT_ID, "member_id": uuid.uuid4().hex, **extra}


def get_token(hs: AsSynapse, user: MatrixUser, body: dict):
    return hs.client("POST", "/_matrix/client/v1/rtc/livekit/get_token", body, token=user.access_token)


def public_room(hs: AsSynapse, user: MatrixUser) -> str:
    response = hs.client("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, token=user.access_token)
    assert response.status == 200, response.body
    return response.json()["room_id"]


def test_msc4502_off_makes_membership_unknown(tmp_path_factory, tmp_path, pki, livekit) -> None:
    """§5.1 and §10.2: without `msc4502_enabled` Synapse has no `/is_joined` (404 M_UNRECOGNIZED, an error,
    not "not joined"): every token request is 502, and no token is issued without a membership check."""
    hs = AsSynapse(
        tmp_path_factory.mktemp("as-synapse-no-msc4502"),
        pki,
        settings={"experimental_features": {"msc4502_enabled": False, "msc4512_enabled": True}},
    )
    service = None
    try:
        service = start_service(hs, livekit, tmp_path / "auth.log", pki)
        alice = hs.register(f"alice{uuid.uuid4().hex[:8]}")
        room_id = hs.create_room(alice)

        response = get_token(hs, alice, token_body(livekit, room_id))

        assert (response.status, response.json()) == (
            502,
            {"errcode": "M_UNKNOWN", "error": "Unable to verify room membership"},
        ), "proxied (msc4512 is on), then refused for want of /is_joined"
        assert livekit.snapshot() == []
    finally:
        if service is not None:
            service.close()
        hs.close()


def test_stable_registration_keys_are_ignored_by_synapse(tmp_path_factory, tmp_path, pki, livekit) -> None:
    """§3.1's pitfall and §10.2: with the stable key names of lk-jwt-service's README (`scopes`,
    `proxy_prefix`, `proxy_url`) Synapse 1.163 registers no proxy: the client gets Synapse's own 404 and the
    service is never asked."""
    hs = AsSynapse(tmp_path_factory.mktemp("as-synapse-stable-keys"), pki, stable_keys=True)
    service = None
    try:
        registration = hs.registration.path.read_text()
        assert '"proxy_prefix"' in registration and "io.element.msc4512" not in registration
        service = start_service(hs, livekit, tmp_path / "auth.log", pki)
        alice = hs.register(f"alice{uuid.uuid4().hex[:8]}")
        room_id = hs.create_room(alice)

        response = get_token(hs, alice, token_body(livekit, room_id))

        assert response.status == 404, response.body
        assert response.json()["errcode"] == "M_UNRECOGNIZED"
        assert livekit.snapshot() == []
        # The service itself is up and would have answered.
        assert processes.http("GET", f"{service.url}/healthz").status == 200
    finally:
        if service is not None:
            service.close()
        hs.close()


# --- Federation: A's SFU asked for by a user of B, through B's fed_proxy -----------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, pki: processes.TestPki) -> Iterator[tuple[AsSynapse, AsSynapse]]:
    """A and B, federating; each test may restart one with other settings and must restore it."""
    a = AsSynapse(tmp_path_factory.mktemp("as-fed-a"), pki)
    try:
        b = AsSynapse(tmp_path_factory.mktemp("as-fed-b"), pki)
        try:
            yield a, b
        finally:
            b.close()
    finally:
        a.close()


def joined_room_of_a(a: AsSynapse, b: AsSynapse) -> tuple[str, MatrixUser]:
    """A room on A that bob of B has joined over federation."""
    alice = a.register(f"alice{uuid.uuid4().hex[:8]}")
    bob = b.register(f"bob{uuid.uuid4().hex[:8]}")
    room_id = public_room(a, alice)
    room = urllib.parse.quote(room_id, safe="")
    response = b.client(
        "POST", f"/_matrix/client/v3/join/{room}?server_name={urllib.parse.quote(a.server_name)}", {}, token=bob.access_token
    )
    assert response.status == 200, response.body
    return room_id, bob


@pytest.fixture
def services(pair, tmp_path, pki, livekit) -> Iterator[tuple[PortedAuthService, PortedAuthService, FakeLiveKit]]:
    a, b = pair
    livekit_b = FakeLiveKit()
    started = []
    try:
        started.append(start_service(a, livekit, tmp_path / "auth-a.log", pki))
        started.append(start_service(b, livekit_b, tmp_path / "auth-b.log", pki))
        yield started[0], started[1], livekit_b
    finally:
        for service in started:
            service.close()
        livekit_b.close()


def test_a_refusal_of_the_remote_homeserver_is_relayed(pair, services, livekit) -> None:
    """§5.2: the remote's 403 comes back through `fed_proxy` as `{"status": 403, "content"}` and is relayed
    with its own errcode and text. Here A's `federation_domain_whitelist` leaves B out after bob joined, so
    B still sees A in the room but A's Synapse refuses B's signed request."""
    a, b = pair
    room_id, bob = joined_room_of_a(a, b)
    body = token_body(livekit, room_id, server_name=a.server_name)
    assert get_token(b, bob, body).status == 200, "relayed and issued while A federates with B"
    created = len(livekit.snapshot())
    a.restart(federation_domain_whitelist=[a.server_name])
    try:
        response = get_token(b, bob, token_body(livekit, room_id, server_name=a.server_name))
    finally:
        a.restart(federation_domain_whitelist=None)

    assert (response.status, response.json()) == (
        403,
        {"errcode": "M_FORBIDDEN", "error": f"Federation denied with {b.server_name}."},
    )
    assert len(livekit.snapshot()) == created, "no room made on A for the refused request"


def test_a_member_the_target_server_no_longer_sees_gets_its_403_relayed(pair, services, livekit) -> None:
    """§10.3 "bob not joined → 403 relayed": A's service refuses bob (not a member as A sees the room) and B
    passes that 403 on. B checks bob's membership itself first (§6.1 #7), so A's refusal is only reached
    when B's view is behind A's: alice kicks bob while B is down; A backs off B and delivers the kick only
    once B contacts it again, which the relayed request itself is."""
    a, b = pair
    service_a, _, _ = services
    alice = a.register(f"alice{uuid.uuid4().hex[:8]}")
    bob = b.register(f"bob{uuid.uuid4().hex[:8]}")
    room_id = public_room(a, alice)
    room = urllib.parse.quote(room_id, safe="")
    response = b.client(
        "POST", f"/_matrix/client/v3/join/{room}?server_name={urllib.parse.quote(a.server_name)}", {}, token=bob.access_token
    )
    assert response.status == 200, response.body

    def kick() -> None:
        response = a.client(
            "POST", f"/_matrix/client/v3/rooms/{room}/kick", {"user_id": bob.user_id}, token=alice.access_token
        )
        assert response.status == 200, response.body

    b.restart(while_down=kick)
    response = get_token(b, bob, token_body(livekit, room_id, server_name=a.server_name))

    assert (response.status, response.json()) == (
        403,
        {"errcode": "M_FORBIDDEN", "error": "The requesting user is not a member of the room"},
    )
    metrics = processes.http("GET", f"{service_a.url}/metrics").body.decode()
    refused = 'matrixrtc_auth_requests_total{endpoint="as_federation_get_token",outcome="M_FORBIDDEN"} 1'
    assert refused in metrics, "the 403 is A's service's, relayed, not B's own"
    assert livekit.snapshot() == []


def test_a_whitelist_on_our_side_that_excludes_the_target_is_a_502(pair, services, livekit) -> None:
    """§5.2 and §10.3: B's own `federation_domain_whitelist` without A makes B's Synapse refuse the
    `fed_proxy` call itself (IO.ELEMENT.MSC4512.M_FEDPROXY_DESTINATION_DENIED, 403): Synapse's refusals are
    never relayed, so the user gets 502."""
    a, b = pair
    room_id, bob = joined_room_of_a(a, b)
    created = len(livekit.snapshot())
    b.restart(federation_domain_whitelist=[b.server_name])
    try:
        response = get_token(b, bob, token_body(livekit, room_id, server_name=a.server_name))
    finally:
        b.restart(federation_domain_whitelist=None)

    assert (response.status, response.json()) == (
        502,
        {"errcode": "M_UNKNOWN", "error": "Unable to reach the specified homeserver"},
    )
    assert len(livekit.snapshot()) == created, "A was never asked"
