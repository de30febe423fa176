#!/usr/bin/env bash
# One device call (~3 minutes): the fp32 convolution rows at batch 1 on every DLMC 3x3 layer,
# table schedules only (batch 1's winners were all one-row table kernels): tap masks at
# chunks of 8 (the default), the padded copy at chunks of 4 x 32 columns and split rows
# (earlier winners), and the X rows a chunk ahead (prefetch_x) at chunks of 8 and 16 with and
# without the padded copy (the ninth session's first call: 13.4 vs 16.9 us on a 256-channel
# layer, 15.2 vs 20.2 on a 512-channel one). Results and logs under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=2
T="mode='table', rows_per_program=1, num_warps=1"
S="Schedule($T, tap_masks=True, block_n=64, chunk=8, prefetch_tail=True)"
S="$S; Schedule($T, tap_masks=True, block_n=64, chunk=8, prefetch_tail=True, prefetch_x=True)"
S="$S; Schedule($T, tap_masks=True, block_n=64, chunk=16, prefetch_tail=True, prefetch_x=True)"
S="$S; Schedule($T, pad_input=True, block_n=64, chunk=8, prefetch_tail=True, prefetch_x=True)"
S="$S; Schedule($T, pad_input=True, block_n=64, chunk=16, prefetch_tail=True, prefetch_x=True)"
S="$S; Schedule($T, pad_input=True, block_n=32, chunk=16, prefetch_tail=True, prefetch_x=True)"
S="$S; Schedule($T, pad_input=True, block_n=32, chunk=4)"
S="$S; Schedule(mode='table', rows_per_program=1, block_n=64, chunk=8, num_warps=4, split_k=4, pad_input=True)"
timeout ${CONV_S:-200} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1 \
    --dtypes float32 --only "${ONLY:-group}" --jobs ${JOBS:-8} \
    --deadline-s $(( ${CONV_S:-200} - 10 )) --out $OUT/conv_b1.csv --schedules "$S" \
    > $OUT/conv_b1.log 2>&1
grep -E "^0.9|failed|Error|deadline" $OUT/conv_b1.log | cut -c1-220
