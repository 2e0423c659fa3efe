#!/usr/bin/env bash
# Physical backups and WAL archiving, lifeboat against pgBackRest, on one
# PostgreSQL cluster of about 1.1 GB (pgbench -i -s 40 and 450 MB of random
# md5 text rows, as in e2e.sh):
#   1. base backup: pgbackrest backup --type=full (posix repository on the same
#      disk, zstd 1; process-max 1, process-max 2, and process-max 1 with
#      aes-256-cbc) against lifeboat backup --kind base (local folder
#      repository, zstd 1 + age)
#   2. restore into a new data directory (files only, no server start):
#      pgbackrest restore against lifeboat restore --to-datadir --until latest,
#      each also with a following `sync` (pgBackRest fsyncs what it writes)
#   3. archive-push, one process per segment as PostgreSQL calls it, of the
#      same 30 WAL segments of pgbench traffic into fresh repositories
#   4. sustained archiving with archive_command = lifeboat wal-push under
#      pgbench -N -c 8 -j 2, then under pgbench bulk inserts (both with
#      synchronous_commit=off and checkpoint_timeout=30s, to make as much WAL
#      as the machine can): .ready files and pg_stat_archiver every 2 s
#   5. if `garage` is installed: base backup and restore of both tools into the
#      same Garage bucket through one TLS endpoint (stunnel), since
#      pgBackRest's S3 repositories require TLS
#
# Usage (as root; PostgreSQL steps run as postgres through runuser):
#   bash benches/pitr.sh
# Environment: SCALE (pgbench scale, default 40), TEXT_MB (md5 text rows,
# default 450), RUNS (rounds of every backup, restore and push loop, median
# reported, default 5; each round runs the contenders in a rotated order),
# SUSTAIN_SECONDS (each sustained load, default 60),
# LIFEBOAT (binary, default target/release/lifeboat; it is copied first).
# Needs: a release build, PostgreSQL 15+, pgbackrest, stunnel4 and garage for
# part 5.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scale=${SCALE:-40}
text_mb=${TEXT_MB:-450}
runs=${RUNS:-5}
sustain=${SUSTAIN_SECONDS:-60}
export PATH="$HOME/.cargo/bin:$PATH"
[ "$(id -u)" -eq 0 ] || { echo "pitr.sh: run as root (it uses runuser -u postgres)" >&2; exit 1; }
for t in pgbackrest runuser python3 /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "pitr.sh: $t is missing" >&2; exit 1; }
done
lb_src=${LIFEBOAT:-$root/target/release/lifeboat}
[ -x "$lb_src" ] || { echo "pitr.sh: $lb_src not found; cargo build --release first" >&2; exit 1; }

work=$(mktemp -d /tmp/lifeboat-pitr.XXXXXX)
chmod 755 "$work"
cd "$work"   # postgres cannot enter the caller's directory
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pgport=$(freeport)
export PGHOST=127.0.0.1 PGPORT=$pgport PGUSER=postgres PGDATABASE=postgres
pg() { runuser -u postgres -- "$@"; }
data=$work/pg/data
garage_pid= stunnel_pid= sampler_pid=
cleanup() {
  [ -n "$sampler_pid" ] && kill "$sampler_pid" 2>/dev/null || true
  pg "$bin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "$stunnel_pid" ] && kill "$stunnel_pid" 2>/dev/null || true
  [ -n "$garage_pid" ] && kill "$garage_pid" 2>/dev/null || true
  [ -n "$garage_pid" ] && wait "$garage_pid" 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "pitr.sh: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
log() { echo "== $(date +%T) $*" >&2; }
py() { python3 -c "print($1)"; }
sql() { psql -X -At -c "$1"; }

cp "$lb_src" "$work/lifeboat"
lb=$work/lifeboat
mkdir -p "$work/pg" "$work/seg" "$work/restore" "$work/pgbr-lock"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
began=$(date +%s)

# ---------------------------------------------------------------- cluster
log "initdb, pgbench -i -s $scale and $text_mb MB of md5 text rows"
chown -R postgres "$work"
pg "$bin/initdb" -D "$data" -U postgres -A trust --no-sync >/dev/null
cat >> "$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pgport
unix_socket_directories = '$work/pg'
shared_buffers = 512MB
max_wal_size = 4GB
wal_level = replica
archive_mode = on
archive_command = '/bin/true'
CONF
pg "$bin/pg_ctl" -D "$data" -l "$work/pg/log" -w start >/dev/null
"$bin/pgbench" -q -i -s "$scale" 2>/dev/null
# pgbench's own rows are mostly blank padding (they compress about 20x); the
# random md5 text (about 2x) makes the compression and encryption work real.
rows=$(( text_mb * 1000000 / 150 ))
sql "CREATE TABLE events AS SELECT g AS id, now() - g * interval '1 second' AS at,
  md5(random()::text) || ' ' || md5(random()::text) || ' ' || md5(g::text) AS payload
  FROM generate_series(1, $rows) g" >/dev/null
sql "VACUUM ANALYZE" >/dev/null
sql "CHECKPOINT" >/dev/null
dbsize=$(sql "SELECT sum(pg_database_size(oid)) FROM pg_database")
pgversion=$("$bin/postgres" --version | awk '{print $3}')

# ---------------------------------------------------------------- repositories
"$lb" keygen --out "$work/key" > "$work/recipient" 2>/dev/null
# lifeboat_policy FILE REPO_YAML: a policy for this cluster.
lifeboat_policy() {
  cat > "$1" <<YAML
name: bench
repository:
$2
encryption:
  recipients: [$(cat "$work/recipient")]
compression:
  algorithm: zstd
  level: 1
sources:
  - name: main-db
    postgres:
      host: 127.0.0.1
      port: $pgport
      user: postgres
YAML
}
lifeboat_policy "$work/lb.yaml" "  url: $work/lb-repo"
lifeboat_policy "$work/lb-push.yaml" "  url: $work/lb-push-repo"

# pgbr_conf FILE STANZA REPO_LINES...: a pgBackRest config for this cluster.
pgbr_conf() {
  local file=$1 stanza=$2; shift 2
  {
    echo "[global]"
    printf '%s\n' "$@"
    echo "log-level-console=warn"
    echo "log-level-file=off"
    echo "lock-path=$work/pgbr-lock/$(basename "$file" .conf)"
    echo "start-fast=y"
    echo "compress-type=zst"
    echo "compress-level=1"
    echo "process-max=1"
    echo "[$stanza]"
    echo "pg1-path=$data"
    echo "pg1-port=$pgport"
    echo "pg1-socket-path=$work/pg"
  } > "$file"
}
cipher=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
# repo1 plain, repo2 encrypted (aes-256-cbc, as lifeboat always encrypts)
pgbr_conf "$work/pgbr.conf" bench \
  "repo1-path=$work/pgbr-repo" "repo1-retention-full=99" \
  "repo2-path=$work/pgbr-repo-enc" "repo2-retention-full=99" \
  "repo2-cipher-type=aes-256-cbc" "repo2-cipher-pass=$cipher"
pgbr_conf "$work/pgbr-push.conf" push "repo1-path=$work/pgbr-push-repo" "repo1-retention-full=99"
pgbr_conf "$work/pgbr-push-enc.conf" push "repo1-path=$work/pgbr-push-repo-enc" "repo1-retention-full=99" \
  "repo1-cipher-type=aes-256-cbc" "repo1-cipher-pass=$cipher"
chown -R postgres "$work"
chmod 600 "$work"/*.conf "$work/key"

set_archive() {
  sql "ALTER SYSTEM SET archive_command = '$1'" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  sleep 0.5
}
# wait_archived: switches to a new segment and waits until it is archived.
wait_archived() {
  local seg
  seg=$(sql "SELECT pg_walfile_name(pg_switch_wal())")
  for _ in $(seq 600); do
    [ "$(sql "SELECT last_archived_wal >= '$seg' FROM pg_stat_archiver")" = t ] && return 0
    sleep 0.1
  done
  echo "pitr.sh: $seg was not archived within 60 s; server log:" >&2; tail -n 20 "$work/pg/log" >&2; exit 1
}

pg pgbackrest --config="$work/pgbr.conf" --stanza=bench stanza-create
set_archive "pgbackrest --config=$work/pgbr.conf --stanza=bench archive-push %p && $lb -q wal-push --policy $work/lb.yaml %p"
pg pgbackrest --config="$work/pgbr.conf" --stanza=bench check
wait_archived

# timed CMD...: sets T to "wall cpu" (user+sys of CMD and the children it
# waited for); `timed pg CMD...` runs CMD as postgres. Not in a subshell, so
# a failure ends the script.
timed() {
  [ "$1" = pg ] && { shift; set -- runuser -u postgres -- "$@"; }
  if ! /usr/bin/time -f "%e %U %S" -o "$work/time" "$@" >>"$work/cmd.log" 2>&1 </dev/null; then
    echo "pitr.sh: failed: $*" >&2; tail -n 30 "$work/cmd.log" >&2; exit 1
  fi
  local w u s
  read -r w u s < "$work/time"
  T="$w $(py "round($u + $s, 2)")"
}
median() { python3 -c "import sys,statistics; print(round(statistics.median(float(x) for x in sys.argv[1:]),2))" "$@"; }
declare -A wall cpu all size
# record NAME "wall cpu" : keeps every run; the table shows medians.
record() { all[$1]="${all[$1]:-}${all[$1]:+, }${2%% *}"; wall[$1]="${wall[$1]:-} ${2%% *}"; cpu[$1]="${cpu[$1]:-} ${2##* }"; }

# ---------------------------------------------------------------- 1. base backups
newest_pgbr() { ls "$1/backup/bench" | grep -E '^[0-9]{8}-[0-9]{6}F$' | sort | tail -n 1; }
# rotated R NAME...: the names rotated by R-1, so that each round runs the
# contenders in a different order (no one always follows the same step).
rotated() { local r=$1; shift; local n=$# i; local a=("$@"); for ((i = 0; i < n; i++)); do echo "${a[$(((i + r - 1) % n))]}"; done; }
# step NAME: one timed run of a contender, recorded under NAME.
step() {
  sync
  case $1 in
    lb_base) timed pg "$lb" -q backup --policy "$work/lb.yaml" --source main-db --kind base ;;
    pgbr_base1) timed pg pgbackrest --config="$work/pgbr.conf" --stanza=bench --repo=1 backup --type=full --process-max=1 ;;
    pgbr_base2) timed pg pgbackrest --config="$work/pgbr.conf" --stanza=bench --repo=1 backup --type=full --process-max=2 ;;
    pgbr_base1_enc) timed pg pgbackrest --config="$work/pgbr.conf" --stanza=bench --repo=2 backup --type=full --process-max=1 ;;
    lb_restore) restore_run "$1" pg "$lb" -q restore --policy "$work/lb.yaml" --source main-db --identity "$work/key" \
      --to-datadir "$work/restore/$1" --until latest; return ;;
    pgbr_restore1) restore_run "$1" pg pgbackrest --config="$work/pgbr.conf" --stanza=bench --repo=1 restore \
      --pg1-path="$work/restore/$1" --type=default --process-max=1; return ;;
    pgbr_restore2) restore_run "$1" pg pgbackrest --config="$work/pgbr.conf" --stanza=bench --repo=1 restore \
      --pg1-path="$work/restore/$1" --type=default --process-max=2; return ;;
    pgbr_restore1_enc) restore_run "$1" pg pgbackrest --config="$work/pgbr.conf" --stanza=bench --repo=2 restore \
      --pg1-path="$work/restore/$1" --type=default --process-max=1; return ;;
    s3_lb_base) timed pg env SSL_CERT_FILE="$SSL_CERT_FILE" "$lb" -q backup --policy "$work/lb-s3.yaml" --source main-db --kind base ;;
    s3_pgbr_base1) timed pg pgbackrest --config="$work/pgbr-s3.conf" --stanza=bench backup --type=full --process-max=1 ;;
    s3_pgbr_base2) timed pg pgbackrest --config="$work/pgbr-s3.conf" --stanza=bench backup --type=full --process-max=2 ;;
    s3_lb_restore) restore_run "$1" pg env SSL_CERT_FILE="$SSL_CERT_FILE" "$lb" -q restore --policy "$work/lb-s3.yaml" \
      --source main-db --identity "$work/key" --to-datadir "$work/restore/$1" --until latest; return ;;
    s3_pgbr_restore1) restore_run "$1" pg pgbackrest --config="$work/pgbr-s3.conf" --stanza=bench restore \
      --pg1-path="$work/restore/$1" --type=default --process-max=1; return ;;
    s3_pgbr_restore2) restore_run "$1" pg pgbackrest --config="$work/pgbr-s3.conf" --stanza=bench restore \
      --pg1-path="$work/restore/$1" --type=default --process-max=2; return ;;
    *) echo "pitr.sh: unknown step $1" >&2; exit 1 ;;
  esac
  record "$1" "$T"
}
for r in $(seq "$runs"); do
  log "1. base backups, round $r of $runs"
  for n in $(rotated "$r" lb_base pgbr_base1 pgbr_base2 pgbr_base1_enc); do step "$n"; done
done
size[lb_base]=$(pg "$lb" list --policy "$work/lb.yaml" --json 2>/dev/null | python3 -c '
import json,sys
d=json.load(sys.stdin); d=d if isinstance(d,list) else d.get("backups",d)
b=[x for x in d if x.get("kind")=="base" or any(a.get("name")=="base" for a in x.get("artifacts",[]))][-1]
print(sum(a["stored"]["size"] for a in b["artifacts"]))' 2>/dev/null || echo 0)
size[pgbr_base1]=$(du -sb "$work/pgbr-repo/backup/bench/$(newest_pgbr "$work/pgbr-repo")" | cut -f1)
size[pgbr_base2]=${size[pgbr_base1]}
size[pgbr_base1_enc]=$(du -sb "$work/pgbr-repo-enc/backup/bench/$(newest_pgbr "$work/pgbr-repo-enc")" | cut -f1)

# ---------------------------------------------------------------- 2. restores
# restore_run NAME CMD...: into a fresh $work/restore/NAME; records the
# command's time and, as NAME+sync, the time including a following sync.
restore_run() {
  local name=$1 dir=$work/restore/$1 t s; shift
  rm -rf "$dir"; install -d -m 700 -o postgres "$dir"
  sync
  timed "$@"; t=$T
  timed sync; s=$T
  record "$name" "$t"
  record "${name}_sync" "$(py "round(${t%% *} + ${s%% *}, 2)") $(py "round(${t##* } + ${s##* }, 2)")"
  size[$name]=$(du -sb "$dir" | cut -f1)
  [ -f "$dir/PG_VERSION" ] || { echo "pitr.sh: $name restored no PG_VERSION" >&2; exit 1; }
  rm -rf "$dir"
}
for r in $(seq "$runs"); do
  log "2. restores, round $r of $runs"
  for n in $(rotated "$r" lb_restore pgbr_restore1 pgbr_restore2 pgbr_restore1_enc); do step "$n"; done
done

# ---------------------------------------------------------------- 3. archive-push per segment
log "3. collecting 30 WAL segments of pgbench traffic"
nseg=30
set_archive "cp %p $work/seg/%f"
# TPC-B-like pgbench, asynchronous commit and a checkpoint every 5 s so that
# it makes WAL fast, full-page images included, as after every checkpoint.
for _ in $(seq 40); do
  [ "$(ls "$work/seg" | wc -l)" -gt "$nseg" ] && break
  sql "CHECKPOINT" >/dev/null
  PGOPTIONS="-c synchronous_commit=off" "$bin/pgbench" -c 4 -j 2 -T 5 >/dev/null 2>&1
done
wait_archived
mapfile -t segs < <(ls "$work/seg" | grep -E '^[0-9A-F]{24}$' | sort | head -n "$nseg")
[ "${#segs[@]}" -eq "$nseg" ] || { echo "pitr.sh: only ${#segs[@]} segments collected" >&2; exit 1; }
chown -R postgres "$work/seg"
printf '%s\n' "${segs[@]}" > "$work/segs.txt"
# push_loop NAME CMD...: CMD FILE as postgres for each segment in turn, one
# process each, as the archiver calls it; wall and CPU over the whole loop.
push_loop() {
  local name=$1; shift
  sync
  timed bash -c 'dir=$1 list=$2; shift 2
    while read -r s; do runuser -u postgres -- "$@" "$dir/$s" || exit 1; done < "$list"' _ "$work/seg" "$work/segs.txt" "$@"
  record "$name" "$T"
}
for r in $(seq "$runs"); do
  log "3. pushing the same $nseg segments with each tool into fresh repositories, round $r of $runs"
  rm -rf "$work/lb-push-repo" "$work/pgbr-push-repo" "$work/pgbr-push-repo-enc"
  pg pgbackrest --config="$work/pgbr-push.conf" --stanza=push stanza-create
  pg pgbackrest --config="$work/pgbr-push-enc.conf" --stanza=push stanza-create
  for n in $(rotated "$r" push_lb push_pgbr push_pgbr_enc); do
    case $n in
      push_lb) push_loop "$n" "$lb" -q wal-push --policy "$work/lb-push.yaml" ;;
      push_pgbr) push_loop "$n" pgbackrest --config="$work/pgbr-push.conf" --stanza=push archive-push ;;
      push_pgbr_enc) push_loop "$n" pgbackrest --config="$work/pgbr-push-enc.conf" --stanza=push archive-push ;;
    esac
  done
done
size[push_lb]=$(du -sb "$work/lb-push-repo" | cut -f1)
size[push_pgbr]=$(du -sb "$work/pgbr-push-repo/archive" | cut -f1)
size[push_pgbr_enc]=$(du -sb "$work/pgbr-push-repo-enc/archive" | cut -f1)

# ---------------------------------------------------------------- 4. sustained archiving
# sustained LABEL PGBENCH_ARGS...: runs the load for $sustain s with
# archive_command = lifeboat wal-push, samples .ready files and
# pg_stat_archiver every 2 s, then waits for the backlog to drain; appends a
# report paragraph to $work/sustained.
sustained() {
  local label=$1 a0 f0 lsn0 a1 f1 lsn1 t0 t1 tps drain secs gen gen_rate arch_rate max_ready series fails0 fails1; shift
  log "4. sustained archiving, $label: pgbench ${*//$work\//}"
  wait_archived
  sql "CHECKPOINT" >/dev/null
  fails0=$(grep -c 'archive command failed' "$work/pg/log" || true)
  read -r a0 f0 lsn0 < <(psql -X -At -F ' ' -c "SELECT archived_count, failed_count, pg_current_wal_lsn() FROM pg_stat_archiver")
  : > "$work/samples"
  ( while :; do
      psql -X -At -F ' ' -c "SELECT extract(epoch FROM clock_timestamp())::numeric(12,1),
        (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'),
        archived_count, failed_count, pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')::bigint FROM pg_stat_archiver" \
        >> "$work/samples" 2>/dev/null || true
      sleep 2
    done ) &
  sampler_pid=$!
  t0=$(date +%s%N)
  tps=$(PGOPTIONS="-c synchronous_commit=off" "$bin/pgbench" "$@" -T "$sustain" 2>/dev/null | awk '/^tps/ {print $3; exit}')
  t1=$(date +%s%N)
  read -r a1 lsn1 < <(psql -X -At -F ' ' -c "SELECT archived_count, pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0')::bigint FROM pg_stat_archiver")
  # After the load: how long until every finished segment is archived.
  drain=-1
  for i in $(seq 1200); do
    if [ "$(sql "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")" = 0 ]; then
      drain=$(py "round(($i - 1) * 0.1, 1)"); break
    fi
    sleep 0.1
  done
  kill "$sampler_pid" 2>/dev/null || true; wait "$sampler_pid" 2>/dev/null || true; sampler_pid=
  f1=$(sql "SELECT failed_count FROM pg_stat_archiver")
  fails1=$(grep -c 'archive command failed' "$work/pg/log" || true)
  secs=$(py "($t1 - $t0) / 1e9")
  gen=$(py "round($lsn1 / $segsize, 1)")
  gen_rate=$(py "round($lsn1 / $segsize / $secs, 2)")
  arch_rate=$(py "round(($a1 - $a0) / $secs, 2)")
  max_ready=$(awk 'BEGIN{m=0} NF==5 && $2>m {m=$2} END{print m}' "$work/samples")
  series=$(awk 'NF==5 {printf "%s%s", sep, $2; sep=" "}' "$work/samples")
  cat >> "$work/sustained" <<TXT
$label: pgbench ${*//$work\//} -T $sustain, synchronous_commit=off ($(py "round($tps)") tps):
- WAL generated: $gen segments in $(py "round($secs, 1)") s = $gen_rate segments/s
- archived while the load ran: $((a1 - a0)) = $arch_rate segments/s; failed attempts: $((f1 - f0)) (server log: $((fails1 - fails0)))
- .ready files every 2 s: max $max_ready; series: $series
- backlog drained $drain s after the load ended (-1: not within 120 s)

TXT
}
segsize=$(sql "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'")
set_archive "$lb -q wal-push --policy $work/lb.yaml %p"
# Frequent checkpoints: full-page images after each make the most WAL.
sql "ALTER SYSTEM SET checkpoint_timeout = '30s'" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
: > "$work/sustained"
sustained "OLTP (pgbench simple-update)" -N -c 8 -j 2
sql "CREATE TABLE bulk (id int, payload text)" >/dev/null
echo "INSERT INTO bulk SELECT g, md5(random()::text) || md5(g::text) FROM generate_series(1, 20000) g;" > "$work/bulk.sql"
sustained "bulk inserts (20,000 rows per transaction)" -n -c 2 -j 2 -f "$work/bulk.sql"
sql "ALTER SYSTEM RESET checkpoint_timeout" >/dev/null; sql "SELECT pg_reload_conf()" >/dev/null
sql "DROP TABLE bulk" >/dev/null

# ---------------------------------------------------------------- report
mb() { py "round($1 / 1e6, 1)"; }
row() { # row LABEL NAME [SIZE_NAME]
  local w c s=–
  w=$(median ${wall[$2]}); c=$(median ${cpu[$2]})
  [ -n "${3:-}" ] && [ -n "${size[$3]:-}" ] && s=$(mb "${size[$3]}")
  echo "| $1 | $w | $c | $s | ${all[$2]} |"
}
push_row() { # push_row LABEL NAME: per segment, from the loop medians
  local w c
  w=$(median ${wall[$2]}); c=$(median ${cpu[$2]})
  echo "| $1 | $(py "round($w * 1000 / $nseg, 1)") | $(py "round($c * 1000 / $nseg, 1)") | $(py "round($nseg / $w, 1)") | $(mb "${size[$2]}") | ${all[$2]} |"
}
ratio() { py "round($(median ${wall[$1]}) / $(median ${wall[$2]}), 2)"; }
cat <<REPORT

PostgreSQL $pgversion, pgBackRest $(pgbackrest version | awk '{print $2}'), lifeboat $("$lb" --version | awk '{print $2}'), $(nproc) vCPU.
Cluster: pgbench scale $scale + $rows md5 text rows, $(mb "$dbsize") MB (sum of pg_database_size). Median of $runs runs; load average before: $load_before, after parts 1-4: $(cut -d' ' -f1-3 /proc/loadavg).

| run | wall s | CPU s | stored / written MB | all wall s |
|---|---:|---:|---:|---|
$(row "lifeboat backup --kind base (zstd 1 + age)" lb_base lb_base)
$(row "pgbackrest backup --type=full, process-max=1 (zst 1)" pgbr_base1 pgbr_base1)
$(row "pgbackrest backup --type=full, process-max=2 (zst 1)" pgbr_base2 pgbr_base2)
$(row "pgbackrest backup --type=full, process-max=1, aes-256-cbc" pgbr_base1_enc pgbr_base1_enc)
$(row "lifeboat restore --to-datadir --until latest" lb_restore lb_restore)
$(row "  … + sync" lb_restore_sync)
$(row "pgbackrest restore, process-max=1" pgbr_restore1 pgbr_restore1)
$(row "  … + sync" pgbr_restore1_sync)
$(row "pgbackrest restore, process-max=2" pgbr_restore2 pgbr_restore2)
$(row "  … + sync" pgbr_restore2_sync)
$(row "pgbackrest restore, process-max=1, aes-256-cbc" pgbr_restore1_enc pgbr_restore1_enc)
$(row "  … + sync" pgbr_restore1_enc_sync)

Ratios (pgBackRest wall / lifeboat wall, > 1 means lifeboat is faster):
- base backup: vs process-max=1 $(ratio pgbr_base1 lb_base), vs process-max=2 $(ratio pgbr_base2 lb_base), vs process-max=1 encrypted $(ratio pgbr_base1_enc lb_base)
- restore: vs process-max=1 $(ratio pgbr_restore1 lb_restore), vs process-max=2 $(ratio pgbr_restore2 lb_restore), vs encrypted $(ratio pgbr_restore1_enc lb_restore); with sync: $(ratio pgbr_restore1_sync lb_restore_sync), $(ratio pgbr_restore2_sync lb_restore_sync), $(ratio pgbr_restore1_enc_sync lb_restore_sync)

Archive-push of the same $nseg segments of pgbench traffic, one process per segment, in turn:

| tool | wall ms / segment | CPU ms / segment | segments / s | stored MB | all loop wall s |
|---|---:|---:|---:|---:|---|
$(push_row "lifeboat wal-push (zstd 1 + age)" push_lb)
$(push_row "pgbackrest archive-push (zst 1)" push_pgbr)
$(push_row "pgbackrest archive-push (zst 1, aes-256-cbc)" push_pgbr_enc)

Per segment, pgBackRest / lifeboat: $(ratio push_pgbr push_lb) (plain), $(ratio push_pgbr_enc push_lb) (encrypted).

Sustained archiving, archive_command = lifeboat wal-push:

$(cat "$work/sustained")
REPORT

# ---------------------------------------------------------------- 5. S3 through TLS
# start_s3: Garage behind stunnel, with a private CA; returns 1 (part 5 is
# then skipped) when something does not come up.
start_s3() {
  local node= ok=0
  rpcport=$(freeport); s3port=$(freeport); tlsport=$(freeport)
  mkdir -p "$work/garage" "$work/tls"
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
  RUST_LOG=warn garage -c "$work/garage/garage.toml" server > "$work/garage/log" 2>&1 &
  garage_pid=$!
  # Wait until the node answers over RPC, not only until its key exists.
  for _ in $(seq 100); do
    node=$(g node id -q 2>/dev/null) && g status >/dev/null 2>&1 && { ok=1; break; }
    sleep 0.2
  done
  [ "$ok" = 1 ] || { echo "pitr.sh: garage did not start:" >&2; tail -n 5 "$work/garage/log" >&2; return 1; }
  g layout assign -z dc1 -c 10G "${node%%@*}" >/dev/null || return 1
  g layout apply --version 1 >/dev/null || return 1
  key_id=GK$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n'); secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  g key import --yes -n bench "$key_id" "$secret" >/dev/null || return 1
  g bucket create bench >/dev/null || return 1
  g bucket allow --read --write --owner bench --key bench >/dev/null || return 1
  printf '%s' "$key_id" > "$work/s3-key-id"; printf '%s' "$secret" > "$work/s3-secret"
  # A private CA and a server certificate for localhost / 127.0.0.1
  # (rustls refuses a CA certificate used as the server's own).
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$work/tls/ca.key" -out "$work/tls/ca.pem" 2>/dev/null || return 1
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
    -keyout "$work/tls/server.key" -out "$work/tls/server.csr" 2>/dev/null || return 1
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$work/tls/ext"
  openssl x509 -req -in "$work/tls/server.csr" -CA "$work/tls/ca.pem" -CAkey "$work/tls/ca.key" -CAcreateserial \
    -days 2 -extfile "$work/tls/ext" -out "$work/tls/server.pem" 2>/dev/null || return 1
  cat > "$work/tls/stunnel.conf" <<CONF
foreground = yes
debug = 4
pid =
[s3]
accept = 127.0.0.1:$tlsport
connect = 127.0.0.1:$s3port
cert = $work/tls/server.pem
key = $work/tls/server.key
CONF
  stunnel "$work/tls/stunnel.conf" > "$work/tls/log" 2>&1 &
  stunnel_pid=$!
  ok=0
  for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$tlsport") 2>/dev/null && { ok=1; break; }; sleep 0.1; done
  [ "$ok" = 1 ] || { echo "pitr.sh: stunnel did not start:" >&2; tail -n 5 "$work/tls/log" >&2; return 1; }
  lifeboat_policy "$work/lb-s3.yaml" "  url: s3://bench/lifeboat
  endpoint: https://localhost:$tlsport
  region: garage
  path_style: true
  access_key_id: { file: $work/s3-key-id }
  secret_access_key: { file: $work/s3-secret }"
  pgbr_conf "$work/pgbr-s3.conf" bench "repo1-type=s3" "repo1-path=/pgbackrest" "repo1-retention-full=99" \
    "repo1-s3-bucket=bench" "repo1-s3-endpoint=localhost" "repo1-storage-port=$tlsport" \
    "repo1-s3-region=garage" "repo1-s3-uri-style=path" "repo1-s3-key=$key_id" "repo1-s3-key-secret=$secret" \
    "repo1-storage-ca-file=$work/tls/ca.pem"
  chown -R postgres "$work"
  chmod 600 "$work/pgbr-s3.conf" "$work/s3-secret"
  pg pgbackrest --config="$work/pgbr-s3.conf" --stanza=bench stanza-create >>"$work/cmd.log" 2>&1 || {
    echo "pitr.sh: pgbackrest stanza-create on S3 failed:" >&2; tail -n 10 "$work/cmd.log" >&2; return 1; }
}
g() { garage -c "$work/garage/garage.toml" "$@"; }
if ! command -v garage >/dev/null || ! command -v stunnel >/dev/null; then
  log "5. skipped: garage or stunnel is not installed"
  echo "S3 through TLS: not measured (garage or stunnel is not installed)."
elif log "5. S3: Garage behind stunnel (TLS)" && ! start_s3; then
  echo "S3 through TLS: not measured (the S3 endpoint did not come up; see above)."
else
  # rustls-native-certs (the AWS SDK's trust store) reads SSL_CERT_FILE.
  export SSL_CERT_FILE=$work/tls/ca.pem
  set_archive "pgbackrest --config=$work/pgbr-s3.conf --stanza=bench archive-push %p && SSL_CERT_FILE=$work/tls/ca.pem $lb -q wal-push --policy $work/lb-s3.yaml %p"
  pg pgbackrest --config="$work/pgbr-s3.conf" --stanza=bench check
  wait_archived
  for r in $(seq "$runs"); do
    log "5. S3 base backups and restores, round $r of $runs"
    for n in $(rotated "$r" s3_lb_base s3_pgbr_base1 s3_pgbr_base2); do step "$n"; done
    for n in $(rotated "$r" s3_lb_restore s3_pgbr_restore1 s3_pgbr_restore2); do step "$n"; done
  done
  cat <<REPORT

S3 (Garage on loopback behind stunnel TLS, both tools verifying the certificate), median of $runs runs:

| run | wall s | CPU s | written MB | all wall s |
|---|---:|---:|---:|---|
$(row "lifeboat backup --kind base" s3_lb_base)
$(row "pgbackrest backup --type=full, process-max=1" s3_pgbr_base1)
$(row "pgbackrest backup --type=full, process-max=2" s3_pgbr_base2)
$(row "lifeboat restore --to-datadir --until latest" s3_lb_restore s3_lb_restore)
$(row "  … + sync" s3_lb_restore_sync)
$(row "pgbackrest restore, process-max=1" s3_pgbr_restore1 s3_pgbr_restore1)
$(row "  … + sync" s3_pgbr_restore1_sync)
$(row "pgbackrest restore, process-max=2" s3_pgbr_restore2 s3_pgbr_restore2)
$(row "  … + sync" s3_pgbr_restore2_sync)

Ratios (pgBackRest wall / lifeboat wall):
- base backup: vs process-max=1 $(ratio s3_pgbr_base1 s3_lb_base), vs process-max=2 $(ratio s3_pgbr_base2 s3_lb_base)
- restore: vs process-max=1 $(ratio s3_pgbr_restore1 s3_lb_restore), vs process-max=2 $(ratio s3_pgbr_restore2 s3_lb_restore); with sync: $(ratio s3_pgbr_restore1_sync s3_lb_restore_sync), $(ratio s3_pgbr_restore2_sync s3_lb_restore_sync)
REPORT
fi
echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg). Total run time of this script: $(( $(date +%s) - began )) s."
