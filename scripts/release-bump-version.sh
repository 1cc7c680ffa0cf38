#!/usr/bin/env bash
# The release commit's edits, in one command: moves Cargo.toml, Cargo.lock, Chart.yaml (version, appVersion),
# the versioned image references in the docs and the operator's render snapshots to the new version, and the
# CHANGELOG.md Unreleased entries under a section for it (dated today, UTC). Then it runs the version check.
#   scripts/release-bump-version.sh <tag or version, e.g. v0.2.0>
# Review with `git diff`, run scripts/test.sh, commit, and tag after the merge (docs/releasing.md).
set -euo pipefail
# shellcheck source=scripts/release-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/release-common.sh"

[[ $# -eq 1 ]] || die "usage: $0 <tag or version, e.g. v0.2.0>"
"$PYTHON" "$RELEASE_SUPPORT" bump-version "$1" --date "$(date -u +%F)"
exec "$PYTHON" "$RELEASE_SUPPORT" check-version "$1"
