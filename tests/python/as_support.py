"""AS mode helpers: a Synapse with our application-service registration and the MSC4502/MSC4512 flags,
and the service started on the port the registration names (Synapse reads the registration once, at start).
"""

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from fake_livekit import LIVEKIT_KEY, LIVEKIT_SECRET
from processes import (
    SERVICE_START_TIMEOUT,
    SYNAPSE_START_TIMEOUT,
    HttpResponse,
    HTTP_TIMEOUT,
    Synapse,
    TestPki,
    free_port,
    http,
    stop,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
AS_ID = "matrixrtc-auth"
IS_JOINED_SCOPE = "urn:matrix:client:io.element.msc4502:rooms:is_joined"


def request(method: str, url: str, body: Any = None, headers: Optional[dict[str, str]] = None) -> HttpResponse:
    """One request with a JSON body and arbitrary headers; never raises for an HTTP error status."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as response:
            return HttpResponse(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return HttpResponse(error.code, dict(error.headers.items()), error.read())


@dataclass
class Registration:
    as_token: str
    hs_token: str
    service_port: int
    path: Path

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.service_port}"


class AsSynapse(Synapse):
    """Synapse with the §3.1 registration (unstable keys) and the §3.2 settings, proxying to a service that
    is to listen on `registration.service_port`."""

    def __init__(
        self,
        directory: Path,
        pki: TestPki,
        scope_key: str = "io.element.msc4502.scopes",
        stable_keys: bool = False,
        settings: Optional[dict] = None,
    ) -> None:
        # `scope_key` and `stable_keys` reproduce the README pitfalls (keys Synapse 1.163 silently ignores: a
        # misspelt scope key; the stable names `scopes`, `proxy_prefix`, `proxy_url`). `settings` override
        # homeserver settings (e.g. `experimental_features`, `federation_domain_whitelist`).
        self.scope_key = scope_key
        self.stable_keys = stable_keys
        self.settings = dict(settings or {})
        self.pki = pki
        self.registration = Registration(
            as_token=os.urandom(32).hex(),
            hs_token=os.urandom(32).hex(),
            service_port=free_port(),
            path=directory / "matrixrtc-auth.yaml",
        )
        super().__init__(directory, pki)

    def _config(self, pki: TestPki) -> dict:
        # `server_name` is known here (it names the federation port), so the namespace can be written.
        registration = {
            "id": AS_ID,
            "url": self.registration.service_url,
            "as_token": self.registration.as_token,
            "hs_token": self.registration.hs_token,
            "sender_localpart": "_lk_jwt_service",
            "rate_limited": False,
            "namespaces": {"users": [{"exclusive": False, "regex": f"@.*:{re.escape(self.server_name)}"}]},
            self.scope_key: [IS_JOINED_SCOPE],
            "io.element.msc4512.proxy_prefix": "rtc/livekit",
            "io.element.msc4512.proxy_url": self.registration.service_url,
        }
        if self.stable_keys:
            for unstable in ("io.element.msc4502.scopes", "io.element.msc4512.proxy_prefix", "io.element.msc4512.proxy_url"):
                registration[unstable.rsplit(".", 1)[1]] = registration.pop(unstable)
        self.registration.path.write_text(json.dumps(registration, indent=2))  # JSON is YAML
        config = super()._config(pki)
        config.update(
            {
                "app_service_config_files": [str(self.registration.path)],
                "experimental_features": {"msc4502_enabled": True, "msc4512_enabled": True},
                # The service is on loopback; Synapse's proxy client refuses it otherwise.
                "ip_range_blacklist": [],
                "max_event_delay_duration": "1h",
                # Unauthenticated delayed-event management (restart/send by delay ID alone) is limited per
                # client address, which every job of a service shares. One call, then none for 1000 s: a
                # job that did not assert its user (as-mode spec §5.3) is refused at once.
                "rc_delayed_event_mgmt": {"per_second": 0.001, "burst_count": 1},
                # Federation between two test servers on loopback, each with its own self-signed leaf.
                "federation_verify_certificates": False,
                **self.settings,
            }
        )
        return config

    def restart(self, while_down: Optional[Callable[[], None]] = None, **settings: Any) -> None:
        """Stops Synapse and starts it again on the same ports, database and keys, with `settings` changed
        (Synapse reads its configuration once, at start); `while_down` runs in between."""
        stop(self.process)
        if while_down is not None:
            while_down()
        self.settings.update(settings)
        config = self.directory / "homeserver.yaml"
        config.write_text(json.dumps(self._config(self.pki), indent=2))  # JSON is YAML
        self.process = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "--config-path", str(config)],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(
            "Synapse",
            lambda: http("GET", f"{self.client_url}/_matrix/client/versions").status == 200,
            self.process,
            SYNAPSE_START_TIMEOUT,
            self.log,
        )

    def client(self, method: str, path: str, body: Any = None, token: Optional[str] = None) -> HttpResponse:
        return http(method, f"{self.client_url}{path}", body, token=token)


def auth_binary() -> str:
    """The service binary the suite runs: `MATRIXRTC_AUTH_BIN`, else the debug build; fails the test when it
    is not there."""
    binary = os.environ.get("MATRIXRTC_AUTH_BIN", str(REPO / "target" / "debug" / "matrixrtc-auth"))
    if not os.access(binary, os.X_OK):
        pytest.fail(f"service binary {binary} not found; build it (scripts/test.sh does) or set MATRIXRTC_AUTH_BIN")
    return binary


def start_as_service(
    hs: "AsSynapse", livekit_url: str, log: Path, port: Optional[int] = None, **extra_env: str
) -> "PortedAuthService":
    """The service in AS mode as `hs`'s application service, on the port its registration names unless `port`
    is given (a second replica, which the homeserver does not call)."""
    env = {**as_mode_env(hs, livekit_url), **extra_env}
    return PortedAuthService(auth_binary(), env, log, port or hs.registration.service_port)


def as_mode_env(hs: "AsSynapse", livekit_url: str) -> dict[str, str]:
    """The service's variables for AS mode as `hs`'s application service, with the fake LiveKit's keys."""
    return {
        "LIVEKIT_URL": livekit_url,
        "LIVEKIT_KEY": LIVEKIT_KEY,
        "LIVEKIT_SECRET": LIVEKIT_SECRET,
        "LIVEKIT_FULL_ACCESS_HOMESERVERS": hs.server_name,
        "LIVEKIT_AS_REGISTRATION_FILE": str(hs.registration.path),
        "LIVEKIT_HS_SERVER_NAME": hs.server_name,
        "LIVEKIT_CS_API_URL_OVERRIDES": f"{hs.server_name}={hs.client_url}",
    }


class PortedAuthService:
    """The service binary on a given port (the one the registration names)."""

    def __init__(self, binary: str, env: dict[str, str], log: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        full_env = {"LIVEKIT_LOG_LEVEL": "debug", **env, "LIVEKIT_JWT_BIND": f"127.0.0.1:{port}"}
        self.process = subprocess.Popen(
            [binary], env=full_env, stdin=subprocess.DEVNULL, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )
        try:
            wait_until(
                "matrixrtc-auth",
                lambda: http("GET", f"{self.url}/healthz").status == 200,
                self.process,
                SERVICE_START_TIMEOUT,
                log,
            )
        except BaseException:
            stop(self.process)
            raise

    def post(self, path: str, body: Any, headers: Optional[dict[str, str]] = None) -> HttpResponse:
        return request("POST", f"{self.url}{path}", body, headers)

    def close(self) -> None:
        stop(self.process)
