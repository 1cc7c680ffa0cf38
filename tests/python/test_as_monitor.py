"""The membership monitor (as-mode spec §8, test plan §10.5) against a real Synapse 1.163 with MSC4502/MSC4512
and our registration: failures of Synapse or Redis, pending participants, interval 0, a registration whose
users namespace misses our users, two replicas sharing Redis, and our server leaving a room.

LiveKit is faked at its Twirp API (`fake_livekit.py`), since no LiveKit binary exists here: participants
"join" through signed `participant_joined` webhooks, and the monitor's `RemoveParticipant`, `DeleteRoom` and
`GetParticipant` calls are recorded there. `joined_members` calls are counted in Synapse's own access log.
Sweeps run every second; every wait is bounded.
"""

import json
import re
import signal
import subprocess
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

from as_support import AsSynapse, PortedAuthService, start_as_service
from fake_livekit import FakeLiveKit
from hashes import h, room_alias
import processes
from processes import MatrixUser, free_port, http
from test_as_mode import (
    SLOT_ID,
    get_token,
    join_over_federation,
    joined_webhook,
    membership,
    public_room,
    token_body,
)

NAMESPACE_ERROR = (
    "our homeserver is in the room but refuses joined_members: "
    "the registration's users namespace does not cover its local members"
)
# Long enough for the sweeps of a 1 s interval to act (the first comes 0.5 to 1.5 s after start).
WAIT = 10.0


class LoggedSynapse(AsSynapse):
    """An `AsSynapse` that logs every request it served (its access log, at INFO), and whose registration's
    users namespace is `users_regex` (default: every local user)."""

    def __init__(self, directory: Path, pki: processes.TestPki, users_regex: Optional[str] = None) -> None:
        self.users_regex = users_regex
        super().__init__(directory, pki)

    def _config(self, pki: processes.TestPki) -> dict:
        config = super()._config(pki)
        if self.users_regex is not None:
            registration = json.loads(self.registration.path.read_text())
            registration["namespaces"]["users"] = [{"exclusive": False, "regex": self.users_regex}]
            self.registration.path.write_text(json.dumps(registration, indent=2))
        return config

    def _log_config(self) -> dict:
        config = super()._log_config()
        config["loggers"] = {"synapse.access": {"level": "INFO"}}
        return config

    def joined_members_calls(self, room_id: str) -> int:
        """How many `joined_members` requests for the room Synapse has served so far."""
        forms = {room_id, urllib.parse.quote(room_id, safe=""), urllib.parse.quote(room_id, safe=":")}
        pattern = re.compile(r'"GET /_matrix/client/v3/rooms/([^/ ]+)/joined_members')
        return sum(
            1
            for match in pattern.finditer(self.log.read_text(errors="replace"))
            if match.group(1) in forms or urllib.parse.unquote(match.group(1)) == room_id
        )


class Redis:
    """A redis-server on a loopback port that can be killed (SIGKILL) and started again on the same port and
    directory. Its append-only file is synced on every write, so a kill loses nothing written."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdin=subprocess.DEVNULL,
            stdout=(self.directory / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"redis-server exited: {processes.tail(self.directory / 'redis.log')}")
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, timeout=5
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        pytest.fail("redis-server did not answer PING within 10 s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        if self.process is not None:
            self.kill()


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory, pki: processes.TestPki) -> Iterator[LoggedSynapse]:
    server = LoggedSynapse(tmp_path_factory.mktemp("as-monitor-synapse"), pki)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def alice(hs: LoggedSynapse) -> MatrixUser:
    return hs.register(f"alice{uuid.uuid4().hex[:8]}")


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    if subprocess.run(["sh", "-c", "command -v redis-server"], capture_output=True).returncode != 0:
        pytest.fail("redis-server is not installed (scripts/test.sh installs it)")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = Redis(directory)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def service(tmp_path: Path, pki: processes.TestPki, livekit: FakeLiveKit) -> Iterator[Callable[..., PortedAuthService]]:
    """`service(hs, port=None, **extra_env)`: the service in AS mode for `hs`, sweeping every second, on the
    registration's port unless `port` is given (a second replica, which Synapse does not call)."""
    started: list[PortedAuthService] = []

    def start(hs: AsSynapse, port: Optional[int] = None, **extra_env: str) -> PortedAuthService:
        env = {
            "LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS": "1",
            "SSL_CERT_FILE": str(pki.ca_file),
            **extra_env,
        }
        log = tmp_path / f"auth-{len(started)}.log"
        instance = start_as_service(hs, livekit.ws_url, log, port, **env)
        started.append(instance)
        return instance

    try:
        yield start
    finally:
        for instance in started:
            instance.close()


def metric(instance: PortedAuthService, name: str, **labels: str) -> float:
    """The sum of the service's samples of `name` whose labels include `labels` (0 when there is none)."""
    response = http("GET", f"{instance.url}/metrics")
    assert response.status == 200, response.body
    total = 0.0
    for line in response.body.decode().splitlines():
        match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(3))
    return total


def failures(instance: PortedAuthService, stage: str) -> float:
    return metric(instance, "matrixrtc_auth_membership_check_failures_total", stage=stage)


def sweeps(instance: PortedAuthService) -> float:
    return metric(instance, "matrixrtc_auth_membership_sweep_duration_seconds_count")


def wait_for(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    assert condition(), f"{what}: not within {timeout} s"


def connected(
    hs: AsSynapse, instance: PortedAuthService, livekit: FakeLiveKit, user: MatrixUser, room_id: str
) -> str:
    """`user` gets a token through Synapse and joins LiveKit (a signed webhook); their identity."""
    body = token_body(livekit, room_id)
    response = get_token(hs, user, body)
    assert response.status == 200, response.body
    identity = h(user.user_id, body["member_id"])
    joined_webhook(instance, room_alias(room_id, SLOT_ID), identity)
    return identity


def member(hs: AsSynapse, room_id: str) -> MatrixUser:
    user = hs.register(f"u{uuid.uuid4().hex[:10]}")
    membership(hs, user, room_id, "join")
    return user


def test_synapse_down_removes_nobody_and_a_leaver_afterwards_is_removed(hs, alice, livekit, service) -> None:
    instance = service(hs)
    room_id = public_room(hs, alice)
    livekit_room = room_alias(room_id, SLOT_ID)
    bob = member(hs, room_id)
    bob_identity = connected(hs, instance, livekit, bob, room_id)
    failed_before = failures(instance, "joined_members")

    def while_down() -> None:
        # Sweeps meet a refused connection: uncertainty, so nothing is done.
        wait_for("two failed joined_members", lambda: failures(instance, "joined_members") >= failed_before + 2)
        assert livekit.removals() == [] and livekit.deletions() == []

    hs.restart(while_down=while_down)
    assert livekit.removals() == [] and livekit.deletions() == [], "nobody removed while Synapse was starting"

    membership(hs, bob, room_id, "leave")
    wait_for("bob removed", lambda: livekit.removals() != [])
    assert livekit.removals() == [(livekit_room, bob_identity)]
    assert livekit.deletions() == []


def test_a_pending_participant_who_leaves_is_not_removed(hs, alice, livekit, service) -> None:
    """Bob got a token but never joined LiveKit (no webhook, and LiveKit does not know him); carol joined.
    Both leave the Matrix room: only carol is removed, in a sweep that also asked LiveKit about bob."""
    instance = service(hs)
    room_id = public_room(hs, alice)
    livekit_room = room_alias(room_id, SLOT_ID)
    bob, carol = member(hs, room_id), member(hs, room_id)
    bob_body = token_body(livekit, room_id)
    assert get_token(hs, bob, bob_body).status == 200
    bob_identity = h(bob.user_id, bob_body["member_id"])
    carol_identity = connected(hs, instance, livekit, carol, room_id)

    membership(hs, bob, room_id, "leave")
    membership(hs, carol, room_id, "leave")
    wait_for("carol removed", lambda: livekit.removals() != [])
    looked_up = livekit.lookups().count((livekit_room, bob_identity))
    wait_for("bob looked up again", lambda: livekit.lookups().count((livekit_room, bob_identity)) > looked_up)
    time.sleep(1.5)  # and one more sweep

    assert livekit.removals() == [(livekit_room, carol_identity)], "bob, pending, stays"
    assert livekit.deletions() == []
    assert sweeps(instance) >= 2, "the sweep counter that test_interval_zero_never_sweeps reads counts sweeps"


def test_interval_zero_never_sweeps(hs, alice, livekit, service) -> None:
    instance = service(hs, LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS="0")
    room_id = public_room(hs, alice)
    bob = member(hs, room_id)
    connected(hs, instance, livekit, bob, room_id)
    membership(hs, bob, room_id, "leave")

    time.sleep(4)  # four intervals of the other tests

    assert livekit.removals() == [] and livekit.deletions() == [] and livekit.lookups() == []
    assert hs.joined_members_calls(room_id) == 0
    assert sweeps(instance) == 0


def test_a_namespace_missing_our_users_removes_nobody_and_logs_an_error(
    tmp_path_factory, pki, livekit, service
) -> None:
    """The registration's users namespace covers no user of ours, so `joined_members` as the AS is 403 while
    our server is in the room: a misconfiguration, not a leave."""
    foreign = LoggedSynapse(tmp_path_factory.mktemp("as-monitor-foreign"), pki, users_regex="@_foreign_.*:example\\.org")
    try:
        instance = service(foreign)
        owner = foreign.register(f"owner{uuid.uuid4().hex[:8]}")
        room_id = public_room(foreign, owner)
        bob = member(foreign, room_id)
        connected(foreign, instance, livekit, bob, room_id)
        membership(foreign, bob, room_id, "leave")

        wait_for("the namespace error", lambda: NAMESPACE_ERROR in instance.log.read_text())
        time.sleep(1.5)  # one more sweep

        assert livekit.removals() == [] and livekit.deletions() == []
        logged = [line for line in instance.log.read_text().splitlines() if NAMESPACE_ERROR in line]
        assert "ERROR" in logged[0] and room_id in logged[0], logged[0]
        assert failures(instance, "namespace") >= 1
        assert foreign.joined_members_calls(room_id) >= 1
    finally:
        foreign.close()


@pytest.mark.parametrize("outage", ["killed and started at once", "stopped for 20 s"])
def test_tracking_resumes_after_a_redis_restart(hs, alice, livekit, service, redis, outage) -> None:
    """Bob is tracked before the restart (kept by Redis's append-only file), carol after it: both are removed
    when they leave. While Redis is stopped, nothing is swept, so bob, who left meanwhile, stays until then."""
    instance = service(hs, LIVEKIT_REDIS_URL=redis.url)
    room_id = public_room(hs, alice)
    livekit_room = room_alias(room_id, SLOT_ID)
    bob, carol = member(hs, room_id), member(hs, room_id)
    bob_identity = connected(hs, instance, livekit, bob, room_id)

    redis.kill()
    if outage == "stopped for 20 s":
        store_failures = failures(instance, "store")
        membership(hs, bob, room_id, "leave")
        time.sleep(20)
        assert failures(instance, "store") >= store_failures + 10, "sweeps were skipped"
        assert livekit.removals() == [], "no sweep without Redis"
    redis.start()

    carol_identity = connected(hs, instance, livekit, carol, room_id)
    if outage != "stopped for 20 s":
        membership(hs, bob, room_id, "leave")
    membership(hs, carol, room_id, "leave")
    wait_for("bob and carol removed", lambda: len(livekit.removals()) >= 2, timeout=15)
    assert sorted(livekit.removals()) == sorted([(livekit_room, bob_identity), (livekit_room, carol_identity)])


def test_two_replicas_sharing_redis_check_a_room_once_per_interval_and_kick_once(
    hs, alice, livekit, service, redis
) -> None:
    first = service(hs, LIVEKIT_REDIS_URL=redis.url, LIVEKIT_REPLICA_ID="replica-a")
    second = service(hs, port=free_port(), LIVEKIT_REDIS_URL=redis.url, LIVEKIT_REPLICA_ID="replica-b")
    room_id = public_room(hs, alice)
    livekit_room = room_alias(room_id, SLOT_ID)
    connected(hs, first, livekit, alice, room_id)
    bob = member(hs, room_id)
    body = token_body(livekit, room_id)
    assert get_token(hs, bob, body).status == 200
    bob_identity = h(bob.user_id, body["member_id"])
    joined_webhook(second, livekit_room, bob_identity)  # the other replica's webhook updates the shared hash
    wait_for("a first sweep of the room", lambda: hs.joined_members_calls(room_id) >= 1)

    before, started = hs.joined_members_calls(room_id), time.monotonic()
    time.sleep(8)
    calls, took = hs.joined_members_calls(room_id) - before, time.monotonic() - started
    # One sweeper at a time: about one call per second (both replicas sweeping made 16 in 8 s), and not one
    # per lease TTL (15 s) either. The lower bound is loose: a loaded machine may skip a tick or two.
    assert took / 2 <= calls <= took + 1, (calls, took)

    membership(hs, bob, room_id, "leave")
    wait_for("bob removed", lambda: livekit.removals() != [])
    time.sleep(3)  # three more intervals of both replicas
    assert livekit.removals() == [(livekit_room, bob_identity)], "exactly one RemoveParticipant"
    kicks = sum(
        metric(instance, "matrixrtc_auth_membership_kicks_total", action="remove_participant")
        for instance in (first, second)
    )
    assert kicks == 1


def test_the_last_local_member_leaving_deletes_the_livekit_room(hs, livekit, service) -> None:
    """Once nobody of ours is in the room, `joined_members` is 403 and `/is_joined?server_name=` says our
    server left: the LiveKit room is deleted once, and nobody is removed one by one."""
    instance = service(hs)
    owner = hs.register(f"owner{uuid.uuid4().hex[:8]}")
    room_id = public_room(hs, owner)
    livekit_room = room_alias(room_id, SLOT_ID)
    connected(hs, instance, livekit, owner, room_id)
    time.sleep(2.5)
    assert livekit.deletions() == [], "still in the room"

    membership(hs, owner, room_id, "leave")

    wait_for("DeleteRoom", lambda: livekit.deletions() != [])
    time.sleep(2.5)  # later sweeps: every entry of the room is revoked, so nothing more
    assert livekit.deletions() == [livekit_room]
    assert livekit.removals() == []
    assert metric(instance, "matrixrtc_auth_membership_kicks_total", action="delete_room") == 1


def test_our_last_member_leaving_a_room_that_goes_on_elsewhere_deletes_the_livekit_room(
    tmp_path_factory, tmp_path, pki, hs, livekit, service
) -> None:
    """Bob of server B stays in the room and holds a token for our SFU (an S-S token, tracked); the last member
    of ours leaves, so our server is no longer in the room: our LiveKit room is deleted, nobody is removed one
    by one, and B's SFU is not touched."""
    hs_b = LoggedSynapse(tmp_path_factory.mktemp("as-monitor-b"), pki)
    livekit_b = FakeLiveKit()
    service_b = None
    try:
        service_b = start_as_service(
            hs_b, livekit_b.ws_url, tmp_path / "auth-b.log", LIVEKIT_MEMBERSHIP_CHECK_INTERVAL_SECONDS="1"
        )
        instance = service(hs)
        owner = hs.register(f"owner{uuid.uuid4().hex[:8]}")
        room_id = public_room(hs, owner)
        livekit_room = room_alias(room_id, SLOT_ID)
        bob = hs_b.register(f"bob{uuid.uuid4().hex[:8]}")
        join_over_federation(hs_b, bob, room_id, hs.server_name)
        connected(hs, instance, livekit, owner, room_id)
        body = token_body(livekit, room_id, server_name=hs.server_name)
        response = get_token(hs_b, bob, body)
        assert response.status == 200, response.body
        joined_webhook(instance, livekit_room, h(bob.user_id, body["member_id"]))
        time.sleep(2.5)
        assert livekit.deletions() == [] and livekit.removals() == [], "we are still in the room"
        tracked = "matrixrtc_auth_membership_tracked"
        assert metric(instance, tracked, state="connected") == 2, "the owner's token and bob's S-S token"

        membership(hs, owner, room_id, "leave")

        wait_for("DeleteRoom", lambda: livekit.deletions() != [])
        time.sleep(2.5)  # later sweeps: every entry of the room is revoked, bob's too
        assert livekit.deletions() == [livekit_room]
        assert livekit.removals() == []
        assert metric(instance, tracked, state="revoked") == 2
        assert livekit_b.snapshot() == [] and livekit_b.deletions() == [] and livekit_b.removals() == []
    finally:
        if service_b is not None:
            service_b.close()
        livekit_b.close()
        hs_b.close()
