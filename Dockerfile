# Build: docker build -t switchboard .
# Run:   docker run -p 8080:8080 -v $PWD/switchboard.yaml:/etc/switchboard/switchboard.yaml switchboard
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchboard \
 && cp target/release/switchboard /switchboard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 switchboard
COPY --from=build /switchboard /usr/local/bin/switchboard
USER switchboard
EXPOSE 8080
ENTRYPOINT ["switchboard"]
CMD ["--config", "/etc/switchboard/switchboard.yaml"]
