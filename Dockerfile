# syntax=docker/dockerfile:1
#
# One image for every binary of the workspace:
#   api              serve HTTP (default)
#   api migrate      apply migrations/ and exit
#   api seed-demo    create the demo tenants and exit
#   worker           queue consumer, booking engine, notifier
#   demo             demo traffic
# Build: docker build -t booking-service .   (BuildKit, the default since Docker 23)

############################ builder
FROM rust:1.95-bookworm AS builder

WORKDIR /src
# sqlx query macros read .sqlx/ (cargo sqlx prepare) instead of a live database;
# harmless when the code uses no macros.
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    SQLX_OFFLINE=true

# .dockerignore limits the context to the workspace sources.
COPY . .

# Cache mounts keep the registry and target/ between builds; the binaries are
# copied out because a cache mount is not part of the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins -p api -p worker -p demo \
 && mkdir -p /out \
 && cp target/release/api target/release/worker target/release/demo /out/

############################ runtime
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app

WORKDIR /app

# Binaries and migrations belong to root and are read-only for the service user;
# only /app/data (the .eml outbox used when SMTP_URL is unset) is writable.
COPY --from=builder /out/api /out/worker /out/demo /app/
COPY migrations/ /app/migrations/
RUN mkdir -p /app/data/outbox && chown -R 10001:10001 /app/data

# Inside a container a loopback listener is unreachable: listen on all interfaces.
ENV PATH=/app:$PATH \
    RUST_LOG=info \
    API_ADDR=0.0.0.0:8080 \
    WORKER_METRICS_ADDR=0.0.0.0:9091 \
    OUTBOX_DIR=/app/data/outbox

USER 10001:10001

EXPOSE 8080 9091

CMD ["api"]
