#!/usr/bin/env bash
# One device call: the GPU test suite (results under $OUT). Carry .carry (hypothesis wheels).
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARNING | tail -1
SPARSERT_TEST_DEVICE=cuda timeout 300 python -m pytest -q -p no:cacheprovider tests/test_property.py \
    tests/test_inputs.py tests/test_golden.py tests/test_conv.py tests/test_direct.py 2>&1 | tail -6 | tee $OUT/gpu_tests.txt
SPARSERT_TEST_DEVICE=cuda timeout 120 python -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -4 | tee -a $OUT/gpu_tests.txt
