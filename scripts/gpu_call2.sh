#!/usr/bin/env bash
# One device call: side-by-side-rows exploration, then the GPU tests of conv / nn / ops / tune.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARNING | tail -1
timeout ${EXPLORE_S:-260} python -m bench.explore --dlmc .carry/dlmc --out $OUT/explore.csv \
    --deadline-s $(( ${EXPLORE_S:-260} - 30 )) 2>&1 | grep -E "^ +[0-9.]+ us|^==|FAILED|deadline" | tee $OUT/explore.txt
SPARSERT_TEST_DEVICE=cuda timeout ${TEST_S:-280} python -m pytest -q -x -p no:cacheprovider \
    tests/test_conv.py tests/test_nn.py tests/test_ops.py tests/test_nn_conv.py tests/test_bench.py \
    tests/test_tune.py 2>&1 | tail -${TAIL:-25} | tee $OUT/gpu_tests2.txt
