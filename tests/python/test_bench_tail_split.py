"""scripts/bench-tail-split.py, the hand-run analysis behind the benchmark's tail figures
(docs/benchmark-auth.md, "Where the tail comes from"), on a made-up capture whose answer is known."""

from __future__ import annotations

import re
import subprocess
import sys

import chart_support as cs

SCRIPT = cs.REPO_ROOT / "scripts" / "bench-tail-split.py"
SERVICE, HOMESERVER, UPSTREAM = 8000, 9000, 6000


def packet(time: float, source: int, destination: int, length: int) -> str:
    # The shape of `tcpdump -n -tt -q -r <capture>` lines on loopback.
    return f"{time:.6f} IP 127.0.0.1.{source} > 127.0.0.1.{destination}: tcp {length}"


def exchange(start: float, client: int, forward: float, answer: float, reply: float) -> list[str]:
    """One cold request: the client's request, the service's userinfo request, the homeserver's answer and
    the service's reply, at these offsets (seconds) from `start`; a pure ACK in between, which must not count."""
    return [
        packet(start, client, SERVICE, 300),
        packet(start + 0.00001, SERVICE, client, 0),
        packet(start + forward, UPSTREAM, HOMESERVER, 150),
        packet(start + answer, HOMESERVER, UPSTREAM, 200),
        packet(start + reply, SERVICE, client, 725),
    ]


def split(lines: list[str]) -> str:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--service-port", str(SERVICE), "--homeserver-port", str(HOMESERVER)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_slowest_requests_are_charged_to_the_step_that_stalled() -> None:
    # 500 requests, so the slowest 1 % is five: three the homeserver sat on for 2 ms, one the service held
    # for 2 ms after the homeserver's answer, and one slow by small steps only (none over --stall-ms 0.5).
    lines: list[str] = []
    for i in range(500):
        start = 1_700_000_000 + i * 0.001
        client = 50_000 + i % 10
        if i in (50, 200, 350):
            lines += exchange(start, client, 0.00005, 0.00205, 0.0021)
        elif i == 120:
            lines += exchange(start, client, 0.00005, 0.0001, 0.0021)
        elif i == 400:
            lines += exchange(start, client, 0.0002, 0.00045, 0.0006)
        else:
            lines += exchange(start, client, 0.00005, 0.0001, 0.00015)
    out = split(lines)

    socket = re.search(r"service socket .*: n=(\d+) p50=([\d.]+) .* max=([\d.]+) ms", out)
    assert socket, out
    assert socket[1] == "500" and socket[2] == "0.150" and socket[3] == "2.100", out
    homeserver = re.search(r"homeserver \(request in -> answer out\): n=(\d+) p50=([\d.]+) .* max=([\d.]+) ms", out)
    assert homeserver and homeserver[1] == "500" and homeserver[2] == "0.050" and homeserver[3] == "2.000", out
    charged = re.search(r"(\d+) requests\), .*: homeserver (\d+) .*, service (\d+) .*, neither (\d+)", out)
    assert charged and charged.groups() == ("5", "3", "1", "1"), out


def test_a_capture_without_the_service_port_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--service-port", "1", "--homeserver-port", "2"],
        input="\n".join(exchange(1_700_000_000, 50_000, 0.00005, 0.0001, 0.00015)) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "wrong ports" in result.stderr, result
