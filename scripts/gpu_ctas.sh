#!/usr/bin/env bash
# One device call (~4 minutes): the unrolled code with larger programs (8 and 16 warps, one
# column per lane: more warps run each row group's code on one SM) against the 4-warp form
# that won the 128-channel layers at batch 8. Full log and results under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=2
U="mode='values', max_statements_per_function=16384, max_functions_per_kernel=8, pad_input=True"
S="Schedule($U, rows_per_program=32, block_n=128, num_warps=4)"
S="$S; Schedule($U, rows_per_program=32, block_n=256, num_warps=8)"
S="$S; Schedule($U, rows_per_program=32, block_n=512, num_warps=16)"
S="$S; Schedule($U, rows_per_program=16, block_n=256, num_warps=8)"
timeout ${CONV_S:-300} python -m bench.conv_bench --dlmc .carry/dlmc \
    --only ${LAYERS:-group1_1_1,group2_1_1} --batches 8,1 --dtypes float32 \
    --max-compile-s 80 --jobs ${JOBS:-8} --deadline-s $(( ${CONV_S:-300} - 20 )) \
    --out $OUT/conv_ctas.csv --schedules "$S" > $OUT/conv_ctas.log 2>&1
tail -12 $OUT/conv_ctas.log
