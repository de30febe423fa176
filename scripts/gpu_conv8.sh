#!/usr/bin/env bash
# Device call(s) re-measuring the fp32 convolution table with the one-row kernel's tap masks
# (now its default): each case the best of the table schedules that won a case before, the
# same on the unpadded X with tap masks, and the 16-warp unrolled forms.
# PART=b1: the 256-channel layers' table schedules (BATCHES=1 for batch 1 only).
# PART=a: the 64/128/512-channel layers (the 512-channel unrolled builds are over the compile
# bound: table only), then (TESTS=1) the GPU test suite; PART=b: the 256-channel layers
# (~1 minute per unrolled build, built in parallel first). Results and logs under $OUT.
# Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=2
T="mode='table', rows_per_program=1, num_warps=1"
U="mode='values', max_statements_per_function=16384, max_functions_per_kernel=8, pad_input=True"
S="Schedule($T, pad_input=True, block_n=64, chunk=8, prefetch_tail=True)"
S="$S; Schedule($T, tap_masks=True, block_n=64, chunk=8, prefetch_tail=True)"
S="$S; Schedule($T, pad_input=True, block_n=32, chunk=4)"
S="$S; Schedule($T, tap_masks=True, block_n=32, chunk=4)"
S="$S; Schedule($T, pad_input=True, block_n=128, chunk=8, prefetch_tail=True)"
S="$S; Schedule(mode='table', rows_per_program=1, block_n=64, chunk=8, num_warps=4, split_k=4, pad_input=True)"
UNROLLED="Schedule($U, rows_per_program=32, block_n=512, num_warps=16)"
UNROLLED="$UNROLLED; Schedule($U, rows_per_program=16, block_n=512, num_warps=16)"
if [ "${PART:-a}" = b1 ]; then
  # the 256-channel layers, table schedules only (for batch 1, where the unrolled forms
  # lose): the padded input against tap masks
  ONLY=group3
elif [ "${PART:-a}" = a ]; then
  S="$S; $UNROLLED; Schedule(mode='values', rows_per_program=32, block_n=32, num_warps=1, pad_input=True)"
  ONLY=group1,group2,group4
else
  S="$S; $UNROLLED"
  ONLY=group3
fi
timeout ${CONV_S:-540} python -m bench.conv_bench --dlmc .carry/dlmc --batches ${BATCHES:-1,8} --dtypes float32 \
    --only $ONLY --max-compile-s ${MAX_COMPILE_S:-150} --jobs ${JOBS:-8} \
    --deadline-s $(( ${CONV_S:-540} - 15 )) --out $OUT/conv_${PART:-a}.csv --schedules "$S" \
    > $OUT/conv_${PART:-a}.log 2>&1
grep -E "^0.9|failed|Error" $OUT/conv_${PART:-a}.log | cut -c1-220
if [ "${TESTS:-0}" = 1 ]; then
  pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARNING | tail -1
  # SIGINT at the limit: pytest then prints its summary (a SIGTERM loses the buffered report)
  SPARSERT_TEST_DEVICE=cuda timeout -s INT ${GPU_S:-100} python -m pytest -q -p no:cacheprovider -m gpu \
      --durations=6 tests > $OUT/gpu_marked.txt 2>&1; tail -12 $OUT/gpu_marked.txt
  SPARSERT_TEST_DEVICE=cuda timeout -s INT ${TEST_S:-200} python -m pytest -q -p no:cacheprovider \
      --durations=6 tests/test_property.py tests/test_inputs.py tests/test_golden.py tests/test_conv.py \
      tests/test_direct.py > $OUT/gpu_tests.txt 2>&1; tail -14 $OUT/gpu_tests.txt
fi
