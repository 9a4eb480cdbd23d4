# syntax=docker/dockerfile:1
# A small image of the proxy: a stripped release binary on distroless/cc (glibc and CA
# certificates, no shell, no package manager), running as the non-root user 65532.
#   Build: docker build -t switchboard .
#   Run:   docker run -p 8080:8080 -v "$PWD/switchboard.yaml:/etc/switchboard/switchboard.yaml:ro" switchboard
# The config should put the admin endpoints on 0.0.0.0:9901 (admin: { address: 0.0.0.0:9901 })
# for the HEALTHCHECK below; the image exposes that port, publish it only where it is safe.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# .dockerignore lets in only what the binary is built from.
COPY . .
# Stripped: no symbols or debug lines in the image (the repository's release profile keeps
# line tables for profiling).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_DEBUG=false \
    cargo build --release --locked --bin switchboard \
 && install -D -m 0755 target/release/switchboard /out/switchboard

# Debian 12 like the build stage, so the binary finds the glibc it was linked against.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/switchboard /usr/local/bin/switchboard
USER 65532:65532
# The listener of the default config, and the admin endpoints (probes, metrics).
EXPOSE 8080 9901
# No curl in a distroless image: the binary probes its own admin port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/switchboard", "healthcheck", "--url", "http://127.0.0.1:9901/readyz", "--timeout", "2s"]
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["--config", "/etc/switchboard/switchboard.yaml"]
