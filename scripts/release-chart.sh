#!/usr/bin/env bash
# Packages the Helm chart (`helm package`, Helm's own library through helm-python-sdk) into
# DIST/matrixrtc-operator-<version>.tgz; with --push also pushes it to $CHART_REMOTE (scripts/release-config.sh)
# like `helm push DIST/... oci://...`, and signs the pushed chart with cosign (keyless) when cosign is installed.
#   scripts/release-chart.sh [--push] <tag> [DIST, default target/dist]
# --push logs in with $REGISTRY_USERNAME / $REGISTRY_PASSWORD when they are set (the workflow passes
# github.actor and GITHUB_TOKEN). To try the push against a local registry, RELEASE_CHART_REMOTE overrides
# $CHART_REMOTE and RELEASE_PLAIN_HTTP=1 talks HTTP.
set -euo pipefail
# shellcheck source=scripts/release-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/release-common.sh"

push=false
if [[ ${1:-} == --push ]]; then
    push=true
    shift
fi
[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 [--push] <tag> [dist directory]"
version="$(release_version "$1")"
dist="${2:-$ROOT/target/dist}"
remote="${RELEASE_CHART_REMOTE:-$CHART_REMOTE}"
archive="$("$PYTHON" "$RELEASE_SUPPORT" package-chart "$version" "$dist")"
echo "packaged $archive"

if ! $push; then
    would_run helm push "$archive" "$remote"
    exit 0
fi
plain_http=()
[[ ${RELEASE_PLAIN_HTTP:-} == 1 ]] && plain_http=(--plain-http)
digest="$("$PYTHON" "$RELEASE_SUPPORT" push-chart "${plain_http[@]}" "$archive" "$remote")"
reference="${remote#oci://}/matrixrtc-operator@$digest"
echo "pushed $reference"
if command -v cosign >/dev/null; then
    run cosign sign --yes "$reference"
elif [[ -n ${GITHUB_ACTIONS:-} ]]; then
    die "cosign is missing: the release workflow signs what it pushes"
else
    echo "cosign is not installed: the chart is not signed"
fi
