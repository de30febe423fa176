#!/usr/bin/env bash
# One device call: direct-launch tests and latency, prefetch exploration.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARNING | tail -1
SPARSERT_TEST_DEVICE=cuda timeout 200 python -m pytest -q -p no:cacheprovider tests/test_direct.py \
    tests/test_golden.py tests/test_inputs.py -m "gpu or not gpu" 2>&1 | tail -4 | tee $OUT/gpu_tests_direct.txt
timeout 60 python -m bench.eager_latency --dlmc .carry/dlmc 2>&1 | tail -8 | tee $OUT/eager_latency.txt
timeout ${EXPLORE_S:-200} python -m bench.explore --dlmc .carry/dlmc --out $OUT/explore.csv \
    --deadline-s $(( ${EXPLORE_S:-200} - 25 )) 2>&1 | grep -E "^ +[0-9.]+ us|^==|FAILED|deadline" | tee $OUT/explore.txt
HYPOTHESIS_PROFILE=ci SPARSERT_TEST_DEVICE=cuda timeout 120 python -m pytest -q -p no:cacheprovider tests/test_property.py 2>&1 | tail -2 | tee -a $OUT/gpu_tests_direct.txt
