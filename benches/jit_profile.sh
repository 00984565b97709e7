#!/usr/bin/env bash
# Instruction-level perf profile of one JIT-compiled function of a kernel.
#
#   benches/jit_profile.sh [--amlac PATH] [--function NAME] [--seconds S] FILE [amlac bench args...]
#
# Runs `amlac bench FILE ... --launches 1000` in the background, records it with
# `perf record` for S seconds (default 6) after a 3-second warm-up, copies the
# function's machine code out of the running process (/proc/PID/mem, at the
# address cranelift-jit writes to /tmp/perf-PID.map when PERF_BUILDID_DIR is
# set), disassembles it with objdump and prints the hottest loops (a backward
# branch and what it spans) with their share of the function's samples;
# the per-instruction listing is left in target/jit-profile/annotated.txt.
# Default function: <kernel>_vector. Needs perf (Debian: linux-perf) and objdump.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
amlac="$root/target/release/amlac"
func=""
secs=6
while [ $# -gt 0 ]; do
  case "$1" in
    --amlac) amlac="$2"; shift 2 ;;
    --function) func="$2"; shift 2 ;;
    --seconds) secs="$2"; shift 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: $0 [--amlac PATH] [--function NAME] [--seconds S] FILE [bench args...]" >&2; exit 2; }
file="$1"; shift
out="$root/target/jit-profile"
mkdir -p "$out"
if [ -z "$func" ]; then
  kname=$(grep -m1 -o 'kernel [A-Za-z_][A-Za-z0-9_]*' "$file" | cut -d' ' -f2)
  func="${kname}_vector"
fi
export PERF_BUILDID_DIR="$out/buildid"
"$amlac" bench "$file" "$@" --launches 1000 --compile-repeats 1 --peak-ms 1 > /dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 3
perf record -q -F 4999 -p "$pid" -o "$out/perf.data" -- sleep "$secs" > /dev/null 2>&1
line=$(grep " $func\$" "/tmp/perf-$pid.map" | tail -1) || { echo "no function $func in /tmp/perf-$pid.map" >&2; exit 1; }
python3 "$root/benches/jit_profile.py" dump "$pid" $line "$out"
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
trap - EXIT
perf script -i "$out/perf.data" -F ip 2> /dev/null > "$out/ips.txt"
objdump -D -b binary -m i386:x86-64 --adjust-vma="$(cat "$out/addr.txt")" "$out/code.bin" > "$out/disasm.txt"
python3 "$root/benches/jit_profile.py" report "$out" "$func"
