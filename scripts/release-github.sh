#!/usr/bin/env bash
# Creates the GitHub release of a pushed tag, with the CHANGELOG.md section as its notes and the install manifest
# and the CRDs (from scripts/release-manifests.sh) as assets, plus their SHA256SUMS. (The chart is in the OCI
# registry only, so that there is one chart archive per version.) Without --publish it writes the notes and the checksums and prints the `gh` command.
#   scripts/release-github.sh [--publish] <tag> [DIST, default target/dist]
# --publish needs the GitHub CLI and $GH_TOKEN (the workflow passes GITHUB_TOKEN with contents: write).
set -euo pipefail
# shellcheck source=scripts/release-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/release-common.sh"

publish=false
if [[ ${1:-} == --publish ]]; then
    publish=true
    shift
fi
[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 [--publish] <tag> [dist directory]"
version="$(release_version "$1")"
dist="${2:-$ROOT/target/dist}"
"$PYTHON" "$RELEASE_SUPPORT" release-notes "$version" >"$dist/release-notes.md"

assets=("install.yaml")
for crd in "$dist"/crds/*.yaml; do
    [[ -e $crd ]] || die "$dist/crds/ is empty: run scripts/release-manifests.sh first"
    assets+=("crds/$(basename "$crd")")
done
for asset in "${assets[@]}"; do
    [[ -f $dist/$asset ]] || die "$dist/$asset is missing: run scripts/release-manifests.sh first"
done
(cd "$dist" && sha256sum "${assets[@]}" >SHA256SUMS)
assets+=("SHA256SUMS")

command=(gh release create "v$version" --verify-tag --title "v$version" --notes-file "$dist/release-notes.md")
[[ $version == *-* ]] && command+=(--prerelease)
for asset in "${assets[@]}"; do
    command+=("$dist/$asset")
done
if $publish; then
    run "${command[@]}"
else
    would_run "${command[@]}"
fi
