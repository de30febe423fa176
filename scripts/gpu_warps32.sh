#!/usr/bin/env bash
# One device call (~6 minutes): on one 64- and one 128-channel layer at batch 8 and 1, the
# padded table kernel against its tap-mask form (no copy), the 16-warp unrolled form on the
# padded copy against its tap-pointer form, 32 warps x 1024 columns (16- and 32-row groups:
# ncu found the 16-warp form waiting on instruction fetch most, and every warp of an SM
# sub-partition running the same code shares its fetches), and a column loop (each program
# runs its group's code on two tiles: is the second pass, from a warm instruction cache,
# faster?). Full log and results under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=2
T="mode='table', rows_per_program=1, num_warps=1"
U="mode='values', max_statements_per_function=16384, max_functions_per_kernel=8"
S="Schedule($T, pad_input=True, block_n=64, chunk=8, prefetch_tail=True)"
S="$S; Schedule($T, pad_input=True, block_n=32, chunk=4)"
S="$S; Schedule($T, tap_masks=True, block_n=64, chunk=8, prefetch_tail=True)"
S="$S; Schedule($U, rows_per_program=32, block_n=512, num_warps=16, pad_input=True)"
S="$S; Schedule($U, rows_per_program=32, block_n=512, num_warps=16, tap_pointers=True)"
S="$S; Schedule($U, rows_per_program=32, block_n=1024, num_warps=32, pad_input=True)"
S="$S; Schedule($U, rows_per_program=16, block_n=1024, num_warps=32, pad_input=True)"
S="$S; Schedule($U, rows_per_program=32, block_n=1024, num_warps=32, tap_pointers=True)"
S="$S; Schedule($U, rows_per_program=32, block_n=512, num_warps=16, pad_input=True, column_programs=7)"
timeout ${CONV_S:-480} python -m bench.conv_bench --dlmc .carry/dlmc --batches 8,1 \
    --dtypes float32 --only ${LAYERS:-group1_1_1,group2_1_1} --max-compile-s 80 --jobs ${JOBS:-8} \
    --deadline-s $(( ${CONV_S:-480} - 15 )) --out $OUT/conv_warps32.csv --schedules "$S" \
    > $OUT/conv_warps32.log 2>&1
grep -E "^0.9|failed|Error" $OUT/conv_warps32.log | cut -c1-220
