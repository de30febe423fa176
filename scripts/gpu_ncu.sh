#!/usr/bin/env bash
# One device call (~8 minutes): (1) ncu's warp stall reasons for the table and the unrolled
# convolution kernels on a 128-channel layer (what limits the unrolled code: instruction
# fetch, data latency, the L1 pipeline?); (2) the 256-channel layers (groups 3) with their
# unrolled one-kernel form built in parallel processes first, against the table kernel.
# Results under $OUT. Carry .carry (the DLMC set and wheels).
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=4
pip install -q --no-index --find-links .carry/wheels hypothesis 2>&1 | grep -v WARN | tail -1
SPARSERT_TEST_DEVICE=cuda timeout 60 python -m pytest -q -p no:cacheprovider \
    tests/test_conv_bench.py 2>&1 | tail -1 | tee $OUT/gpu_tests_conv_bench.txt
source scripts/ncu_metrics.sh
timeout ${NCU_S:-170} ncu --clock-control none --metrics "$M" -k regex:sparse \
    python -m bench.profile_kernels --dlmc .carry/dlmc --conv > $OUT/ncu_conv_stalls.txt 2>&1
tail -5 $OUT/ncu_conv_stalls.txt
U="mode='values', rows_per_program=16, block_n=64, num_warps=2, max_statements_per_function=16384, max_functions_per_kernel=64, pad_input=True"
S="Schedule(mode='table', chunk=8, prefetch_tail=True, pad_input=True); Schedule($U)"
timeout ${CONV_S:-400} python -m bench.conv_bench --dlmc .carry/dlmc --only ${LAYERS:-group3} \
    --batches 8,1 --dtypes float32 --max-compile-s 10000 --jobs ${JOBS:-6} \
    --deadline-s $(( ${CONV_S:-400} - 20 )) --out $OUT/conv_group3.csv --schedules "$S" 2>&1 \
    | grep -v "^  built" | tail -14
