#!/usr/bin/env bash
# Config-folder backup and restore against GNU tar in the same run, on a
# tree with a sparse 1 GiB file (three 4 MiB data regions), a 1 MiB file
# with 20 hard links, and 2,000 small config files.
#
#   bench/files.sh            (builds the release binary)
#   BIN=path/to/cexdr bench/files.sh
# Anchors: `tar czf` (reads the holes as zeros), `tar czSf` (sparse aware),
# and `tar xzSf` for the restore. Printed: seconds, bytes written to the
# store / archive, bytes allocated by the restored tree, and ratios
# cexdr/anchor. Targets: backup time <= tar czSf, restore allocated bytes
# == tar's, stored bytes <= 1.1 x tar czSf.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet --bin cexdr
  BIN="${CARGO_TARGET_DIR:-target}/release/cexdr"
fi
work=$(mktemp -d /var/tmp/cexdr-bench-files.XXXXXX)
trap 'rm -rf "$work"' EXIT

src="$work/src/etc-app"
mkdir -p "$src/conf.d" "$src/links"
truncate -s 1G "$src/sparse.img"
for off in 0 400 900; do
  head -c 4M /dev/urandom | dd of="$src/sparse.img" bs=1M seek="$off" conv=notrunc status=none
done
head -c 1M /dev/urandom > "$src/links/shared.bin"
for i in $(seq 1 20); do ln "$src/links/shared.bin" "$src/links/link-$i.bin"; done
for i in $(seq 1 2000); do
  printf 'key_%d = "value %d"\nlisten = 127.0.0.1:%d\n' "$i" "$i" "$((1000 + i))" > "$src/conf.d/$i.conf"
done

cat >"$work/policy.toml" <<TOML
[store]
kind = "local"
path = "$work/repo"
[[job]]
name = "cfg"
kind = "files"
paths = ["$src"]
TOML

secs() { python3 -c "import time; print(time.monotonic())"; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }
alloc() { du -s --block-size=1 "$1" | cut -f1; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

sync
t0=$(secs); tar czf "$work/plain.tar.gz" -C / "${src#/}"; t1=$(secs)
tar_plain_s=$(elapsed "$t0" "$t1"); tar_plain_b=$(stat -c %s "$work/plain.tar.gz")
rm -f "$work/plain.tar.gz"

t0=$(secs); tar --format=pax -czSf "$work/sparse.tar.gz" -C / "${src#/}"; t1=$(secs)
tar_s=$(elapsed "$t0" "$t1"); tar_b=$(stat -c %s "$work/sparse.tar.gz")

t0=$(secs); "$BIN" --policy "$work/policy.toml" backup cfg >/dev/null 2>&1; t1=$(secs)
cx_s=$(elapsed "$t0" "$t1")
cx_b=$(find "$work/repo" -name 'files.tar.gz' -printf '%s\n')
id=$("$BIN" --policy "$work/policy.toml" --json catalog list | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')

mkdir -p "$work/tar-out"
t0=$(secs); tar xzSf "$work/sparse.tar.gz" -C "$work/tar-out"; t1=$(secs)
tarx_s=$(elapsed "$t0" "$t1"); tarx_a=$(alloc "$work/tar-out")

t0=$(secs); "$BIN" --policy "$work/policy.toml" restore "$id" --to "$work/cx-out" >/dev/null 2>&1; t1=$(secs)
cxx_s=$(elapsed "$t0" "$t1"); cxx_a=$(alloc "$work/cx-out")

diff -r "$work/tar-out" "$work/cx-out" >/dev/null || { echo "restored trees differ" >&2; exit 1; }
links=$(stat -c %h "$work/cx-out/${src#/}/links/shared.bin")

echo "tree: 1 GiB sparse file (12 MiB data), 1 MiB file x 21 links, 2000 small files; binary $BIN"
printf '%-22s %8s %14s\n' "" seconds bytes
printf '%-22s %8s %14s\n' "tar czf (no -S)" "$tar_plain_s" "$tar_plain_b"
printf '%-22s %8s %14s\n' "tar --format=pax czSf" "$tar_s" "$tar_b"
printf '%-22s %8s %14s\n' "cexdr backup" "$cx_s" "$cx_b"
printf '%-22s %8s %14s\n' "tar xzSf (allocated)" "$tarx_s" "$tarx_a"
printf '%-22s %8s %14s\n' "cexdr restore (alloc)" "$cxx_s" "$cxx_a"
echo "restored link count: $links (want 21)"
echo "ratio backup time   cexdr / tar czSf:   $(ratio "$cx_s" "$tar_s")   (/ tar czf: $(ratio "$cx_s" "$tar_plain_s"))"
echo "ratio stored bytes  cexdr / tar czSf:   $(ratio "$cx_b" "$tar_b")   (/ tar czf: $(ratio "$cx_b" "$tar_plain_b"))"
echo "ratio restore time  cexdr / tar xzSf:   $(ratio "$cxx_s" "$tarx_s")"
echo "ratio allocated     cexdr / tar xzSf:   $(ratio "$cxx_a" "$tarx_a")"
