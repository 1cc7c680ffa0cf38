#!/usr/bin/env bash
# The release's first gate: `scripts/release-check-version.sh v1.2.3` (or 1.2.3) exits 0 only when everything in
# the repository carries that version: the workspace in Cargo.toml and Cargo.lock, the chart's version and
# appVersion, its image tags (empty: they follow appVersion), the operator's default --auth-image (derived from
# CARGO_PKG_VERSION), the CRD's version label if it has one, the image references in the docs, and a CHANGELOG.md
# section for the version. It also checks that the chart and the operator name the images that
# scripts/release-config.sh pushes. The release workflow runs it against the pushed tag.
set -euo pipefail
# shellcheck source=scripts/release-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/release-common.sh"

[[ $# -eq 1 ]] || die "usage: $0 <tag or version, e.g. v0.1.0>"
exec "$PYTHON" "$RELEASE_SUPPORT" check-version "$1"
