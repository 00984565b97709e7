#!/usr/bin/env bash
# Creates tests/python/.venv with the Python packages the tensor-file
# interop check uses (numpy, ml_dtypes, safetensors). Idempotent.
#   bash tests/python/setup-venv.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
"$venv/bin/python" -c "import numpy, ml_dtypes, safetensors; print('numpy', numpy.__version__, 'ml_dtypes', ml_dtypes.__version__, 'safetensors', safetensors.__version__)"
