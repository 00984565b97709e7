#!/usr/bin/env bash
# Alternated A/B measurement of two `amlac` binaries on one `amlac bench`
# command: round r runs OLD then NEW (even rounds NEW then OLD, so neither
# always runs first), and the medians over the rounds of `fu`, kernel time,
# kernel CPU time and `compile_ms` are printed side by side with the NEW/OLD
# ratios, and the load average before and after.
#
#   benches/ab.sh OLD NEW [--rounds R] [FILE [amlac bench args...]]
#
# OLD, NEW: paths of amlac binaries (build one per commit, e.g.
# `git worktree add /tmp/old <commit> && cargo build --release
# --manifest-path /tmp/old/Cargo.toml`). Default FILE and args:
# dsl-examples/mla_decode.amla -D B=16 -D N=4096 --launches 20. Every
# run's JSON line is kept in target/ab/runs.jsonl.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -ge 2 ] || { echo "usage: $0 OLD NEW [--rounds R] [FILE [bench args...]]" >&2; exit 2; }
old="$1"; new="$2"; shift 2
rounds=6
if [ "${1:-}" = "--rounds" ]; then rounds="$2"; shift 2; fi
if [ $# -eq 0 ]; then
  set -- "$root/dsl-examples/mla_decode.amla" -D B=16 -D N=4096 --launches 20
fi
for b in "$old" "$new"; do
  [ -x "$b" ] || { echo "$b is not an executable" >&2; exit 2; }
done
out="$root/target/ab"
mkdir -p "$out"
: > "$out/runs.jsonl"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then order=("old:$old" "new:$new"); else order=("new:$new" "old:$old"); fi
  for tb in "${order[@]}"; do
    tag="${tb%%:*}"; bin="${tb#*:}"
    json=$("$bin" bench "$@" --json)
    printf '{"round":%d,"binary":"%s","bench":%s}\n' "$r" "$tag" "$json" >> "$out/runs.jsonl"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out/runs.jsonl" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
def med(tag, f):
    return statistics.median(f(r["bench"]) for r in runs if r["binary"] == tag)
rows = [
    ("fu", lambda b: b["fu"]),
    ("kernel ms", lambda b: b["kernel_time"]["median_ms"]),
    ("kernel cpu ms", lambda b: b["kernel_cpu"]["median_ms"]),
    ("gflops", lambda b: b["gflops"]),
    ("compile ms", lambda b: b["compile_ms"]),
]
n = sum(r["binary"] == "old" for r in runs)
path = runs[0]["bench"]["peak"]["path"]
peak = statistics.median(r["bench"]["peak"]["gflops"] for r in runs)
print(f"{n} rounds, matmul path {path}, peak median {peak:.1f} GFLOP/s")
print(f"{'median':<14} {'old':>10} {'new':>10} {'new/old':>8}")
for name, f in rows:
    o, w = med("old", f), med("new", f)
    print(f"{name:<14} {o:>10.3f} {w:>10.3f} {w / o:>8.3f}")
EOF
