#!/usr/bin/env bash
# Device call(s) re-measuring the fp32 convolution table with the 16-warp unrolled forms:
# each case the best of the table schedules that won a case before and three unrolled forms.
# PART=a: the 64/128/512-channel layers (the 512-channel unrolled builds are over the compile
# bound: table only); PART=b: the 256-channel layers (~1 minute per unrolled build, built in
# parallel first). Results and logs under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=2
T="mode='table', rows_per_program=1, num_warps=1, pad_input=True"
U="mode='values', max_statements_per_function=16384, max_functions_per_kernel=8, pad_input=True"
S="Schedule($T, block_n=64, chunk=8, prefetch_tail=True); Schedule($T, block_n=32, chunk=4)"
S="$S; Schedule($T, block_n=128, chunk=8, prefetch_tail=True)"
S="$S; Schedule(mode='table', rows_per_program=1, block_n=64, chunk=8, num_warps=4, split_k=4, pad_input=True)"
S="$S; Schedule($U, rows_per_program=32, block_n=512, num_warps=16)"
S="$S; Schedule($U, rows_per_program=16, block_n=512, num_warps=16)"
if [ "${PART:-a}" = a ]; then
  S="$S; Schedule(mode='values', rows_per_program=32, block_n=32, num_warps=1, pad_input=True)"
  ONLY=group1,group2,group4
else
  ONLY=group3
fi
timeout ${CONV_S:-540} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1,8 --dtypes float32 \
    --only $ONLY --max-compile-s ${MAX_COMPILE_S:-150} --jobs ${JOBS:-12} \
    --deadline-s $(( ${CONV_S:-540} - 15 )) --out $OUT/conv_${PART:-a}.csv --schedules "$S" \
    > $OUT/conv_${PART:-a}.log 2>&1
grep -E "^0.9|failed|Error" $OUT/conv_${PART:-a}.log | cut -c1-220
