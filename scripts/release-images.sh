#!/usr/bin/env bash
# Builds the two images of the Dockerfile (targets `operator` and `auth`) for every platform in $PLATFORMS with
# docker buildx, each with an SBOM and provenance attached by BuildKit, tagged $IMAGE_PREFIX/<image>:<version>
# (scripts/release-config.sh).
#   scripts/release-images.sh [--build | --push] <tag> [DIST, default target/dist]
#   (no flag)  print the build commands only (a dry run: nothing is built)
#   --build    build every platform, keep the result in the build cache only (needs docker buildx)
#   --push     build, push, then sign every image by digest with cosign, keyless: on GitHub Actions the
#              workflow's OIDC token (id-token: write) identifies the signer; elsewhere cosign asks for a login
#
# Multi-arch by cross-compilation, not QEMU: the Dockerfile's build stage runs on the builder's own platform and
# compiles for the target platform (scripts/release-cross-setup.sh), because rustc under QEMU emulation is several
# times slower and a fat-LTO build of the workspace would take hours. The runtime stages only copy the binary, so
# no instruction ever runs under emulation.
set -euo pipefail
# shellcheck source=scripts/release-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/release-common.sh"

mode=dry-run
case ${1:-} in
--build | --push)
    mode="${1#--}"
    shift
    ;;
esac
[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 [--build | --push] <tag> [dist directory]"
version="$(release_version "$1")"
dist="${2:-$ROOT/target/dist}"
mkdir -p "$dist"
[[ $mode == push ]] && : >"$dist/images.txt"

for target in operator auth; do
    case $target in
    operator) image="$OPERATOR_IMAGE" ;;
    auth) image="$AUTH_IMAGE" ;;
    esac
    metadata="$dist/image-$target.json"
    command=(
        docker buildx build "$ROOT"
        --file "$ROOT/Dockerfile"
        --target "$target"
        --platform "$PLATFORMS"
        --tag "$image:$version"
        --label "org.opencontainers.image.version=$version"
        --sbom=true
        --provenance=mode=max
        --metadata-file "$metadata"
    )
    case $mode in
    dry-run)
        would_run "${command[@]}" --push
        would_run cosign sign --yes --recursive "$image@<digest from $metadata>"
        ;;
    build)
        run "${command[@]}" --output type=cacheonly
        ;;
    push)
        run "${command[@]}" --push
        digest="$("$PYTHON" "$RELEASE_SUPPORT" image-digest "$metadata")"
        # --recursive signs the multi-arch index and each platform's manifest. The index digest also pins the
        # SBOM and provenance attestation manifests, so the signature covers them.
        run cosign sign --yes --recursive "$image@$digest"
        if [[ -n ${GITHUB_ACTIONS:-} ]]; then
            # Proves the signature is there and names this workflow at this tag as the signer.
            run cosign verify "$image@$digest" \
                --certificate-identity "$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/.github/workflows/release.yml@$GITHUB_REF" \
                --certificate-oidc-issuer https://token.actions.githubusercontent.com >/dev/null
        fi
        echo "$image:$version@$digest" >>"$dist/images.txt"
        ;;
    esac
done
