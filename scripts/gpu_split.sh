#!/usr/bin/env bash
# One device call (~8 minutes): unrolled code with column slices (split_k) on the GPU: its
# tests (incl. a race test), then a 64- and two 128-channel layers at batch 8 and 1,
# split 1/2/4 against the table kernel. Builds run in parallel processes first (--jobs).
# Results under $OUT. Carry .carry (the DLMC set and wheels).
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=4
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARN | tail -1
SPARSERT_TEST_DEVICE=cuda timeout ${TEST_S:-120} python -m pytest -q -p no:cacheprovider \
    tests/test_split_unrolled.py tests/test_conv_bench.py 2>&1 | grep -E "passed|failed|Error|assert" \
    | tail -8 | tee $OUT/gpu_tests_split.txt
U="mode='values', max_statements_per_function=16384, pad_input=True"
R16="rows_per_program=16, block_n=64, num_warps=2, max_functions_per_kernel=64"
R32="rows_per_program=32, block_n=128, num_warps=4"
S="Schedule(mode='table', chunk=8, prefetch_tail=True, pad_input=True)"
for K in 1 2 4; do S="$S; Schedule($U, $R16, split_k=$K)"; done
S="$S; Schedule($U, $R32, max_functions_per_kernel=4); Schedule($U, $R32, max_functions_per_kernel=64, split_k=2)"
S="$S; Schedule($U, rows_per_program=32, block_n=32, num_warps=1, split_k=4)"
timeout ${CONV_S:-420} python -m bench.conv_bench --dlmc .carry/dlmc \
    --only ${LAYERS:-group1_1_1,group2_1_1,projection_block_group2} --batches 8,1 --dtypes float32 \
    --max-compile-s ${MAX_COMPILE_S:-80} --jobs ${JOBS:-14} --deadline-s $(( ${CONV_S:-420} - 20 )) \
    --out $OUT/conv_split.csv --schedules "$S" 2>&1 | grep -v "^  built" | tail -12
