#!/usr/bin/env bash
# One short device call (~3 minutes): the 16-warp unrolled forms on the 256-channel layer and
# the stride-2 projection into it, batch 8 only (one Triton specialisation per build), against
# the table kernel that holds those cases. Full log and results under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=4
T="mode='table', rows_per_program=1, num_warps=1, pad_input=True"
U="mode='values', max_statements_per_function=16384, max_functions_per_kernel=8, pad_input=True"
S="Schedule($T, block_n=128, chunk=8, prefetch_tail=True); Schedule($T, block_n=32, chunk=4)"
S="$S; Schedule($U, rows_per_program=32, block_n=512, num_warps=16)"
S="$S; Schedule($U, rows_per_program=16, block_n=512, num_warps=16)"
timeout ${CONV_S:-230} python -m bench.conv_bench --dlmc .carry/dlmc --batches 8 --dtypes float32 \
    --only group3_1_1,projection_block_group3 --max-compile-s 150 --jobs 4 \
    --deadline-s $(( ${CONV_S:-230} - 10 )) --out $OUT/conv_g3.csv --schedules "$S" \
    > $OUT/conv_g3.log 2>&1
grep -E "^0.9|built|failed" $OUT/conv_g3.log | cut -c1-220
