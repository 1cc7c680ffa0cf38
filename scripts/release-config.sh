# shellcheck shell=bash disable=SC2034  # sourced; the variables are used by the scripts that source it
# The one place the release pipeline's registry paths and platforms are configured. Plain KEY=value lines: the
# release scripts source this file, and tests/python/release_support.py reads it to check that the chart's
# values.yaml, the operator's default images and the docs name the same images.
#
# Images are pushed as $IMAGE_PREFIX/matrixrtc-operator and $IMAGE_PREFIX/matrixrtc-auth, tagged with the version
# (without the tag's leading "v"); the chart is pushed to $CHART_REMOTE/matrixrtc-operator.
IMAGE_PREFIX=ghcr.io/matrixrtc-operator
CHART_REMOTE=oci://ghcr.io/matrixrtc-operator/charts
PLATFORMS=linux/amd64,linux/arm64
