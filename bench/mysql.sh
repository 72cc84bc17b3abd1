#!/usr/bin/env bash
# MySQL backup/restore benchmark for issue 3: cexdr against mysqldump|gzip,
# mydumper and the stock client, side by side on the same server, in one run.
#
#   bench/mysql.sh [SCALE]        # default 1 (~350 MB of SQL)
#
# Env: CEXDR (default target/release/cexdr, or $CARGO_TARGET_DIR/release/cexdr),
# MYSQL_HOST (127.0.0.1), MYSQL_PORT (3306), MYSQL_USER (root, no password),
# SKIP_SEED=1 to reuse an existing cex_bench database of the same scale,
# LEVEL (gzip level for cexdr, default 3: zlib-rs level 3 stays within 1.1x of gzip -6),
# THREADS (dump connections; default: the policy default, one per core).
# Prints wall time, peak RSS and size of each, then the ratios to the targets.
set -euo pipefail
SCALE=${1:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$HERE/../target}
CEXDR=${CEXDR:-$TARGET_DIR/release/cexdr}
HOST=${MYSQL_HOST:-127.0.0.1}
PORT=${MYSQL_PORT:-3306}
USER_=${MYSQL_USER:-root}
LEVEL=${LEVEL:-3}
DB=cex_bench
RDB=cex_bench_cexdr_restore
OPTS="--protocol=tcp -h $HOST -P $PORT -u $USER_"
CLIENT=$(command -v mariadb || command -v mysql)
DUMP=$(command -v mysqldump || command -v mariadb-dump)

[ -x "$CEXDR" ] || { echo "build first: cargo build --release (looked for $CEXDR)" >&2; exit 2; }
if ! command -v mydumper >/dev/null || [ ! -x /usr/bin/time ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mydumper time >&2
fi

WORK=$(mktemp -d /var/tmp/cexdr-bench-mysql.XXXXXX)
cleanup() { "$CLIENT" $OPTS -e "DROP DATABASE IF EXISTS \`$RDB\`" || true; rm -rf "$WORK"; }
trap cleanup EXIT

if [ "${SKIP_SEED:-0}" != 1 ]; then
  echo "seeding $DB at scale $SCALE ..." >&2
  MYSQL_OPTS="$OPTS" bash "$HERE/seed-mysql.sh" "$SCALE" "$DB" >&2
fi

# run NAME CMD...: wall seconds and peak RSS (KiB) of the whole command tree.
run() {
  local name=$1; shift
  sync
  /usr/bin/time -f "%e %M" -o "$WORK/time.$name" bash -c "$*"
  read -r secs rss <"$WORK/time.$name"
  eval "T_$name=$secs; M_$name=$rss"
  printf '%-28s %8.2f s  %8d KiB peak RSS\n' "$name" "$secs" "$rss"
}
size() { du -sb "$1" | cut -f1; }

cat >"$WORK/policy.toml" <<POLICY
[store]
kind = "local"
path = "$WORK/store"

[[job]]
name = "bench"
kind = "mysql"
url = "mysql://$USER_@$HOST:$PORT"
databases = ["$DB"]
compression-level = $LEVEL
${THREADS:+threads = $THREADS}
POLICY

echo "== backup (scale $SCALE) =="
run mysqldump_gzip "$DUMP $OPTS --single-transaction --routines --triggers --events --databases $DB | gzip > $WORK/mysqldump.sql.gz"
run mydumper "mydumper -h $HOST -P $PORT -u $USER_ -B $DB -t 2 -c -o $WORK/mydumper >/dev/null"
run cexdr_backup "$CEXDR -q --policy $WORK/policy.toml backup bench >/dev/null"
ART=$(find "$WORK/store" -name 'dump.sql.gz')
ID=$("$CEXDR" --policy "$WORK/policy.toml" catalog list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
S_gzip=$(size "$WORK/mysqldump.sql.gz"); S_mydumper=$(size "$WORK/mydumper"); S_cexdr=$(size "$ART")
printf '%-28s %12d bytes\n' "mysqldump|gzip size" "$S_gzip" "mydumper -c size" "$S_mydumper" "cexdr size" "$S_cexdr"

echo "== restore =="
"$CLIENT" $OPTS -e "DROP DATABASE IF EXISTS \`$RDB\`"
# The anchor: the stock client on mysqldump's file (it recreates $DB itself).
run gunzip_mariadb "gunzip < $WORK/mysqldump.sql.gz | $CLIENT $OPTS"
run cexdr_restore "$CEXDR -q --policy $WORK/policy.toml restore $ID --to mysql://$USER_@$HOST:$PORT --database-map $DB=$RDB >/dev/null"
for t in users balances orders trades ledger; do
  a=$("$CLIENT" $OPTS -N -e "CHECKSUM TABLE \`$DB\`.$t" | cut -f2)
  b=$("$CLIENT" $OPTS -N -e "CHECKSUM TABLE \`$RDB\`.$t" | cut -f2)
  [ "$a" = "$b" ] || { echo "MISMATCH after cexdr restore: $t $a != $b" >&2; exit 1; }
done
echo "CHECKSUM TABLE of all 5 tables identical after cexdr restore"

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
check() { # check LABEL VALUE LIMIT
  local ok; ok=$(python3 -c "print('ok' if $2 <= $3 else 'MISSED')")
  printf '%-46s %6s  (target <= %s) %s\n' "$1" "$2" "$3" "$ok"
}
echo "== ratios (scale $SCALE, same run) =="
check "backup time / mysqldump|gzip" "$(ratio "$T_cexdr_backup" "$T_mysqldump_gzip")" 0.5
check "backup time / mydumper -t 2 -c" "$(ratio "$T_cexdr_backup" "$T_mydumper")" 0.8
check "artifact size / mysqldump|gzip" "$(ratio "$S_cexdr" "$S_gzip")" 1.1
check "restore time / gunzip|mariadb" "$(ratio "$T_cexdr_restore" "$T_gunzip_mariadb")" 0.6
check "backup peak RSS MiB" "$(python3 -c "print(f'{$M_cexdr_backup/1024:.1f}')")" 64
printf 'cexdr restore peak RSS: %.1f MiB\n' "$(python3 -c "print($M_cexdr_restore/1024)")"
