#!/usr/bin/env bash
# One device call: GPU test suite, then schedule exploration (results under $OUT).
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | tail -1
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
SPARSERT_TEST_DEVICE=cuda timeout ${TEST_S:-150} python -m pytest -q -x -p no:cacheprovider \
    tests/test_property.py tests/test_inputs.py tests/test_golden.py 2>&1 | tail -${TAIL:-15} | tee $OUT/gpu_tests.txt
# the exploration exercises the opt-in parallel first compile (a failure only warns)
SPARSERT_COMPILE_WORKERS=${SPARSERT_COMPILE_WORKERS:-8} timeout ${EXPLORE_S:-380} python -m bench.explore --dlmc .carry/dlmc --out $OUT/explore.csv \
    --deadline-s $(( ${EXPLORE_S:-380} - 40 )) 2>&1 | grep -E "^ +[0-9.]+ us|^==|FAILED|deadline|parallel compile" | tee $OUT/explore.txt
