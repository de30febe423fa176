#!/usr/bin/env bash
# One device call: the sparse-convolution benchmark and the end-to-end models (results under
# $OUT). Carry .carry (the DLMC set). The suite itself: scripts/gpu_suite.sh.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
timeout ${CONV_S:-330} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1,8 --dtypes float32,float16 \
    --deadline-s $(( ${CONV_S:-330} - 40 )) --out $OUT/conv_h100.csv 2>&1 | tail -10
timeout ${E2E_S:-240} python -m bench.e2e --models bert,resnet50 --deadline-s $(( ${E2E_S:-240} - 30 )) \
    --out $OUT/e2e_h100.csv 2>&1 | tail -20
