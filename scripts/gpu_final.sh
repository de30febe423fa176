#!/usr/bin/env bash
# One device call: the GPU test suite on the final code, then ResNet-50 batch 8 under torch.compile.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARNING | tail -1
SPARSERT_TEST_DEVICE=cuda timeout 240 python -m pytest -q -p no:cacheprovider tests/test_property.py \
    tests/test_inputs.py tests/test_golden.py tests/test_conv.py 2>&1 | tail -6 | tee $OUT/gpu_tests_final.txt
SPARSERT_TEST_DEVICE=cuda timeout 100 python -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -4 | tee -a $OUT/gpu_tests_final.txt
timeout 200 python -m bench.e2e --models resnet50 --batches 8 --modes compile --deadline-s 180 --out $OUT/e2e_rn50_b8_compile.csv 2>&1 | tail -5
