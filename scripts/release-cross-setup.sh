#!/usr/bin/env bash
# Run by the Dockerfile's build stage (Debian 12 with rustup): makes `cargo build` compile for Docker's
# TARGETARCH on whatever platform the build runs, so that multi-arch images are cross-compiled rather than built
# under QEMU emulation (see scripts/release-images.sh for why).
#   release-cross-setup.sh <amd64|arm64>
# It installs Debian's cross gcc (linker and C compiler for ring) and the Rust target when the target differs
# from the build machine, then writes $CARGO_HOME/config.toml: build.target, static linking (build.rustflags,
# which with a build.target reach only the target's code, not build scripts or proc macros), the target's linker
# and its C compiler. The Rust target triple is written to $RUST_TARGET_FILE (default /etc/rust-target): cargo
# puts the binaries under target/<triple>/release.
# Environment for tests: BUILD_ARCH (default: dpkg's architecture), RELEASE_CROSS_DRY_RUN=1 (print the apt-get
# and rustup commands instead of running them).
set -euo pipefail

die() {
    echo "error: $*" >&2
    exit 1
}

[[ $# -eq 1 ]] || die "usage: $0 <amd64|arm64> (Docker's TARGETARCH)"
target_arch="$1"
build_arch="${BUILD_ARCH:-$(dpkg --print-architecture)}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
target_file="${RUST_TARGET_FILE:-/etc/rust-target}"

case $target_arch in
amd64) triple=x86_64-unknown-linux-gnu gnu=x86_64-linux-gnu gcc_package=gcc-x86-64-linux-gnu ;;
arm64) triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu gcc_package=gcc-aarch64-linux-gnu ;;
*) die "unsupported target architecture '$target_arch': the images are built for amd64 and arm64" ;;
esac

step() {
    if [[ ${RELEASE_CROSS_DRY_RUN:-} == 1 ]]; then
        echo "would run: $*"
    else
        "$@"
    fi
}

if [[ $target_arch == "$build_arch" ]]; then
    linker=gcc
    cc=gcc
else
    # The cross gcc brings the target's glibc (libc6-dev-<arch>-cross): Debian 12's, like the runtime image.
    step apt-get update -qq
    step apt-get install -y -qq --no-install-recommends "$gcc_package" "libc6-dev-$target_arch-cross"
    step rustup target add "$triple"
    linker="$gnu-gcc"
    cc="$gnu-gcc"
fi

mkdir -p "$cargo_home"
cat >"$cargo_home/config.toml" <<TOML
# Written by release-cross-setup.sh for TARGETARCH=$target_arch on $build_arch.
[build]
target = "$triple"
# Statically linked against glibc: the runtime image needs no C library, and the service maps no shared
# libraries (docs/benchmark-auth.md, "Static linking"). scripts/test.sh builds the tested binaries the same way.
rustflags = ["-C", "target-feature=+crt-static"]

[target.$triple]
linker = "$linker"

[env]
CC_${triple//-/_} = "$cc"
TOML
echo "$triple" >"$target_file"
echo "cargo builds for $triple (linker $linker)"
