# hookgate: build with cargo, run as non-root on distroless.
#   docker build -t hookgate .
#   docker run -p 8080:8080 -p 9090:9090 -v $PWD/hookgate.toml:/etc/hookgate/hookgate.toml:ro hookgate
# The config is read from /etc/hookgate/hookgate.toml (HOOKGATE_CONFIG); the
# image ships config.example.toml there, listening on 0.0.0.0.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# The whole context (see .dockerignore): the manifest names bench and example targets.
COPY . .
RUN cargo build --release --locked --bin hookgate \
 && strip target/release/hookgate \
 && mkdir -p /out/var/lib/hookgate/queue

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/hookgate /usr/local/bin/hookgate
COPY config.example.toml /etc/hookgate/hookgate.toml
# Queue mode's disk store; mount a volume here so queued deliveries survive the container.
COPY --from=build --chown=nonroot:nonroot /out/var/lib/hookgate /var/lib/hookgate
ENV HOOKGATE_CONFIG=/etc/hookgate/hookgate.toml \
    HOOKGATE_LISTEN=0.0.0.0:8080 \
    HOOKGATE_ADMIN_LISTEN=0.0.0.0:9090 \
    HOOKGATE_QUEUE_PATH=/var/lib/hookgate/queue
VOLUME /var/lib/hookgate
# 8080: webhooks; 9090: /healthz /readyz /metrics /deliveries /queue /ui
EXPOSE 8080 9090
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/hookgate"]
CMD ["run"]
