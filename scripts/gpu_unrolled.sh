#!/usr/bin/env bash
# One device call (~9 minutes): the stream/launch GPU tests, then the open questions of the
# whole-group unrolled convolution kernels on one 256-channel layer (batch 8 and 1): one
# kernel against 2, 4 and 8 kernels side by side, and the launch cost of side streams.
# Results under $OUT. Carry .carry (the DLMC set and wheels).
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=16
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARN | tail -1
SPARSERT_TEST_DEVICE=cuda timeout ${TEST_S:-120} python -m pytest -q -p no:cacheprovider \
    tests/test_streams.py tests/test_direct.py 2>&1 | tail -4 | tee $OUT/gpu_tests_unrolled.txt
timeout ${LAT_S:-60} python -m bench.streams_latency --out $OUT/streams_latency.csv 2>&1 | tail -3
V="mode='values', rows_per_program=16, block_n=64, num_warps=2, max_statements_per_function=16384, pad_input=True"
S="Schedule(mode='table', chunk=8, prefetch_tail=True, pad_input=True)"
for F in 64 16 8 4; do S="$S; Schedule($V, max_functions_per_kernel=$F)"; done   # 1, 2, 4, 8 kernels
timeout ${CONV_S:-400} python -m bench.conv_bench --dlmc .carry/dlmc --only ${LAYER:-group3_1_1} \
    --batches 8,1 --dtypes float32 --max-compile-s 10000 --deadline-s $(( ${CONV_S:-400} - 20 )) \
    --out $OUT/conv_unrolled_kernels.csv --schedules "$S" 2>&1 | grep -v "^  " | tail -4
