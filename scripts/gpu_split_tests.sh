#!/usr/bin/env bash
# One device call (~6 minutes): the GPU tests of the column slices (split_k), of the streams
# and of the direct launcher, then bench.explore's run 7 (split_k where few row groups and
# column tiles leave SMs idle). Results under $OUT. Carry .carry (the DLMC set and wheels).
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=16
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARN | tail -1
SPARSERT_TEST_DEVICE=cuda timeout ${TEST_S:-150} python -m pytest -q -p no:cacheprovider -rf \
    tests/test_split_unrolled.py tests/test_conv_bench.py tests/test_streams.py tests/test_direct.py \
    2>&1 | tail -6 | tee $OUT/gpu_tests_split.txt
timeout ${EXPLORE_S:-200} python -m bench.explore --dlmc .carry/dlmc --out $OUT/explore_run7_split.csv \
    --deadline-s $(( ${EXPLORE_S:-200} - 30 )) 2>&1 | tail -20
