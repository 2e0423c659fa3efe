#!/usr/bin/env bash
# Installs what lifeboat's demo and tests need on Debian, skipping whatever
# is already there:
#   - PostgreSQL server and client tools (initdb, pg_ctl, pg_dump, pg_restore)
#   - MariaDB server and client tools (mariadbd, mariadb-install-db,
#     mariadb, mariadb-dump, mariadb-binlog) for the MySQL/MariaDB tests
#   - age and zstd (the "restore without lifeboat" test and the runbook)
#   - sqlite3 (the test of the `command` source kind)
#   - kubectl (the test that kubectl accepts a Kubernetes export)
#   - with --garage: the Garage S3 server, built with `cargo install`
set -euo pipefail

want_garage=0
[ "${1:-}" = "--garage" ] && want_garage=1

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "install-deps: need root to run: $*" >&2; exit 1; fi
}

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v pg_dump >/dev/null || missing+=(postgresql-client)
{ command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ]; } || missing+=(mariadb-server)
command -v mariadb-dump >/dev/null || missing+=(mariadb-client)
command -v age >/dev/null || missing+=(age)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
command -v zstd >/dev/null || missing+=(zstd)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v runuser >/dev/null || missing+=(util-linux)
command -v cc >/dev/null || missing+=(build-essential)
command -v pkg-config >/dev/null || missing+=(pkg-config)

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "install-deps: cargo is not installed; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

if [ "$want_garage" = 1 ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v garage >/dev/null; then
    echo "install-deps: building the Garage S3 server (cargo install garage --locked; about 10-15 minutes)"
    cargo install garage --locked --quiet
  fi
fi
