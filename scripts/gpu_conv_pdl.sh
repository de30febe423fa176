#!/usr/bin/env bash
# One device call (~8 minutes): the fp32 convolution table again, now with programmatic
# dependent launch on (the default), each case the best of the schedules that won a case in
# the fifth session's full search (conv_h100_tune.jsonl). Results under $OUT.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=4
T="mode='table', rows_per_program=1, num_warps=1, pad_input=True"
S="Schedule($T, block_n=64, chunk=8, prefetch_tail=True); Schedule($T, block_n=32, chunk=4)"
S="$S; Schedule($T, block_n=128, chunk=8, prefetch_tail=True)"
S="$S; Schedule(mode='table', rows_per_program=1, block_n=64, chunk=8, num_warps=4, split_k=4, pad_input=True)"
S="$S; Schedule(mode='values', rows_per_program=32, block_n=128, max_statements_per_function=16384, max_functions_per_kernel=4, num_warps=4, pad_input=True)"
S="$S; Schedule(mode='values', rows_per_program=32, block_n=32, num_warps=1, pad_input=True)"
timeout ${CONV_S:-480} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1,8 --dtypes float32 \
    --max-compile-s 40 --jobs 12 --deadline-s $(( ${CONV_S:-480} - 15 )) --out $OUT/conv_h100.csv \
    --schedules "$S" 2>&1 | grep -v "^  built" | tail -4
