#!/usr/bin/env bash
# One device call: table-kernel exploration, the conv module tests, the conv benchmark.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARNING | tail -1
timeout ${EXPLORE_S:-150} python -m bench.explore --dlmc .carry/dlmc --out $OUT/explore.csv \
    --deadline-s $(( ${EXPLORE_S:-150} - 25 )) 2>&1 | grep -E "^ +[0-9.]+ us|^==|FAILED|deadline" | tee $OUT/explore.txt
HYPOTHESIS_PROFILE=ci SPARSERT_TEST_DEVICE=cuda timeout 120 python -m pytest -q -x -p no:cacheprovider \
    tests/test_nn.py tests/test_nn_conv.py 2>&1 | grep -E "Error|error|passed|failed" | head -30 > $OUT/gpu_tests_nn.txt
timeout ${CONV_S:-300} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1,8 --dtypes float32,float16 \
    --deadline-s $(( ${CONV_S:-300} - 40 )) --out $OUT/conv_h100.csv 2>&1 | tail -8
head -c 3000 $OUT/gpu_tests_nn.txt
