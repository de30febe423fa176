#!/usr/bin/env bash
# One device call (~9 minutes): the 512-channel layers (118k-236k nonzeros, ~4 minutes per
# unrolled build in one process) with unrolled forms that keep many programs at N = 392
# (batch 8: 16-row groups on 4 warps x 128 columns, 8-row groups on 16 warps x 512), built in
# parallel first (3 builds x 4 compile workers: the kernels of one build compile side by
# side; tap pointers, no padded copy), against the table kernel that
# holds these cases. Results under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=4
T="mode='table', rows_per_program=1, num_warps=1, pad_input=True"
U="mode='values', max_statements_per_function=16384, max_functions_per_kernel=8, tap_pointers=True"
S="Schedule($T, block_n=64, chunk=8, prefetch_tail=True)"
S="$S; Schedule($U, rows_per_program=16, block_n=128, num_warps=4)"
S="$S; Schedule($U, rows_per_program=8, block_n=512, num_warps=16)"
timeout ${CONV_S:-540} python -m bench.conv_bench --dlmc .carry/dlmc --batches 8,1 \
    --dtypes float32 --only ${LAYERS:-group4_1_1} --max-compile-s 1000 --jobs ${JOBS:-3} \
    --deadline-s $(( ${CONV_S:-540} - 15 )) --out $OUT/conv_group4.csv --schedules "$S" \
    > $OUT/conv_group4.log 2>&1
grep -E "^0.9|built|failed|Error" $OUT/conv_group4.log | cut -c1-220
