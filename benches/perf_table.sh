#!/usr/bin/env bash
# The table and plot of docs/PERFORMANCE.md: MLA decode (Sq = 1) at
# B in {1,4,16,64} x N in {1024,4096,16384} x H in {128,16}, amla next to
# NumPy and JAX (benches/peers/run.sh), then benches/plot.py.
#
#   benches/perf_table.sh [--shapes B:N:H,...] [--rounds R] [--launches L]
#
# Writes benches/results/mla_decode.jsonl (one line per shape),
# benches/results/mla_decode.md (the table) and docs/perf_mla_decode.svg.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
shapes=""
for h in 128 16; do for b in 1 4 16 64; do for n in 1024 4096 16384; do
  shapes="${shapes:+$shapes,}$b:$n:$h"
done; done; done
args=(--shapes "$shapes" --rounds 3 --launches 5)
[ $# -gt 0 ] && args=("$@")
"$here/peers/run.sh" --json "${args[@]}" | tee "$here/results/mla_decode.jsonl"
python3 "$here/plot.py" "$here/results/mla_decode.jsonl" \
  --table "$here/results/mla_decode.md" --svg "$root/docs/perf_mla_decode.svg"
