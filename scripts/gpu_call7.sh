#!/usr/bin/env bash
# One device call: sparse-convolution benchmark, then the ResNet-50 torch.compile end to end.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
timeout ${CONV_S:-330} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1,8 --dtypes float32,float16 \
    --deadline-s $(( ${CONV_S:-330} - 40 )) --out $OUT/conv_h100.csv 2>&1 | tail -40
timeout 230 python -m bench.e2e --models resnet50 --modes compile --deadline-s 200 --out $OUT/e2e_rn50_compile.csv 2>&1 | tail -8
