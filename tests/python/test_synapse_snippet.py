"""The Synapse settings the operator writes into `status.synapseConfig`, checked against a real Synapse.

The snippet comes from the operator itself (`matrixrtc-operator render --status`, the same function the
controller uses for the status). It is merged into a generated homeserver config, Synapse must boot with it, and
then serve our transport at the MSC4143 endpoint to a registered user and accept an MSC4140 delayed event (what
Element Call's leave events, and delegated leave, rely on).
"""

import copy
import urllib.parse
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from chart_support import REPO_ROOT, operator_binary, run
import processes
from processes import Synapse, http

EXAMPLE = REPO_ROOT / "examples" / "single-node-nodeport.yaml"
TRANSPORTS = "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports"


def merged(base: dict[str, Any], snippet: dict[str, Any]) -> dict[str, Any]:
    """`snippet` merged into `base` key by key, as an admin merges it into homeserver.yaml."""
    out = copy.deepcopy(base)
    for key, value in snippet.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class SynapseWithSnippet(Synapse):
    """The suite's Synapse, with the operator's snippet merged over its generated config."""

    def __init__(self, directory: Path, pki: processes.TestPki, snippet: dict[str, Any]) -> None:
        self.snippet = snippet
        super().__init__(directory, pki)

    def _config(self, pki: processes.TestPki) -> dict:
        return merged(super()._config(pki), self.snippet)


@pytest.fixture(scope="module")
def status() -> dict[str, Any]:
    """What `render --status` prints for the single-node example: the status fields of a valid spec."""
    binary = operator_binary()
    if binary is None:
        pytest.fail("operator binary not found; build it (scripts/test.sh does) or set MATRIXRTC_OPERATOR_BIN")
    result = run([str(binary), "render", "--status", "-f", str(EXAMPLE)])
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def snippet(status: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(status["synapseConfig"])


@pytest.fixture(scope="module")
def snippet_synapse(tmp_path_factory: pytest.TempPathFactory, pki: processes.TestPki, snippet) -> Iterator[Synapse]:
    server = SynapseWithSnippet(tmp_path_factory.mktemp("synapse-snippet"), pki, snippet)
    try:
        yield server
    finally:
        server.close()


def test_snippet_holds_what_element_call_needs(snippet: dict[str, Any]) -> None:
    assert snippet["experimental_features"] == {
        "msc4143_enabled": True,
        "msc4222_enabled": True,
        "msc3266_enabled": True,
    }
    assert snippet["max_event_delay_duration"] == "24h"
    assert snippet["rc_message"] == {"per_second": 0.5, "burst_count": 30}
    assert snippet["rc_delayed_event_mgmt"] == {"per_second": 1, "burst_count": 20}


def test_synapse_serves_our_transport(snippet_synapse: Synapse, status: dict[str, Any]) -> None:
    user = snippet_synapse.register(f"caller{uuid.uuid4().hex[:8]}")
    url = snippet_synapse.client_url + TRANSPORTS

    response = http("GET", url, token=user.access_token)

    assert response.status == 200, response.body
    assert response.json() == {
        "rtc_transports": [{"type": "livekit", "livekit_service_url": status["livekitServiceUrl"]}]
    }
    assert status["livekitServiceUrl"] == "https://rtc.example.com"
    # The endpoint is Synapse's MSC4143 servlet: it wants a user.
    assert http("GET", url).status == 401


def test_synapse_accepts_delayed_leave_events(snippet_synapse: Synapse) -> None:
    user = snippet_synapse.register(f"leaver{uuid.uuid4().hex[:8]}")
    room_id = snippet_synapse.create_room(user)
    # A call membership whose "leave" fires unless restarted, as Element Call sends it.
    state_key = urllib.parse.quote(f"_{user.user_id}_{user.device_id}", safe="")
    url = (
        f"{snippet_synapse.client_url}/_matrix/client/v3/rooms/{urllib.parse.quote(room_id, safe='')}"
        f"/state/org.matrix.msc3401.call.member/{state_key}?org.matrix.msc4140.delay=10000"
    )

    response = http("PUT", url, {}, token=user.access_token)

    assert response.status == 200, response.body
    assert response.json().get("delay_id"), response.body
