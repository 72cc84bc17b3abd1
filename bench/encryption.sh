#!/usr/bin/env bash
# The throughput cost of client-side age encryption: the same generated
# config folder backed up (local store, gzip) without and with encryption,
# in one run, same binary. Prints both times and the ratio.
#
#   bench/encryption.sh [MB]      (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-300}
if [ -z "${BIN:-}" ]; then   # BIN=path/to/cexdr measures an existing build
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-target}/release/cexdr"
fi
command -v age-keygen >/dev/null || { echo "needs age-keygen (apt-get install age)" >&2; exit 1; }
work=$(mktemp -d /var/tmp/cexdr-bench-enc.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
head -c $(( MB * 1024 * 1024 * 3 / 4 )) /dev/urandom | base64 -w 120 >"$work/src/data.txt"
age-keygen -o "$work/key" 2>/dev/null
pub=$(grep -o 'age1[0-9a-z]*' "$work/key")
for mode in plain encrypted; do
  enc=""
  [ $mode = encrypted ] && enc="encryption = { recipients = [\"$pub\"] }"
  cat >"$work/$mode.toml" <<TOML
[store]
kind = "local"
path = "$work/repo-$mode"
$enc
[[job]]
name = "$mode"
kind = "files"
paths = ["$work/src"]
TOML
done
run() { # run MODE -> "seconds maxrss_kb"
  python3 - "$BIN" --policy "$work/$1.toml" -q backup "$1" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(f"{time.monotonic() - t:.2f}", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
}
# Alternate, best of 3 each, so both see the same machine state.
best_p=999999; best_e=999999
for _ in 1 2 3; do
  read -r tp rp < <(run plain); read -r te re < <(run encrypted)
  best_p=$(python3 -c "print(min($best_p, $tp))"); best_e=$(python3 -c "print(min($best_e, $te))")
done
bytes=$(stat -c %s "$work/src/data.txt")
echo "input $((bytes / 1048576)) MiB, best of 3"
echo "plain      ${best_p} s  ($(python3 -c "print(f'{$bytes/1048576/$best_p:.0f}')") MiB/s)  peak RSS $((rp / 1024)) MiB"
echo "encrypted  ${best_e} s  ($(python3 -c "print(f'{$bytes/1048576/$best_e:.0f}')") MiB/s)  peak RSS $((re / 1024)) MiB"
python3 -c "print(f'encryption cost: {$best_e/$best_p:.2f}x the plain backup time')"
