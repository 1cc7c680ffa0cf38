# Sourced by the scripts/release-*.sh commands: repository root, the release configuration, the Python that runs
# tests/python/release_support.py, and the version argument, checked against the repository.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/release-config.sh
source "$ROOT/scripts/release-config.sh"
IMAGE_REGISTRY="${IMAGE_PREFIX%%/*}"
OPERATOR_IMAGE="$IMAGE_PREFIX/matrixrtc-operator"
AUTH_IMAGE="$IMAGE_PREFIX/matrixrtc-auth"
export IMAGE_PREFIX IMAGE_REGISTRY CHART_REMOTE PLATFORMS OPERATOR_IMAGE AUTH_IMAGE

# The project's venv when it exists (scripts/test.sh makes it), else the python3 on PATH (the workflows install
# the few packages release_support.py needs into it).
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $ROOT/.venv/bin/python ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
RELEASE_SUPPORT="$ROOT/tests/python/release_support.py"

die() {
    echo "error: $*" >&2
    exit 1
}

# Prints a command, then runs it.
run() {
    echo "+ $*" >&2
    "$@"
}

# Prints a command that a dry run leaves out.
would_run() {
    echo "would run: $*"
}

# `release_version TAG`: the version without the tag's "v", after checking that everything in the repository
# carries it (Cargo.toml, Cargo.lock, Chart.yaml, values.yaml, the operator's default image, the CRD, the docs).
# The CHANGELOG section is left to scripts/release-check-version.sh, the release's first gate, so that every
# step can be tried before the release commit exists.
release_version() {
    [[ $# -eq 1 && -n $1 ]] || die "expected one version or tag argument, such as v0.1.0"
    "$PYTHON" "$RELEASE_SUPPORT" check-version --allow-unreleased "$1" >&2 ||
        die "the repository does not agree on version ${1#v}"
    echo "${1#v}"
}
