#!/usr/bin/env bash
# One device call (~8 minutes): 16-warp unrolled programs (the fastest form in gpu_ctas.sh)
# with fewer rows per program or column slices, so more of the 132 SMs get a program; the
# 64/128-channel layers at batch 8, then a 256-channel layer at batch 8 (long builds).
# Full logs and results under $OUT. Carry .carry.
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1 SPARSERT_COMPILE_WORKERS=2
U="mode='values', max_statements_per_function=16384, max_functions_per_kernel=8, pad_input=True"
W="block_n=512, num_warps=16"
S="Schedule($U, rows_per_program=32, $W); Schedule($U, rows_per_program=16, $W)"
S="$S; Schedule($U, rows_per_program=8, $W); Schedule($U, rows_per_program=32, $W, split_k=2)"
S="$S; Schedule($U, rows_per_program=16, $W, split_k=2)"
timeout ${CONV_S:-240} python -m bench.conv_bench --dlmc .carry/dlmc \
    --only group1_1_1,group2_1_1,projection_block_group2 --batches 8 --dtypes float32 \
    --max-compile-s 80 --jobs 12 --deadline-s $(( ${CONV_S:-240} - 20 )) \
    --out $OUT/conv_ctas2.csv --schedules "$S" > $OUT/conv_ctas2.log 2>&1
grep "^0.9" $OUT/conv_ctas2.log
S="Schedule($U, rows_per_program=32, $W); Schedule($U, rows_per_program=16, $W)"
S="$S; Schedule($U, rows_per_program=32, block_n=256, num_warps=8)"
S="$S; Schedule($U, rows_per_program=16, $W, split_k=2)"
timeout ${G3_S:-280} python -m bench.conv_bench --dlmc .carry/dlmc \
    --only group3_1_1 --batches 8 --dtypes float32 \
    --max-compile-s 400 --jobs 4 --deadline-s $(( ${G3_S:-280} - 20 )) \
    --out $OUT/conv_ctas_g3.csv --schedules "$S" > $OUT/conv_ctas_g3.log 2>&1
grep -E "^0.9|built" $OUT/conv_ctas_g3.log | cut -c1-200
