# syntax=docker/dockerfile:1
#
# lifeboat's container image: the binary plus the database client tools it
# runs (pg_dump, pg_restore, psql, pg_basebackup, mariadb-dump, mariadb),
# and the PostgreSQL server binaries (initdb, pg_ctl, postgres) the scratch
# cluster of a restore drill runs on.
#
#   docker build -t ghcr.io/lifeboat-dev/lifeboat:0.1.0 .
#   docker run --rm ghcr.io/lifeboat-dev/lifeboat:0.1.0 --version
#
# deploy/ runs it as user 10001 with a read-only root file system.

# --- build -------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the crates.io index, the downloaded crates and the
# compiled dependencies between builds (BuildKit); the binary is copied out
# of the cached target folder, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lifeboat \
 && install -m 0755 target/release/lifeboat /usr/local/bin/lifeboat

# --- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim

# postgresql-client is Debian 12's PostgreSQL 15. lifeboat refuses a pg_dump
# older than the server it backs up (and restores need tools at least as new
# as the target), so for PostgreSQL 16 or newer servers install
# postgresql-client-NN from the PGDG apt repository (apt.postgresql.org)
# instead, or set the source's `bin_dir`.
# mariadb-client provides mariadb-dump and mariadb (MariaDB 10.11; it also
# dumps MySQL 8). tzdata: IANA time zones for the tools; lifeboat's
# schedules carry their own. postgresql-15: the server binaries for drills'
# throwaway clusters (under /usr/lib/postgresql/15/bin, where lifeboat looks);
# Debian's default cluster is not created, nothing runs in the image.
# mariadb-server: mariadb-install-db and mariadbd for MySQL/MariaDB drills'
# throwaway servers (its packaged /var/lib/mysql is unused; nothing runs).
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/lifeboat.conf \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      tzdata \
      postgresql-client \
      postgresql-15 \
      mariadb-client \
      mariadb-server \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lifeboat \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/lifeboat \
      --create-home --shell /usr/sbin/nologin lifeboat

COPY --from=build /usr/local/bin/lifeboat /usr/local/bin/lifeboat

LABEL org.opencontainers.image.title="lifeboat" \
      org.opencontainers.image.description="Backup and disaster recovery for PostgreSQL, MySQL/MariaDB and Kubernetes configuration: streamed, compressed, age-encrypted, verified." \
      org.opencontainers.image.source="https://github.com/lifeboat-dev/lifeboat" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

# A named user (libpq and the MariaDB client look up the current user; an
# anonymous uid makes them complain), numeric here so that Kubernetes'
# runAsNonRoot can check it.
USER 10001:10001
WORKDIR /home/lifeboat
# `lifeboat run --listen 0.0.0.0:9187`: /metrics, /healthz, /readyz.
EXPOSE 9187
ENTRYPOINT ["/usr/local/bin/lifeboat"]
CMD ["--help"]
