#!/usr/bin/env bash
# The main demo: a real DLMC matrix -> generated Triton kernel -> checked against torch
# (timed against dense cuBLAS when a CUDA GPU is present).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m sparsert_triton.demo "$@"
