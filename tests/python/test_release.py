"""Tests of the release pipeline: the workflows (actionlint, with shellcheck), the scripts/release-*.sh commands
they call, run here for real up to the push (version check, `helm package`, the install manifest validated
against the Kubernetes 1.28 schemas, release notes, the image build plan, the Dockerfile's cross-compilation
setup), and one version across Cargo, the chart, the operator's default images, the CRD and the docs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
import tomllib
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

import chart_support as cs
import release_support as rs

pytestmark = pytest.mark.timeout(120)

ROOT = cs.REPO_ROOT
WORKFLOWS = ROOT / ".github" / "workflows"
SCRIPTS = ROOT / "scripts"
VENV_BIN = Path(sys.executable).parent
VERSION = rs.workspace_version()
BASH = shutil.which("bash") or "/bin/bash"


def workflow(name: str) -> dict[Any, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(flow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as True.
    return flow.get("on", flow.get(True))


def steps(flow: dict[Any, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job_name, step) for job_name, job in flow["jobs"].items() for step in job["steps"]]


def run_script(script: str, *args: str, root: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
    return cs.run([BASH, str(root / "scripts" / script), *args], env=full_env, cwd=root, timeout=90)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the files git would commit (what a clone at the tag has), to change and release from."""
    listed = cs.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    copy = tmp_path / "checkout"
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():  # files deleted in the work tree but not yet in git are skipped
            target = copy / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return copy


def add_changelog_section(root: Path, version: str) -> None:
    """What the release commit does: the Unreleased entries move under a section for the version."""
    path = root / "CHANGELOG.md"
    text = path.read_text()
    assert "## [Unreleased]\n" in text
    path.write_text(text.replace("## [Unreleased]\n", f"## [Unreleased]\n\n## [{version}] - 2026-12-02\n", 1))


# ==============================================================================================================
# The workflows


def test_workflows_pass_actionlint_with_shellcheck() -> None:
    actionlint = VENV_BIN / "actionlint"
    shellcheck = VENV_BIN / "shellcheck"
    assert actionlint.is_file(), "actionlint is missing: pip install -r tests/python/requirements.txt"
    assert shellcheck.is_file(), "shellcheck is missing: pip install -r tests/python/requirements.txt"
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "release.yml"}
    # pyflakes is off: no step runs inline Python.
    result = cs.run([str(actionlint), "-no-color", "-shellcheck", str(shellcheck), "-pyflakes=", *map(str, files)],
                    cwd=ROOT)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    """The lint test above can fail: an unknown permission and an unquoted variable (a shellcheck finding)."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\npermissions:\n  id-tokens: write\njobs:\n  a:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - run: echo $HOME_DIR\n"
    )
    result = cs.run([str(VENV_BIN / "actionlint"), "-no-color", "-shellcheck", str(VENV_BIN / "shellcheck"),
                     "-pyflakes=", str(broken)], cwd=tmp_path)
    assert result.returncode != 0
    assert "id-tokens" in result.stdout and "SC2086" in result.stdout, result.stdout


def test_scripts_pass_shellcheck() -> None:
    # Every shell script, hand-run ones too (the benchmark): those are the ones nothing else runs.
    scripts = sorted(SCRIPTS.glob("*.sh")) + [ROOT / ".ci" / "run"]
    names = {s.name for s in scripts}
    assert len([n for n in names if n.startswith("release-")]) >= 7, names
    assert {"test.sh", "bench-get-token.sh", "run"} <= names, names
    result = cs.run([str(VENV_BIN / "shellcheck"), "-x", *(str(s.relative_to(ROOT)) for s in scripts)], cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_workflow_runs_dot_ci_run_on_debian_12_with_the_dockerfiles_toolchain() -> None:
    flow = workflow("ci.yml")
    assert {"push", "pull_request"} <= set(triggers(flow))
    assert set(flow["jobs"]) == {"ci", "release-binaries"}
    job = flow["jobs"]["ci"]
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert runs[-1] == "bash .ci/run"
    assert "scripts/release-ci-setup.sh" in runs
    assert any(step.get("with", {}).get("tool") == "cargo-nextest" for step in job["steps"])
    # The release build left out of .ci/run (for time) runs as its own job, through the same test script.
    release = flow["jobs"]["release-binaries"]
    release_runs = [step["run"] for step in release["steps"] if "run" in step]
    assert release_runs[-1] == "bash scripts/test.sh --release-binaries"
    rust_image = re.search(r"^ARG RUST_IMAGE=(\S+)$", cs.DOCKERFILE.read_text(), re.M)
    assert rust_image and job["container"]["image"] == rust_image.group(1)
    assert release["container"]["image"] == rust_image.group(1)
    assert rust_image.group(1).endswith("-bookworm"), "CI and the image builder run Debian 12"
    assert flow["permissions"] == {"contents": "read"}


def test_release_workflow_runs_on_version_tags_and_only_calls_release_scripts() -> None:
    flow = workflow("release.yml")
    assert triggers(flow) == {"push": {"tags": ["v*"]}}
    assert flow["permissions"] == {}
    for job_name, step in steps(flow):
        if "run" not in step:
            continue
        command = step["run"].strip()
        if step["name"].endswith("login"):  # docker/cosign login with the job's token, from release-config.sh
            assert "source scripts/release-config.sh" in command, command
            continue
        assert re.fullmatch(r'scripts/release-[a-z-]+\.sh( --[a-z]+)?( "\$RELEASE_TAG")?', command), (job_name, command)
        assert (ROOT / command.split()[0]).is_file(), command
    for name in ("ci.yml", "release.yml"):
        for job_name, step in steps(workflow(name)):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, (name, job_name)


def test_release_workflow_pushes_signs_and_publishes_in_order_with_least_privilege() -> None:
    jobs = workflow("release.yml")["jobs"]
    commands = {name: [s["run"] for s in job["steps"] if "run" in s] for name, job in jobs.items()}
    assert 'scripts/release-check-version.sh "$RELEASE_TAG"' in commands["check"]
    assert 'scripts/release-images.sh --push "$RELEASE_TAG"' in commands["images"]
    assert 'scripts/release-chart.sh --push "$RELEASE_TAG"' in commands["chart"]
    assert 'scripts/release-github.sh --publish "$RELEASE_TAG"' in commands["github-release"]
    # Nothing is pushed before the check passed; the chart only after its images exist.
    assert jobs["images"]["needs"] == "check"
    assert jobs["chart"]["needs"] == "images"
    assert jobs["github-release"]["needs"] == "chart"
    assert jobs["check"]["permissions"] == {"contents": "read"}
    for signer in ("images", "chart"):
        assert jobs[signer]["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
        assert any(s.get("uses", "").startswith("sigstore/cosign-installer@") for s in jobs[signer]["steps"])
    assert jobs["github-release"]["permissions"] == {"contents": "write"}
    assert any(s.get("uses", "").startswith("docker/setup-buildx-action@") for s in jobs["images"]["steps"])


def test_actions_come_from_known_publishers_pinned_to_a_version() -> None:
    publishers = {"actions", "docker", "sigstore", "taiki-e"}
    for name in ("ci.yml", "release.yml"):
        for job_name, step in steps(workflow(name)):
            if "uses" not in step:
                continue
            action, _, ref = step["uses"].partition("@")
            assert action.split("/")[0] in publishers, (name, job_name, action)
            assert re.fullmatch(r"v\d+|[0-9a-f]{40}", ref), (name, job_name, step["uses"])


def test_release_python_packages_are_pinned_by_the_test_requirements() -> None:
    pinned = {}
    for line in (ROOT / "tests" / "python" / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pinned[name.strip().lower().replace("_", "-")] = version.strip()
    wanted = [line.strip() for line in (ROOT / ".github" / "release-requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert wanted
    for name in wanted:
        assert name.lower().replace("_", "-") in pinned, f"{name} has no pin in tests/python/requirements.txt"


# ==============================================================================================================
# One version


def test_the_repository_agrees_on_one_version() -> None:
    assert rs.version_problems(VERSION) == []


def test_chart_and_operator_name_the_images_the_release_pushes() -> None:
    prefix = rs.release_config()["IMAGE_PREFIX"]
    values = yaml.safe_load((cs.CHART_DIR / "values.yaml").read_text())
    assert values["image"]["repository"] == f"{prefix}/matrixrtc-operator"
    assert values["operands"]["authImage"]["repository"] == f"{prefix}/matrixrtc-auth"
    assert rs.default_auth_image() == (f"{prefix}/matrixrtc-auth", None), "the tag must be CARGO_PKG_VERSION"


def test_operator_binary_defaults_to_the_auth_image_of_its_own_version() -> None:
    binary = cs.operator_binary()
    if binary is None:
        pytest.skip("SKIPPED: no operator binary (cargo build -p matrixrtc-operator, or set MATRIXRTC_OPERATOR_BIN)")
    help_text = cs.run([str(binary), "run", "--help"]).stdout
    default = re.search(r"--auth-image <IMAGE>.*?\[default: ([^\]]+)\]", help_text, re.S)
    assert default, help_text
    assert default.group(1) == f"{rs.release_config()['IMAGE_PREFIX']}/matrixrtc-auth:{VERSION}"


@pytest.mark.parametrize(
    ("path", "old", "new", "reported"),
    [
        ("charts/matrixrtc-operator/Chart.yaml", "appVersion: \"{v}\"", "appVersion: \"9.9.9\"", "Chart.yaml: appVersion"),
        ("charts/matrixrtc-operator/Chart.yaml", "\nversion: {v}", "\nversion: 9.9.9", "Chart.yaml: version"),
        ("Cargo.toml", "version = \"{v}\"", "version = \"9.9.9\"", "Cargo.toml: workspace version"),
        ("charts/matrixrtc-operator/values.yaml", "  tag: \"\"\n  # -- Image digest", "  tag: \"9.9.9\"\n  # -- Image digest",
         "values.yaml: image.tag"),
        ("operator/src/defaults.rs", "env!(\"CARGO_PKG_VERSION\")", "\"9.9.9\"", "DEFAULT_AUTH_IMAGE"),
        ("docs/install.md", "matrixrtc-auth:{v}", "matrixrtc-auth:9.9.9", "docs/install.md"),
        ("scripts/release-config.sh", "IMAGE_PREFIX=ghcr.io/", "IMAGE_PREFIX=quay.io/", "values.yaml: image.repository"),
    ],
    ids=["appVersion", "chart-version", "cargo", "image-tag", "operator-default", "docs", "registry"],
)
def test_version_check_names_what_disagrees(checkout: Path, path: str, old: str, new: str, reported: str) -> None:
    file = checkout / path
    text = file.read_text()
    old, new = old.format(v=VERSION), new.format(v=VERSION)
    assert old in text, f"{path} no longer contains {old!r}: update this test"
    file.write_text(text.replace(old, new, 1))
    problems = rs.version_problems(VERSION, checkout)
    assert any(reported in p for p in problems), problems


def test_version_check_reads_a_crd_version_label(checkout: Path) -> None:
    crd = next((checkout / "crds").glob("*.yaml"))
    documents = cs.load_all_yaml(crd.read_text())
    documents[0]["metadata"].setdefault("labels", {})[rs.VERSION_LABEL] = "9.9.9"
    crd.write_text(yaml.safe_dump_all(documents))
    assert any(rs.VERSION_LABEL in p for p in rs.version_problems(VERSION, checkout))


@pytest.mark.parametrize("tag", ["1.2", "v1.2.3.4", "release-1", "v01.2.3", ""])
def test_tags_that_are_not_semver_are_refused(tag: str) -> None:
    with pytest.raises(rs.ReleaseError, match="SemVer"):
        rs.version_from_tag(tag)


def test_tags_with_and_without_v_and_prereleases_are_versions() -> None:
    assert rs.version_from_tag("v1.2.3") == rs.version_from_tag("1.2.3") == "1.2.3"
    assert rs.version_from_tag("v1.2.3-rc.1") == "1.2.3-rc.1"


def test_bump_moves_every_file_to_the_new_version(checkout: Path) -> None:
    """scripts/release-bump-version.sh on a copy: afterwards the full release check passes for the new version."""
    result = run_script("release-bump-version.sh", "v0.99.0-rc.1", root=checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "everything carries version 0.99.0-rc.1" in result.stdout
    rs.check_version("v0.99.0-rc.1", checkout)
    sections = rs.changelog_sections(checkout)
    assert list(sections)[:2] == ["Unreleased", "0.99.0-rc.1"]
    assert sections["Unreleased"] == "" and sections["0.99.0-rc.1"] == rs.changelog_sections()["Unreleased"]
    changelog = (checkout / "CHANGELOG.md").read_text()
    assert "[Unreleased]: https://github.com/matrixrtc-operator/matrixrtc-operator/compare/v0.99.0-rc.1...HEAD" in changelog
    # The operator's render snapshots follow CARGO_PKG_VERSION, so they move too, and nothing else in them.
    for snapshot in (checkout / "operator" / "src" / "snapshots").glob("*.snap"):
        before = (ROOT / "operator" / "src" / "snapshots" / snapshot.name).read_text()
        assert snapshot.read_text() == before.replace(f": {VERSION}\n", ": 0.99.0-rc.1\n").replace(
            f"matrixrtc-auth:{VERSION}\n", "matrixrtc-auth:0.99.0-rc.1\n"), snapshot.name
    # A second release needs new notes first.
    again = run_script("release-bump-version.sh", "v0.99.0", root=checkout)
    assert again.returncode != 0 and "Unreleased section is empty" in again.stderr, again.stderr


def test_bump_refuses_the_current_version_and_non_semver(checkout: Path) -> None:
    for tag, message in ((f"v{VERSION}", "already at"), ("v1.0", "SemVer")):
        result = run_script("release-bump-version.sh", tag, root=checkout)
        assert result.returncode != 0 and message in result.stderr, result.stderr
    assert cs.run(["git", "diff", "--no-index", "--quiet", str(ROOT / "Cargo.toml"), str(checkout / "Cargo.toml")]).returncode == 0


# ==============================================================================================================
# The scripts, run up to the push


def test_check_version_script_gates_on_tag_and_changelog(checkout: Path) -> None:
    unreleased = run_script("release-check-version.sh", f"v{VERSION}", root=checkout)
    assert unreleased.returncode != 0
    assert f"## [{VERSION}]" in unreleased.stderr, unreleased.stderr
    add_changelog_section(checkout, VERSION)
    released = run_script("release-check-version.sh", f"v{VERSION}", root=checkout)
    assert released.returncode == 0, released.stderr
    other = run_script("release-check-version.sh", "v9.9.9", root=checkout)
    assert other.returncode != 0 and "Cargo.toml: workspace version is" in other.stderr, other.stderr
    assert run_script("release-check-version.sh", root=checkout).returncode != 0


def test_release_dry_run_from_a_checkout_at_the_tag(checkout: Path, tmp_path: Path) -> None:
    """The check job of release.yml, step by step, on a checkout with the release commit's CHANGELOG."""
    add_changelog_section(checkout, VERSION)
    dist = tmp_path / "dist"
    tag = f"v{VERSION}"

    chart = run_script("release-chart.sh", tag, str(dist), root=checkout)
    assert chart.returncode == 0, chart.stderr
    archive = dist / f"matrixrtc-operator-{VERSION}.tgz"
    assert f"would run: helm push {archive} oci://" in chart.stdout
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        metadata = yaml.safe_load(tar.extractfile("matrixrtc-operator/Chart.yaml").read())  # type: ignore[union-attr]
    assert (metadata["version"], metadata["appVersion"]) == (VERSION, VERSION)
    assert "matrixrtc-operator/values.schema.json" in names
    assert not any("/ci/" in n for n in names), "the chart's test values are packaged"

    manifests = run_script("release-manifests.sh", tag, str(dist), root=checkout)
    assert manifests.returncode == 0, manifests.stderr
    assert sorted(p.name for p in (dist / "crds").iterdir()) == sorted(p.name for p in cs.CRDS_DIR.glob("*.yaml"))

    github = run_script("release-github.sh", tag, str(dist), root=checkout)
    assert github.returncode == 0, github.stderr
    (command,) = [line for line in github.stdout.splitlines() if line.startswith("would run: gh release create")]
    assert f"gh release create {tag} --verify-tag" in command and "--prerelease" not in command
    assert f"{dist}/install.yaml" in command and f"{dist}/SHA256SUMS" in command
    assert all(f"{dist}/crds/{p.name}" in command for p in cs.CRDS_DIR.glob("*.yaml"))
    notes = (dist / "release-notes.md").read_text()
    assert "### Added" in notes and "## [" not in notes
    sums = cs.run(["sha256sum", "--check", "SHA256SUMS"], cwd=dist)
    assert sums.returncode == 0, sums.stdout + sums.stderr


def test_release_scripts_refuse_a_version_the_repository_does_not_carry(tmp_path: Path) -> None:
    for script in ("release-chart.sh", "release-manifests.sh", "release-images.sh", "release-github.sh"):
        result = run_script(script, "v9.9.9", str(tmp_path / "dist"))
        assert result.returncode != 0, script
        assert "Chart.yaml: version is" in result.stderr, (script, result.stderr)
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


def test_install_manifest_is_valid_kubernetes_1_28_and_runs_the_released_images(tmp_path: Path) -> None:
    result = run_script("release-manifests.sh", f"v{VERSION}", str(tmp_path))
    assert result.returncode == 0, result.stderr
    objects = cs.load_all_yaml((tmp_path / "install.yaml").read_text())
    failures = [f"{cs.object_id(o)} {e}" for o in objects for e in cs.kubernetes_schema_errors(o)]
    assert not failures, "\n".join(failures)
    assert objects[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": rs.INSTALL_NAMESPACE}}
    kinds = [o["kind"] for o in objects]
    assert kinds.index("CustomResourceDefinition") < kinds.index("Deployment")
    assert kinds.index("ClusterRoleBinding") < kinds.index("Deployment")
    for obj in objects[1:]:
        if obj["kind"] not in {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}:
            assert obj["metadata"]["namespace"] == rs.INSTALL_NAMESPACE, cs.object_id(obj)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    prefix = rs.release_config()["IMAGE_PREFIX"]
    assert container["image"] == f"{prefix}/matrixrtc-operator:{VERSION}"
    assert f"--auth-image={prefix}/matrixrtc-auth:{VERSION}" in container["args"]
    (crd,) = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    assert crd["spec"] == cs.load_all_yaml(next(cs.CRDS_DIR.glob("*.yaml")).read_text())[0]["spec"]


class FakeOciRegistry:
    """The part of the OCI distribution API a push uses (blob uploads, manifests), in memory, on loopback.

    Every request needs HTTP basic auth with `user:password`, as a private registry would.
    """

    def __init__(self, user: str, password: str) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.refused = 0
        media_types: dict[bytes, str] = {}
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        uploads: dict[str, bytes] = {}
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def handle_request(self) -> None:
                url = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != expected:
                    registry.refused += 1
                    return self.reply(401, {"WWW-Authenticate": 'Basic realm="fake"'})
                if url.path == "/v2/":
                    return self.reply(200)
                if match := re.fullmatch(r"/v2/(.+)/blobs/uploads/(.*)", url.path):
                    repository, upload = match.groups()
                    if self.command == "POST":
                        upload = uuid.uuid4().hex
                        uploads[upload] = b""
                        return self.reply(202, {"Location": f"/v2/{repository}/blobs/uploads/{upload}"})
                    uploads[upload] = uploads.get(upload, b"") + body
                    if self.command == "PATCH":
                        return self.reply(202, {"Location": f"/v2/{repository}/blobs/uploads/{upload}"})
                    data, digest = uploads.pop(upload), parse_qs(url.query)["digest"][0]
                    if digest != "sha256:" + hashlib.sha256(data).hexdigest():
                        return self.reply(400)
                    registry.blobs[digest] = data
                    return self.reply(201, {"Location": f"/v2/{repository}/blobs/{digest}",
                                            "Docker-Content-Digest": digest})
                if match := re.fullmatch(r"/v2/(.+)/blobs/(sha256:[0-9a-f]{64})", url.path):
                    found = registry.blobs.get(match.group(2))
                    return self.reply(404) if found is None else self.reply(200, {}, found)
                if match := re.fullmatch(r"/v2/(.+)/manifests/(.+)", url.path):
                    repository, reference = match.groups()
                    if self.command == "PUT":
                        digest = "sha256:" + hashlib.sha256(body).hexdigest()
                        registry.manifests[(repository, reference)] = registry.manifests[(repository, digest)] = body
                        media_types[body] = self.headers.get("Content-Type", "")
                        return self.reply(201, {"Docker-Content-Digest": digest})
                    found = registry.manifests.get((repository, reference))
                    if found is None:
                        return self.reply(404)
                    return self.reply(200, {"Content-Type": media_types[found],
                                            "Docker-Content-Digest": "sha256:" + hashlib.sha256(found).hexdigest()},
                                      found)
                return self.reply(404)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = handle_request

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


REGISTRY_USER = "release-bot"
REGISTRY_PASSWORD = "registry-password-" + uuid.uuid4().hex


@pytest.fixture
def oci_registry() -> Iterator[FakeOciRegistry]:
    registry = FakeOciRegistry(REGISTRY_USER, REGISTRY_PASSWORD)
    try:
        yield registry
    finally:
        registry.close()


def push_env(registry: FakeOciRegistry, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The chart job's environment, aimed at the fake registry; Helm's files under tmp_path, and a PATH with only
    what the script needs besides $PYTHON, so that no cosign is found."""
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    for tool in ("dirname",):
        found = shutil.which(tool)
        assert found, tool
        (tools / tool).symlink_to(found)
    return {"RELEASE_CHART_REMOTE": f"oci://{registry.host}/charts", "RELEASE_PLAIN_HTTP": "1",
            "PATH": str(tools), "HOME": str(tmp_path / "home"), **extra}


def test_chart_push_uploads_the_packaged_chart_under_its_version(oci_registry: FakeOciRegistry, tmp_path: Path) -> None:
    """`release-chart.sh --push`, as the chart job runs it, against a registry on loopback."""
    env = push_env(oci_registry, tmp_path, REGISTRY_USERNAME=REGISTRY_USER, REGISTRY_PASSWORD=REGISTRY_PASSWORD)
    result = run_script("release-chart.sh", "--push", f"v{VERSION}", str(tmp_path), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert REGISTRY_PASSWORD not in result.stdout + result.stderr
    manifest = json.loads(oci_registry.manifests[("charts/matrixrtc-operator", VERSION)])
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
    archive = tmp_path / f"matrixrtc-operator-{VERSION}.tgz"
    assert oci_registry.blobs[layer["digest"]] == archive.read_bytes()
    config = json.loads(oci_registry.blobs[manifest["config"]["digest"]])
    assert (config["name"], config["version"]) == ("matrixrtc-operator", VERSION)
    digest = "sha256:" + hashlib.sha256(oci_registry.manifests[("charts/matrixrtc-operator", VERSION)]).hexdigest()
    assert f"pushed {oci_registry.host}/charts/matrixrtc-operator@{digest}" in result.stdout
    assert "cosign is not installed: the chart is not signed" in result.stdout
    # The credentials were kept out of the user's Helm configuration.
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.json"))


def test_chart_push_without_credentials_fails_clearly(oci_registry: FakeOciRegistry, tmp_path: Path) -> None:
    env = push_env(oci_registry, tmp_path, REGISTRY_USERNAME="", REGISTRY_PASSWORD="")
    result = run_script("release-chart.sh", "--push", f"v{VERSION}", str(tmp_path), env=env)
    assert result.returncode != 0
    assert oci_registry.refused and not oci_registry.manifests
    assert "error: pushing matrixrtc-operator-" in result.stderr and "credential" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_chart_push_in_the_workflow_refuses_to_skip_signing(oci_registry: FakeOciRegistry, tmp_path: Path) -> None:
    env = push_env(oci_registry, tmp_path, REGISTRY_USERNAME=REGISTRY_USER, REGISTRY_PASSWORD=REGISTRY_PASSWORD,
                   GITHUB_ACTIONS="true")
    result = run_script("release-chart.sh", "--push", f"v{VERSION}", str(tmp_path), env=env)
    assert result.returncode != 0 and "cosign is missing" in result.stderr, result.stdout + result.stderr


def test_image_build_plan_covers_both_images_platforms_sbom_and_signing(tmp_path: Path) -> None:
    result = run_script("release-images.sh", f"v{VERSION}", str(tmp_path))
    assert result.returncode == 0, result.stderr
    config = rs.release_config()
    assert set(config["PLATFORMS"].split(",")) == {"linux/amd64", "linux/arm64"}
    builds = [l for l in result.stdout.splitlines() if l.startswith("would run: docker buildx build")]
    signs = [l for l in result.stdout.splitlines() if l.startswith("would run: cosign sign --yes --recursive")]
    assert len(builds) == len(signs) == 2
    for target, image in rs.IMAGES.items():
        (build,) = [b for b in builds if f"--target {target} " in b]
        for part in (f"--platform {config['PLATFORMS']}", f"--tag {config['IMAGE_PREFIX']}/{image}:{VERSION}",
                     "--sbom=true", "--provenance=mode=max", "--push"):
            assert part in build, (part, build)
        assert any(f"{config['IMAGE_PREFIX']}/{image}@" in s for s in signs)
    # Dockerfile targets exist for each image.
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", cs.DOCKERFILE.read_text(), re.M))
    assert set(rs.IMAGES) <= targets


def test_image_push_mode_needs_the_build_metadata_digest(tmp_path: Path) -> None:
    metadata = tmp_path / "image.json"
    metadata.write_text('{"containerimage.digest": "sha256:' + "ab" * 32 + '"}')
    assert rs.image_digest(metadata) == "sha256:" + "ab" * 32
    metadata.write_text("{}")
    with pytest.raises(rs.ReleaseError, match="containerimage.digest"):
        rs.image_digest(metadata)


# ==============================================================================================================
# Multi-arch by cross-compilation (the Dockerfile's build stage)


def cross_setup(tmp_path: Path, target: str, build: str) -> subprocess.CompletedProcess[str]:
    env = {"BUILD_ARCH": build, "RELEASE_CROSS_DRY_RUN": "1", "CARGO_HOME": str(tmp_path / "cargo"),
           "RUST_TARGET_FILE": str(tmp_path / "rust-target")}
    return cs.run(["bash", str(SCRIPTS / "release-cross-setup.sh"), target], env={**os.environ, **env})


@pytest.mark.parametrize(("target", "build", "triple", "cross"), [
    ("arm64", "amd64", "aarch64-unknown-linux-gnu", True),
    ("amd64", "arm64", "x86_64-unknown-linux-gnu", True),
    ("amd64", "amd64", "x86_64-unknown-linux-gnu", False),
])
def test_cross_setup_points_cargo_at_the_target(tmp_path: Path, target: str, build: str, triple: str, cross: bool) -> None:
    result = cross_setup(tmp_path, target, build)
    assert result.returncode == 0, result.stderr
    config = tomllib.loads((tmp_path / "cargo" / "config.toml").read_text())
    assert config["build"]["target"] == triple
    # Static, with the very flags scripts/test.sh builds the tested binaries with.
    assert config["build"]["rustflags"] == shlex.split(static_rustflags_of_the_test_script())
    gnu = triple.replace("-unknown-", "-")
    expected = f"{gnu}-gcc" if cross else "gcc"
    assert config["target"][triple]["linker"] == expected
    assert config["env"][f"CC_{triple.replace('-', '_')}"] == expected
    assert (tmp_path / "rust-target").read_text().strip() == triple
    installs = [l for l in result.stdout.splitlines() if l.startswith("would run:")]
    if cross:
        assert any(f"rustup target add {triple}" in l for l in installs)
        assert any(f"libc6-dev-{target}-cross" in l for l in installs)
    else:
        assert not installs


def static_rustflags_of_the_test_script() -> str:
    """STATIC_RUSTFLAGS as scripts/test.sh sets it."""
    match = re.search(r'^STATIC_RUSTFLAGS="([^"]+)"$', (SCRIPTS / "test.sh").read_text(), re.M)
    assert match, "scripts/test.sh no longer sets STATIC_RUSTFLAGS"
    return match.group(1)


def test_the_benchmark_builds_with_the_tested_static_flags() -> None:
    # scripts/bench-get-token.sh measures the binaries as the images ship them: the same flags as the tests.
    text = (SCRIPTS / "bench-get-token.sh").read_text()
    assert f'RUSTFLAGS="{static_rustflags_of_the_test_script()}" cargo build' in text


def test_cross_setup_refuses_other_architectures(tmp_path: Path) -> None:
    result = cross_setup(tmp_path, "riscv64", "amd64")
    assert result.returncode != 0 and "unsupported target architecture 'riscv64'" in result.stderr
    assert not (tmp_path / "cargo" / "config.toml").exists()


def test_dockerfile_cross_compiles_in_a_build_stage_on_the_build_platform() -> None:
    text = cs.DOCKERFILE.read_text()
    assert re.search(r"^FROM --platform=\$BUILDPLATFORM \$\{RUST_IMAGE\} AS build$", text, re.M)
    assert 'RUN release-cross-setup.sh "${TARGETARCH}"' in text
    # The binaries are copied from the target's directory that release-cross-setup.sh names.
    assert 'target/$(cat /etc/rust-target)/release/matrixrtc-operator' in text
    # The runtime stages run nothing (so nothing runs under emulation).
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    for stage in stages:
        if not stage.startswith("--platform"):
            assert not re.search(r"^RUN ", stage, re.M), stage.splitlines()[0]


# ==============================================================================================================
# CHANGELOG.md and the docs


def test_changelog_keeps_a_changelog_with_an_unreleased_section() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n")
    assert "keepachangelog.com" in text and "semver.org" in text
    sections = rs.changelog_sections()
    assert next(iter(sections)) == "Unreleased"
    allowed = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    for name, body in sections.items():
        headings = re.findall(r"^### (.+)$", body, re.M)
        assert set(headings) <= allowed, (name, headings)
        assert headings or (name == "Unreleased" and not body), f"[{name}] has no entries"
        assert re.search(rf"^\[{re.escape(name)}\]: https://", text, re.M), f"no link for [{name}]"
        if name != "Unreleased":
            assert rs.SEMVER.fullmatch(name), name


def test_release_notes_are_the_versions_section_only(checkout: Path) -> None:
    with pytest.raises(rs.ReleaseError, match=re.escape(f"## [{VERSION}]")):
        rs.release_notes(VERSION, checkout)
    add_changelog_section(checkout, VERSION)
    path = checkout / "CHANGELOG.md"
    path.write_text(path.read_text().replace("## [Unreleased]\n", "## [Unreleased]\n\n### Fixed\n\n- later\n", 1))
    notes = rs.release_notes(VERSION, checkout)
    assert notes.startswith("### Added") and "later" not in notes and "[Unreleased]:" not in notes


def test_releasing_doc_is_linked_and_names_every_release_script() -> None:
    doc = (ROOT / "docs" / "releasing.md").read_text()
    assert "(docs/releasing.md)" in (ROOT / "README.md").read_text()
    for script in SCRIPTS.glob("release-*.sh"):
        if script.name not in {"release-common.sh", "release-config.sh"}:
            assert f"scripts/{script.name}" in doc, script.name
    assert "scripts/release-config.sh" in doc
