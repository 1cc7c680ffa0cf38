#!/usr/bin/env bash
# What .ci/run expects beyond a Debian 12 machine with rustup, as root: rustfmt and clippy for the Rust toolchain,
# and cargo-nextest (scripts/test.sh builds it from source when it is missing, which is slow; the CI workflow
# installs a prebuilt one before calling this). Idempotent. .github/workflows/ci.yml runs it in the Debian 12
# Rust image before `bash .ci/run`.
set -euo pipefail

rustup component add rustfmt clippy
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi
cargo --version
cargo nextest --version
