#!/usr/bin/env bash
# Writes the files attached to the GitHub release: DIST/install.yaml (the chart with default values rendered into
# one file for `kubectl apply --server-side -f`, every object validated against the Kubernetes 1.28 schemas) and
# DIST/crds/*.yaml (a copy of crds/).
#   scripts/release-manifests.sh <tag> [DIST, default target/dist]
set -euo pipefail
# shellcheck source=scripts/release-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/release-common.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 <tag> [dist directory]"
version="$(release_version "$1")"
dist="${2:-$ROOT/target/dist}"
"$PYTHON" "$RELEASE_SUPPORT" manifests "$version" "$dist"
