#!/usr/bin/env bash
# Compile the generated kernels for sm_90 with triton 3.6 (the GPU machine's version) in a
# separate virtual environment: the interpreter does not catch what 3.6's compiler rejects.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SPARSERT_COMPAT_VENV:-/tmp/sparsert-triton36}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check torch==2.13.0 "triton==3.6.0" "numpy<2.4" scipy tqdm pytest hypothesis
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e .
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_compile.py tests/test_compile_regressions.py
