"""Operator benchmark against a real Kubernetes API server (run by hand; not collected by pytest).

For each size N it starts a fresh control plane from ../shared/k8s (no controller-manager, so every write is
the operator's) and measures, interleaved:

- operator: N copies of examples/host-network.yaml, one per namespace, applied before the operator starts;
  then `matrixrtc-operator run`; the time from its start until every transport's status has observed its
  generation with `Degraded=False` and every child exists; then 30 s of steady state: API requests by source
  and verb (the operator's /metrics, the difference over the window), reconciles, and the operator's RSS;
- kubectl: the objects `matrixrtc-operator render` prints for the same N transports, applied in one
  `kubectl apply --server-side` (timed), as the reference.

    .venv/bin/python tests/python/bench_operator.py --sizes 10 100 [--repeat 2] [--steady 30]

The operator binary is target/debug/matrixrtc-operator unless MATRIXRTC_OPERATOR_BIN says otherwise.
Prints one JSON line per run and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import urllib3
import yaml

REPO = Path(__file__).resolve().parents[2]
CONTROL_PLANE = REPO.parent / "shared" / "k8s" / "control-plane"
EXAMPLE = REPO / "examples" / "host-network.yaml"
MANAGED = "app.kubernetes.io/managed-by=matrixrtc-operator"
CHILD_PATHS = [
    "/api/v1/serviceaccounts",
    "/api/v1/secrets",
    "/api/v1/configmaps",
    "/api/v1/services",
    "/apis/apps/v1/deployments",
    "/apis/networking.k8s.io/v1/ingresses",
]
TRANSPORTS = "/apis/matrixrtc.dev/v1alpha1/matrixrtctransports"

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def operator_bin() -> Path:
    return Path(os.environ.get("MATRIXRTC_OPERATOR_BIN", REPO / "target" / "debug" / "matrixrtc-operator"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Plane:
    """A fresh control plane in its own state directory."""

    def __init__(self) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="k8s-bench-"))
        self.env = dict(os.environ, K8S_STATE_DIR=str(self.state))

    def __enter__(self) -> Plane:
        out = subprocess.run(
            [str(CONTROL_PLANE), "up", "--no-controller-manager"],
            env=self.env, check=True, capture_output=True, text=True, timeout=180,
        ).stdout
        match = re.search(r"KUBECONFIG=(\S+) PATH=(\S+?):\$PATH", out)
        if not match:
            raise RuntimeError(f"unexpected control-plane output: {out!r}")
        self.kubeconfig, bindir = match.group(1), match.group(2)
        self.env = dict(self.env, KUBECONFIG=self.kubeconfig, PATH=f"{bindir}:{os.environ['PATH']}")
        config = yaml.safe_load(Path(self.kubeconfig).read_text())
        self.server = config["clusters"][0]["cluster"]["server"]
        self.session = requests.Session()
        self.session.verify = False
        self.session.headers["Authorization"] = f"Bearer {config['users'][0]['user']['token']}"
        return self

    def __exit__(self, *_: object) -> None:
        subprocess.run([str(CONTROL_PLANE), "down"], env=self.env, check=False, capture_output=True, timeout=120)
        shutil.rmtree(self.state, ignore_errors=True)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return subprocess.run(
            ["kubectl", *args], env=self.env, input=stdin, check=True, capture_output=True, text=True, timeout=1800,
        ).stdout

    def get(self, path: str, **params: str) -> dict:
        response = self.session.get(self.server + path, params=params, timeout=120, verify=False)
        response.raise_for_status()
        return response.json()


def transports(n: int) -> list[dict]:
    base = yaml.safe_load(EXAMPLE.read_text())
    out = []
    for i in range(n):
        copy = json.loads(json.dumps(base))
        copy["metadata"]["namespace"] = f"bench-{i:04d}"
        out.append(copy)
    return out


def namespaces_yaml(n: int) -> str:
    return "".join(f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: bench-{i:04d}}}\n" for i in range(n))


def rendered(crs: list[dict], workdir: Path) -> tuple[str, int]:
    """The objects `render` prints for every transport, as one YAML stream, and their count."""
    docs = []
    for i, cr in enumerate(crs):
        path = workdir / f"cr-{i}.yaml"
        path.write_text(yaml.safe_dump(cr))
        out = subprocess.run(
            [str(operator_bin()), "render", "-f", str(path)], check=True, capture_output=True, text=True, timeout=60,
        ).stdout
        docs.extend(d for d in yaml.safe_load_all(out) if d)
    return yaml.safe_dump_all(docs), len(docs)


def prepare(plane: Plane, n: int) -> None:
    plane.kubectl("apply", "--server-side", "-f", "-", stdin=subprocess.run(
        [str(operator_bin()), "crd"], check=True, capture_output=True, text=True).stdout)
    plane.kubectl("wait", "--for=condition=Established", "crd/matrixrtctransports.matrixrtc.dev", "--timeout=60s")
    plane.kubectl("apply", "--server-side", "-f", "-", stdin=namespaces_yaml(n))


def children(plane: Plane) -> int:
    return sum(len(plane.get(path, labelSelector=MANAGED)["items"]) for path in CHILD_PATHS)


def converged(plane: Plane, n: int) -> bool:
    items = plane.get(TRANSPORTS)["items"]
    if len(items) != n:
        return False
    for item in items:
        status = item.get("status") or {}
        if status.get("observedGeneration") != item["metadata"].get("generation"):
            return False
        degraded = [c for c in status.get("conditions", []) if c["type"] == "Degraded"]
        if not degraded or degraded[0]["status"] != "False":
            return False
    return True


def metrics(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith("matrixrtc_operator_api_requests_total") or line.startswith(
            "matrixrtc_operator_reconciles_total"
        ):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    kib = lambda key: float(fields[key].split()[0])  # noqa: E731
    return kib("VmRSS") / 1024, kib("VmHWM") / 1024


def run_operator(n: int, steady: float, extra_env: dict[str, str]) -> dict:
    with Plane() as plane, tempfile.TemporaryDirectory() as work:
        prepare(plane, n)
        plane.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(transports(n)))
        expected_children = rendered(transports(1), Path(work))[1] * n
        port = free_port()
        log = open(Path(work) / "operator.log", "w")
        started = time.monotonic()
        operator = subprocess.Popen(
            [str(operator_bin()), "run", f"--metrics-address=127.0.0.1:{port}", "--log-level=warn"],
            env=dict(plane.env, **extra_env), stdout=log, stderr=log,
        )
        try:
            poll = 0.1 if n <= 100 else 0.5
            deadline = started + 1800
            while True:
                if operator.poll() is not None:
                    raise RuntimeError(f"operator exited: {(Path(work) / 'operator.log').read_text()[-2000:]}")
                if converged(plane, n) and children(plane) >= expected_children:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("not converged within 30 min")
                time.sleep(poll)
            took = time.monotonic() - started
            rss_converged, _ = rss_mib(operator.pid)
            before = metrics(port)
            time.sleep(steady)
            after = metrics(port)
            rss, peak = rss_mib(operator.pid)
        finally:
            operator.terminate()
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
        return {
            "mode": "operator", "transports": n, "children": expected_children, "seconds": round(took, 2),
            "rss_mib_converged": round(rss_converged, 1), "rss_mib": round(rss, 1), "rss_mib_peak": round(peak, 1),
            "steady_seconds": steady, "steady_delta": delta,
            "totals_at_convergence": {k: v for k, v in before.items() if v},
        }


def run_kubectl(n: int) -> dict:
    with Plane() as plane, tempfile.TemporaryDirectory() as work:
        prepare(plane, n)
        stream, count = rendered(transports(n), Path(work))
        started = time.monotonic()
        plane.kubectl("apply", "--server-side", "-f", "-", stdin=stream)
        took = time.monotonic() - started
        return {"mode": "kubectl", "transports": n, "children": count, "seconds": round(took, 2)}


def steady_summary(delta: dict[str, float]) -> str:
    parts = []
    for key, value in sorted(delta.items()):
        match = re.search(r'source="(\w+)",verb="(\w+)"', key)
        if match:
            parts.append(f"{match.group(1)} {match.group(2)} {value:g}")
        elif key.startswith("matrixrtc_operator_reconciles_total"):
            parts.append(f"reconciles {value:g}")
    return ", ".join(parts) or "none"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--repeat", type=int, default=2, help="operator/kubectl pairs per size (interleaved)")
    parser.add_argument("--steady", type=float, default=30.0, help="seconds of steady state to measure")
    parser.add_argument("--modes", nargs="+", choices=["operator", "kubectl"], default=["operator", "kubectl"],
                        help="what to run per size (both by default, interleaved)")
    parser.add_argument("--operator-env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="extra environment for the operator process (e.g. allocator settings)")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.operator_env)
    if not operator_bin().exists():
        print(f"no operator binary at {operator_bin()} (cargo build -p matrixrtc-operator)", file=sys.stderr)
        return 2
    results = []
    for n in args.sizes:
        for _ in range(args.repeat):
            runs = {"operator": lambda: run_operator(n, args.steady, extra_env), "kubectl": lambda: run_kubectl(n)}
            for result in (runs[mode]() for mode in args.modes):
                result["loadavg"] = os.getloadavg()[0]
                print(json.dumps(result), flush=True)
                results.append(result)
    if set(args.modes) != {"operator", "kubectl"}:
        return 0  # the table compares the two; the JSON lines above carry the figures of one
    print("\n| transports | operator converged | bulk kubectl apply | ratio | operator RSS (peak) | "
          "steady state, 30 s: API requests by source and verb |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        ops = [r for r in results if r["mode"] == "operator" and r["transports"] == n]
        kubectl = [r for r in results if r["mode"] == "kubectl" and r["transports"] == n]
        op_s = statistics.median(r["seconds"] for r in ops)
        ku_s = statistics.median(r["seconds"] for r in kubectl)
        print(
            f"| {n} | {op_s:.1f} s ({', '.join(str(r['seconds']) for r in ops)}) "
            f"| {ku_s:.1f} s ({', '.join(str(r['seconds']) for r in kubectl)}) | {op_s / ku_s:.2f} "
            f"| {max(r['rss_mib'] for r in ops):.0f} MiB ({max(r['rss_mib_peak'] for r in ops):.0f}) "
            f"| {steady_summary(ops[-1]['steady_delta'])} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
