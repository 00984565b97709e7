#!/usr/bin/env bash
# MLA decode (H heads, Sq = 1) in amla, NumPy (OpenBLAS f32 matmuls) and JAX
# (CPU jit: bf16 inputs with f32 accumulation, and f32), measured in one run
# with the runs alternated, GFLOP/s side by side and as ratios.
#
#   benches/peers/run.sh [--shapes B:N:H,...] [--rounds R]
#
# Installs NumPy, JAX (CPU) and threadpoolctl from PyPI into
# benches/peers/.venv (git-ignored) on first use, and builds amlac (release).
# Default shape: B=16, N=4096, H=128. See docs/PERFORMANCE.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import numpy, jax, threadpoolctl" 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$here/requirements.txt"
fi
(cd "$root" && cargo build --release --quiet -p amla-compiler)
exec "$venv/bin/python" "$here/peers.py" --amlac "$root/target/release/amlac" \
  --kernel "$root/dsl-examples/mla_decode.amla" "$@"
