#!/usr/bin/env python3
"""Splits the latency tail of a fixed-rate /get_token run by where the time went, from a loopback capture.

Run by hand through `CAPTURE=1 scripts/bench-get-token.sh` (see docs/benchmark-auth.md, "Where the tail
comes from"); reads `tcpdump -n -tt -q -r <capture>` text on stdin. Only packets carrying data count:

- the service's socket latency: from a request's first byte arriving at the service's port to the
  first byte of its response leaving it (HTTP/1.1 answers one request at a time per connection). The load
  generator's own latency is this plus its own sending and waking; compare with its p99;
- the homeserver's latency: from a request reaching the homeserver's port to its answer on the same
  connection (TLS records, so only timing, never content);
- the service's unattended time: from any data reaching the service (a request or a homeserver answer)
  to the next data it sends. The service runs one thread, so this is how long it left input waiting:
  scheduling delays and its own work.

Each request at or above the socket p99 is charged to whichever of the homeserver's latency or the
service's unattended time inside its window was longer, if that exceeds --stall-ms; otherwise to
"neither" (time spread over many small steps, or spent in the kernel between processes).
"""

import argparse
import bisect
import re
import sys

PACKET = re.compile(r"^(\d+\.\d+) IP [\d.]+\.(\d+) > [\d.]+\.(\d+): tcp (\d+)")


def quantile(values, q):
    """The nearest-rank quantile of `values` (seconds), in seconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def describe(name, values):
    ms = {q: quantile(values, q) * 1000 for q in (0.5, 0.9, 0.99, 0.999, 1)}
    return (
        f"{name}: n={len(values)} p50={ms[0.5]:.3f} p90={ms[0.9]:.3f} "
        f"p99={ms[0.99]:.3f} p99.9={ms[0.999]:.3f} max={ms[1]:.3f} ms"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--service-port", required=True)
    parser.add_argument("--homeserver-port", required=True)
    parser.add_argument("--stall-ms", type=float, default=0.5)
    args = parser.parse_args()
    svc, hs = args.service_port, args.homeserver_port

    requests = []  # (in, out) at the service's port
    upstream = []  # (in, out) at the homeserver's port
    inputs = []  # times data reached the service
    outputs = []  # times the service sent data
    open_requests, open_upstream = {}, {}
    for line in sys.stdin:
        match = PACKET.match(line)
        if not match or match[4] == "0":
            continue
        time, source, destination = float(match[1]), match[2], match[3]
        if destination == svc:
            open_requests.setdefault(source, time)
            inputs.append(time)
        elif source == svc:
            outputs.append(time)
            if destination in open_requests:
                requests.append((open_requests.pop(destination), time))
        elif destination == hs:
            outputs.append(time)
            open_upstream.setdefault(source, time)
        elif source == hs:
            inputs.append(time)
            if destination in open_upstream:
                upstream.append((open_upstream.pop(destination), time))
    if not requests:
        sys.exit("no request/response pairs in the capture: wrong ports?")

    outputs.sort()
    inputs.sort()
    unattended = []  # (input time, time until the service's next output)
    for time in inputs:
        i = bisect.bisect_left(outputs, time)
        if i < len(outputs):
            unattended.append((time, outputs[i] - time))
    upstream.sort()
    upstream_starts = [start for start, _ in upstream]
    unattended_starts = [start for start, _ in unattended]

    socket = [end - start for start, end in requests]
    print(describe("service socket (request in -> response out)", socket))
    print(describe("homeserver (request in -> answer out)", [end - start for start, end in upstream]))
    print(describe("service unattended (data in -> next data out)", [wait for _, wait in unattended]))

    # Exactly the p99 request's latency, so that it is among those charged below.
    threshold = quantile(socket, 0.99)
    stall = args.stall_ms / 1000
    charged = {"homeserver": 0, "service": 0, "neither": 0}
    for start, end in requests:
        if end - start < threshold:
            continue
        i, j = bisect.bisect_left(upstream_starts, start), bisect.bisect_right(upstream_starts, end)
        homeserver = max((min(e, end) - s for s, e in upstream[i:j]), default=0)
        i, j = bisect.bisect_left(unattended_starts, start), bisect.bisect_right(unattended_starts, end)
        service = max((min(t + w, end) - t for t, w in unattended[i:j]), default=0)
        if max(homeserver, service) < stall:
            charged["neither"] += 1
        elif homeserver >= service:
            charged["homeserver"] += 1
        else:
            charged["service"] += 1
    total = sum(charged.values())
    print(
        f"slowest 1 % at the socket (>= {threshold * 1000:.3f} ms, {total} requests), charged to the longer "
        f"step over {args.stall_ms} ms: "
        + ", ".join(f"{name} {count} ({100 * count / total:.0f} %)" for name, count in charged.items())
    )


if __name__ == "__main__":
    main()
