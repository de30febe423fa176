#!/usr/bin/env bash
# One device call: the convolution GPU tests, then the sparse-convolution benchmark (results
# under $OUT). Carry .carry (the DLMC set and wheels; optionally .carry/old, an earlier
# checkout of the package, timed as "before" on the same machine).
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=16
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | tail -1
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
SPARSERT_TEST_DEVICE=cuda timeout ${TEST_S:-120} python -m pytest -q -p no:cacheprovider \
    tests/test_conv.py tests/test_golden.py tests/test_direct.py tests/test_conv_bench.py 2>&1 \
    | tail -${TAIL:-8} | tee $OUT/gpu_tests_conv.txt
SPARSERT_TEST_DEVICE=cuda timeout ${GPU_MARKED_S:-120} python -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_nn_conv.py tests/test_tune.py -k "conv" 2>&1 | tail -3 | tee -a $OUT/gpu_tests_conv.txt
timeout ${CONV_S:-330} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1,8 --dtypes ${DTYPES:-float32,float16} \
    --max-compile-s ${MAX_COMPILE_S:-40} --deadline-s $(( ${CONV_S:-330} - 30 )) --out $OUT/conv_h100.csv 2>&1 | tail -${TAIL:-40}
if [ -d .carry/old ] && [ "${OLD_S:-0}" -gt 0 ]; then
    (cd .carry/old && PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc_old timeout $OLD_S python -m bench.conv_bench \
        --dlmc ../dlmc --batches 1,8 --dtypes float32 --deadline-s $(( OLD_S - 20 )) \
        --out $OUT/conv_h100_old_kernel.csv 2>&1 | tail -5)
fi
