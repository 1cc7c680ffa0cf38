"""Support for the release pipeline (scripts/release-*.sh, .github/workflows/release.yml) and its tests.

Everything the release does that needs no registry runs here exactly as it runs in the workflow: the version
check, `helm package` (Helm's own Go library, through helm-python-sdk), the single-file install manifest
(rendered by the same engine and validated against the Kubernetes 1.28 schemas) and the release notes. The push
of the chart uses Helm's push code from the same library.

CLI (run from anywhere; the scripts/release-*.sh commands call it):
    python tests/python/release_support.py check-version TAG           exit 1 unless everything carries TAG's version
                                                   (and CHANGELOG.md has its section; --allow-unreleased: not yet)
    python tests/python/release_support.py package-chart TAG DIR       DIR/matrixrtc-operator-<version>.tgz
    python tests/python/release_support.py push-chart ARCHIVE REMOTE  push to oci://...; prints the digest
    python tests/python/release_support.py manifests TAG DIR           DIR/install.yaml and DIR/crds/*.yaml
    python tests/python/release_support.py release-notes TAG           the CHANGELOG.md section of the version
    python tests/python/release_support.py bump-version TAG --date D   the release commit's edits (see below)
    python tests/python/release_support.py image-digest METADATA_JSON  the digest `docker buildx build` wrote
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path
from typing import Any

# Checked first, so that a missing package fails with a hint before anything is done.
_MISSING = [name for name in ("yaml", "helm_python", "kubernetes_validate") if importlib.util.find_spec(name) is None]
if _MISSING:
    sys.exit(f"error: missing Python packages: {', '.join(_MISSING)}; install what the release needs with\n"
             "  python3 -m pip install -c tests/python/requirements.txt -r .github/release-requirements.txt\n"
             "(scripts/test.sh's .venv has it; the release scripts use .venv/bin/python when it exists)")

import yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chart_support as cs  # noqa: E402

REPO_ROOT = cs.REPO_ROOT
CONFIG_FILE = Path("scripts") / "release-config.sh"
CHART_NAME = "matrixrtc-operator"
#: Dockerfile target -> image name under IMAGE_PREFIX.
IMAGES = {"operator": "matrixrtc-operator", "auth": "matrixrtc-auth"}
#: Release and namespace of the single-file install manifest (what the README's `helm install` uses).
INSTALL_RELEASE = "matrixrtc-operator"
INSTALL_NAMESPACE = "matrixrtc-system"
#: The Cargo packages of the workspace; Cargo.lock records their version too.
WORKSPACE_PACKAGES = ("matrixrtc-auth", "matrixrtc-operator", "matrixrtc-e2e", "matrixrtc-test-support")
#: Files whose image references name a version of ours (the CHANGELOG names old versions on purpose).
DOC_FILES = ("README.md", "docs/*.md", "charts/matrixrtc-operator/README.md")
VERSION_LABEL = "app.kubernetes.io/version"

# SemVer 2.0.0, as Cargo and Helm both require.
SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
# Kubernetes' apply order for the kinds the chart renders (Helm's install order, Namespace first).
KIND_ORDER = [
    "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodDisruptionBudget", "ServiceAccount", "Secret",
    "ConfigMap", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service",
    "Deployment", "ServiceMonitor",
]


class ReleaseError(Exception):
    """The release cannot go ahead: a clear message for the person or workflow running it."""


# --------------------------------------------------------------------------------------------------------------
# Configuration and versions


def release_config(root: Path = REPO_ROOT) -> dict[str, str]:
    """The KEY=value lines of scripts/release-config.sh."""
    config: dict[str, str] = {}
    for line in (root / CONFIG_FILE).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=([^\s\"'$`]+)", line)
        if not match:
            raise ReleaseError(f"{CONFIG_FILE}: not a plain KEY=value line: {line!r}")
        config[match.group(1)] = match.group(2)
    missing = {"IMAGE_PREFIX", "CHART_REMOTE", "PLATFORMS"} - config.keys()
    if missing:
        raise ReleaseError(f"{CONFIG_FILE} does not set {', '.join(sorted(missing))}")
    return config


def version_from_tag(tag: str) -> str:
    """`v1.2.3` or `1.2.3` -> `1.2.3`; anything that is not SemVer is refused."""
    version = tag[1:] if tag.startswith("v") else tag
    if not SEMVER.fullmatch(version):
        raise ReleaseError(f"{tag!r} is not a version tag like v1.2.3 or v1.2.3-rc.1 (SemVer)")
    return version


def workspace_version(root: Path = REPO_ROOT) -> str:
    return tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["package"]["version"]


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def default_auth_image(root: Path = REPO_ROOT) -> tuple[str, str | None]:
    """(repository, tag) of the operator's built-in `--auth-image` default, read from operator/src/defaults.rs.

    The tag is None when it is `env!("CARGO_PKG_VERSION")`, i.e. always the workspace version.
    """
    source = (root / "operator" / "src" / "defaults.rs").read_text()
    derived = re.search(
        r'DEFAULT_AUTH_IMAGE:\s*&str\s*=\s*concat!\(\s*"([^"]+):",\s*env!\("CARGO_PKG_VERSION"\),?\s*\)', source
    )
    if derived:
        return derived.group(1), None
    literal = re.search(r'DEFAULT_AUTH_IMAGE:\s*&str\s*=\s*"([^"]+):([^":]+)"', source)
    if literal:
        return literal.group(1), literal.group(2)
    raise ReleaseError("operator/src/defaults.rs: no DEFAULT_AUTH_IMAGE of the form \"<repository>:<tag>\" found")


def version_problems(version: str, root: Path = REPO_ROOT) -> list[str]:
    """Every place that should carry `version` (or name our images) and does not; empty when all agree."""
    problems: list[str] = []
    config = release_config(root)
    prefix = config["IMAGE_PREFIX"]

    cargo = workspace_version(root)
    if cargo != version:
        problems.append(f"Cargo.toml: workspace version is {cargo}")
    lock = tomllib.loads((root / "Cargo.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock.get("package", []) if "source" not in p}
    for package in WORKSPACE_PACKAGES:
        if locked.get(package) != version:
            problems.append(f"Cargo.lock: {package} is {locked.get(package)} (run `cargo update --workspace`)")

    chart = _yaml(root / "charts" / CHART_NAME / "Chart.yaml")
    for key in ("version", "appVersion"):
        if str(chart.get(key)) != version:
            problems.append(f"Chart.yaml: {key} is {chart.get(key)}")

    values = _yaml(root / "charts" / CHART_NAME / "values.yaml")
    for keys, image in ((("image",), IMAGES["operator"]), (("operands", "authImage"), IMAGES["auth"])):
        where = ".".join(keys)
        repository = _dig(values, *keys, "repository")
        if repository != f"{prefix}/{image}":
            problems.append(f"values.yaml: {where}.repository is {repository}, not {prefix}/{image}")
        tag = _dig(values, *keys, "tag")
        if tag not in ("", None, version):
            problems.append(f"values.yaml: {where}.tag is {tag} (leave it empty: it follows appVersion)")

    try:
        repository, tag = default_auth_image(root)
    except ReleaseError as error:
        problems.append(str(error))
    else:
        if repository != f"{prefix}/{IMAGES['auth']}":
            problems.append(f"operator/src/defaults.rs: DEFAULT_AUTH_IMAGE is {repository}, not {prefix}/{IMAGES['auth']}")
        if tag is not None and tag != version:
            problems.append(f"operator/src/defaults.rs: DEFAULT_AUTH_IMAGE is tagged {tag} "
                            '(derive it: env!("CARGO_PKG_VERSION"))')

    for directory in (cs.CRDS_DIR.relative_to(cs.REPO_ROOT), cs.CHART_CRDS_DIR.relative_to(cs.REPO_ROOT)):
        for path in sorted((root / directory).glob("*.yaml")):
            for document in cs.load_all_yaml(path.read_text()):
                label = _dig(document, "metadata", "labels", VERSION_LABEL)
                if label is not None and str(label) != version:
                    problems.append(f"{directory}/{path.name}: label {VERSION_LABEL} is {label}")

    image_names = "|".join(re.escape(name) for name in IMAGES.values())
    reference = re.compile(rf"\b({image_names}):v?(\d+\.\d+\.\d+[0-9A-Za-z.+-]*)")
    for pattern in DOC_FILES:
        for path in sorted(root.glob(pattern)):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                for match in reference.finditer(line):
                    if match.group(2) != version:
                        problems.append(f"{path.relative_to(root)}:{number}: {match.group(0)}")
    return problems


def check_version(tag: str, root: Path = REPO_ROOT, *, release: bool = True) -> str:
    """The version of `tag` once everything agrees on it; raises ReleaseError listing what does not.

    With `release`, CHANGELOG.md must also have a section for the version (its text becomes the release notes).
    """
    version = version_from_tag(tag)
    problems = version_problems(version, root)
    if release:
        try:
            release_notes(version, root)
        except ReleaseError as error:
            problems.append(str(error))
    if problems:
        raise ReleaseError(f"version {version} is not what the repository says:\n  " + "\n  ".join(problems))
    return version


# --------------------------------------------------------------------------------------------------------------
# CHANGELOG.md (Keep a Changelog)


def changelog_sections(root: Path = REPO_ROOT) -> dict[str, str]:
    """`## [name] - date` heading -> the section's text, in file order."""
    path = root / "CHANGELOG.md"
    if not path.is_file():
        raise ReleaseError("CHANGELOG.md is missing")
    text = path.read_text()
    sections: dict[str, str] = {}
    for match in re.finditer(r"^## \[([^\]]+)\][^\n]*\n(.*?)(?=^## \[|^\[[^\]]+\]: |\Z)", text, re.S | re.M):
        sections[match.group(1)] = match.group(2).strip()
    return sections


def release_notes(version: str, root: Path = REPO_ROOT) -> str:
    section = changelog_sections(root).get(version)
    if not section:
        raise ReleaseError(f"CHANGELOG.md has no `## [{version}] - YYYY-MM-DD` section with notes "
                           "(move the Unreleased entries under it)")
    return section + "\n"


# --------------------------------------------------------------------------------------------------------------
# The release commit: one version everywhere


def _replace(path: Path, pattern: str, replacement: str, *, count: int = 0, required: bool = True) -> None:
    text = path.read_text()
    changed, found = re.subn(pattern, replacement, text, count=count, flags=re.M)
    if required and not found:
        raise ReleaseError(f"{path}: nothing matches {pattern!r}")
    path.write_text(changed)


def bump_version(tag: str, date: str, root: Path = REPO_ROOT) -> list[str]:
    """Moves the repository from its version to `tag`'s and the CHANGELOG's Unreleased entries under it.

    Edits Cargo.toml, Cargo.lock, Chart.yaml, the versioned image references in the docs and the operator's
    render snapshots (they carry CARGO_PKG_VERSION); returns the problems left (none when it worked).
    """
    new = version_from_tag(tag)
    old = workspace_version(root)
    if new == old:
        raise ReleaseError(f"the repository is already at {new}")
    sections = changelog_sections(root)
    if not sections.get("Unreleased"):
        raise ReleaseError("CHANGELOG.md: the Unreleased section is empty: nothing to release")
    if new in sections:
        raise ReleaseError(f"CHANGELOG.md already has a section for {new}")
    o, n = re.escape(old), new
    _replace(root / "Cargo.toml", rf'(\[workspace\.package\]\n(?:[^\[\n][^\n]*\n)*?version = )"{o}"', rf'\g<1>"{n}"',
             count=1)
    packages = "|".join(map(re.escape, WORKSPACE_PACKAGES))
    _replace(root / "Cargo.lock", rf'^(name = "(?:{packages})"\nversion = )"{o}"$', rf'\g<1>"{n}"')
    chart = root / "charts" / CHART_NAME / "Chart.yaml"
    _replace(chart, rf"^version: {o}$", f"version: {n}", count=1)
    _replace(chart, rf'^appVersion: "?{o}"?$', f'appVersion: "{n}"', count=1)
    image_names = "|".join(re.escape(name) for name in IMAGES.values())
    for pattern in DOC_FILES:
        for path in root.glob(pattern):
            _replace(path, rf"\b({image_names}):v?{o}\b", rf"\g<1>:{n}", required=False)
    for path in (root / "operator" / "src" / "snapshots").glob("*.snap"):
        _replace(path, rf"^(\s*{re.escape(VERSION_LABEL)}: ){o}$", rf"\g<1>{n}", required=False)
        _replace(path, rf"\b({re.escape(IMAGES['auth'])}):{o}$", rf"\g<1>:{n}", required=False)

    repository = tomllib.loads((root / "Cargo.toml").read_text())["workspace"]["package"]["repository"]
    changelog = root / "CHANGELOG.md"
    text = changelog.read_text()
    text = text.replace("## [Unreleased]\n", f"## [Unreleased]\n\n## [{n}] - {date}\n", 1)
    links = f"[Unreleased]: {repository}/compare/v{n}...HEAD\n[{n}]: {repository}/"
    links += f"compare/v{old}...v{n}\n" if old in sections else f"releases/tag/v{n}\n"
    text, found = re.subn(r"^\[Unreleased\]: \S+\n", links, text, count=1, flags=re.M)
    if not found:
        raise ReleaseError("CHANGELOG.md has no `[Unreleased]: <url>` link line")
    changelog.write_text(text)

    problems = version_problems(n, root)
    try:
        release_notes(n, root)
    except ReleaseError as error:
        problems.append(str(error))
    return problems


# --------------------------------------------------------------------------------------------------------------
# The chart


def package_chart(version: str, destination: Path, chart_dir: Path = cs.CHART_DIR) -> Path:
    """`helm package` the chart into `destination`; the archive is checked to be what was asked for."""
    import helm_python

    report = helm_python.lint(chart_dir, strict=True, kube_version=f"v{cs.KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + list(report["errors"])
    if problems:
        raise ReleaseError(f"the chart does not lint cleanly: {problems}")
    destination.mkdir(parents=True, exist_ok=True)
    archive = Path(helm_python.package(chart_dir, destination=destination))
    expected = destination / f"{CHART_NAME}-{version}.tgz"
    if archive.resolve() != expected.resolve():
        raise ReleaseError(f"helm package wrote {archive}, expected {expected}: is Chart.yaml at {version}?")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        metadata = yaml.safe_load(tar.extractfile(f"{CHART_NAME}/Chart.yaml").read())  # type: ignore[union-attr]
    if (metadata["version"], str(metadata["appVersion"])) != (version, version):
        raise ReleaseError(f"{archive.name}: Chart.yaml says {metadata['version']}/{metadata['appVersion']}")
    for required in ("values.schema.json", "files/crds"):
        if not any(n == f"{CHART_NAME}/{required}" or n.startswith(f"{CHART_NAME}/{required}/") for n in names):
            raise ReleaseError(f"{archive.name} lacks {required}")
    return archive


def push_chart(archive: Path, remote: str, *, plain_http: bool = False) -> str:
    """`helm push ARCHIVE REMOTE`, logged in with $REGISTRY_USERNAME/$REGISTRY_PASSWORD when set; the digest."""
    import helm_python

    if not remote.startswith("oci://"):
        raise ReleaseError(f"chart remote {remote!r} must be an oci:// reference")
    host = remote.removeprefix("oci://").split("/", 1)[0]
    with tarfile.open(archive) as tar:
        version = yaml.safe_load(tar.extractfile(f"{CHART_NAME}/Chart.yaml").read())["version"]  # type: ignore[union-attr]
    username, password = os.environ.get("REGISTRY_USERNAME"), os.environ.get("REGISTRY_PASSWORD")
    reference = f"{remote.rstrip('/')}/{CHART_NAME}:{version}"
    with tempfile.TemporaryDirectory() as scratch:
        # A private credentials file: nothing is written to the user's Helm configuration.
        with helm_python.RegistryClient(plain_http=plain_http,
                                        credentials_file=Path(scratch) / "registry.json") as client:
            try:
                if username and password:
                    client.login(host, username, password, plain_http=plain_http)
                client.push(archive, remote, plain_http=plain_http)
                # Read back what the registry now serves under the version: the digest that gets signed.
                digest = client.resolve(reference).get("digest", "")
            except helm_python.HelmError as error:  # Helm's messages never include the password
                raise ReleaseError(f"pushing {archive.name} to {remote} failed: {error}") from None
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ReleaseError(f"the registry serves no digest for {reference}")
    return digest


# --------------------------------------------------------------------------------------------------------------
# The single-file install manifest and the CRDs


def _kind_rank(obj: dict[str, Any]) -> int:
    kind = obj.get("kind")
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def install_manifest(version: str) -> str:
    """The chart with its default values, as one file for `kubectl apply --server-side -f`.

    It is `helm template` output for release "matrixrtc-operator" in namespace "matrixrtc-system", with that
    Namespace first and every object in apply order; every object is valid Kubernetes 1.28.
    """
    rendered = cs.render_chart({}, release=INSTALL_RELEASE, namespace=INSTALL_NAMESPACE)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": INSTALL_NAMESPACE}}
    objects = [namespace] + sorted(rendered.objects, key=_kind_rank)
    problems: list[str] = []
    for obj in objects:
        problems += [f"{cs.object_id(obj)} {e}" for e in cs.kubernetes_schema_errors(obj)]
    if problems:
        raise ReleaseError("the install manifest is not valid Kubernetes 1.28:\n  " + "\n  ".join(problems))
    header = (
        f"# matrixrtc-operator {version}: the Helm chart with its default values, rendered for release\n"
        f"# {INSTALL_RELEASE!r} in namespace {INSTALL_NAMESPACE!r}. Install with:\n"
        "#   kubectl apply --server-side -f install.yaml\n"
    )
    return header + yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True)


def write_manifests(version: str, destination: Path) -> list[Path]:
    """DEST/install.yaml and a copy of crds/*.yaml in DEST/crds/; the files written."""
    problems = cs.crd_drift()
    if problems:
        raise ReleaseError("the chart's CRDs differ from crds/: " + "; ".join(problems))
    destination.mkdir(parents=True, exist_ok=True)
    written = [destination / "install.yaml"]
    written[0].write_text(install_manifest(version))
    crds = destination / "crds"
    crds.mkdir(exist_ok=True)
    for path in sorted(cs.CRDS_DIR.glob("*.yaml")):
        written.append(Path(shutil.copy2(path, crds / path.name)))
    return written


def image_digest(metadata_file: Path) -> str:
    """The image (index) digest from `docker buildx build --metadata-file`."""
    metadata = json.loads(metadata_file.read_text())
    digest = metadata.get("containerimage.digest", "")
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise ReleaseError(f"{metadata_file}: no containerimage.digest in the build metadata")
    return digest


# --------------------------------------------------------------------------------------------------------------
# CLI


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-version", help="fail unless the repository carries the tag's version")
    check.add_argument("tag")
    check.add_argument("--allow-unreleased", action="store_true",
                       help="do not require a CHANGELOG.md section (for dry runs before the release commit)")
    package = commands.add_parser("package-chart", help="helm package into a directory")
    package.add_argument("tag")
    package.add_argument("directory", type=Path)
    push = commands.add_parser("push-chart", help="helm push a packaged chart to an oci:// remote")
    push.add_argument("archive", type=Path)
    push.add_argument("remote")
    push.add_argument("--plain-http", action="store_true", help="for a local test registry")
    manifests = commands.add_parser("manifests", help="write install.yaml and crds/ into a directory")
    manifests.add_argument("tag")
    manifests.add_argument("directory", type=Path)
    notes = commands.add_parser("release-notes", help="print the CHANGELOG section of a version")
    notes.add_argument("tag")
    bump = commands.add_parser("bump-version", help="the release commit's edits: every file to a new version")
    bump.add_argument("tag")
    bump.add_argument("--date", required=True, help="the release date for CHANGELOG.md (YYYY-MM-DD)")
    digest = commands.add_parser("image-digest", help="print the digest in a buildx metadata file")
    digest.add_argument("metadata", type=Path)
    args = parser.parse_args(argv)

    try:
        if args.command == "check-version":
            version = check_version(args.tag, release=not args.allow_unreleased)
            print(f"everything carries version {version}")
        elif args.command == "package-chart":
            print(package_chart(version_from_tag(args.tag), args.directory))
        elif args.command == "push-chart":
            print(push_chart(args.archive, args.remote, plain_http=args.plain_http))
        elif args.command == "manifests":
            for path in write_manifests(version_from_tag(args.tag), args.directory):
                print(path)
        elif args.command == "release-notes":
            print(release_notes(version_from_tag(args.tag)), end="")
        elif args.command == "bump-version":
            problems = bump_version(args.tag, args.date)
            for problem in problems:
                print(f"still to do by hand: {problem}", file=sys.stderr)
            if problems:
                return 1
            print(f"moved to {version_from_tag(args.tag)}; review with `git diff`")
        elif args.command == "image-digest":
            print(image_digest(args.metadata))
    except ReleaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
