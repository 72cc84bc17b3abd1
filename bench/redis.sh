#!/usr/bin/env bash
# Redis backup speed and memory, against the old script's anchor in the
# same run: `redis-cli --rdb FILE && gzip FILE` vs `cexdr backup` (raw SYNC
# stream → parallel gzip → local store). Seeds a private redis-server on a
# free loopback port with bench/seed-redis.sh SCALE (the shared dataset shape).
#
#   bench/redis.sh [SCALE ...]     (default: 1 2)
# Targets: wall time ratio cexdr/anchor <= 0.5; cexdr peak RSS <= 32 MiB at
# every scale.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then SCALES=("$@"); else SCALES=(1 2); fi
SEED=${SEED:-$(dirname "$0")/seed-redis.sh}
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install time" >&2; exit 2; }
cargo build --release --quiet --bin cexdr
BIN="${CARGO_TARGET_DIR:-target}/release/cexdr"
work=$(mktemp -d /var/tmp/cexdr-bench-redis.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" --logfile "$work/redis.log" &
pid=$!
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done

cat >"$work/policy.toml" <<TOML
[store]
kind = "local"
path = "$work/repo"
[[job]]
name = "cache"
kind = "redis"
url = "redis://127.0.0.1:$port"
compression = "gzip"
TOML

secs() { python3 -c "import time; print(time.monotonic())"; }
for scale in "${SCALES[@]}"; do
  # seed-redis.sh does not flush: top up to SCALE.
  redis-cli -p "$port" flushall >/dev/null
  REDIS_OPTS="-p $port" "$SEED" "$scale" >/dev/null
  keys=$(redis-cli -p "$port" dbsize)

  # Anchor: the old script.
  rm -f "$work/dump.rdb" "$work/dump.rdb.gz"
  t0=$(secs)
  redis-cli -p "$port" --rdb "$work/dump.rdb" >/dev/null 2>&1
  gzip "$work/dump.rdb"
  t1=$(secs)
  anchor=$(python3 -c "print(f'{$t1-$t0:.2f}')")
  anchor_bytes=$(stat -c %s "$work/dump.rdb.gz")

  # cexdr, under GNU time for the peak RSS.
  t0=$(secs)
  /usr/bin/time -v -o "$work/time.txt" "$BIN" -q --policy "$work/policy.toml" backup cache >/dev/null
  t1=$(secs)
  ours=$(python3 -c "print(f'{$t1-$t0:.2f}')")
  rss_kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$work/time.txt")
  stored=$("$BIN" -q --policy "$work/policy.toml" catalog list --json | python3 -c 'import json,sys; m=json.load(sys.stdin)[-1]; print(m["source_bytes"], m["stored_bytes"])')
  read -r rdb_bytes stored_bytes <<<"$stored"

  ratio=$(python3 -c "print(f'{$ours/$anchor:.2f}')")
  ok_t=$(python3 -c "print('ok' if $ours/$anchor <= 0.5 else 'MISSED')")
  ok_m=$(python3 -c "print('ok' if $rss_kb <= 32*1024 else 'MISSED')")
  echo "scale $scale: $keys keys, RDB $((rdb_bytes / 1048576)) MiB"
  echo "  anchor  redis-cli --rdb + gzip   ${anchor} s   ($((anchor_bytes / 1024)) KiB gz)"
  echo "  cexdr   backup (SYNC, gzip)      ${ours} s   ($((stored_bytes / 1024)) KiB gz)"
  echo "  ratio   ${ratio}  (target <= 0.50: $ok_t)"
  echo "  peak RSS of cexdr  $((rss_kb / 1024)) MiB (${rss_kb} KiB; target <= 32 MiB: $ok_m)"
done
