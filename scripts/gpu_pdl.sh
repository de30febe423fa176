#!/usr/bin/env bash
# One device call (~6 minutes): GPU tests of pdl, split_k, streams and the direct launcher,
# then programmatic dependent launch on and off (the padded copy and the kernel) for the
# table kernel and the unrolled 128-channel winner on a 64-, a 128- and a 256-channel layer
# at batch 1 and 8. Results under $OUT. Carry .carry (the DLMC set and wheels).
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=4
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARN | tail -1
SPARSERT_TEST_DEVICE=cuda timeout ${TEST_S:-150} python -m pytest -q -p no:cacheprovider -rf \
    tests/test_pdl.py tests/test_split_unrolled.py tests/test_streams.py tests/test_direct.py \
    2>&1 | tail -6 | tee $OUT/gpu_tests_pdl.txt
T="mode='table', chunk=8, prefetch_tail=True, pad_input=True"
U="mode='values', rows_per_program=32, block_n=128, num_warps=4, max_statements_per_function=16384, max_functions_per_kernel=4, pad_input=True"
S="Schedule($T); Schedule($T, pdl=False); Schedule($U); Schedule($U, pdl=False)"
timeout ${CONV_S:-300} python -m bench.conv_bench --dlmc .carry/dlmc \
    --only ${LAYERS:-group1_1_1,group2_1_1,group3_1_1} --batches 1,8 --dtypes float32 \
    --max-compile-s 80 --jobs 8 --deadline-s $(( ${CONV_S:-300} - 20 )) \
    --out $OUT/conv_pdl.csv --schedules "$S" 2>&1 | grep -v "^  built" | tail -8
