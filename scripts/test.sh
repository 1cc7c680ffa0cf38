#!/usr/bin/env bash
# The one test command: installs what the tests need (idempotent, quick when already done), then runs the
# Rust tests (cargo nextest) and the Python suite against a real Synapse (pytest). Fails if either fails.
#
# Expects a Debian 12 machine with the Rust toolchain and cargo-nextest; installs Debian packages (as root)
# and a Python venv at .venv. Environment:
#   PYTHON            interpreter for the venv (default: /usr/bin/python3, else python3 on PATH)
#   CARGO_TARGET_DIR  honoured when locating the binaries for the e2e and Python tests
#
# Everything is built statically linked, for the build machine's own Rust target (`--target`, so build scripts and
# proc macros stay dynamic), as the Dockerfile builds the images' binaries (scripts/release-cross-setup.sh): the
# tests run binaries linked the way the shipped ones are. Builds land in target/<triple>/{debug,release}.
#
# `scripts/test.sh --release-binaries` instead builds the release binaries exactly as the Dockerfile does and
# runs only the checks of the shipped binaries on them (CI runs it as its own job; see below).
set -euo pipefail

mode=all
case "${1:-}" in
    "") ;;
    --release-binaries) mode=release-binaries ;;
    *)
        echo "usage: $0 [--release-binaries]" >&2
        exit 2
        ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REQUIREMENTS="tests/python/requirements.txt"
VENV=".venv"
STAMP="$VENV/.requirements.sha256"
# redis-server is for the delegated-leave job store tests; python3-venv makes the venv; gcc and libc6-dev
# link Rust build scripts and crates with C parts (ring).
APT_PACKAGES=(ca-certificates gcc libc6-dev python3 python3-venv redis-server)

phase_start=0
timings=()
start_phase() {
    echo "==> $1"
    phase_start=$SECONDS
}
end_phase() {
    timings+=("$(printf '%-28s %4ds' "$1" $((SECONDS - phase_start)))")
}

# --- Debian packages, only those missing -------------------------------------------------------------
start_phase "Debian packages"
missing=()
for package in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
end_phase "Debian packages"

# --- Python venv, pip only when the requirements changed -----------------------------------------------
start_phase "Python venv"
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x /usr/bin/python3 ]]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "$PYTHON is older than 3.10; Synapse needs 3.10 or newer" >&2
    exit 1
fi
# A venv whose interpreter went away (or another Python version) is rebuilt from scratch.
want_version="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
have_version="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)"
if [[ $have_version != "$want_version" ]]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
wanted="$(cat "$REQUIREMENTS" <(echo "$want_version") | sha256sum | cut -d' ' -f1)"
if [[ ! -f $STAMP || $(cat "$STAMP") != "$wanted" ]]; then
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q -r "$REQUIREMENTS"
    echo "$wanted" >"$STAMP"
else
    echo "up to date"
fi
end_phase "Python venv"

status=0

# Static glibc, like the images' binaries (scripts/release-cross-setup.sh writes the same flags into the
# Dockerfile's cargo configuration; tests/python/test_release.py keeps the two equal). RUSTFLAGS overrides any
# configured rustflags, so a developer's own configuration cannot make the tested binaries dynamic.
STATIC_RUSTFLAGS="-C target-feature=+crt-static"
export RUSTFLAGS="$STATIC_RUSTFLAGS"
TARGET_TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
[[ -n $TARGET_TRIPLE ]] || {
    echo "could not read the host target from rustc -vV" >&2
    exit 1
}
export CARGO_BUILD_TARGET="$TARGET_TRIPLE"
BUILD_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/$TARGET_TRIPLE"

# --- Release binaries only ----------------------------------------------------------------------------
# The checks of the shipped binaries in test_chart.py (their names contain `shipped_binary`).
if [[ $mode == release-binaries ]]; then
    start_phase "release build"
    release_build="$("$VENV/bin/python" tests/python/chart_support.py release-build-command)"
    echo "$release_build"
    bash -c "$release_build" || status=1
    end_phase "release build"
    if ((status == 0)); then
        start_phase "pytest (shipped binaries)"
        export MATRIXRTC_RELEASE_DIR="$BUILD_DIR/release"
        "$VENV/bin/python" -m pytest tests/python/test_chart.py -q -rs -k shipped_binary || status=1
        end_phase "pytest (shipped binaries)"
    fi
    echo "==> timings"
    printf '    %s\n' "${timings[@]}"
    exit "$status"
fi

# --- Rust build ---------------------------------------------------------------------------------------
start_phase "cargo nextest build"
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "cargo-nextest is missing; installing it (slow)"
    cargo install --locked cargo-nextest
fi
# This also builds both binaries (each crate has an integration test that runs its binary), with the same
# features as the tests: a separate `cargo build` would resolve features without the dev-dependencies and
# compile half the dependency tree a second time. The e2e and Python tests use those binaries. Built before
# the control plane starts, so the compile does not slow its start and it does not idle through the compile.
if ! cargo nextest run --workspace --locked --no-run; then
    echo "cargo nextest build failed" >&2
    status=1
fi
end_phase "cargo nextest build"

# --- Kubernetes control plane for the real-cluster tests ------------------------------------------------
# `../shared/k8s/control-plane` (beside the clone) starts a real kube-apiserver + kube-controller-manager
# v1.28.0 on loopback. With it, the e2e tests (Rust crate tests/, the chart's in tests/python) run and must
# pass, and failing to start it is a failure; without it they skip loudly. Its own state dir, so parallel
# runs do not clash; stopped on every exit.
CONTROL_PLANE="$ROOT/../shared/k8s/control-plane"
K8S_STATE_DIR=""
stop_control_plane() {
    if [[ -n $K8S_STATE_DIR ]]; then
        K8S_STATE_DIR="$K8S_STATE_DIR" "$CONTROL_PLANE" down >/dev/null 2>&1 || true
        rm -rf "$K8S_STATE_DIR"
        K8S_STATE_DIR=""
    fi
}
trap stop_control_plane EXIT
if [[ -x $CONTROL_PLANE ]]; then
    start_phase "control plane"
    K8S_STATE_DIR="$(mktemp -d "${TMPDIR:-/tmp}/matrixrtc-k8s.XXXXXX")"
    if k8s_env="$(K8S_STATE_DIR="$K8S_STATE_DIR" "$CONTROL_PLANE" up)" && [[ $k8s_env == export\ * ]]; then
        eval "$k8s_env"
        # The Python chart test prefers this kubectl (v1.28.0, no download).
        export KUBECTL="$K8S_STATE_DIR/kubectl"
        echo "KUBECONFIG=$KUBECONFIG"
    else
        echo "the Kubernetes control plane did not start (state in $K8S_STATE_DIR):" >&2
        tail -n 20 "$K8S_STATE_DIR"/*.log >&2 2>/dev/null || true
        status=1
        stop_control_plane
        unset KUBECONFIG
    fi
    end_phase "control plane"
else
    echo "NOTE: $CONTROL_PLANE not found: the real-cluster tests skip unless KUBECONFIG names a cluster"
fi
# The e2e tests run the operator binary that the nextest phase builds (never another build).
export MATRIXRTC_OPERATOR_BIN="${MATRIXRTC_OPERATOR_BIN:-$BUILD_DIR/debug/matrixrtc-operator}"

# --- Rust tests -------------------------------------------------------------------------------------
start_phase "cargo nextest"
if ! cargo nextest run --workspace --locked --no-fail-fast; then
    echo "cargo nextest failed" >&2
    status=1
fi
end_phase "cargo nextest"

# --- The binaries the images ship ---------------------------------------------------------------------
# The Python suite checks that the shipped binaries start, print the checked-in CRD and are statically linked.
# Here it checks the binaries the test build above produced: the release profile changes optimisation and LTO,
# not what is linked or how the binaries behave. The fat-LTO release build itself
# (about 14 minutes on 2 cores, the longest phase CI had) runs as its own CI job, in parallel on GitHub:
# `scripts/test.sh --release-binaries` builds exactly as the Dockerfile does and runs the same checks on it.
export MATRIXRTC_RELEASE_DIR="${MATRIXRTC_RELEASE_DIR:-$BUILD_DIR/debug}"

# --- Python suite: real Synapse, real Helm, Kubernetes 1.28 schemas ------------------------------------
start_phase "pytest"
export MATRIXRTC_AUTH_BIN="${MATRIXRTC_AUTH_BIN:-$BUILD_DIR/debug/matrixrtc-auth}"
if [[ ! -x $MATRIXRTC_AUTH_BIN ]]; then
    echo "service binary $MATRIXRTC_AUTH_BIN was not built" >&2
    status=1
else
    pytest_status=0
    # -rs: say why anything was skipped (the real-cluster tests skip without KUBECONFIG); --durations: the
    # slowest tests, the real-cluster ones among them.
    "$VENV/bin/python" -m pytest tests/python -q -rs --durations=8 || pytest_status=$?
    if ((pytest_status == 5)); then
        echo "pytest collected no tests: that is a failure here" >&2
        status=1
    elif ((pytest_status != 0)); then
        echo "pytest failed (exit $pytest_status)" >&2
        status=1
    fi
fi
end_phase "pytest"

echo "==> timings"
printf '    %s\n' "${timings[@]}"
if ((status != 0)); then
    echo "==> FAILED" >&2
else
    echo "==> all tests passed"
fi
exit "$status"
