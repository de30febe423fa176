#!/usr/bin/env bash
# One device call (~8 minutes): the tap-pointer and tap-mask tests on the GPU, then the
# 64/128-channel layers at batch 1 and 8: the unrolled forms on the padded copy against the
# same forms with tap pointers, the padded table kernel (which holds the batch-1 cases)
# against the same kernel with tap masks (neither has a copy kernel).
# Full log and results under $OUT. Carry .carry (the DLMC set and wheels).
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=2
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARN | tail -1
SPARSERT_TEST_DEVICE=cuda timeout ${TEST_S:-100} python -m pytest -q -p no:cacheprovider \
    tests/test_tap_pointers.py tests/test_tap_masks.py tests/test_conv_bench.py 2>&1 | grep -E "passed|failed|Error|assert" \
    | tail -8 | tee $OUT/gpu_tests_tap_pointers.txt
T="mode='table', rows_per_program=1, num_warps=1, pad_input=True"
U="mode='values', max_statements_per_function=16384, max_functions_per_kernel=8"
M="mode='table', rows_per_program=1, num_warps=1, tap_masks=True"
S="Schedule($T, block_n=64, chunk=8, prefetch_tail=True); Schedule($T, block_n=32, chunk=4)"
S="$S; Schedule($M, block_n=64, chunk=8, prefetch_tail=True); Schedule($M, block_n=32, chunk=4)"
for P in pad_input=True tap_pointers=True; do
  S="$S; Schedule($U, rows_per_program=32, block_n=512, num_warps=16, $P)"
  S="$S; Schedule($U, rows_per_program=32, block_n=32, num_warps=1, $P)"
done
S="$S; Schedule($U, rows_per_program=16, block_n=512, num_warps=16, tap_pointers=True)"
timeout ${CONV_S:-420} python -m bench.conv_bench --dlmc .carry/dlmc --batches 8,1 \
    --dtypes float32 --only ${LAYERS:-group1,group2} --max-compile-s 80 --jobs ${JOBS:-12} \
    --deadline-s $(( ${CONV_S:-420} - 15 )) --out $OUT/conv_tap_pointers.csv --schedules "$S" \
    > $OUT/conv_tap_pointers.log 2>&1
grep -E "^0.9|failed|Error" $OUT/conv_tap_pointers.log | cut -c1-220
