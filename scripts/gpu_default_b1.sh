#!/usr/bin/env bash
# One device call (~9 minutes): the GPU tests of the few-programs default (test_prefetch_x,
# test_tap_masks, test_tune), the untuned default (Schedule(): every field 'auto') against
# the tap-mask form it replaces on every DLMC 3x3 layer at batch 1 and 8 (fp32), then the
# property and input tests with what is left. Results and logs under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=2
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARN | tail -1
t() {   # name, limit, pytest arguments
  local name=$1 limit=$2; shift 2
  SPARSERT_TEST_DEVICE=cuda timeout -s INT $limit python -m pytest -q -p no:cacheprovider \
      --durations=5 "$@" > $OUT/$name.txt 2>&1; tail -4 $OUT/$name.txt
}
t gpu_tests_default ${TEST_S:-120} tests/test_prefetch_x.py tests/test_tap_masks.py tests/test_tune.py
S="Schedule(); Schedule(mode='table', rows_per_program=1, num_warps=1, tap_masks=True, block_n=64, chunk=8, prefetch_tail=True, prefetch_x=False)"
timeout ${CONV_S:-150} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1,8 \
    --dtypes float32 --only "${ONLY:-group}" --jobs 8 \
    --deadline-s $(( ${CONV_S:-150} - 10 )) --out $OUT/conv_default.csv --schedules "$S" \
    > $OUT/conv_default.log 2>&1
grep -E "failed|Error|deadline" $OUT/conv_default.log | cut -c1-220
t gpu_tests_property ${PROP_S:-270} tests/test_property.py tests/test_inputs.py
