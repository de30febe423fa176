#!/usr/bin/env bash
# One device call: GPU tests (modules, ops, conv, tuner), ncu counters of the main kernels,
# then the sparse-convolution benchmark (results under $OUT).
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARNING | tail -1
HYPOTHESIS_PROFILE=ci SPARSERT_TEST_DEVICE=cuda timeout ${TEST_S:-200} python -m pytest -q -p no:cacheprovider \
    tests/test_nn.py tests/test_nn_conv.py tests/test_conv.py 2>&1 | tail -${TAIL:-20} | tee $OUT/gpu_tests_modules.txt
SPARSERT_TEST_DEVICE=cuda timeout 100 python -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_ops.py tests/test_bench.py tests/test_tune.py 2>&1 | tail -8 | tee $OUT/gpu_tests_marked.txt
timeout 90 ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section Occupancy --section WarpStateStats --section LaunchStats -k regex:sparse \
    python -m bench.profile_kernels --dlmc .carry/dlmc > $OUT/ncu.txt 2>&1; tail -3 $OUT/ncu.txt
timeout ${CONV_S:-300} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1,8 --dtypes float32,float16 \
    --deadline-s $(( ${CONV_S:-300} - 40 )) --out $OUT/conv_h100.csv 2>&1 | tail -15
