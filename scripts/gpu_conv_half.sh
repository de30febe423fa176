#!/usr/bin/env bash
# One device call (~8 minutes): the half-precision convolution rows (fp16 and bf16; the fp16
# rows in conv_h100.csv are the fourth session's, bf16 was never measured): the table kernel
# with tap masks and on the padded copy, the 16-warp unrolled forms (within the compile
# bound), and the tensor-core row groups that conv_candidate_schedules adds for half dtypes.
# ONLY picks the layers (default: every 3x3 layer). Results and logs under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=2
T="mode='table', rows_per_program=1, num_warps=1"
U="mode='values', max_statements_per_function=16384, max_functions_per_kernel=8, pad_input=True"
D="mode='table', chunk=16, row_order='cluster', use_dot=True, num_warps=4"
S="Schedule($T, tap_masks=True, block_n=64, chunk=8, prefetch_tail=True)"
S="$S; Schedule($T, pad_input=True, block_n=64, chunk=8, prefetch_tail=True)"
S="$S; Schedule($T, pad_input=True, block_n=32, chunk=4)"
S="$S; Schedule($T, pad_input=True, block_n=64, chunk=16, prefetch_tail=True, prefetch_x=True)"
S="$S; Schedule(mode='table', rows_per_program=1, block_n=64, chunk=8, num_warps=4, split_k=4, pad_input=True)"
S="$S; Schedule($U, rows_per_program=32, block_n=512, num_warps=16)"
S="$S; Schedule($U, rows_per_program=16, block_n=512, num_warps=16)"
S="$S; Schedule($D, rows_per_program=16, block_n=64); Schedule($D, rows_per_program=32, block_n=128)"
timeout ${CONV_S:-480} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1,8 \
    --dtypes ${DTYPES:-float16,bfloat16} --only "${ONLY:-group}" --max-compile-s ${MAX_COMPILE_S:-40} \
    --jobs ${JOBS:-8} --deadline-s $(( ${CONV_S:-480} - 15 )) --out $OUT/conv_half.csv --schedules "$S" \
    > $OUT/conv_half.log 2>&1
grep -E "^0.9|failed|Error|deadline" $OUT/conv_half.log | cut -c1-220
