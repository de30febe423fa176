#!/usr/bin/env bash
# The GPU test suite, in two device calls (results under $OUT; carry .carry for the
# hypothesis wheels): PART=1 the property and input tests (test_property alone takes ~4
# minutes on the GPU: each Hypothesis example compiles a kernel), PART=2 the convolution,
# golden and direct-launch tests and the gpu-marked ones. Each run is stopped with SIGINT at
# its limit so pytest still prints its summary.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARNING | tail -1
t() {   # name, limit, pytest arguments
  local name=$1 limit=$2; shift 2
  SPARSERT_TEST_DEVICE=cuda timeout -s INT $limit python -m pytest -q -p no:cacheprovider \
      --durations=5 "$@" > $OUT/$name.txt 2>&1; tail -8 $OUT/$name.txt
}
if [ "${PART:-1}" = 1 ]; then
  t gpu_tests_property ${TEST_S:-420} tests/test_property.py tests/test_inputs.py
else
  t gpu_tests_conv ${TEST_S:-240} tests/test_conv.py tests/test_golden.py tests/test_direct.py \
      tests/test_tap_masks.py tests/test_tap_pointers.py tests/test_prefetch_x.py \
      tests/test_batch_inner_probe.py tests/test_nn.py tests/test_nn_conv.py tests/test_ops.py
  t gpu_tests_marked ${GPU_S:-240} -m gpu tests
fi
