"""Fixtures: one real Synapse per session, a fake LiveKit and authorisation-service instances per test."""

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from fake_livekit import FakeLiveKit, LIVEKIT_KEY, LIVEKIT_SECRET
from processes import AuthService, Synapse, TestPki

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def synapse(tmp_path_factory: pytest.TempPathFactory, pki: TestPki) -> Iterator[Synapse]:
    server = Synapse(tmp_path_factory.mktemp("synapse"), pki)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def livekit() -> Iterator[FakeLiveKit]:
    fake = FakeLiveKit()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def auth_service(tmp_path: Path, pki: TestPki, livekit: FakeLiveKit) -> Iterator[Callable[..., AuthService]]:
    """Starts service instances: `auth_service(full_access="...", **extra_env)`; all stopped at teardown."""
    binary = os.environ.get("MATRIXRTC_AUTH_BIN", str(REPO / "target" / "debug" / "matrixrtc-auth"))
    if not os.access(binary, os.X_OK):
        pytest.fail(f"service binary {binary} not found; build it (scripts/test.sh does) or set MATRIXRTC_AUTH_BIN")
    started: list[AuthService] = []

    def start(full_access: str, trust_ca: bool = True, **extra_env: str) -> AuthService:
        env = {
            "LIVEKIT_URL": livekit.ws_url,
            "LIVEKIT_KEY": LIVEKIT_KEY,
            "LIVEKIT_SECRET": LIVEKIT_SECRET,
            "LIVEKIT_FULL_ACCESS_HOMESERVERS": full_access,
            **extra_env,
        }
        if trust_ca:
            env["SSL_CERT_FILE"] = str(pki.ca_file)
        service = AuthService(binary, env, tmp_path / f"auth-{len(started)}.log")
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.close()
