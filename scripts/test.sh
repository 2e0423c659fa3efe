#!/usr/bin/env bash
# Runs lifeboat's tests against real servers (PostgreSQL clusters and a
# Garage S3 server that the tests start themselves on free loopback ports).
# Installs what is missing first. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --garage
export PATH="$HOME/.cargo/bin:$PATH"
exec cargo test --release "$@"
