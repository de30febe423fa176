#!/usr/bin/env bash
# One device call (~4 minutes): the X rows a chunk ahead in the one-row table kernel
# (prefetch_x): its GPU tests, then one layer per channel count and the stride-2 128-channel
# projection at batch 1 and 8, the table kernel with tap masks and on the padded copy at
# chunks of 8 and 16, each with and without prefetch_x (at batch 1 a row's chain of dependent
# X loads, from DRAM for an input not in L2, is what the kernel waits on). Table schedules
# only: no long builds. Results and logs under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARN | tail -1
SPARSERT_TEST_DEVICE=cuda timeout -s INT ${TEST_S:-90} python -m pytest -q -p no:cacheprovider \
    tests/test_prefetch_x.py > $OUT/gpu_tests_prefetch_x.txt 2>&1; tail -3 $OUT/gpu_tests_prefetch_x.txt
T="mode='table', rows_per_program=1, num_warps=1, block_n=64, prefetch_tail=True"
S=""
for P in "tap_masks=True" "pad_input=True"; do
  for C in 8 16; do
    S="$S; Schedule($T, $P, chunk=$C); Schedule($T, $P, chunk=$C, prefetch_x=True)"
  done
done
S="${S#; }"
timeout ${CONV_S:-200} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1,8 \
    --dtypes float32 --only ${LAYERS:-group1_1_1,group2_1_1,group3_1_1,group4_1_1,projection_block_group2} \
    --deadline-s $(( ${CONV_S:-200} - 10 )) --out $OUT/conv_prefetch_x.csv --schedules "$S" \
    > $OUT/conv_prefetch_x.log 2>&1
grep -E "^0.9|failed|Error" $OUT/conv_prefetch_x.log | cut -c1-220
