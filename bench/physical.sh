#!/usr/bin/env bash
# Physical MySQL/MariaDB backup benchmark (issue 24): cexdr's `method =
# "physical"` job against the raw tools, measured in the same run, on a
# private mariadbd started here (its own datadir from mariadb-install-db,
# binlog on with GTIDs, a free port, its own socket, 1 GiB buffer pool; a
# fresh one per scale, stopped at exit), seeded with bench/seed-mysql.sh.
#
#   bench/physical.sh [SCALE...]      # default: 1 (scale 1 is ~0.4 GB of tables)
#   bench/physical.sh 1 4             # the issue-24 targets at both scales
#
# For each scale:
#   backup   anchor: mariadb-backup --backup --stream=xbstream --parallel=P | zstd -1 > file
#            cexdr:  cexdr backup db (local store, zstd 1, read-back included)
#   restore  anchor: zstd -dc file | mbstream -x --parallel=P -C DIR;
#                    mariadb-backup --prepare --target-dir=DIR
#            cexdr:  cexdr restore ID --to-datadir DIR
#            then a mariadbd on DIR: CHECKSUM TABLE of every table = the source's
#   incremental: 1 % of the biggest table's rows (a contiguous id range)
#            updated, cexdr backup db --incremental; stored bytes / the full's;
#            restore of the incremental (full + incremental), a server on it,
#            checksums = the source's after the change; the same increment
#            taken by the raw tool (--incremental-lsn=<full's to_lsn> | zstd -1)
#            is printed beside it. After the seed the server flushes every
#            dirty page and checkpoints (FLUSH=0 skips it): an incremental
#            carries the redo since the last checkpoint, so on a server whose
#            bulk load is seconds old it would carry the whole load.
#   logical: cexdr's logical backup of the same data (second job, taken
#            before the change) restored with `cexdr restore ID --to mysql://`
#            into a fresh database on the same server; physical / logical
#            restore time (target at scale 4), checksums = the source's
# P is the number of cores, the same --parallel cexdr passes (job threads
# default to one per core).
#
# Env: CEXDR (default $CARGO_TARGET_DIR/release/cexdr or target/release/cexdr),
# RUNS (timed runs of each backup and restore, default 1: the median is used,
# min-max printed; the incremental backup runs once), KEEP=1 to keep the work
# folder (/var/tmp/cexdr-bench-physical.*), FLUSH=0 (see above).
# Prints wall time and peak RSS (GNU time: the largest process of the
# command's tree, so mariadb-backup's own when it is bigger than cexdr) of
# each, the ratios to the targets, seconds per GB of table data, the
# cross-scale ratios, a markdown table and the 2 TB projection.
set -euo pipefail
if [ $# -eq 0 ]; then set -- 1; fi
SCALES=("$@")
HERE=$(cd "$(dirname "$0")" && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$HERE/../target}
CEXDR=${CEXDR:-$TARGET_DIR/release/cexdr}
RUNS=${RUNS:-1}
PAR=$(nproc)
DB=cexb_phys
PATH=$PATH:/usr/sbin

[ -x "$CEXDR" ] || { echo "build first: cargo build --release (looked for $CEXDR)" >&2; exit 2; }
for t in mariadb-install-db mariadbd mariadb mariadb-admin mariadb-backup mbstream zstd python3; do
  command -v "$t" >/dev/null || { echo "$t not found (Debian: mariadb-server mariadb-backup zstd)" >&2; exit 2; }
done
if [ ! -x /usr/bin/time ]; then
  echo "installing time (apt-get) ..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >&2
fi

WORK=$(mktemp -d /var/tmp/cexdr-bench-physical.XXXXXX)
declare -A SPID=()
stop_server() { # NAME: clean shutdown, then wait for the process
  local n=$1 p=${SPID[$1]:-}
  [ -n "$p" ] || return 0
  mariadb-admin --no-defaults -S "$WORK/srv-$n/s.sock" -u root shutdown 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "SPID[$n]"
}
cleanup() {
  local n
  for n in "${!SPID[@]}"; do stop_server "$n"; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
py() { python3 -c "$1"; }
free_port() { py 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server NAME DATADIR INIT(1/0) BINLOG(1/0): a private mariadbd on
# DATADIR (bootstrapped first when INIT=1), socket $WORK/srv-NAME/s.sock.
start_server() {
  local n=$1 data=$2 d=$WORK/srv-$1 port bin=(--skip-log-bin)
  mkdir -p "$d"
  port=$(free_port)
  if [ "$3" = 1 ]; then
    mariadb-install-db --no-defaults --datadir="$data" --user=root --auth-root-authentication-method=normal \
      --skip-test-db --skip-name-resolve --innodb-log-file-size=256M >"$d/install.log" 2>&1 ||
      { cat "$d/install.log" >&2; exit 1; }
  fi
  [ "$4" = 1 ] && bin=(--log-bin="$data/binlog" --binlog-format=ROW --gtid-strict-mode=1 --log-slave-updates)
  mariadbd --no-defaults --datadir="$data" --user=root --bind-address=127.0.0.1 --port="$port" \
    --socket="$d/s.sock" --pid-file="$d/p.pid" --log-error="$d/err.log" --tmpdir="$d" --skip-name-resolve \
    --innodb-buffer-pool-size=1G --innodb-log-file-size=256M --server-id=$((100 + ${#SPID[@]})) "${bin[@]}" &
  SPID[$n]=$!
  for _ in $(seq 1200); do
    mariadb --no-defaults -S "$d/s.sock" -u root -e "SELECT 1" >/dev/null 2>&1 && return 0
    kill -0 "${SPID[$n]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "mariadbd $n on $data did not start:" >&2; tail -20 "$d/err.log" >&2; exit 1
}
sock() { echo "$WORK/srv-$1/s.sock"; }
qs() { local s; s=$(sock "$1"); shift; mariadb --no-defaults -S "$s" -u root -N -B "$@"; }
q() { qs src "$@"; }

# checksums NAME SCHEMA: "table<TAB>checksum" of every base table, sorted.
checksums() {
  local t list=""
  for t in $(qs "$1" -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='$2' AND TABLE_TYPE='BASE TABLE' ORDER BY 1"); do
    list="$list${list:+, }\`$2\`.\`$t\`"
  done
  [ -n "$list" ] || { echo "no tables in $2 on server $1" >&2; exit 1; }
  qs "$1" -e "CHECKSUM TABLE $list" | sed 's/^[^.]*\.//' | sort
}
# same WHAT WANT_FILE NAME SCHEMA: checksums of SCHEMA on server NAME equal WANT_FILE's.
same() {
  checksums "$3" "$4" >"$WORK/got.sum"
  if ! diff "$2" "$WORK/got.sum" >"$WORK/diff.txt"; then
    echo "MISMATCH after $1: CHECKSUM TABLE differs from the source (< source, > restored):" >&2
    cat "$WORK/diff.txt" >&2; exit 1
  fi
  echo "$1: CHECKSUM TABLE of all $(wc -l <"$2") tables identical to the source ($(tr '\n' ' ' <"$2" | tr '\t' '='))"
}

# timed NAME PREP CMD: runs PREP (untimed) then CMD, RUNS times; keeps the
# median wall seconds and the largest peak RSS (KiB) of the command tree.
timed() {
  local name=$1 prep=$2 cmd=$3 i secs rss all=() mem=0
  for i in $(seq 1 "$RUNS"); do
    bash -c "set -euo pipefail; $prep"
    sync
    /usr/bin/time -f "%e %M" -o "$WORK/time" bash -c "set -euo pipefail; $cmd" ||
      { echo "$name failed (exit $?): $cmd" >&2; exit 1; }
    read -r secs rss <"$WORK/time"
    all+=("$secs"); [ "$rss" -gt "$mem" ] && mem=$rss
  done
  local stats; stats=$(py "import statistics as s; v=[float(x) for x in '${all[*]}'.split()]; print(f'{s.median(v):.2f} {min(v):.2f} {max(v):.2f}')")
  read -r med lo hi <<<"$stats"
  eval "T_${name}_$SCALE=$med; M_${name}_$SCALE=$mem"
  printf '%-22s %8.2f s (runs %d, min %.2f max %.2f)  %8d KiB peak RSS\n' "$name" "$med" "$RUNS" "$lo" "$hi" "$mem"
}
size() { du -sb "$1" | cut -f1; }
# room NEED_GB: stop before the disk fills (a full disk stalls the server).
room() {
  local avail; avail=$(df -B1 --output=avail "$WORK" | tail -1)
  echo "disk: $(py "print(round($avail/1e9, 1))") GB free under $WORK, need $1 GB ($2)"
  py "import sys; sys.exit(0 if $avail / 1e9 >= $1 else 1)" ||
    { echo "not enough free disk under $WORK; stopping" >&2; exit 3; }
}
# Rounded up, so that a ratio printed within its target is within it.
ratio() { py "import math; print(f'{math.ceil($1/$2*1000)/1000:.3f}')"; }
RESULTS=()
check() { # check LABEL VALUE LIMIT
  local ok; ok=$(py "print('ok' if $2 <= $3 else 'MISSED by ' + format($2 / $3 - 1, '.1%'))")
  printf '%-52s %6s  (target <= %s) %s\n' "$1" "$2" "$3" "$ok"
  RESULTS+=("$(printf '%-52s %6s  (target <= %s) %s' "$1" "$2" "$3" "$ok")")
}
# Checkpoint age (bytes of redo since the last checkpoint): an incremental
# copies the redo from the last checkpoint on, whatever changed.
ckpt_age() { q -e "SHOW GLOBAL STATUS LIKE 'Innodb_checkpoint_age'" | cut -f2; }
# settle WHEN: let the server flush every dirty page and checkpoint, as a
# server whose bulk load is not minutes old has (FLUSH=0 skips it).
settle() {
  local pct io iomax i
  read -r pct io iomax <<<"$(q -e "SELECT @@innodb_max_dirty_pages_pct, @@innodb_io_capacity, @@innodb_io_capacity_max")"
  q -e "SET GLOBAL innodb_io_capacity_max = 100000; SET GLOBAL innodb_io_capacity = 50000; SET GLOBAL innodb_max_dirty_pages_pct = 0"
  for i in $(seq 1200); do
    [ "$(q -e "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'" | cut -f2)" = 0 ] && [ "$(ckpt_age)" -lt 1048576 ] && break
    sleep 0.5
  done
  q -e "SET GLOBAL innodb_max_dirty_pages_pct = $pct; SET GLOBAL innodb_io_capacity = $io; SET GLOBAL innodb_io_capacity_max = $iomax"
  echo "flushed $1 (innodb_max_dirty_pages_pct = 0 and io capacity 50000 until no dirty page, then $pct and $io/$iomax again; $((i / 2)) s): checkpoint age $(ckpt_age) bytes"
}
# Newest catalog entry of JOB: "ID STORED_BYTES".
newest() {
  "$CEXDR" --policy "$1" catalog list --json | python3 -c '
import json, sys
l = [m for m in json.load(sys.stdin) if m.get("job") == sys.argv[1]]
l.sort(key=lambda m: m["finished_at"])
print(l[-1]["id"], l[-1]["stored_bytes"])' "$2"
}

# Machine, and what bounds a projection: the disk's sequential throughput.
echo "machine: $(nproc) cores, $(py "print(round($(grep MemTotal /proc/meminfo | awk '{print $2}')/1048576))") GiB RAM, load average $(cut -d' ' -f1-3 /proc/loadavg); $(mariadbd --version | sed 's/^.*Ver //' | cut -c1-40); $(mariadb-backup --version 2>&1 | head -1 | cut -c1-60); $(zstd --version)"
echo "cexdr: $CEXDR ($("$CEXDR" --version 2>/dev/null | head -1))"
dd if=/dev/zero of="$WORK/dd" bs=1M count=2048 oflag=direct 2>"$WORK/dd.w"
dd if="$WORK/dd" of=/dev/null bs=1M iflag=direct 2>"$WORK/dd.r"
rm -f "$WORK/dd"
DISK_W=$(tail -1 "$WORK/dd.w" | sed 's/.*, //'); DISK_R=$(tail -1 "$WORK/dd.r" | sed 's/.*, //')
echo "disk under $WORK: sequential write $DISK_W, read $DISK_R (dd 2 GiB, O_DIRECT, 1 MiB blocks)"

for SCALE in "${SCALES[@]}"; do
  S=$WORK/s$SCALE
  mkdir -p "$S"
  room "$(py "print(round(3.0 * $SCALE + 2, 1))")" "scale $SCALE: datadir with binlog, two backups, one restored copy at a time"
  start_server src "$S/data" 1 1
  q -e "CREATE USER IF NOT EXISTS root@'127.0.0.1'; GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION"
  echo "seeding $DB at scale $SCALE ..." >&2
  MYSQL_OPTS="--no-defaults -S $(sock src) -u root" bash "$HERE/seed-mysql.sh" "$SCALE" "$DB" >&2
  q -e "ANALYZE TABLE \`$DB\`.users, \`$DB\`.balances, \`$DB\`.orders, \`$DB\`.trades, \`$DB\`.ledger" >/dev/null
  GB=$(q -e "SELECT ROUND(SUM(DATA_LENGTH + INDEX_LENGTH) / 1e9, 3) FROM information_schema.TABLES WHERE TABLE_SCHEMA='$DB'")
  eval "GB_$SCALE=$GB"
  DATADIR=$(q -e "SELECT @@datadir"); DATADIR=${DATADIR%/}
  DD_GB=$(py "print(round(($(size "$DATADIR") - $(cat "$DATADIR"/binlog.[0-9]* | wc -c)) / 1e9, 3))")
  echo "server: $(q -e 'SELECT CONCAT(@@version, ", buffer pool ", @@innodb_buffer_pool_size DIV 1048576, " MiB, redo log ", @@innodb_log_file_size DIV 1048576, " MiB, binlog ", @@log_bin, " ", @@binlog_format, ", gtid ", @@gtid_binlog_pos)'); datadir $DATADIR: $DD_GB GB without the binlog"
  if [ "${FLUSH:-1}" = 1 ]; then settle "after the seed"; else echo "not flushed after the seed (FLUSH=0): checkpoint age $(ckpt_age) bytes"; fi
  checksums src "$DB" >"$S/src.sum"
  URL="mysql://root@localhost/?socket=$(sock src)"
  cat >"$S/policy.toml" <<POLICY
[store]
kind = "local"
path = "$S/store"

[[job]]
name = "db"
kind = "mysql"
url = "$URL"
method = "physical"
verify-after-backup = true

[[job]]
name = "logical"
kind = "mysql"
url = "$URL"
databases = ["$DB"]
verify-after-backup = true
POLICY
  P=$S/policy.toml

  echo "== backup (scale $SCALE: $GB GB of tables, load average $(cut -d' ' -f1 /proc/loadavg)) =="
  timed anchor_backup "rm -rf $S/anchor.xb.zst $S/abk; mkdir -p $S/abk" \
    "mariadb-backup --backup --stream=xbstream --parallel=$PAR --datadir=$DATADIR --target-dir=$S/abk --user=root --socket=$(sock src) 2>$S/anchor-backup.log | zstd -1 -q > $S/anchor.xb.zst"
  timed cexdr_backup "rm -rf $S/store" "$CEXDR --policy $P backup db > $S/backup.out 2> $S/backup.err"
  read -r ID FULL_BYTES <<<"$(newest "$P" db)"
  ANCHOR_BYTES=$(size "$S/anchor.xb.zst")
  eval "B_full_$SCALE=$FULL_BYTES B_anchor_$SCALE=$ANCHOR_BYTES"
  printf '%-22s %12d bytes\n' "anchor xbstream|zstd" "$ANCHOR_BYTES" "cexdr (stored)" "$FULL_BYTES"
  sed 's/^/cexdr: /' "$S/backup.out"
  echo "cexdr: backup without the read-back $(sed -n 's/.*backup finished.* seconds=\([0-9.]*\).*/\1/p' "$S/backup.err" | tail -1) s (its log), the read-back the rest"
  TO_LSN=$("$CEXDR" --policy "$P" catalog list --json | python3 -c 'import json,sys; print([m for m in json.load(sys.stdin) if m["id"] == sys.argv[1]][0]["details"]["lsn"]["to"])' "$ID")
  # The logical copy of the same data, before anything changes (restored at the end).
  RUNS=1 timed cexdr_logical_backup "" "$CEXDR -q --policy $P backup logical > /dev/null"
  read -r LID LOGICAL_BYTES <<<"$(newest "$P" logical)"
  printf '%-22s %12d bytes\n' "cexdr logical (stored)" "$LOGICAL_BYTES"

  room "$(py "print(round(1.5 * $DD_GB + 0.5, 1))")" "one restored datadir"
  echo "== restore to a ready datadir (scale $SCALE, load average $(cut -d' ' -f1 /proc/loadavg)) =="
  timed anchor_restore "rm -rf $S/ard; mkdir -p $S/ard" \
    "zstd -dc $S/anchor.xb.zst | mbstream -x --parallel=$PAR -C $S/ard && mariadb-backup --prepare --target-dir=$S/ard > $S/anchor-prepare.log 2>&1"
  rm -rf "$S/ard"
  timed cexdr_restore "rm -rf $S/crd" "$CEXDR -q --policy $P restore $ID --to-datadir $S/crd > $S/restore.out"
  head -1 "$S/restore.out"
  start_server rst "$S/crd" 0 0
  same "physical restore (full)" "$S/src.sum" rst "$DB"
  stop_server rst
  rm -rf "$S/crd"

  echo "== incremental (scale $SCALE) =="
  BIG=$(q -e "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA='$DB' AND TABLE_TYPE='BASE TABLE' ORDER BY DATA_LENGTH + INDEX_LENGTH DESC LIMIT 1")
  case $BIG in
    orders|trades) SET="qty = qty + 1" ;;
    ledger) SET="delta = delta + 1" ;;
    users) SET="kyc_level = (kyc_level + 1) % 4" ;;
    *) echo "no update rule for the biggest table $BIG" >&2; exit 1 ;;
  esac
  read -r NROWS MINID <<<"$(q -e "SELECT COUNT(*), MIN(id) FROM \`$DB\`.\`$BIG\`")"
  CH=$((NROWS / 100)); LO=$((MINID + NROWS / 2)); HI=$((LO + CH - 1))
  CHANGED=$(q -e "UPDATE \`$DB\`.\`$BIG\` SET $SET WHERE id BETWEEN $LO AND $HI; SELECT ROW_COUNT()")
  [ "$CHANGED" = "$CH" ] || { echo "UPDATE changed $CHANGED rows, wanted $CH" >&2; exit 1; }
  echo "changed $CHANGED of $NROWS rows ($(py "print(f'{$CHANGED/$NROWS:.2%}')")) of the biggest table $DB.$BIG: id $LO..$HI (contiguous), SET $SET"
  checksums src "$DB" >"$S/inc.sum"
  echo "checkpoint age before the incremental: $(ckpt_age) bytes"
  RUNS=1 timed anchor_incremental "rm -rf $S/abk; mkdir -p $S/abk" \
    "mariadb-backup --backup --stream=xbstream --parallel=$PAR --incremental-lsn=$TO_LSN --datadir=$DATADIR --target-dir=$S/abk --user=root --socket=$(sock src) 2>$S/anchor-inc.log | zstd -1 -q > $S/anchor-inc.xb.zst"
  eval "B_anchor_inc_$SCALE=$(size "$S/anchor-inc.xb.zst")"
  printf '%-22s %12d bytes (--incremental-lsn=%s)\n' "anchor incremental" "$(size "$S/anchor-inc.xb.zst")" "$TO_LSN"
  rm -f "$S/anchor-inc.xb.zst"
  RUNS=1 timed cexdr_incremental "" "$CEXDR -q --policy $P backup db --incremental > $S/inc.out"
  read -r INC INC_BYTES <<<"$(newest "$P" db)"
  [ "$INC" != "$ID" ] || { echo "no incremental listed" >&2; exit 1; }
  eval "B_inc_$SCALE=$INC_BYTES"
  printf '%-22s %12d bytes (%s)\n' "cexdr incremental" "$INC_BYTES" "$INC"
  "$CEXDR" --policy "$P" catalog list --json | python3 -c '
import json, sys
m = [m for m in json.load(sys.stdin) if m["id"] == sys.argv[1]][0]
f = sorted(m["details"]["datadir_files"], key=lambda x: -x[1])
print("incremental files (bytes in the stream), biggest:", ", ".join(f"{p} {s}" for p, s in f[:5]))' "$INC"
  room "$(py "print(round(1.5 * $DD_GB + 0.5, 1))")" "one restored datadir"
  timed cexdr_restore_inc "rm -rf $S/ird" "$CEXDR -q --policy $P restore $INC --to-datadir $S/ird > $S/restore-inc.out"
  head -1 "$S/restore-inc.out"
  start_server rst "$S/ird" 0 0
  same "physical restore (full + incremental)" "$S/inc.sum" rst "$DB"
  stop_server rst
  rm -rf "$S/ird"

  echo "== logical restore of the same data (scale $SCALE) =="
  LDB=${DB}_logical
  room "$(py "print(round(1.5 * $GB + 0.5, 1))")" "a logical copy in the server"
  timed cexdr_logical_restore "mariadb --no-defaults -S $(sock src) -u root -e 'DROP DATABASE IF EXISTS \`$LDB\`'" \
    "$CEXDR -q --policy $P restore $LID --to 'mysql://root@localhost/?socket=$(sock src)' --database-map $DB=$LDB > /dev/null"
  same "logical restore" "$S/src.sum" src "$LDB"
  q -e "DROP DATABASE \`$LDB\`"

  v() { eval "echo \$${1}_$SCALE"; }
  echo "== ratios (scale $SCALE, same run) =="
  check "scale $SCALE backup / mariadb-backup|zstd -1" "$(ratio "$(v T_cexdr_backup)" "$(v T_anchor_backup)")" 1.15
  check "scale $SCALE restore / zstd -d|mbstream; --prepare" "$(ratio "$(v T_cexdr_restore)" "$(v T_anchor_restore)")" 1.15
  if [ "$SCALE" -ge 4 ]; then
    check "scale $SCALE physical restore / logical restore" "$(ratio "$(v T_cexdr_restore)" "$(v T_cexdr_logical_restore)")" 0.3
  else
    printf '%-52s %6s  (the <= 0.3 target is at scale 4)\n' "scale $SCALE physical restore / logical restore" "$(ratio "$(v T_cexdr_restore)" "$(v T_cexdr_logical_restore)")"
  fi
  check "scale $SCALE incremental stored bytes / full's" "$(ratio "$(v B_inc)" "$(v B_full)")" 0.10
  printf '%-52s %6s\n' "(scale $SCALE anchor incremental / anchor full file)" "$(ratio "$(v B_anchor_inc)" "$(v B_anchor)")"
  printf '%-52s %6s\n' "(scale $SCALE stored bytes, cexdr full / anchor file)" "$(ratio "$(v B_full)" "$(v B_anchor)")"
  for n in anchor_backup cexdr_backup anchor_restore cexdr_restore cexdr_restore_inc cexdr_logical_restore; do
    printf '%-22s %7.2f s/GB of tables\n' "$n" "$(py "print($(v T_$n) / $GB)")"
  done
  stop_server src
  rm -rf "$S"
done

if [ ${#SCALES[@]} -gt 1 ]; then
  a=${SCALES[0]}; b=${SCALES[-1]}
  echo "== growth (scale $a -> $b) =="
  pg() { py "import math; print(f'{math.ceil(($(eval "echo \$${1}_$b") / $(eval "echo \$GB_$b")) / ($(eval "echo \$${1}_$a") / $(eval "echo \$GB_$a")) * 1000) / 1000:.3f}')"; }
  check "backup s/GB, scale $b / scale $a" "$(pg T_cexdr_backup)" 1.15
  check "restore s/GB, scale $b / scale $a" "$(pg T_cexdr_restore)" 1.15
  printf '%-52s %6s\n' "(anchor backup s/GB, scale $b / scale $a)" "$(pg T_anchor_backup)" "(anchor restore s/GB, scale $b / scale $a)" "$(pg T_anchor_restore)"
  check "backup peak RSS, scale $b / scale $a" "$(ratio "$(eval "echo \$M_cexdr_backup_$b")" "$(eval "echo \$M_cexdr_backup_$a")")" 1.15
  check "restore peak RSS, scale $b / scale $a" "$(ratio "$(eval "echo \$M_cexdr_restore_$b")" "$(eval "echo \$M_cexdr_restore_$a")")" 1.15
fi

echo "== table (markdown) =="
printf '| scale | GB | anchor backup | cexdr backup | anchor restore | cexdr restore | incremental (bytes / full) | restore full + inc | logical restore (physical / logical) | RSS backup / restore |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n'
for SCALE in "${SCALES[@]}"; do
  v() { eval "echo \$${1}_$SCALE"; }
  printf '| %s | %s | %s s | %s s (%s×) | %s s | %s s (%s×) | %s s (%s) | %s s | %s s (%s×) | %s / %s MiB |\n' "$SCALE" "$(v GB)" \
    "$(v T_anchor_backup)" "$(v T_cexdr_backup)" "$(ratio "$(v T_cexdr_backup)" "$(v T_anchor_backup)")" \
    "$(v T_anchor_restore)" "$(v T_cexdr_restore)" "$(ratio "$(v T_cexdr_restore)" "$(v T_anchor_restore)")" \
    "$(v T_cexdr_incremental)" "$(ratio "$(v B_inc)" "$(v B_full)")" "$(v T_cexdr_restore_inc)" \
    "$(v T_cexdr_logical_restore)" "$(ratio "$(v T_cexdr_restore)" "$(v T_cexdr_logical_restore)")" \
    "$(py "print(round($(v M_cexdr_backup)/1024))")" "$(py "print(round($(v M_cexdr_restore)/1024))")"
done
SCALE=${SCALES[-1]}
v() { eval "echo \$${1}_$SCALE"; }
echo "== 2 TB projection (scale $SCALE s/GB x 2000; disk here: write $DISK_W, read $DISK_R) =="
for n in anchor_backup cexdr_backup anchor_restore cexdr_restore cexdr_logical_restore; do
  printf '%-22s %7.1f h\n' "$n" "$(py "print($(v T_$n) / $(v GB) * 2000 / 3600)")"
done
echo "== summary =="
printf '%s\n' "${RESULTS[@]}"
