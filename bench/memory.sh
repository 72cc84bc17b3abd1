#!/usr/bin/env bash
# Memory stays flat: peak RSS of `cexdr backup` for a 10 MB and a 1 GB
# generated file (same run, same binary, local store, gzip). Prints both and
# the ratio; the target is within 20 % (ratio <= 1.20).
#
#   bench/memory.sh [BIG_MB]      (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
BIG_MB=${1:-1024}
if [ -z "${BIN:-}" ]; then   # BIN=path/to/cexdr measures an existing build
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-target}/release/cexdr"
fi
work=$(mktemp -d /var/tmp/cexdr-bench-mem.XXXXXX)
trap 'rm -rf "$work"' EXIT

gen() { # gen DIR MB: base64 text of random bytes (compresses to ~75 %)
  mkdir -p "$1"
  head -c $(( $2 * 1024 * 1024 * 3 / 4 )) /dev/urandom | base64 -w 120 >"$1/data.txt"
}
gen "$work/small" 10
gen "$work/big" "$BIG_MB"

for size in small big; do
  cat >"$work/$size.toml" <<TOML
[store]
kind = "local"
path = "$work/repo-$size"
[[job]]
name = "$size"
kind = "files"
paths = ["$work/$size"]
TOML
done

# Peak RSS of a child, measured by the kernel (ru_maxrss of the waited child).
peak() {
  python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
dt = time.monotonic() - t
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, f"{dt:.2f}")
PY
}
read -r small_kb small_s < <(peak "$BIN" --policy "$work/small.toml" backup small)
read -r big_kb big_s < <(peak "$BIN" --policy "$work/big.toml" backup big)
small_bytes=$(stat -c %s "$work/small/data.txt")
big_bytes=$(stat -c %s "$work/big/data.txt")
echo "input       small $((small_bytes / 1048576)) MiB     big $((big_bytes / 1048576)) MiB"
echo "peak RSS    small $((small_kb / 1024)) MiB (${small_kb} KiB)   big $((big_kb / 1024)) MiB (${big_kb} KiB)"
echo "wall time   small ${small_s} s   big ${big_s} s   ($(python3 -c "print(f'{$big_bytes/1048576/$big_s:.0f}')") MiB/s on the big one)"
python3 -c "r=$big_kb/$small_kb; print(f'ratio big/small peak RSS: {r:.3f} (target <= 1.20): ' + ('OK' if r <= 1.2 else 'MISSED'))"
