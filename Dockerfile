# syntax=docker/dockerfile:1
#
# Two images from one build:
#   docker build --target operator -t ghcr.io/matrixrtc-operator/matrixrtc-operator:<version> .
#   docker build --target auth     -t ghcr.io/matrixrtc-operator/matrixrtc-auth:<version> .
#
# The binaries are built once, with exactly this command (tests/python/test_chart.py reads it from the RUN line
# below and checks that binaries built the same way start):
#   cargo build --release --locked -p matrixrtc-operator -p matrixrtc-auth --bins
#
# Multi-arch (linux/amd64, linux/arm64; scripts/release-images.sh) by cross-compilation: the build stage runs on
# the builder's own platform ($BUILDPLATFORM) and scripts/release-cross-setup.sh points cargo at the target
# platform's Rust target, linker and C compiler through $CARGO_HOME/config.toml, so the RUN line above stays the
# command the tests run. Nothing runs under QEMU: the runtime stages only copy files.
#
# Why a static glibc binary on distroless/static rather than a static musl binary FROM scratch: the project's
# toolchain ships only the x86_64-unknown-linux-gnu target (no musl target can be installed where it is built and
# tested), so the binaries are glibc binaries, linked statically (release-cross-setup.sh sets
# `-C target-feature=+crt-static`; scripts/test.sh builds the tested binaries the same way). They need no shared
# library at run time, only what gcr.io/distroless/static-debian12 carries: CA certificates in /etc/ssl/certs and
# /etc/passwd with the non-root user 65532; no shell, no package manager, no C library. Inside a static binary glibc
# resolves host names from /etc/hosts and DNS without loading NSS modules (checked with strace).

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${RUST_IMAGE} AS build
ARG TARGETARCH
WORKDIR /src
COPY scripts/release-cross-setup.sh /usr/local/bin/
RUN release-cross-setup.sh "${TARGETARCH}"
COPY . .
RUN cargo build --release --locked -p matrixrtc-operator -p matrixrtc-auth --bins \
    && mkdir -p /out \
    && cp "target/$(cat /etc/rust-target)/release/matrixrtc-operator" "target/$(cat /etc/rust-target)/release/matrixrtc-auth" /out/

# The operator. Kubernetes probes its /healthz and /readyz; it has no in-image health check.
FROM ${RUNTIME_IMAGE} AS operator
LABEL org.opencontainers.image.title="matrixrtc-operator" \
      org.opencontainers.image.description="Kubernetes operator for MatrixRTC transports (LiveKit plus the MatrixRTC authorisation service)" \
      org.opencontainers.image.source="https://github.com/matrixrtc-operator/matrixrtc-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/matrixrtc-operator /usr/local/bin/matrixrtc-operator
USER 65532:65532
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/matrixrtc-operator"]
CMD ["run"]

# The authorisation service. `matrixrtc-auth healthcheck` asks the running service for /healthz, so that plain
# Docker and Compose can see its health without a shell or curl in the image.
FROM ${RUNTIME_IMAGE} AS auth
LABEL org.opencontainers.image.title="matrixrtc-auth" \
      org.opencontainers.image.description="MatrixRTC authorisation service: LiveKit tokens for Matrix users (MSC4195)" \
      org.opencontainers.image.source="https://github.com/matrixrtc-operator/matrixrtc-operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/matrixrtc-auth /usr/local/bin/matrixrtc-auth
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/matrixrtc-auth", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/matrixrtc-auth"]
