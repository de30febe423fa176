#!/usr/bin/env bash
# Install the project and its test dependencies (CPU torch; idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e ".[test]"
