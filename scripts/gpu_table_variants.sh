#!/usr/bin/env bash
# One short device call (~3 minutes): the padded table kernel's index loads (half of its L1
# requests by ncu) against wider tiles (one column/value load feeds more X columns) and packed
# nonzeros (one 64-bit load per nonzero), on a 64-, 128-, 256- and 512-channel layer at batch
# 1 and 8. Results under $OUT. Carry .carry (the DLMC set).
export PYTHONPATH=$PWD SPARSERT_CACHE_DIR=/tmp/sc PYTHONUNBUFFERED=1
T="mode='table', rows_per_program=1, chunk=8, num_warps=1, pad_input=True"
S="Schedule($T, block_n=64, prefetch_tail=True); Schedule($T, block_n=128, prefetch_tail=True)"
S="$S; Schedule($T, block_n=256, prefetch_tail=True); Schedule($T, block_n=64, pack_nonzeros=True)"
S="$S; Schedule($T, block_n=128, pack_nonzeros=True)"
timeout ${CONV_S:-170} python -m bench.conv_bench --dlmc .carry/dlmc --batches 1,8 --dtypes float32 \
    --only ${LAYERS:-group1_1_1,group2_1_1,group3_1_1,group4_1_1} --deadline-s $(( ${CONV_S:-170} - 15 )) \
    --out $OUT/conv_table_variants.csv --schedules "$S" 2>&1 | grep -v "^  built" | tail -8
