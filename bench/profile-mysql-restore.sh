#!/usr/bin/env bash
# Where does a restore's time go? Runs one command (a restore) and reports
# client CPU (the command tree, from GNU time), server CPU (mariadbd's
# utime+stime from /proc), machine idle/iowait (/proc/stat), InnoDB counters
# (SHOW GLOBAL STATUS deltas) and samples of SHOW PROCESSLIST states and the
# InnoDB checkpoint age every second (issue 15).
#
#   bench/profile-mysql-restore.sh 'CMD …'
#
# The server is shared: other clients' work shows up in the server figures;
# the load average before and after is printed so a loaded run is visible.
set -euo pipefail
CMD=$1
OPTS="--protocol=tcp -h ${MYSQL_HOST:-127.0.0.1} -P ${MYSQL_PORT:-3306} -u ${MYSQL_USER:-root}"
q() { mariadb $OPTS -N -B -e "$1"; }
# The server behind this port (other mariadbd processes may run on the host).
PID=$(cat "$(q "SELECT @@pid_file")")
TCK=$(getconf CLK_TCK)
W=$(mktemp -d /var/tmp/cexdr-profile.XXXXXX)
SAMPLER=
trap '[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null; rm -rf "$W"' EXIT
srv_cpu() { awk -v t="$TCK" '{print ($14 + $15) / t}' "/proc/$PID/stat"; }
cpu_line() { head -1 /proc/stat; }
status() {
  q "SHOW GLOBAL STATUS WHERE Variable_name IN ('Innodb_buffer_pool_wait_free','Innodb_log_waits','Innodb_os_log_written','Innodb_data_written','Innodb_buffer_pool_pages_flushed','Innodb_data_fsyncs','Innodb_rows_inserted','Innodb_buffer_pool_read_requests','Innodb_data_reads')"
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
status >"$W/s0"; c0=$(srv_cpu); p0=$(cpu_line)
( while :; do
    q "SELECT COALESCE(STATE,'-'), COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND <> 'Sleep' AND ID <> CONNECTION_ID() GROUP BY 1" >>"$W/states" 2>/dev/null || true
    q "SHOW ENGINE INNODB STATUS" 2>/dev/null | awk '/^Log sequence number/{l=$4} /^Last checkpoint at/{c=$4} END{if (l && c) print l - c}' >>"$W/ckpt" || true
    sleep 1
  done ) &
SAMPLER=$!
rc=0; /usr/bin/time -f "%e %U %S %M" -o "$W/time" bash -c "$CMD" || rc=$?
kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=
[ "$rc" = 0 ] || { echo "the command failed (exit $rc)"; exit "$rc"; }
c1=$(srv_cpu); p1=$(cpu_line); status >"$W/s1"
read -r wall user sys rss <"$W/time"
python3 - "$wall" "$user" "$sys" "$rss" "$c0" "$c1" "$p0" "$p1" "$W" <<'PY'
import sys, collections
wall, user, sys_, rss, c0, c1 = map(float, sys.argv[1:7])
p0 = [int(x) for x in sys.argv[7].split()[1:]]
p1 = [int(x) for x in sys.argv[8].split()[1:]]
w = sys.argv[9]
d = [b - a for a, b in zip(p0, p1)]
tot = sum(d) or 1
print(f"wall {wall:.1f} s; client CPU {user + sys_:.1f} s (user {user:.1f}, sys {sys_:.1f}, peak RSS {rss/1024:.0f} MiB); "
      f"server CPU {c1 - c0:.1f} s; machine: {100*d[3]/tot:.0f} % idle, {100*d[4]/tot:.0f} % iowait, "
      f"{100*(d[0]+d[1]+d[2])/tot:.0f} % busy of {len(open('/proc/cpuinfo').read().split('processor'))-1} cores")
def st(f):
    return {l.split('\t')[0]: int(l.split('\t')[1]) for l in open(f) if '\t' in l}
s0, s1 = st(f"{w}/s0"), st(f"{w}/s1")
for k in sorted(s1):
    print(f"  {k:40s} {s1[k] - s0.get(k, 0):>16,}")
states = collections.Counter()
for l in open(f"{w}/states") if __import__('os').path.exists(f"{w}/states") else []:
    if '\t' in l:
        s, n = l.rstrip('\n').split('\t'); states[s] += int(n)
n = sum(states.values()) or 1
print("processlist states (connection-seconds sampled):", ", ".join(f"{s} {100*c/n:.0f} %" for s, c in states.most_common(6)))
ck = [int(x) for x in open(f"{w}/ckpt")] if __import__('os').path.exists(f"{w}/ckpt") else []
if ck:
    print(f"checkpoint age: max {max(ck)/2**20:.0f} MiB, mean {sum(ck)/len(ck)/2**20:.0f} MiB over {len(ck)} samples")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
