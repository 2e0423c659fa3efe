#!/usr/bin/env bash
# lifeboat's main job on an embedded default, end to end:
#   a throwaway PostgreSQL with sample data → backup into a local-folder
#   repository encrypted to a freshly generated key → list → verify →
#   restore into a scratch database → compare → restore drill (a throwaway
#   cluster lifeboat starts, checks, RTO/RPO, report) → summary.
# Everything lives in one temp folder, removed at the end (KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash scripts/install-deps.sh
echo "== building lifeboat (release)"
cargo build --release --quiet
lb="$root/target/release/lifeboat"

work=$(mktemp -d /tmp/lifeboat-demo.XXXXXX)
chmod 755 "$work"
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 54329)
export PGPASSWORD="demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres

as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_owner "$bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== starting a throwaway PostgreSQL on 127.0.0.1:$port"
mkdir -p "$work/pg"
printf '%s\n' "$PGPASSWORD" > "$work/pg/pwfile"
[ "$(id -u)" -eq 0 ] && chown -R postgres "$work/pg"
as_owner "$bin/initdb" -D "$work/pg/data" -U postgres -A scram-sha-256 --pwfile="$work/pg/pwfile" --no-sync >/dev/null
as_owner "$bin/pg_ctl" -D "$work/pg/data" -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1" \
  -l "$work/pg/server.log" -w start >/dev/null

echo "== loading sample data (pgbench scale 10, a schema with unicode, binary data and a large object)"
psql -X -q -c "CREATE DATABASE shop"
"$bin/pgbench" -q -i -s 10 shop 2>/dev/null
psql -X -q -d shop <<'SQL'
CREATE SCHEMA catalog;
CREATE TABLE catalog.products (id serial PRIMARY KEY, name text NOT NULL, photo bytea, added timestamptz DEFAULT now());
INSERT INTO catalog.products (name, photo)
  SELECT (ARRAY['Zoë''s lamp','山田 chair','Ωmega desk','plain shelf'])[1 + g % 4] || ' #' || g,
         decode(md5(g::text), 'hex') FROM generate_series(1, 5000) g;
CREATE VIEW catalog.recent AS SELECT * FROM catalog.products WHERE added > now() - interval '1 day';
SELECT lo_from_bytea(0, convert_to('a large object', 'UTF8'));
SQL

echo "== generating an age key and a policy"
"$lb" keygen --out "$work/lifeboat.key" > "$work/recipient"
cat > "$work/policy.yaml" <<YAML
name: demo
repository:
  url: $work/repo
encryption:
  recipients: [$(cat "$work/recipient")]
compression: { algorithm: zstd, level: 1 }
schedule: "15 2 * * *"
retention: { keep_last: 7, keep_daily: 14 }
sources:
  - name: main-db
    postgres:
      host: 127.0.0.1
      port: $port
      user: postgres
      password: { env: PGPASSWORD }
      databases: [shop]
drill:
  scratch_dir: $work/scratch
  max_rpo: 1h
  checks:
    - name: every account
      source: main-db
      sql: SELECT count(*) FROM pgbench_accounts
      expect: 1000000
    - name: unicode survived
      source: main-db
      sql: SELECT count(*) FROM catalog.products WHERE name LIKE 'Zoë''s lamp%'
      expect: 1250
YAML
mkdir -p "$work/scratch" && chmod 755 "$work/scratch"
"$lb" policy check "$work/policy.yaml"

echo "== backup"
start=$(date +%s%N)
"$lb" -q backup --policy "$work/policy.yaml"
backup_ms=$(( ($(date +%s%N) - start) / 1000000 ))

echo "== list"
"$lb" -q list --policy "$work/policy.yaml"

echo "== verify (stored bytes, no key needed)"
"$lb" -q verify --policy "$work/policy.yaml"

echo "== restore into a scratch database shop_restored"
start=$(date +%s%N)
"$lb" -q restore --policy "$work/policy.yaml" --source main-db --identity "$work/lifeboat.key" \
  --to "postgres://postgres@127.0.0.1:$port/shop_restored"
restore_ms=$(( ($(date +%s%N) - start) / 1000000 ))

echo "== verify --read-data (decrypt and check every plaintext hash)"
"$lb" -q verify --policy "$work/policy.yaml" --read-data --identity "$work/lifeboat.key"

echo "== comparing the restored database with the original"
sums() {
  psql -X -At -d "$1" -c "SELECT string_agg(t, ',' ORDER BY t) FROM (
      SELECT n.nspname || '.' || c.relname AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog','information_schema')) x" |
  tr ',' '\n' | while read -r t; do
    printf '%s %s\n' "$t" "$(psql -X -At -d "$1" -c "SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM $t x")"
  done
}
if diff <(sums shop) <(sums shop_restored) >/dev/null; then same=yes; else same=NO; fi
tables=$(sums shop | wc -l)

echo "== restore drill (a throwaway PostgreSQL cluster, restore, checks, RTO/RPO, report)"
"$lb" -q drill --policy "$work/policy.yaml" --identity "$work/lifeboat.key" --report "$work/drill.md"
drill=$("$lb" -q drill --policy "$work/policy.yaml" --list --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["drills"][-1]
print("%s, %d checks, RTO %.1f s, RPO %.1f s" % ("passed" if d["passed"] else "FAILED", len(d["checks"]), d["rto_seconds"] or 0, d["rpo_seconds"] or 0))')
rows=$(psql -X -At -d shop -c "SELECT sum(n_live_tup) FROM pg_stat_user_tables")
stored=$(du -sh "$work/repo" | cut -f1)

cat <<SUMMARY

lifeboat demo summary
  source        PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, database shop ($tables tables, ~$rows rows)
  repository    $work/repo ($stored, zstd + age)
  backup        ${backup_ms} ms
  restore       ${restore_ms} ms into shop_restored, row counts checked against the inventory
  verified      stored and plaintext sha256 of every object
  identical     $same (every table's rows compared by checksum)
  drill         $drill (report: drills/demo/main-db/ in the repository)
SUMMARY
[ "$same" = yes ]
