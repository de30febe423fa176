#!/usr/bin/env bash
# One device call (~6 minutes): the untuned default (Schedule()) against the tap-mask form on
# every DLMC 3x3 layer at batch 1 (fp32), then the property tests (the N == 1 fix) and the
# tuner and column-slice tests. Results and logs under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=2
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARN | tail -1
S="Schedule(); Schedule(mode='table', rows_per_program=1, num_warps=1, tap_masks=True, block_n=64, chunk=8, prefetch_tail=True, prefetch_x=False)"
timeout ${CONV_S:-100} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1 \
    --dtypes float32 --only "${ONLY:-group}" --jobs 8 \
    --deadline-s $(( ${CONV_S:-100} - 10 )) --out $OUT/conv_default.csv --schedules "$S" \
    > $OUT/conv_default.log 2>&1
grep -E "failed|Error|deadline" $OUT/conv_default.log | cut -c1-220
SPARSERT_TEST_DEVICE=cuda timeout -s INT ${TEST_S:-270} python -m pytest -q -p no:cacheprovider \
    --durations=5 tests/test_property.py tests/test_tune.py tests/test_split_unrolled.py \
    > $OUT/gpu_tests.txt 2>&1; tail -5 $OUT/gpu_tests.txt
