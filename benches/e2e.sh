#!/usr/bin/env bash
# End-to-end backup benchmark on one generated PostgreSQL database (>= 1 GB):
#   1. pg_dump -Fc -Z0 > /dev/null              (the source limit)
#   2. pg_dump | gzip | aws s3 cp - s3://...     (the classic script)
#   3. lifeboat backup                           (same Garage bucket)
# For each: wall time, CPU time (user+sys of the command and the children it
# waited for, so pg_dump's CPU is included; the PostgreSQL server's is not),
# stored size, and for lifeboat its own peak RSS (VmHWM).
#
# Usage: benches/e2e.sh [SCALE_MB]   (default 1100 MB of table data)
# Needs: a release build, garage, awscli (installed if missing), PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target_mb=${1:-1100}
export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/install-deps.sh --garage
command -v aws >/dev/null && aws --version >/dev/null 2>&1 || apt-get install -y -q awscli >/dev/null
cargo build --release --quiet
lb="$root/target/release/lifeboat"

work=$(mktemp -d /tmp/lifeboat-bench.XXXXXX)
chmod 755 "$work"
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pgport=$(freeport); rpcport=$(freeport); s3port=$(freeport)
export PGPASSWORD=bench-pw PGHOST=127.0.0.1 PGPORT=$pgport PGUSER=postgres
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
garage_pid=
cleanup() {
  as_owner "$bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "$garage_pid" ] && kill "$garage_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/pg"; echo "$PGPASSWORD" > "$work/pg/pw"
[ "$(id -u)" -eq 0 ] && chown -R postgres "$work/pg"
as_owner "$bin/initdb" -D "$work/pg/data" -U postgres -A scram-sha-256 --pwfile="$work/pg/pw" --no-sync >/dev/null
as_owner "$bin/pg_ctl" -D "$work/pg/data" -o "-p $pgport -k $work/pg -c listen_addresses=127.0.0.1 -c shared_buffers=512MB" \
  -l "$work/pg/log" -w start >/dev/null

echo "== generating about $target_mb MB (pgbench tables + random text rows)" >&2
psql -X -q -c "CREATE DATABASE bench"
scale=$(( target_mb / 2 / 15 ))
"$bin/pgbench" -q -i -s "$scale" bench 2>/dev/null
rows=$(( target_mb / 2 * 1000000 / 150 ))
psql -X -q -d bench -c "CREATE TABLE events AS SELECT g AS id, now() - g * interval '1 second' AS at,
  md5(random()::text) || ' ' || md5(random()::text) || ' ' || md5(g::text) AS payload FROM generate_series(1, $rows) g"
psql -X -q -d bench -c "VACUUM ANALYZE"
dbsize=$(psql -X -At -d bench -c "SELECT pg_database_size('bench')")

echo "== starting Garage" >&2
mkdir -p "$work/garage"
cat > "$work/garage/garage.toml" <<TOML
metadata_dir = "$work/garage/meta"
data_dir = "$work/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpcport"
rpc_public_addr = "127.0.0.1:$rpcport"
rpc_secret = "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3port"
root_domain = ".s3.garage.localhost"
TOML
g() { garage -c "$work/garage/garage.toml" "$@"; }
RUST_LOG=warn garage -c "$work/garage/garage.toml" server > "$work/garage/log" 2>&1 &
garage_pid=$!
for _ in $(seq 50); do node=$(g node id -q 2>/dev/null) && break; sleep 0.2; done
g layout assign -z dc1 -c 10G "${node%%@*}" >/dev/null
g layout apply --version 1 >/dev/null
key_id=GK$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n'); secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
g key import --yes -n bench "$key_id" "$secret" >/dev/null
g bucket create bench >/dev/null
g bucket allow --read --write --owner bench --key bench >/dev/null
export AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$secret AWS_DEFAULT_REGION=garage
endpoint=http://127.0.0.1:$s3port

"$lb" keygen --out "$work/k" > "$work/r"
cat > "$work/policy.yaml" <<YAML
name: bench
repository:
  url: s3://bench/lifeboat
  endpoint: $endpoint
  region: garage
  path_style: true
  access_key_id: { env: AWS_ACCESS_KEY_ID }
  secret_access_key: { env: AWS_SECRET_ACCESS_KEY }
encryption:
  recipients: [$(cat "$work/r")]
sources:
  - name: db
    postgres: { host: 127.0.0.1, port: $pgport, user: postgres, password: { env: PGPASSWORD }, databases: [bench], globals: false }
YAML

# timed LABEL CMD...: prints "wall cpu" of CMD (with its waited children).
timed() {
  /usr/bin/time -f "%e %U %S" -o "$work/time" "$@"
  read -r wall user sys < "$work/time"
  echo "$wall $(echo "$user + $sys" | python3 -c 'import sys; print(round(eval(sys.stdin.read()),2))')"
}

echo "== warm-up read of the database" >&2
"$bin/pg_dump" -Fc -Z0 -d bench > /dev/null

runs=${RUNS:-3}
median() { python3 -c "import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

echo "== 1. pg_dump -Fc -Z0 > /dev/null ($runs runs, median)" >&2
ws=(); cs=()
for _ in $(seq "$runs"); do
  read -r w c < <(timed bash -c "'$bin/pg_dump' -Fc -Z0 -d bench > /dev/null")
  ws+=("$w"); cs+=("$c")
done
w1=$(median "${ws[@]}"); c1=$(median "${cs[@]}"); all1="${ws[*]}"
plain=$("$bin/pg_dump" -Fc -Z0 -d bench | wc -c)

echo "== 2. pg_dump | gzip | aws s3 cp -" >&2
read -r w2 c2 < <(timed bash -c "'$bin/pg_dump' -d bench | gzip | aws --endpoint-url $endpoint s3 cp - s3://bench/classic/bench.sql.gz --only-show-errors")
s2=$(aws --endpoint-url "$endpoint" s3api head-object --bucket bench --key classic/bench.sql.gz --query ContentLength --output text)

echo "== 3. lifeboat backup ($runs runs, median)" >&2
ws=(); cs=(); peaks=()
for _ in $(seq "$runs"); do
/usr/bin/time -f "%e %U %S" -o "$work/time" "$lb" -q backup --policy "$work/policy.yaml" --json > "$work/manifest.json" &
tpid=$!
sleep 0.2
lpid=$(pgrep -P "$tpid" lifeboat || true)
peak=0
while kill -0 "$tpid" 2>/dev/null; do
  if [ -n "$lpid" ] && [ -r "/proc/$lpid/status" ]; then
    v=$(awk '/VmHWM/ {print $2}' "/proc/$lpid/status" 2>/dev/null || echo 0)
    [ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
  fi
  sleep 0.1
done
wait "$tpid"
read -r w3 u3 sy3 < "$work/time"
ws+=("$w3"); cs+=("$(python3 -c "print(round($u3 + $sy3, 2))")"); peaks+=("$peak")
done
w3=$(median "${ws[@]}"); c3=$(median "${cs[@]}"); all3="${ws[*]}"
peak=$(printf '%s\n' "${peaks[@]}" | sort -n | tail -n 1)
s3=$(python3 -c "import json; m=json.load(open('$work/manifest.json')); print(sum(a['stored']['size'] for a in m[0]['artifacts']))")

mb() { python3 -c "print(round($1/1e6,1))"; }
ratio() { python3 -c "print(round($1/$2,2))"; }
cat <<TABLE

Database: $(mb "$dbsize") MB on disk (pg_database_size), $(mb "$plain") MB as pg_dump -Fc -Z0; PostgreSQL $("$bin/postgres" --version | awk '{print $3}'), $(nproc) cores.

| run | wall s | CPU s | stored MB | vs source limit | peak RSS |
|---|---:|---:|---:|---:|---:|
| pg_dump -Fc -Z0 > /dev/null (source limit) | $w1 | $c1 | – | 1.00 | – |
| pg_dump \| gzip \| aws s3 cp - | $w2 | $c2 | $(mb "$s2") | $(ratio "$w2" "$w1") | – |
| lifeboat backup (zstd 1 + age → Garage) | $w3 | $c3 | $(mb "$s3") | $(ratio "$w3" "$w1") | $((peak / 1024)) MiB |

lifeboat vs classic script: $(ratio "$w2" "$w3")x faster (wall).
Individual wall times: pg_dump $all1; lifeboat $all3. Peak RSS is the largest of the lifeboat runs.
TABLE
