#!/usr/bin/env bash
# One device call (~8 minutes): are the unrolled convolution kernels limited by instruction
# fetch across row groups? Where the block scheduler places a one-wave grid (bench.sm_placement),
# then persistent grids (one or two row groups per SM, code re-run from the instruction cache)
# against the one-program-per-item kernels and the table kernel, on a 64-, 128- and 256-channel
# layer at batch 8 and 1. Builds run in parallel processes first (--jobs). Results under $OUT.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=4
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARN | tail -1
SPARSERT_TEST_DEVICE=cuda timeout ${TEST_S:-90} python -m pytest -q -p no:cacheprovider \
    tests/test_persistent.py 2>&1 | tail -2 | tee $OUT/gpu_tests_persistent.txt
timeout 60 python -m bench.sm_placement --out $OUT/sm_placement.txt 2>&1 | tail -12
U="mode='values', max_statements_per_function=16384, max_functions_per_kernel=64, pad_input=True"
R16="rows_per_program=16, block_n=64, num_warps=2"
R32="rows_per_program=32, block_n=128, num_warps=4"
S="Schedule(mode='table', chunk=8, prefetch_tail=True, pad_input=True)"
S="$S; Schedule($U, $R16)"
for P in 1 2 4; do S="$S; Schedule($U, $R16, persistent=$P)"; done
S="$S; Schedule($U, $R32, persistent=1)"
S="$S; Schedule(mode='values', $R32, max_statements_per_function=16384, max_functions_per_kernel=4, pad_input=True)"
S="$S; Schedule($U, rows_per_program=8, block_n=64, num_warps=2, persistent=4)"
timeout ${CONV_S:-480} python -m bench.conv_bench --dlmc .carry/dlmc \
    --only ${LAYERS:-group1_1_1,group2_1_1,group3_1_1} --batches 8,1 --dtypes float32 \
    --max-compile-s 10000 --jobs ${JOBS:-12} --deadline-s $(( ${CONV_S:-480} - 20 )) \
    --out $OUT/conv_persistent.csv --schedules "$S" 2>&1 | grep -v "^  built" | tail -12
