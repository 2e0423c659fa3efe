#!/usr/bin/env bash
# MySQL/MariaDB benchmark on one generated database (>= 1 GB of InnoDB data),
# side by side in one run:
#   1. mariadb-dump --single-transaction > /dev/null   (the source limit)
#   2. mydumper to a local folder (Debian package, 2 threads, zstd? no: plain)
#   3. lifeboat backup (zstd 1 + age) into Garage
#   4. restore: lifeboat restore into a fresh server, vs. myloader
#   5. archiving lag under a steady write load with --interval 1s: time from
#      each commit to the moment a stored copy contains it (p50/p99/max)
#
# Usage: benches/mysql.sh [TARGET_MB]   (default 1100)
# Needs: a release build (cargo build --release), garage, MariaDB server and
# client; installs mydumper if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
target_mb=${1:-1100}
export PATH="$HOME/.cargo/bin:$PATH"
command -v mydumper >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q mydumper >/dev/null
command -v garage >/dev/null || { echo "garage missing: bash scripts/install-deps.sh --garage" >&2; exit 1; }
lb="$root/target/release/lifeboat"
[ -x "$lb" ] || { echo "build first: cargo build --release" >&2; exit 1; }

work=$(mktemp -d /tmp/lifeboat-mybench.XXXXXX)
chmod 755 "$work"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
export MYSQL_PWD=bench-pw

# start_server NAME -> prints the port; binlog on.
start_server() {
  local name=$1 port d
  port=$(freeport); d="$work/$name"
  mkdir -p "$d/data" "$d/tmp"; chown -R mysql:mysql "$d"
  mariadb-install-db --no-defaults --datadir="$d/data" --tmpdir="$d/tmp" --user=mysql \
    --auth-root-authentication-method=normal --skip-test-db > "$d/install.log" 2>&1
  /usr/sbin/mariadbd --no-defaults --datadir="$d/data" --tmpdir="$d/tmp" --socket="$d/sock" \
    --pid-file="$d/pid" --log-error="$d/error.log" --port="$port" --user=mysql \
    --bind-address=127.0.0.1 --skip-name-resolve --innodb-buffer-pool-size=512M \
    --innodb-log-file-size=256M --log-bin="$d/data/binlog" --server-id=1 --binlog-format=ROW \
    --max-allowed-packet=256M > /dev/null 2>&1 &
  pids+=($!)
  # The socket account root@localhost has no password: MYSQL_PWD must not be sent.
  for _ in $(seq 150); do env -u MYSQL_PWD mariadb --no-defaults --socket="$d/sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
  env -u MYSQL_PWD mariadb --no-defaults --socket="$d/sock" -uroot -e \
    "CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY '$MYSQL_PWD'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
  echo "$port"
}
sql() { local port=$1; shift; mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot --batch --skip-column-names "$@"; }

echo "== starting MariaDB and generating about $target_mb MB" >&2
src=$(start_server src)
sql "$src" -e "CREATE DATABASE bench"
# Rows of ~300 bytes of mixed data; one table per ~250 MB.
rows_total=$(( target_mb * 1000000 / 330 ))
tables=$(( (target_mb + 249) / 250 ))
per=$(( rows_total / tables ))
for t in $(seq "$tables"); do
  sql "$src" bench -e "CREATE TABLE t$t (id BIGINT PRIMARY KEY, at DATETIME NOT NULL, qty INT NOT NULL,
    note VARCHAR(255) NOT NULL, payload VARBINARY(64) NOT NULL, KEY (at)) ENGINE=InnoDB"
  step=500000
  for start in $(seq 1 "$step" "$per"); do
    end=$(( start + step - 1 )); [ "$end" -gt "$per" ] && end=$per
    sql "$src" bench -e "SET SESSION sql_log_bin = 0; INSERT INTO t$t SELECT seq, NOW() - INTERVAL seq SECOND, seq % 1000,
      CONCAT(MD5(seq), ' ', MD5(seq + 1), ' ', MD5(RAND()), ' ', MD5(RAND())), UNHEX(CONCAT(MD5(RAND()), MD5(seq)))
      FROM seq_${start}_to_${end}"
  done
done
dbsize=$(sql "$src" -e "SELECT SUM(data_length + index_length) FROM information_schema.TABLES WHERE table_schema = 'bench'")

echo "== starting Garage" >&2
rpcport=$(freeport); s3port=$(freeport)
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
pids+=($!)
for _ in $(seq 100); do g status >/dev/null 2>&1 && break; sleep 0.2; done
node=$(g node id -q)
g layout assign -z dc1 -c 10G "${node%%@*}" >/dev/null
g layout apply --version 1 >/dev/null
key_id=GK$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n'); secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
g key import --yes -n bench "$key_id" "$secret" >/dev/null
g bucket create bench >/dev/null
g bucket allow --read --write --owner bench --key bench >/dev/null
export AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$secret

"$lb" keygen --out "$work/k" > "$work/r"
cat > "$work/policy.yaml" <<YAML
name: bench
repository:
  url: s3://bench/lifeboat
  endpoint: http://127.0.0.1:$s3port
  region: garage
  path_style: true
  access_key_id: { env: AWS_ACCESS_KEY_ID }
  secret_access_key: { env: AWS_SECRET_ACCESS_KEY }
encryption:
  recipients: [$(cat "$work/r")]
sources:
  - name: db
    mysql: { host: 127.0.0.1, port: $src, user: root, password: { env: MYSQL_PWD }, databases: [bench] }
YAML

timed() {
  /usr/bin/time -f "%e %U %S" -o "$work/time" "$@" > /dev/null
  read -r wall user sys < "$work/time"
  echo "$wall $(python3 -c "print(round($user + $sys, 2))")"
}
runs=${RUNS:-3}
median() { python3 -c "import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

echo "== warm-up" >&2
mariadb-dump --no-defaults -h127.0.0.1 -P"$src" -uroot --single-transaction --databases bench > /dev/null

echo "== 1. mariadb-dump > /dev/null ($runs runs)" >&2
ws=(); for _ in $(seq "$runs"); do read -r w c < <(timed bash -c "mariadb-dump --no-defaults -h127.0.0.1 -P$src -uroot --single-transaction --routines --triggers --events --hex-blob --master-data=2 --databases bench > /dev/null"); ws+=("$w"); done
w1=$(median "${ws[@]}"); all1="${ws[*]}"
plain=$(mariadb-dump --no-defaults -h127.0.0.1 -P"$src" -uroot --single-transaction --hex-blob --databases bench | wc -c)

echo "== 2. mydumper to a local folder ($runs runs)" >&2
ws=(); for i in $(seq "$runs"); do read -r w c < <(timed mydumper -h 127.0.0.1 -P "$src" -u root -p "$MYSQL_PWD" -B bench -t 2 -o "$work/mydumper-$i" --trx-consistency-only); ws+=("$w"); done
w2=$(median "${ws[@]}"); all2="${ws[*]}"
s2=$(du -sb "$work/mydumper-1" | cut -f1)

echo "== 3. lifeboat backup → Garage ($runs runs)" >&2
ws=(); for _ in $(seq "$runs"); do read -r w c < <(timed "$lb" -q backup --policy "$work/policy.yaml" --json); ws+=("$w"); done
w3=$(median "${ws[@]}"); all3="${ws[*]}"
"$lb" -q list --policy "$work/policy.yaml" --json > "$work/list.json"
s3=$(python3 -c "import json; m=json.load(open('$work/list.json'))[-1]; print(sum(a['stored']['size'] for a in m['artifacts']))")

echo "== 4. restore into fresh servers" >&2
dst1=$(start_server dst1)
read -r wr1 cr1 < <(timed "$lb" -q restore --policy "$work/policy.yaml" --source db --identity "$work/k" --to "mysql://root@127.0.0.1:$dst1/")
dst2=$(start_server dst2)
read -r wr2 cr2 < <(timed myloader -h 127.0.0.1 -P "$dst2" -u root -p "$MYSQL_PWD" -d "$work/mydumper-1" -t 2)

echo "== 5. archiving lag, --interval 1s, steady writes for 60 s" >&2
"$lb" -q binlog-archive --policy "$work/policy.yaml" --source db --interval 1s > "$work/archiver.log" 2>&1 &
apid=$!; pids+=($apid)
sleep 3
python3 - "$src" "$lb" "$work/policy.yaml" > "$work/lag.txt" <<'PY'
import json, subprocess, sys, time, threading
from datetime import datetime, timezone
port, lb, policy = sys.argv[1], sys.argv[2], sys.argv[3]
def sql(q):
    return subprocess.run(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{port}", "-uroot", "--batch",
                           "--skip-column-names", "bench", "-e", q], capture_output=True, text=True, check=True).stdout.strip()
def parse(s):
    s = s.rstrip("Z")
    if "." in s:
        main, frac = s.split(".")
        s = main + "." + (frac + "000000")[:6]
    return datetime.fromisoformat(s).replace(tzinfo=timezone.utc).timestamp()
seen = {}  # (file, bytes) -> when that copy was stored (its record's archived_at)
done = threading.Event()
def poll():
    while not done.is_set():
        r = subprocess.run([lb, "-q", "binlog-verify", "--policy", policy, "--source", "db", "--json"],
                           capture_output=True, text=True)
        try:
            for f in json.loads(r.stdout)["files"]:
                seen.setdefault((f["file"], f["bytes"]), parse(f["archived_at"]))
        except (ValueError, KeyError):
            pass
        time.sleep(0.1)
poller = threading.Thread(target=poll); poller.start()
sql("CREATE TABLE IF NOT EXISTS lag (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64))")
commits = []  # (commit time, file, binlog position after the commit)
stop = time.time() + 60
while time.time() < stop:
    out = sql("INSERT INTO lag (note) VALUES (REPEAT('x', 60)); SHOW MASTER STATUS")
    t = time.time()
    f, pos = out.split("\t")[:2]
    commits.append((t, f, int(pos)))
    time.sleep(0.1)
deadline = time.time() + 30
last = commits[-1]
while time.time() < deadline and not any(k[0] == last[1] and k[1] >= last[2] for k in list(seen)):
    time.sleep(0.2)
done.set(); poller.join()
lags = []
for t, f, pos in commits:
    stored = [ts for (ff, b), ts in list(seen.items()) if ff == f and b >= pos]
    if stored:
        lags.append(max(0.0, min(stored) - t))
lags.sort()
q = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]
print(f"{len(commits)} {len(lags)} {q(0.5):.2f} {q(0.99):.2f} {lags[-1]:.2f}")
PY
kill -TERM "$apid"; wait "$apid" || true
read -r ncommits nstored p50 p99 pmax < "$work/lag.txt"

mb() { python3 -c "print(round($1/1e6,1))"; }
ratio() { python3 -c "print(round($1/$2,2))"; }
cat <<TABLE

Database: $(mb "$dbsize") MB of InnoDB data and indexes, $(mb "$plain") MB as SQL; MariaDB $(mariadbd --version | awk '{print $3}'), $(nproc) cores, everything on one VM.

| run | wall s (median of $runs) | stored MB | vs source limit |
|---|---:|---:|---:|
| mariadb-dump > /dev/null (source limit) | $w1 | – | 1.00 |
| mydumper -t 2 → local folder | $w2 | $(mb "$s2") | $(ratio "$w2" "$w1") |
| lifeboat backup (zstd 1 + age → Garage) | $w3 | $(mb "$s3") | $(ratio "$w3" "$w1") |

| restore | wall s |
|---|---:|
| lifeboat restore (Garage → decrypt → mariadb client, + inventory check) | $wr1 |
| myloader -t 2 (local folder) | $wr2 |

Archiving lag (commit → stored copy contains it), binlog-archive --interval 1s, one commit every ~0.1 s for 60 s:
$ncommits commits, $nstored matched; p50 ${p50} s, p99 ${p99} s, max ${pmax} s.
Individual wall times: mariadb-dump $all1; mydumper $all2; lifeboat $all3.
TABLE
