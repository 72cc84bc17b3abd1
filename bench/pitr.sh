#!/usr/bin/env bash
# PITR benchmark (issue 13), on private MariaDB servers (binlog on) started here:
#   1. archive lag under a steady write load: RATE single-row transactions/s
#      for SECONDS s (defaults 1000 and 60) while `cexdr binlog archive` runs
#      at the default flush interval (5 s); lag = now - newest archived commit,
#      sampled every 0.5 s from the newest manifest, p50 / p99 printed
#      (target: p99 <= 5 s). Two clocks for the commit: the manifest's
#      (whole seconds: MariaDB's binlog timestamps, so up to 1 s too old) and
#      the newest archived row's NOW(6) (microseconds; its gtid_end's row).
#      `uptime` is printed before and after the load.
#   2. replay throughput on the same segments: `cexdr restore --until-gtid`
#      (exact GTID filter, batched commits) against the anchor measured in the
#      same run, `mariadb-binlog --start-position=<base GTID> <segments> | mariadb`
#      after the same base restore; ratio = cexdr / anchor (target <= 0.8).
# Usage: bench/pitr.sh   (env: RATE, SECONDS_, CEXDR=path to a binary; by
# default the release build, brought up to date here)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RATE=${RATE:-1000}
DURATION=${SECONDS_:-60}
if [ -z "${CEXDR:-}" ]; then
  (cd "$ROOT" && nice -n 19 cargo build --release --bin cexdr --quiet)
  CEXDR=${CARGO_TARGET_DIR:-$ROOT/target}/release/cexdr
fi
[ -x "$CEXDR" ] || { echo "no cexdr binary at $CEXDR" >&2; exit 1; }
W=$(mktemp -d /tmp/cexdr-pitr-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_server() { # name port server-id binlog(1/0)
  local d=$W/$1
  mariadb-install-db --no-defaults --datadir="$d/data" --user=root --auth-root-authentication-method=normal \
    --skip-test-db --skip-name-resolve --innodb-log-file-size=64M >/dev/null 2>&1
  local bin=(--skip-log-bin)
  [ "$4" = 1 ] && bin=(--log-bin="$d/data/binlog" --binlog-format=ROW --gtid-strict-mode=1)
  mariadbd --no-defaults --datadir="$d/data" --user=root --bind-address=127.0.0.1 --port="$2" \
    --socket="$d/s.sock" --pid-file="$d/p.pid" --log-error="$d/err.log" --tmpdir="$d" --skip-name-resolve \
    --innodb-buffer-pool-size=128M --innodb-log-file-size=64M --server-id="$3" "${bin[@]}" &
  PIDS+=($!)
  for _ in $(seq 200); do mariadb --no-defaults -S "$d/s.sock" -u root -e "SELECT 1" >/dev/null 2>&1 && break; sleep 0.05; done
  mariadb --no-defaults -S "$d/s.sock" -u root -e "CREATE USER IF NOT EXISTS root@'127.0.0.1'; GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION"
}
sqlp() { mariadb --no-defaults -S "$W/src/s.sock" -u root -N -B -e "$1"; }
sqlt() { mariadb --no-defaults -S "$W/dst/s.sock" -u root -N -B -e "$1"; }

P1=$(free_port); start_server src "$P1" 71 1
P2=$(free_port); start_server dst "$P2" 72 0
sqlp "CREATE DATABASE bench; CREATE TABLE bench.ev (id BIGINT PRIMARY KEY, v VARCHAR(64), ts DATETIME(6) DEFAULT NOW(6))"
cat > "$W/policy.toml" <<EOF
[store]
kind = "local"
path = "$W/store"

[[job]]
name = "bench"
kind = "mysql"
url = "mysql://root@127.0.0.1:$P1"
databases = ["bench"]
binlog = { server-id = 4242 }
EOF
"$CEXDR" --policy "$W/policy.toml" -q backup bench >/dev/null
"$CEXDR" --policy "$W/policy.toml" -q binlog archive bench 2>"$W/archiver.log" &
APID=$!; PIDS+=($APID)
SEQ0=$(sqlp "SELECT @@gtid_binlog_pos" | sed 's/.*-//')  # the writer's rows are SEQ0+1+id
echo "before the load: $(uptime)"

# Writer: RATE autocommit inserts per second, paced in 10 ms slices, one client.
python3 - "$RATE" "$DURATION" <<'EOF' | mariadb --no-defaults -S "$W/src/s.sock" -u root &
import sys, time
rate, dur = int(sys.argv[1]), int(sys.argv[2])
t0 = time.time(); n = 0
while time.time() - t0 < dur:
    due = int((time.time() - t0) * rate)
    while n < due:
        sys.stdout.write(f"INSERT INTO bench.ev (id, v) VALUES ({n}, 'row-{n}');\n"); n += 1
    sys.stdout.flush(); time.sleep(0.01)
EOF
GEN=$!

# Lag sampler: newest archived commit from the newest segment manifest.
python3 - "$W/store/binlog/bench" "$DURATION" > "$W/lag.txt" <<'EOF' &
import sys, os, time, json, glob, datetime
root, dur = sys.argv[1], int(sys.argv[2])
t0 = time.time()
time.sleep(6)  # first segment
while time.time() - t0 < dur:
    ms = sorted(glob.glob(os.path.join(root, "*", "*.json")))
    if ms:
        try:
            m = json.load(open(ms[-1]))
            now = time.time()
            lc = datetime.datetime.fromisoformat(m["last_commit"].replace("Z", "+00:00")).timestamp()
            seq = int(m["gtid_end"].rsplit("-", 1)[1])
            print(f"{now:.6f} {now - lc:.3f} {seq}", flush=True)
        except Exception:
            pass
    time.sleep(0.5)
EOF
LAGP=$!
wait $GEN; wait $LAGP
echo "after the load: $(uptime)"
ROWS=$(sqlp "SELECT COUNT(*) FROM bench.ev")
END=$(sqlp "SELECT @@gtid_binlog_pos")
ELAPSED=$(sqlp "SELECT TIMESTAMPDIFF(MICROSECOND, MIN(ts), MAX(ts)) / 1e6 FROM bench.ev")
# Let the archiver catch up, then stop it.
for _ in $(seq 120); do
  last=$(ls "$W"/store/binlog/bench/*/*.json | sort | tail -1)
  grep -q "\"gtid_end\": \"$END\"" "$last" && break; sleep 0.5
done
kill -TERM $APID; wait $APID || true
sqlp "SELECT id, UNIX_TIMESTAMP(ts) FROM bench.ev" > "$W/rows.txt"
python3 - "$W/lag.txt" "$ROWS" "$ELAPSED" "$W/rows.txt" "$SEQ0" <<'EOF'
import sys
samples = [l.split() for l in open(sys.argv[1]) if l.strip()]
ts = dict((int(i), float(t)) for i, t in (l.split() for l in open(sys.argv[4]) if l.strip()))
seq0 = int(sys.argv[5])
def show(name, v):
    v = sorted(v)
    q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
    print(f"archive lag ({name}): {len(v)} samples, p50 {q(0.5):.2f} s, p99 {q(0.99):.2f} s, max {v[-1]:.2f} s")
show("manifest commit time, whole seconds", [float(s[1]) for s in samples])
# Samples taken before the first row was archived have no row to compare.
show("newest archived row's NOW(6)", [float(s[0]) - ts[int(s[2]) - seq0 - 1] for s in samples if int(s[2]) - seq0 - 1 in ts])
print(f"load: {sys.argv[2]} transactions in {float(sys.argv[3]):.1f} s = {int(sys.argv[2]) / float(sys.argv[3]):.0f} tx/s; flush-interval 5 s")
EOF
SEGS=$(ls "$W"/store/binlog/bench/*/*.json | wc -l)
BYTES=$(cat "$W"/store/binlog/bench/*/*.json | python3 -c 'import sys,json,re; t=sys.stdin.read(); print(sum(int(x) for x in re.findall(r"\"source_bytes\": (\d+)", t)))')
echo "archive: $SEGS segments, $BYTES bytes of binlog"

# Replay: cexdr (exact filter, batched) ...
T0=$(date +%s.%N)
"$CEXDR" --policy "$W/policy.toml" restore --job bench --until-gtid "$END" --to "mysql://root@127.0.0.1:$P2" --force > "$W/restore.out"
T1=$(date +%s.%N)
grep replayed "$W/restore.out"
OURS=$(sed -n 's/.* in \([0-9.]*\) s (.*/\1/p' "$W/restore.out" | tail -1)
CHK_OURS=$(sqlt "SELECT COUNT(*), SUM(CRC32(CONCAT(id, v))) FROM bench.ev")
# ... against the anchor: same base, then mariadb-binlog | mariadb on the same segments.
BASE=$("$CEXDR" --policy "$W/policy.toml" --json catalog list --job bench | python3 -c 'import sys,json; print(json.load(sys.stdin)[0]["id"])')
BASE_GTID=$("$CEXDR" --policy "$W/policy.toml" --json catalog list --job bench | python3 -c 'import sys,json; print(json.load(sys.stdin)[0]["details"]["binlog"]["gtid_set"])')
"$CEXDR" --policy "$W/policy.toml" -q restore "$BASE" --to "mysql://root@127.0.0.1:$P2" --force >/dev/null
mkdir -p "$W/plain"
for f in $(ls "$W"/store/binlog/bench/*/*.binlog.gz | sort); do zcat "$f" > "$W/plain/$(basename "$f" .gz)"; done
A0=$(date +%s.%N)
mariadb-binlog --no-defaults --start-position="$BASE_GTID" $(ls "$W"/plain/* | sort) | mariadb --no-defaults -S "$W/dst/s.sock" -u root
A1=$(date +%s.%N)
CHK_ANCHOR=$(sqlt "SELECT COUNT(*), SUM(CRC32(CONCAT(id, v))) FROM bench.ev")
ANCHOR=$(python3 -c "print(f'{$A1 - $A0:.2f}')")
[ "$CHK_OURS" = "$CHK_ANCHOR" ] || { echo "MISMATCH: cexdr $CHK_OURS vs anchor $CHK_ANCHOR" >&2; exit 1; }
python3 -c "print(f'replay of $ROWS transactions: cexdr {float(\"$OURS\"):.2f} s (whole restore incl. base + SHA check pass {$T1 - $T0:.2f} s), anchor mariadb-binlog | mariadb {float(\"$ANCHOR\"):.2f} s; ratio cexdr/anchor = {float(\"$OURS\") / float(\"$ANCHOR\"):.2f} (same rows: $CHK_OURS)')"
echo "binary: $CEXDR"
