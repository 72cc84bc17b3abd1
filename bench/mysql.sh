#!/usr/bin/env bash
# MySQL backup/restore benchmark (issues 3 and 15): cexdr against
# mysqldump|gzip, mydumper/myloader and the stock client, side by side on the
# same server, in one run, at one or more scales.
#
#   bench/mysql.sh [SCALE...]        # default: 1 (scale 1 is ~0.4 GB of tables)
#   bench/mysql.sh 1 4               # the issue-15 targets at both scales
#
# Env: CEXDR (default $CARGO_TARGET_DIR/release/cexdr or target/release/cexdr),
# MYSQL_HOST (127.0.0.1), MYSQL_PORT (3306), MYSQL_USER (root, no password),
# DB_PREFIX (cexb_mysql: databases ${DB_PREFIX}_s${SCALE}[_stock|_myloader|_cexdr]),
# SKIP_SEED=1 to reuse an existing source database of the same scale,
# KEEP=1 to keep the restored databases, RUNS (timed runs of each command,
# default 1: the median is used, min-max printed), COMPRESSION and LEVEL
# (cexdr's compression and level; default: the job's default, zstd 1), THREADS (dump connections; default: one per core),
# RESTORE_THREADS (cexdr restore --threads; default: one per core).
# Prints wall time, peak RSS and size of each, the ratios to the targets,
# seconds per GB of table data, and the cross-scale ratios.
set -euo pipefail
if [ $# -eq 0 ]; then set -- 1; fi
SCALES=("$@")
HERE=$(cd "$(dirname "$0")" && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$HERE/../target}
CEXDR=${CEXDR:-$TARGET_DIR/release/cexdr}
HOST=${MYSQL_HOST:-127.0.0.1}
PORT=${MYSQL_PORT:-3306}
USER_=${MYSQL_USER:-root}
RUNS=${RUNS:-1}
PREFIX=${DB_PREFIX:-cexb_mysql}
OPTS="--protocol=tcp -h $HOST -P $PORT -u $USER_"
CLIENT=$(command -v mariadb || command -v mysql)
DUMP=$(command -v mariadb-dump || command -v mysqldump)

[ -x "$CEXDR" ] || { echo "build first: cargo build --release (looked for $CEXDR)" >&2; exit 2; }
# The anchors: mydumper/myloader and GNU time come from Debian.
if ! command -v mydumper >/dev/null || ! command -v myloader >/dev/null || [ ! -x /usr/bin/time ]; then
  echo "installing mydumper and time (apt-get) ..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mydumper time >&2
fi

WORK=$(mktemp -d /var/tmp/cexdr-bench-mysql.XXXXXX)
q() { "$CLIENT" $OPTS -N -B "$@"; }
drop() { for d in "$@"; do q -e "DROP DATABASE IF EXISTS \`$d\`"; done; }
RESTORED=()
cleanup() {
  if [ "${KEEP:-0}" != 1 ] && [ ${#RESTORED[@]} -gt 0 ]; then drop "${RESTORED[@]}" || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
py() { python3 -c "$1"; }

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $("$CLIENT" --version | head -c 80)" >&2
echo "server: $(q -e 'SELECT CONCAT(@@version, ", buffer pool ", @@innodb_buffer_pool_size DIV 1048576, " MiB, redo log ", @@innodb_log_file_size DIV 1048576, " MiB")')" >&2

# timed NAME PREP CMD: runs PREP (untimed) then CMD, RUNS times; keeps the
# median wall seconds and the largest peak RSS (KiB) of the command tree.
timed() {
  local name=$1 prep=$2 cmd=$3 i secs rss all=() mem=0
  for i in $(seq 1 "$RUNS"); do
    bash -c "$prep"
    sync
    /usr/bin/time -f "%e %M" -o "$WORK/time" bash -c "$cmd"
    read -r secs rss <"$WORK/time"
    all+=("$secs"); [ "$rss" -gt "$mem" ] && mem=$rss
  done
  local stats; stats=$(py "import statistics as s; v=[float(x) for x in '${all[*]}'.split()]; print(f'{s.median(v):.2f} {min(v):.2f} {max(v):.2f}')")
  read -r med lo hi <<<"$stats"
  eval "T_${name}_$SCALE=$med; M_${name}_$SCALE=$mem"
  printf '%-18s %8.2f s (runs %d, min %.2f max %.2f)  %8d KiB peak RSS\n' "$name" "$med" "$RUNS" "$lo" "$hi" "$mem"
}
size() { du -sb "$1" | cut -f1; }
# room NEED_GB: the disk is shared with the server's datadir and other
# builds; stop before a restore would fill it (a full disk stalls the server).
room() {
  local dirs=("$WORK") d avail
  d=$(q -e 'SELECT @@datadir'); [ -d "$d" ] && dirs+=("$d")
  for d in "${dirs[@]}"; do
    avail=$(df -B1 --output=avail "$d" | tail -1)
    if py "import sys; sys.exit(0 if $avail / 1e9 >= $1 else 1)"; then :; else
      echo "not enough free disk under $d: $(py "print(round($avail/1e9, 1))") GB free, need $1 GB; stopping" >&2; exit 3
    fi
  done
}
# Rounded up, so that a ratio printed within its target is within it.
ratio() { py "import math; print(f'{math.ceil($1/$2*1000)/1000:.3f}')"; }
RESULTS=()
check() { # check LABEL VALUE LIMIT
  local ok; ok=$(py "print('ok' if $2 <= $3 else 'MISSED')")
  printf '%-52s %6s  (target <= %s) %s\n' "$1" "$2" "$3" "$ok"
  RESULTS+=("$(printf '%-52s %6s  (target <= %s) %s' "$1" "$2" "$3" "$ok")")
}

# exact NAME SRC COPY: CHECKSUM TABLE, SHOW CREATE TABLE and every view,
# routine and trigger definition of COPY equal to SRC's.
exact() {
  local src=$2 dst=$3 t a b
  for t in $(q -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='$src' AND TABLE_TYPE='BASE TABLE' ORDER BY 1"); do
    a=$(q -e "CHECKSUM TABLE \`$src\`.\`$t\`" | cut -f2)
    b=$(q -e "CHECKSUM TABLE \`$dst\`.\`$t\`" | cut -f2)
    [ "$a" = "$b" ] || { echo "MISMATCH after $1: CHECKSUM TABLE $t $a != $b" >&2; exit 1; }
    a=$(q -e "SHOW CREATE TABLE \`$src\`.\`$t\`" | cut -f2-)
    b=$(q -e "SHOW CREATE TABLE \`$dst\`.\`$t\`" | cut -f2-)
    [ "$a" = "$b" ] || { printf 'MISMATCH after %s: SHOW CREATE TABLE %s\n%s\n%s\n' "$1" "$t" "$a" "$b" >&2; exit 1; }
  done
  local objs="SELECT 'v', TABLE_NAME, VIEW_DEFINITION, CHARACTER_SET_CLIENT, COLLATION_CONNECTION FROM information_schema.VIEWS WHERE TABLE_SCHEMA='%s'
    UNION ALL SELECT ROUTINE_TYPE, ROUTINE_NAME, ROUTINE_DEFINITION, CHARACTER_SET_CLIENT, SQL_MODE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA='%s'
    UNION ALL SELECT 't', TRIGGER_NAME, ACTION_STATEMENT, CHARACTER_SET_CLIENT, SQL_MODE FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA='%s' ORDER BY 1, 2"
  # A view's definition names its database: compare with the name replaced.
  a=$(q -e "$(printf "$objs" "$src" "$src" "$src")" | sed "s/\`$src\`/\`DB\`/g")
  b=$(q -e "$(printf "$objs" "$dst" "$dst" "$dst")" | sed "s/\`$dst\`/\`DB\`/g")
  [ "$a" = "$b" ] || { printf 'MISMATCH after %s: object definitions\n%s\n%s\n' "$1" "$a" "$b" >&2; exit 1; }
  echo "$1: CHECKSUM TABLE, SHOW CREATE TABLE and object definitions identical to the source"
}

for SCALE in "${SCALES[@]}"; do
  DB=${PREFIX}_s$SCALE
  STOCK=${DB}_stock; LOADER=${DB}_myloader; RDB=${DB}_cexdr
  RESTORED+=("$STOCK" "$LOADER" "$RDB")
  if [ "${SKIP_SEED:-0}" != 1 ] || [ -z "$(q -e "SHOW DATABASES LIKE '$DB'")" ]; then
    echo "seeding $DB at scale $SCALE ..." >&2
    MYSQL_OPTS="$OPTS" bash "$HERE/seed-mysql.sh" "$SCALE" "$DB" >&2
  fi
  q -e "ANALYZE TABLE \`$DB\`.users, \`$DB\`.balances, \`$DB\`.orders, \`$DB\`.trades, \`$DB\`.ledger" >/dev/null
  GB=$(q -e "SELECT ROUND(SUM(DATA_LENGTH + INDEX_LENGTH) / 1e9, 3) FROM information_schema.TABLES WHERE TABLE_SCHEMA='$DB'")
  eval "GB_$SCALE=$GB"
  mkdir -p "$WORK/$SCALE"
  W=$WORK/$SCALE
  cat >"$W/policy.toml" <<POLICY
[store]
kind = "local"
path = "$W/store"

[[job]]
name = "bench"
kind = "mysql"
url = "mysql://$USER_@$HOST:$PORT"
databases = ["$DB"]
${COMPRESSION:+compression = \"$COMPRESSION\"}
${LEVEL:+compression-level = $LEVEL}
${THREADS:+threads = $THREADS}
POLICY

  room "$(py "print(round(0.5 * $GB + 0.3, 1))")"
  echo "== backup (scale $SCALE: $GB GB of tables, load average $(cut -d' ' -f1 /proc/loadavg)) =="
  timed mysqldump_gzip "rm -f $W/mysqldump.sql.gz" "$DUMP $OPTS --single-transaction --routines --triggers --events $DB | gzip > $W/mysqldump.sql.gz"
  timed mydumper "rm -rf $W/mydumper" "mydumper -h $HOST -P $PORT -u $USER_ -B $DB -t 2 -c -o $W/mydumper >/dev/null"
  timed cexdr_backup "rm -rf $W/store" "$CEXDR -q --policy $W/policy.toml backup bench >/dev/null"
  ART=$(find "$W/store" -name 'dump.sql.*')
  ID=$("$CEXDR" --policy "$W/policy.toml" catalog list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
  eval "S_gzip_$SCALE=$(size "$W/mysqldump.sql.gz") S_mydumper_$SCALE=$(size "$W/mydumper") S_cexdr_$SCALE=$(size "$ART")"
  printf '%-18s %12d bytes\n' "mysqldump|gzip" "$(size "$W/mysqldump.sql.gz")" "mydumper -c" "$(size "$W/mydumper")" "cexdr" "$(size "$ART")"

  room "$(py "print(round(1.1 * $GB + 0.3, 1))")"
  echo "== restore (scale $SCALE, load average $(cut -d' ' -f1 /proc/loadavg)) =="
  timed gunzip_mariadb "$CLIENT $OPTS -e 'DROP DATABASE IF EXISTS \`$STOCK\`; CREATE DATABASE \`$STOCK\` CHARACTER SET utf8mb4'" \
    "gunzip < $W/mysqldump.sql.gz | $CLIENT $OPTS $STOCK"
  drop "$STOCK"
  timed myloader "$CLIENT $OPTS -e 'DROP DATABASE IF EXISTS \`$LOADER\`'" \
    "myloader -h $HOST -P $PORT -u $USER_ -d $W/mydumper -B $LOADER -t 2 -o"
  drop "$LOADER"
  timed cexdr_restore "$CLIENT $OPTS -e 'DROP DATABASE IF EXISTS \`$RDB\`'" \
    "$CEXDR -q --policy $W/policy.toml restore $ID --to mysql://$USER_@$HOST:$PORT --database-map $DB=$RDB ${RESTORE_THREADS:+--threads $RESTORE_THREADS} >/dev/null"
  exact "cexdr restore" "$DB" "$RDB"
  [ "${KEEP:-0}" = 1 ] || drop "$RDB"

  v() { eval "echo \$${1}_$SCALE"; }
  echo "== ratios (scale $SCALE, same run) =="
  check "scale $SCALE backup / mysqldump|gzip" "$(ratio "$(v T_cexdr_backup)" "$(v T_mysqldump_gzip)")" 0.5
  check "scale $SCALE backup / mydumper -t 2 -c" "$(ratio "$(v T_cexdr_backup)" "$(v T_mydumper)")" 0.8
  check "scale $SCALE artifact size / mysqldump|gzip" "$(ratio "$(v S_cexdr)" "$(v S_gzip)")" 1.1
  check "scale $SCALE restore / gunzip|mariadb" "$(ratio "$(v T_cexdr_restore)" "$(v T_gunzip_mariadb)")" 0.5
  check "scale $SCALE restore / myloader -t 2" "$(ratio "$(v T_cexdr_restore)" "$(v T_myloader)")" 0.6
  for n in mysqldump_gzip mydumper cexdr_backup gunzip_mariadb myloader cexdr_restore; do
    printf '%-18s %7.2f s/GB\n' "$n" "$(py "print($(v T_$n) / $GB)")"
  done
done

if [ ${#SCALES[@]} -gt 1 ]; then
  a=${SCALES[0]}; b=${SCALES[-1]}
  echo "== growth (scale $a -> $b) =="
  pg() { py "import math; print(f'{math.ceil(($(eval "echo \$${1}_$b") / $(eval "echo \$GB_$b")) / ($(eval "echo \$${1}_$a") / $(eval "echo \$GB_$a")) * 1000) / 1000:.3f}')"; }
  check "restore s/GB, scale $b / scale $a" "$(pg T_cexdr_restore)" 1.15
  check "backup s/GB, scale $b / scale $a" "$(pg T_cexdr_backup)" 1.15
  printf '%-52s %6s\n' "(gunzip|mariadb s/GB, scale $b / scale $a)" "$(pg T_gunzip_mariadb)" "(myloader s/GB, scale $b / scale $a)" "$(pg T_myloader)"
  check "backup peak RSS, scale $b / scale $a" "$(ratio "$(eval "echo \$M_cexdr_backup_$b")" "$(eval "echo \$M_cexdr_backup_$a")")" 1.2
  check "restore peak RSS, scale $b / scale $a" "$(ratio "$(eval "echo \$M_cexdr_restore_$b")" "$(eval "echo \$M_cexdr_restore_$a")")" 1.2
fi

echo "== table (markdown) =="
printf '| scale | GB | mysqldump\\|gzip | mydumper -t 2 -c | cexdr backup | gunzip\\|mariadb | myloader -t 2 | cexdr restore | RSS backup / restore |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
for SCALE in "${SCALES[@]}"; do
  v() { eval "echo \$${1}_$SCALE"; }
  printf '| %s | %s | %s s | %s s | %s s (%s× / %s×) | %s s | %s s | %s s (%s× / %s×) | %s / %s MiB |\n' "$SCALE" "$(v GB)" \
    "$(v T_mysqldump_gzip)" "$(v T_mydumper)" "$(v T_cexdr_backup)" \
    "$(ratio "$(v T_cexdr_backup)" "$(v T_mysqldump_gzip)")" "$(ratio "$(v T_cexdr_backup)" "$(v T_mydumper)")" \
    "$(v T_gunzip_mariadb)" "$(v T_myloader)" "$(v T_cexdr_restore)" \
    "$(ratio "$(v T_cexdr_restore)" "$(v T_gunzip_mariadb)")" "$(ratio "$(v T_cexdr_restore)" "$(v T_myloader)")" \
    "$(py "print(round($(v M_cexdr_backup)/1024))")" "$(py "print(round($(v M_cexdr_restore)/1024))")"
done
echo "== summary =="
printf '%s\n' "${RESULTS[@]}"
