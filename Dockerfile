# syntax=docker/dockerfile:1
#
# One image for every role of stash: the webhook server (`stash serve`), the
# backup CronJob (`stash create-backupsession`) and the injected sidecar
# (`stash run-backup`, which runs restic). Build with BuildKit:
#   docker build -t ghcr.io/stashed/stash-rs:0.1.0 .

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build directory between builds;
# the binary is copied out of the (cached, hence not layered) target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked --bin stash \
 && install -D -m 0755 target/dist/stash /out/stash

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="stash" \
      org.opencontainers.image.description="Stash's sidecar backup model for Kubernetes: admission webhooks, reconciler, restic sidecar" \
      org.opencontainers.image.licenses="Apache-2.0"
# restic does the backups; ca-certificates lets it (and the Kubernetes client)
# verify TLS to object stores and the API server.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates restic \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 stash \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin stash
COPY --from=build /out/stash /usr/local/bin/stash
# The sidecar mounts an emptyDir at /tmp: restic's cache and any tool that
# wants a home directory write there, never to the (read-only) root.
ENV HOME=/tmp
# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/stash"]
