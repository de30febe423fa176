#!/usr/bin/env bash
# Install the project (CPU torch; idempotent): what the demo needs. `bash scripts/setup.sh test`
# also installs the test extras (pytest, Hypothesis, matplotlib, the notebook runner), as
# scripts/test.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:+[$1]}"
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e ".$extras"
