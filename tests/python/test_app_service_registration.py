"""The application-service registration the operator renders, loaded by a real Synapse 1.163.

`matrixrtc-operator render` (the same builders the controller uses) renders a transport in AS mode whose
`serverName` is this Synapse and whose `proxyUrl` is a recording HTTP server on loopback. The registration is
taken from the rendered `<name>-appservice` Secret (placeholder tokens, as `render` uses) and the Synapse
settings from `render --status`. Synapse must boot with both and then show that it read every key that matters:
the as_token is the AS user's (whoami), the MSC4502 scope lets it ask `/is_joined`, and MSC4512 forwards a
user's `rtc/livekit/get_token` to `proxy_url` with the hs_token and the user's ID.
"""

import base64
import json
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import processes
from chart_support import load_all_yaml, operator_binary, run
from processes import Synapse, free_port, http
from test_synapse_snippet import merged

TRANSPORT = """
apiVersion: matrixrtc.dev/v1alpha1
kind: MatrixRTCTransport
metadata: {{name: rtc, namespace: matrix}}
spec:
  serverName: "{server_name}"
  host: rtc.example.com
  auth:
    appService: {{enabled: true, proxyUrl: "{proxy_url}"}}
"""


class Recorder:
    """An HTTP server on loopback that records every request and answers `{"jwt": "recorded"}`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                recorder.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                answer = json.dumps({"jwt": "recorded"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SynapseWithRegistration(Synapse):
    """Synapse with the operator's AS-mode settings and its rendered registration."""

    def __init__(self, directory: Path, pki: processes.TestPki, proxy_url: str) -> None:
        self.proxy_url = proxy_url
        super().__init__(directory, pki)

    def _config(self, pki: processes.TestPki) -> dict:
        binary = operator_binary()
        if binary is None:
            pytest.fail("operator binary not found; build it (scripts/test.sh does) or set MATRIXRTC_OPERATOR_BIN")
        transport = self.directory / "transport.yaml"
        transport.write_text(TRANSPORT.format(server_name=self.server_name, proxy_url=self.proxy_url))
        rendered = run([str(binary), "render", "-f", str(transport)])
        assert rendered.returncode == 0, rendered.stderr
        secret = next(
            d for d in load_all_yaml(rendered.stdout) if d["kind"] == "Secret" and d["metadata"]["name"] == "rtc-appservice"
        )
        registration_text = base64.b64decode(secret["data"]["registration.yaml"]).decode()
        self.registration = yaml.safe_load(registration_text)
        status = run([str(binary), "render", "--status", "-f", str(transport)])
        assert status.returncode == 0, status.stderr
        fields = yaml.safe_load(status.stdout)
        snippet = yaml.safe_load(fields["synapseConfig"])
        # Where the status says Synapse reads it; here a file in the test's directory instead of a mount.
        assert snippet["app_service_config_files"] == [fields["appService"]["synapsePath"]]
        registration = self.directory / "matrixrtc-auth.yaml"
        registration.write_text(registration_text)
        snippet["app_service_config_files"] = [str(registration)]
        return merged(super()._config(pki), snippet)


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def as_synapse(tmp_path_factory: pytest.TempPathFactory, pki: processes.TestPki, recorder: Recorder) -> Iterator[SynapseWithRegistration]:
    server = SynapseWithRegistration(tmp_path_factory.mktemp("synapse-as"), pki, recorder.url)
    try:
        yield server
    finally:
        server.close()


def test_the_as_token_is_the_registered_sender(as_synapse: SynapseWithRegistration) -> None:
    response = http("GET", f"{as_synapse.client_url}/_matrix/client/v3/account/whoami", token=as_synapse.registration["as_token"])

    assert response.status == 200, response.body
    assert response.json()["user_id"] == f"@_lk_jwt_service:{as_synapse.server_name}"


def test_the_msc4502_scope_lets_the_service_ask_is_joined(as_synapse: SynapseWithRegistration) -> None:
    member = as_synapse.register(f"member{uuid.uuid4().hex[:8]}")
    room = urllib.parse.quote(as_synapse.create_room(member), safe="")
    url = f"{as_synapse.client_url}/_matrix/client/unstable/io.element.msc4502/rooms/{room}/is_joined"

    joined = http("GET", f"{url}?mxid={urllib.parse.quote(member.user_id)}", token=as_synapse.registration["as_token"])
    # A user's own token has no scope: Synapse refuses it, so the 200 above is the registration's doing.
    unscoped = http("GET", f"{url}?mxid={urllib.parse.quote(member.user_id)}", token=member.access_token)

    assert joined.status == 200, joined.body
    assert joined.json() == {"joined": True}
    assert unscoped.status != 200, unscoped.body


def test_msc4512_forwards_token_requests_to_the_proxy_url_with_the_hs_token(
    as_synapse: SynapseWithRegistration, recorder: Recorder
) -> None:
    user = as_synapse.register(f"caller{uuid.uuid4().hex[:8]}")
    body = {"url": "wss://rtc.example.com", "room_id": "!r:x", "slot_id": "s", "member_id": "m"}
    recorder.requests.clear()

    response = http("POST", f"{as_synapse.client_url}/_matrix/client/v1/rtc/livekit/get_token", body, token=user.access_token)

    assert response.status == 200, response.body
    assert response.json() == {"jwt": "recorded"}
    assert len(recorder.requests) == 1, recorder.requests
    forwarded = recorder.requests[0]
    assert forwarded["path"] == "/_matrix/client/v1/rtc/livekit/get_token"
    headers = {k.lower(): v for k, v in forwarded["headers"].items()}
    assert headers["authorization"] == f"Bearer {as_synapse.registration['hs_token']}"
    assert headers["x-matrix-user-identifier"] == user.user_id
    assert json.loads(forwarded["body"]) == body
