#!/usr/bin/env bash
# The test suite on the CPU (Triton interpreter), Hypothesis profile "ci" by default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
python3 -m pytest -q -p no:cacheprovider "$@"
